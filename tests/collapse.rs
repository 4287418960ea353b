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
    // Followers wait at most the upstream timeout for a leader; with 60 s,
    // a burst that ends within 20 s was released, not timed out.
    let rules = RULES.replace(
        "upstream: { url: UPSTREAM }",
        "upstream: { url: UPSTREAM, timeout: 60s }",
    );
    let proxy = Proxy::start(&rules, &backend.url(), None).await;
    let url = proxy.url("/private/1");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn({
                let url = url.clone();
                async move { get(&url, &[]).await }
            })
        })
        .collect();
    let answers = tokio::time::timeout(Duration::from_secs(20), async {
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        answers
    })
    .await
    .expect("followers waited for their timeout instead of being released");
    for res in answers {
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.body, "mine");
    }
    assert_eq!(backend.hits(), 10);
}

const GLOBAL: &str = r#"
upstream: { url: UPSTREAM }
redis: { url: "REDIS", key_prefix: "gc:", timeout: 1s }   # a lock request slowed by a loaded machine must not count as failed
rules:
  - name: global
    match: { path: "/global/{id}" }
    key: "global:{id}"
    collapse: global
  - name: local
    match: { path: "/local/{id}" }
    key: "local:{id}"
"#;

async fn burst(proxies: &[support::Proxy], path: &str, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let url = proxies[i % proxies.len()].url(path);
            tokio::spawn(async move { get(&url, &[]).await })
        })
        .collect();
    for t in tasks {
        let res = t.await.unwrap();
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.body, "the product");
    }
}

/// Three instances, 200 concurrent requests on one cold key: with
/// `collapse: global` the backend is asked once; with local collapsing at
/// most once per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_collapse_across_three_instances() {
    let redis = support::Redis::start();
    let backend = Backend::start(Duration::from_millis(300), |_| {
        (StatusCode::OK, vec![], Bytes::from_static(b"the product"))
    })
    .await;
    let proxies = [
        support::Proxy::start(GLOBAL, &backend.url(), Some(&redis.url())).await,
        support::Proxy::start(GLOBAL, &backend.url(), Some(&redis.url())).await,
        support::Proxy::start(GLOBAL, &backend.url(), Some(&redis.url())).await,
    ];
    burst(&proxies, "/global/1", 200).await;
    assert_eq!(
        backend.hits_for("/global/1"),
        1,
        "global collapse let several requests through"
    );
    burst(&proxies, "/local/1", 200).await;
    let local = backend.hits_for("/local/1");
    assert!(
        (1..=3).contains(&local),
        "local collapse: {local} backend requests"
    );
    // The lock is gone once the entry is in Redis.
    assert!(!redis_has(&redis, "gc:#lock:global:1").await);
}

/// A replica that waited for another's fill of a varying answer keeps it
/// under its variant: a request for another variant is not served it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_collapse_keeps_vary_variants_apart() {
    let redis = support::Redis::start();
    let backend = Backend::vary_language(Duration::from_millis(300)).await;
    let a = support::Proxy::start(GLOBAL, &backend.url(), Some(&redis.url())).await;
    let b = support::Proxy::start(GLOBAL, &backend.url(), Some(&redis.url())).await;
    let de = [("accept-language", "de")];
    let (ua, ub) = (a.url("/global/7"), b.url("/global/7"));
    // B asks once A's fetch is at the backend, so A holds the lock.
    let (ra, rb) = tokio::join!(get(&ua, &de), async {
        eventually("A's fetch reached the backend", || async {
            backend.hits() >= 1
        })
        .await;
        get(&ub, &de).await
    });
    assert_eq!(ra.body, "lang=de");
    assert_eq!(rb.body, "lang=de");
    let en = get(&ub, &[("accept-language", "en")]).await;
    assert_eq!(en.body, "lang=en", "{}", en.cache_status());
}
