//! Graceful shutdown of the real binary: SIGTERM during a slow request lets
//! it complete, then the process exits 0.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_request_finish() {
    let backend = Backend::start(Duration::from_millis(1500), |_| {
        (StatusCode::OK, vec![], Bytes::from_static(b"slow answer"))
    })
    .await;
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let upstream = format!("upstream: {{ url: \"{}\" }}\n", backend.url());
    let config = binary_config(&dir, port, admin, "", &upstream);
    let mut child = start_binary(&config, admin, &[], &[], Stdio::null()).await;
    let request =
        tokio::spawn(async move { get(&format!("http://127.0.0.1:{port}/slow"), &[]).await });
    eventually("request reached the backend", || async {
        backend.hits() == 1
    })
    .await;
    signal(&child, "TERM");
    // New connections are refused at once, while the request in flight is
    // still being answered (the backend takes 1.5 s).
    eventually("the listener closed", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    })
    .await;
    assert!(
        !request.is_finished(),
        "the listener closed only after the request in flight"
    );
    let res = request.await.unwrap();
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, "slow answer");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "sidecache did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}

/// `limits.shutdown_grace` bounds the drain: a request the backend takes
/// 20 s to answer does not hold the process; it exits 0 about a grace
/// (300 ms) after SIGTERM, and the client's connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_bounds_the_drain() {
    let backend = Backend::start(Duration::from_secs(20), |_| {
        (StatusCode::OK, vec![], Bytes::from_static(b"too late"))
    })
    .await;
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let rest = format!(
        "upstream: {{ url: \"{}\", timeout: 60s }}\nlimits: {{ shutdown_grace: 300ms }}\n",
        backend.url()
    );
    let config = binary_config(&dir, port, admin, "", &rest);
    let child = start_binary(&config, admin, &[], &[], Stdio::null()).await;
    let request = tokio::spawn(async move {
        let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        client
            .get(format!("http://127.0.0.1:{port}/slow").parse().unwrap())
            .await
    });
    eventually("request reached the backend", || async {
        backend.hits() == 1
    })
    .await;
    let signalled = Instant::now();
    signal(&child, "TERM");
    let out = exit_output(child, Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    assert!(out.status.success(), "{:?}", out.status);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM"
    );
    assert!(
        request.await.unwrap().is_err(),
        "the request past the grace got an answer"
    );
}

/// What one keep-alive client saw when the proxy drained: answers read,
/// and how its connection ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// The last answer said `Connection: close`, then the proxy closed.
    ClosedAfterAnswer,
    /// The connection ended (or failed) with a request unanswered.
    Unanswered(String),
}

/// One keep-alive client: sends a request, reads its whole answer, sends
/// the next at once, until an answer says `Connection: close`.
async fn keep_alive_client(
    addr: std::net::SocketAddr,
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> (u64, Ended) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut answers = 0;
    loop {
        let sent = conn
            .write_all(b"GET /products/1 HTTP/1.1\r\nHost: shop\r\n\r\n")
            .await;
        if let Err(e) = sent {
            return (answers, Ended::Unanswered(format!("write: {e}")));
        }
        let mut got = Vec::new();
        let head_end = loop {
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut buf = [0u8; 4096];
            match conn.read(&mut buf).await {
                Ok(0) => return (answers, Ended::Unanswered("closed".into())),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (answers, Ended::Unanswered(format!("read: {e}"))),
            }
        };
        let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a content-length");
        while got.len() < head_end + length {
            let mut buf = [0u8; 4096];
            match conn.read(&mut buf).await {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                other => return (answers, Ended::Unanswered(format!("body: {other:?}"))),
            }
        }
        answers += 1;
        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if head.contains("connection: close") {
            let mut rest = [0u8; 16];
            return match conn.read(&mut rest).await {
                Ok(0) => (answers, Ended::ClosedAfterAnswer),
                other => (
                    answers,
                    Ended::Unanswered(format!("after close: {other:?}")),
                ),
            };
        }
    }
}

/// Shutdown with four busy keep-alive clients (hits, each sending its next
/// request as soon as an answer is in): every request sent is answered,
/// the last answer of each says `Connection: close`, and then the
/// connection is closed, never reset or closed under a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_busy_keep_alive_connections_after_their_answer() {
    let backend = Backend::json(vec![]).await;
    let rules = r#"
upstream: { url: UPSTREAM }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
"#;
    let proxy = Proxy::start(rules, &backend.url(), None).await;
    assert!(
        get(&proxy.url("/products/1"), &[]).await.status == StatusCode::OK,
        "the entry is fetched"
    );
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(keep_alive_client(proxy.addr, answered.clone())))
        .collect();
    eventually("the clients are busy", || async {
        answered.load(std::sync::atomic::Ordering::Relaxed) >= 200
    })
    .await;
    drop(proxy);
    for client in clients {
        let (answers, ended) = client.await.unwrap();
        assert!(answers > 1, "a client was answered {answers} times");
        assert_eq!(ended, Ended::ClosedAfterAnswer, "after {answers} answers");
    }
}
