//! Peers that stall: a backend that sends its head and then nothing, and
//! clients that upload slowly or stop sending their body.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RULES: &str = r#"
upstream: { url: UPSTREAM, timeout: 500ms, max_concurrency: 1, queue: 0 }
limits: { header_timeout: 1s }
rules:
  - name: any
    match: { path: "/any/{*rest}" }
    ttl: 1h
"#;

/// A backend that answers every request with a head announcing 100 bytes,
/// sends 3 of them, then stalls (until the test ends); counts connections.
async fn stalling() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
                    .await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

/// A body that stalls ends the response (cut short, never stored), and
/// releases the request's collapse flight and backend place: the next
/// request for the key fetches again instead of waiting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_backend_body_ends_and_releases() {
    let (url, connections) = stalling().await;
    let p = Proxy::start(RULES, &url, None).await;
    for round in 1..=2 {
        let client = reqwest_like(&p.url("/any/slow")).await;
        assert!(
            client.is_err(),
            "round {round}: a cut-short body was read as whole"
        );
        assert_eq!(connections.load(Ordering::SeqCst), round);
    }
}

/// GETs `url` and reads the body; fails if that takes more than 10 s (the
/// failure this guards against is a wait with no end).
async fn reqwest_like(url: &str) -> Result<bytes::Bytes, String> {
    use http_body_util::{BodyExt, Empty};
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let attempt = async {
        let res = client
            .request(http::Request::get(url).body(Empty::new()).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(res.status(), StatusCode::OK);
        res.into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .expect("the response never ended")
}

/// A client trickling its upload does not hold the backend's only place:
/// a miss served meanwhile gets its answer, not a 503; the trickle, under
/// the least rate, gets 408, as does a client that stops sending its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_do_not_hold_backend_places() {
    let backend = Backend::json(vec![]).await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    let addr = p.addr;
    // 40 bytes, one every 200 ms: 8 s in all, each gap well under the
    // 1 s body timeout.
    let (started, uploading) = tokio::sync::oneshot::channel();
    let trickle = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /orders HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n\r\n")
            .await
            .unwrap();
        let mut started = Some(started);
        for i in 0..40 {
            if s.write_all(b"x").await.is_err() {
                break;
            }
            if i == 3 {
                // Well inside the upload: the proxy has had its head for 600 ms.
                started.take().map(|t| t.send(()));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut buf = vec![0u8; 512];
        let n = s.read(&mut buf).await.unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });
    uploading.await.unwrap();
    let res = get(&p.url("/any/during-upload"), &[]).await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.cache_status());
    let write = send("PUT", &p.url("/any/other"), &[], "{}").await;
    assert_eq!(write.status, StatusCode::OK);
    // 5 bytes a second is under the 500 a second asked once the first
    // second has passed.
    let answer = tokio::time::timeout(Duration::from_secs(20), trickle)
        .await
        .expect("the trickle was never cut off")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // Half a body, then silence.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /orders HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n\r\nhalf")
        .await
        .unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("no answer to a stalled upload")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(backend.hits_for("/orders"), 0);
}

/// A broken chunked body from the client is the client's error: 400, and
/// not counted against the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_chunked_upload_is_a_client_error() {
    let backend = Backend::json(vec![]).await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"POST /orders HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("no answer")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
}
