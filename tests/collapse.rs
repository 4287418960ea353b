//! Concurrent misses of one key cause one backend request.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
  - name: private
    match: { path: "/private/{id}" }
    key: "private:{id}"
"#;

/// 100 concurrent misses on one key: one backend request, 100 full answers,
/// and the followers say `collapsed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_misses_one_request() {
    let backend = Backend::start(Duration::from_millis(300), |_| {
        (StatusCode::OK, vec![], Bytes::from_static(b"the product"))
    })
    .await;
    let proxy = Proxy::start(RULES, &backend.url(), None).await;
    let url = proxy.url("/products/1");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn({
                let url = url.clone();
                async move { get(&url, &[]).await }
            })
        })
        .collect();
    let mut collapsed = 0;
    for t in tasks {
        let res = t.await.unwrap();
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.body, "the product");
        collapsed += usize::from(res.cache_status().contains("collapsed"));
    }
    assert_eq!(backend.hits(), 1, "backend got {} requests", backend.hits());
    assert!(collapsed >= 90, "only {collapsed} answers said collapsed");
}

/// When the leader's answer is not storable, the waiting requests are
/// released to fetch on their own and all get an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstorable_releases_followers() {
    let backend = Backend::start(Duration::from_millis(200), |_| {
        (
            StatusCode::OK,
            vec![("cache-control", "private".into())],
            Bytes::from_static(b"mine"),
        )
    })
    .await;
    let proxy = Proxy::start(RULES, &backend.url(), None).await;
    let url = proxy.url("/private/1");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn({
                let url = url.clone();
                async move { get(&url, &[]).await }
            })
        })
        .collect();
    for t in tasks {
        let res = t.await.unwrap();
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.body, "mine");
    }
    assert_eq!(backend.hits(), 10);
}
