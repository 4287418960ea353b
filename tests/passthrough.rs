//! Requests that are not answered from cache, and backend faults.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RULES: &str = r#"
upstream: { url: UPSTREAM, timeout: 300ms }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
  - name: inventory
    match: { path: "/inventory/{id}" }
    cache: false
"#;

fn echo() -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    |s| {
        let body = format!(
            "{} {} {}",
            s.method,
            s.uri,
            String::from_utf8_lossy(&s.body)
        );
        (
            StatusCode::CREATED,
            vec![("x-echo", "1".into())],
            Bytes::from(body),
        )
    }
}

/// A POST keeps its method, headers and body, and is never stored.
#[tokio::test]
async fn post_passes_with_body() {
    let backend = Backend::start(Duration::ZERO, echo()).await;
    let proxy = Proxy::start(RULES, &backend.url(), None).await;
    let body = "x".repeat(100_000);
    let res = send(
        "POST",
        &proxy.url("/products/1?a=b"),
        &[("x-custom", "yes")],
        &body,
    )
    .await;
    assert_eq!(res.status, StatusCode::CREATED);
    assert_eq!(res.body, format!("POST /products/1?a=b {body}"));
    assert!(
        res.cache_status().contains("fwd=method"),
        "{}",
        res.cache_status()
    );
    let seen = &backend.seen()[0];
    assert_eq!(seen.headers["x-custom"], "yes");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["via"], "1.1 sidecache");
}

/// Unmatched paths and `cache: false` rules go to the backend every time.
#[tokio::test]
async fn unmatched_and_cache_false_pass() {
    let backend = Backend::start(Duration::ZERO, echo()).await;
    let proxy = Proxy::start(RULES, &backend.url(), None).await;
    for _ in 0..3 {
        let a = get(&proxy.url("/elsewhere"), &[]).await;
        assert!(
            a.cache_status()
                .contains("fwd=bypass; fwd-status=201; detail=no-rule"),
            "{}",
            a.cache_status()
        );
        let b = get(&proxy.url("/inventory/1"), &[]).await;
        assert!(
            b.cache_status().contains("detail=rule"),
            "{}",
            b.cache_status()
        );
    }
    assert_eq!(backend.hits(), 6);
}

/// Hop-by-hop headers do not cross the proxy in either direction.
#[tokio::test]
async fn hop_by_hop_removed() {
    let backend = Backend::start(Duration::ZERO, |_| {
        (
            StatusCode::OK,
            vec![
                ("connection", "x-internal".into()),
                ("x-internal", "secret".into()),
            ],
            Bytes::from_static(b"ok"),
        )
    })
    .await;
    let proxy = Proxy::start(RULES, &backend.url(), None).await;
    let res = get(
        &proxy.url("/elsewhere"),
        &[
            ("connection", "x-private"),
            ("x-private", "1"),
            ("keep-alive", "5"),
        ],
    )
    .await;
    assert!(!res.headers.contains_key("x-internal"));
    let seen = &backend.seen()[0];
    assert!(!seen.headers.contains_key("x-private"));
    assert!(!seen.headers.contains_key("keep-alive"));
}

/// A backend that refuses connections gives 502 with a short plain body.
#[tokio::test]
async fn refused_backend_gives_502() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = Proxy::start(RULES, &format!("http://127.0.0.1:{port}"), None).await;
    for path in ["/products/1", "/elsewhere"] {
        let res = get(&proxy.url(path), &[]).await;
        assert_eq!(res.status, StatusCode::BAD_GATEWAY, "{path}");
        assert_eq!(res.header("content-type"), "text/plain; charset=utf-8");
        assert!(res.body.len() < 300 && !res.body.is_empty());
    }
}

/// A backend slower than `upstream.timeout` gives 504.
#[tokio::test]
async fn slow_backend_gives_504() {
    let backend = Backend::start(Duration::from_secs(3), echo()).await;
    let proxy = Proxy::start(RULES, &backend.url(), None).await;
    let res = get(&proxy.url("/products/1"), &[]).await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    let res = get(&proxy.url("/elsewhere"), &[]).await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
}

/// A request that is not HTTP gets 400 and the proxy keeps serving.
#[tokio::test]
async fn garbage_request_gives_400() {
    let backend = Backend::start(Duration::ZERO, echo()).await;
    let proxy = Proxy::start(RULES, &backend.url(), None).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GARBAGE \x01\x02 nonsense\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 400"), "got: {text}");
    assert_eq!(
        get(&proxy.url("/elsewhere"), &[]).await.status,
        StatusCode::CREATED
    );
    assert_eq!(backend.hits(), 1);
}

/// Beyond `max_concurrency` requests on the backend and `queue` waiting,
/// clients get 503 with Retry-After; the backend never sees more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_backend_gives_503() {
    let backend = Backend::start(Duration::from_millis(500), echo()).await;
    let rules = RULES.replace(
        "timeout: 300ms",
        "timeout: 2s, max_concurrency: 2, queue: 2",
    );
    let proxy = Proxy::start(&rules, &backend.url(), None).await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let url = proxy.url(&format!("/products/{i}"));
            tokio::spawn(async move { get(&url, &[]).await })
        })
        .collect();
    let mut busy = 0;
    for t in tasks {
        let res = t.await.unwrap();
        if res.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(res.header("retry-after"), "1");
            busy += 1;
        } else {
            assert_eq!(res.status, StatusCode::CREATED);
        }
    }
    assert_eq!(busy, 6, "2 on the backend + 2 queued should pass");
    assert_eq!(backend.hits(), 4);
}

/// A backend that closes its first connection without answering: a GET is
/// sent once more and succeeds; a POST is not repeated and gets 502.
#[tokio::test]
async fn idempotent_retried_once_on_connection_failure() {
    async fn flaky() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let first = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    if !first {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await;
                    }
                });
            }
        });
        (url, seen)
    }
    let (url, seen) = flaky().await;
    let proxy = Proxy::start(RULES, &url, None).await;
    let res = get(&proxy.url("/elsewhere"), &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, "ok");
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 2);

    let (url, seen) = flaky().await;
    let proxy = Proxy::start(RULES, &url, None).await;
    let res = send("POST", &proxy.url("/elsewhere"), &[], "body").await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a POST must not be sent twice"
    );
}

/// Clients that hang up while waiting in the upstream queue give their
/// place back: the queue still takes requests afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_queue_places_are_returned() {
    let backend = Backend::start(Duration::from_millis(400), echo()).await;
    let rules = RULES.replace(
        "timeout: 300ms",
        "timeout: 5s, max_concurrency: 1, queue: 2",
    );
    let proxy = Proxy::start(&rules, &backend.url(), None).await;
    let busy = tokio::spawn({
        let url = proxy.url("/elsewhere/a");
        async move { get(&url, &[]).await }
    });
    eventually("first request on the backend", || async {
        backend.hits() == 1
    })
    .await;
    for p in ["/elsewhere/b", "/elsewhere/c"] {
        // Give up while queued.
        let _ = tokio::time::timeout(Duration::from_millis(100), get(&proxy.url(p), &[])).await;
    }
    assert_eq!(busy.await.unwrap().status, StatusCode::CREATED);
    let (ud, ue) = (proxy.url("/elsewhere/d"), proxy.url("/elsewhere/e"));
    let (d, e) = tokio::join!(get(&ud, &[]), get(&ue, &[]));
    assert_eq!(d.status, StatusCode::CREATED);
    assert_eq!(
        e.status,
        StatusCode::CREATED,
        "queue places were lost to clients that hung up"
    );
}
