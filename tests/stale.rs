//! Stale serving: stale-while-revalidate and stale-if-error, and `stale: never`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM, timeout: 500ms }
defaults:
  ttl: 1s
  stale_if_error: 1h
rules:
  - name: swr
    match: { path: "/swr/{id}" }
    key: "swr:{id}"
    stale_while_revalidate: 30s
  - name: sie
    match: { path: "/sie/{id}" }
    key: "sie:{id}"
  - name: never
    match: { path: "/never/{id}" }
    key: "never:{id}"
    stale: never
  - name: short
    match: { path: "/short/{id}" }
    key: "short:{id}"
    stale_if_error: 1s
"#;

/// A backend whose answers are numbered, and whose status can be switched.
async fn switchable() -> (Backend, Arc<AtomicU16>) {
    let status = Arc::new(AtomicU16::new(200));
    let s = status.clone();
    let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let backend = Backend::start(Duration::ZERO, move |_| {
        let code = StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap();
        let i = n.fetch_add(1, Ordering::SeqCst);
        (code, vec![], Bytes::from(format!("answer {i}")))
    })
    .await;
    (backend, status)
}

async fn expire() {
    // Let the 1 s TTL pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

/// Within stale-while-revalidate, an expired entry is served at once, one
/// background request refreshes it, and the next answer is the new one.
#[tokio::test]
async fn stale_while_revalidate_refreshes_once() {
    let (backend, _) = switchable().await;
    let proxy = Proxy::start(RULES, &backend.url(), None).await;
    let first = get(&proxy.url("/swr/1"), &[]).await;
    eventually("cached", || async {
        get(&proxy.url("/swr/1"), &[]).await.is_hit()
    })
    .await;
    expire().await;
    let stale = get(&proxy.url("/swr/1"), &[]).await;
    assert_eq!(stale.body, first.body);
    assert!(
        stale.cache_status().contains("hit; fwd=stale")
            && stale.cache_status().contains("detail=revalidating"),
        "{}",
        stale.cache_status()
    );
    assert!(
        stale.cache_status().contains("ttl=-"),
        "a stale answer has a negative ttl: {}",
        stale.cache_status()
    );
    eventually("refreshed", || async {
        let r = get(&proxy.url("/swr/1"), &[]).await;
        r.body != first.body && r.cache_status().contains("; hit; ttl=")
    })
    .await;
    assert_eq!(backend.hits_for("/swr/1"), 2, "exactly one refresh");
}

/// When the backend answers 5xx, an expired entry inside stale-if-error is
/// served, and Cache-Status says so with the backend's status.
#[tokio::test]
async fn stale_if_error_on_5xx() {
    let (backend, status) = switchable().await;
    let proxy = Proxy::start(RULES, &backend.url(), None).await;
    let first = get(&proxy.url("/sie/1"), &[]).await;
    get(&proxy.url("/never/1"), &[]).await;
    eventually("cached", || async {
        get(&proxy.url("/sie/1"), &[]).await.is_hit()
    })
    .await;
    expire().await;
    status.store(503, Ordering::SeqCst);
    let res = get(&proxy.url("/sie/1"), &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, first.body);
    assert_eq!(
        res.cache_status().split("; ttl").next().unwrap(),
        "sidecache; hit; fwd=stale; fwd-status=503"
    );
    assert!(res.cache_status().contains("detail=stale-if-error"));
    // stale: never passes the error on.
    assert_eq!(
        get(&proxy.url("/never/1"), &[]).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Once the backend is back, the entry is replaced.
    status.store(200, Ordering::SeqCst);
    let fresh = get(&proxy.url("/sie/1"), &[]).await;
    assert_ne!(fresh.body, first.body);
}

/// A backend that does not answer in time, or a cached key past its
/// stale-if-error window, behave as documented.
#[tokio::test]
async fn stale_if_error_on_timeout_and_window_end() {
    let backend = Backend::start(Duration::ZERO, |_| {
        (StatusCode::OK, vec![], Bytes::from_static(b"ok"))
    })
    .await;
    let proxy = Proxy::start(RULES, &backend.url(), None).await;
    get(&proxy.url("/sie/2"), &[]).await;
    get(&proxy.url("/short/2"), &[]).await;
    // Both are cached, so the 504 below is the end of /short's window and
    // not a key that was never stored.
    for path in ["/sie/2", "/short/2"] {
        eventually("cached", || async {
            get(&proxy.url(path), &[]).await.is_hit()
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await; // past ttl 1s + short's 1s window
    backend.set_delay(Duration::from_millis(800));
    let res = get(&proxy.url("/sie/2"), &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(
        res.cache_status().contains("fwd=stale") && res.cache_status().contains("stale-if-error"),
        "{}",
        res.cache_status()
    );
    let gone = get(&proxy.url("/short/2"), &[]).await;
    assert_eq!(
        gone.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        gone.cache_status()
    );
}

/// With the backend stopped, a cached key is served stale (stale-if-error)
/// and an uncached one gets 502.
#[tokio::test]
async fn backend_stopped() {
    let (backend, _) = switchable().await;
    let proxy = Proxy::start(RULES, &backend.url(), None).await;
    let first = get(&proxy.url("/sie/9"), &[]).await;
    eventually("cached", || async {
        get(&proxy.url("/sie/9"), &[]).await.is_hit()
    })
    .await;
    expire().await;
    backend.stop();
    let res = get(&proxy.url("/sie/9"), &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, first.body);
    assert!(
        res.cache_status().contains("hit; fwd=stale")
            && res.cache_status().contains("detail=stale-if-error"),
        "{}",
        res.cache_status()
    );
    assert_eq!(
        get(&proxy.url("/sie/10"), &[]).await.status,
        StatusCode::BAD_GATEWAY
    );
}
