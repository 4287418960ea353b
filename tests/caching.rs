//! Hits and misses per tier, expiry, HEAD, conditional requests, Vary, key
//! escaping — one proxy against a real backend (and Redis where a tier needs it).

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use support::*;

const MEMORY: &str = r#"
upstream: { url: UPSTREAM }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
    tier: memory
  - name: short
    match: { path: "/short/{id}" }
    key: "short:{id}"
    ttl: 1s
  - name: search
    match: { path: "/search" }
    key: "search:{query.q}:{query.page}"
    allow_empty: [query.page]
  - name: page
    match: { path: "/page/{*rest}" }
"#;

/// A second GET of one URL is an L1 hit: same body, one backend request.
#[tokio::test]
async fn memory_hit_after_miss() {
    let backend = Backend::json(vec![]).await;
    let proxy = Proxy::start(MEMORY, &backend.url(), None).await;
    let first = get(&proxy.url("/products/1"), &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(
        first.cache_status().contains("fwd=uri-miss"),
        "{}",
        first.cache_status()
    );
    assert!(first.cache_status().contains("stored"));
    eventually("stored in L1", || async {
        get(&proxy.url("/products/1"), &[]).await.is_hit()
    })
    .await;
    let hit = get(&proxy.url("/products/1"), &[]).await;
    assert_eq!(hit.body, first.body);
    assert!(
        hit.cache_status().contains("detail=memory"),
        "{}",
        hit.cache_status()
    );
    assert!(hit.headers.contains_key("age"));
    assert_eq!(backend.hits_for("/products/1"), 1);
}

/// Entries expire with their TTL and are fetched again.
#[tokio::test]
async fn ttl_expiry() {
    let backend = Backend::json(vec![]).await;
    let proxy = Proxy::start(MEMORY, &backend.url(), None).await;
    let first = get(&proxy.url("/short/1"), &[]).await;
    eventually("a hit", || async {
        get(&proxy.url("/short/1"), &[]).await.is_hit()
    })
    .await;
    // Let the 1 s TTL pass; the next request must go to the backend again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = get(&proxy.url("/short/1"), &[]).await;
    assert!(!after.is_hit(), "{}", after.cache_status());
    assert_ne!(after.body, first.body);
    assert_eq!(backend.hits_for("/short/1"), 2);
}

/// HEAD is answered from the GET entry, with headers and no body.
#[tokio::test]
async fn head_from_get_entry() {
    let backend = Backend::json(vec![]).await;
    let proxy = Proxy::start(MEMORY, &backend.url(), None).await;
    let full = get(&proxy.url("/products/7"), &[]).await;
    eventually("a hit", || async {
        get(&proxy.url("/products/7"), &[]).await.is_hit()
    })
    .await;
    let head = send("HEAD", &proxy.url("/products/7"), &[], "").await;
    assert!(head.is_hit(), "{}", head.cache_status());
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), full.body.len().to_string());
    assert_eq!(backend.hits_for("/products/7"), 1);
    // A HEAD miss is fetched as GET, so the entry serves later GETs.
    let head_first = send("HEAD", &proxy.url("/products/8"), &[], "").await;
    assert!(head_first.body.is_empty());
    eventually("GET hit after HEAD", || async {
        get(&proxy.url("/products/8"), &[]).await.is_hit()
    })
    .await;
    assert!(backend.seen().iter().all(|s| s.method == http::Method::GET));
}

/// If-None-Match and If-Modified-Since get a 304 from the entry.
#[tokio::test]
async fn conditional_304_from_cache() {
    let backend = Backend::start(Duration::ZERO, |_| {
        (
            StatusCode::OK,
            vec![
                ("etag", "\"v1\"".into()),
                ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT".into()),
            ],
            Bytes::from_static(b"body"),
        )
    })
    .await;
    let proxy = Proxy::start(MEMORY, &backend.url(), None).await;
    // The miss carries the client's validators; the backend must not see
    // them (it would answer 304, and there would be nothing to store).
    let first = get(&proxy.url("/products/1"), &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, "body");
    eventually("a hit", || async {
        get(&proxy.url("/products/1"), &[]).await.is_hit()
    })
    .await;
    let inm = get(&proxy.url("/products/1"), &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(inm.status, StatusCode::NOT_MODIFIED);
    assert!(inm.body.is_empty());
    assert_eq!(inm.header("etag"), "\"v1\"");
    let ims = get(
        &proxy.url("/products/1"),
        &[("if-modified-since", "Thu, 22 Oct 2015 07:28:00 GMT")],
    )
    .await;
    assert_eq!(ims.status, StatusCode::NOT_MODIFIED);
    let other = get(&proxy.url("/products/1"), &[("if-none-match", "\"v2\"")]).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.body, "body");
    assert_eq!(backend.hits(), 1);
    // The backend never saw the client's validators.
    assert!(
        backend
            .seen()
            .iter()
            .all(|s| !s.headers.contains_key("if-none-match"))
    );
}

/// Each value of a Vary header gets its own variant.
#[tokio::test]
async fn vary_variants() {
    let backend = Backend::vary_language(Duration::ZERO).await;
    let proxy = Proxy::start(MEMORY, &backend.url(), None).await;
    let de = get(&proxy.url("/products/1"), &[("accept-language", "de")]).await;
    assert_eq!(de.body, "lang=de");
    eventually("de is a hit", || async {
        get(&proxy.url("/products/1"), &[("accept-language", "de")])
            .await
            .is_hit()
    })
    .await;
    let en = get(&proxy.url("/products/1"), &[("accept-language", "en")]).await;
    assert_eq!(en.body, "lang=en");
    assert!(
        en.cache_status().contains("fwd=vary-miss"),
        "{}",
        en.cache_status()
    );
    eventually("en is a hit", || async {
        get(&proxy.url("/products/1"), &[("accept-language", "en")])
            .await
            .is_hit()
    })
    .await;
    let de_again = get(&proxy.url("/products/1"), &[("accept-language", "de")]).await;
    assert_eq!(de_again.body, "lang=de");
    assert!(de_again.is_hit());
    assert_eq!(backend.hits(), 2);
}

/// Values are escaped: `q=a:1&page=` and `q=a&page=1:` would both render
/// `search:a:1:` without escaping; they must be different entries.
#[tokio::test]
async fn key_escaping_prevents_collisions() {
    let backend = Backend::json(vec![]).await;
    let proxy = Proxy::start(MEMORY, &backend.url(), None).await;
    let a = get(&proxy.url("/search?q=a%3A1&page="), &[]).await;
    eventually("a is a hit", || async {
        get(&proxy.url("/search?q=a%3A1&page="), &[]).await.is_hit()
    })
    .await;
    let b = get(&proxy.url("/search?q=a&page=1%3A"), &[]).await;
    assert!(
        !b.is_hit(),
        "crafted request hit another's entry: {}",
        b.cache_status()
    );
    assert_ne!(a.body, b.body);
    assert_eq!(backend.hits(), 2);
    // And the default key keeps whole paths apart, slashes included.
    get(&proxy.url("/page/a/b"), &[]).await;
    eventually("path hit", || async {
        get(&proxy.url("/page/a/b"), &[]).await.is_hit()
    })
    .await;
    let encoded = get(&proxy.url("/page/a%2Fb"), &[]).await;
    assert!(!encoded.is_hit(), "/page/a%2Fb hit the entry of /page/a/b");
    assert_eq!(backend.hits_for("/page/a%2Fb"), 1);
}

const TIERS: &str = r#"
upstream: { url: UPSTREAM }
redis: { url: "REDIS", key_prefix: "t:" }
rules:
  - name: mem
    match: { path: "/mem/{id}" }
    key: "mem:{id}"
    tier: memory
  - name: red
    match: { path: "/red/{id}" }
    key: "red:{id}"
    tier: redis
  - name: both
    match: { path: "/both/{id}" }
    key: "both:{id}"
"#;

/// Each tier stores where it says: memory never reaches Redis, redis is
/// answered from Redis every time, both fills Redis and L1.
#[tokio::test]
async fn tiers_store_where_they_say() {
    let redis = Redis::start();
    let backend = Backend::json(vec![]).await;
    let proxy = Proxy::start(TIERS, &backend.url(), Some(&redis.url())).await;

    get(&proxy.url("/mem/1"), &[]).await;
    eventually("mem hit", || async {
        get(&proxy.url("/mem/1"), &[]).await.is_hit()
    })
    .await;
    assert!(!redis_has(&redis, "t:{mem:1}").await);

    get(&proxy.url("/red/1"), &[]).await;
    eventually("red in redis", || async {
        redis_has(&redis, "t:{red:1}").await
    })
    .await;
    let hit = get(&proxy.url("/red/1"), &[]).await;
    assert!(
        hit.cache_status().contains("detail=redis"),
        "{}",
        hit.cache_status()
    );
    let again = get(&proxy.url("/red/1"), &[]).await;
    assert!(
        again.cache_status().contains("detail=redis"),
        "redis tier must not use L1: {}",
        again.cache_status()
    );

    get(&proxy.url("/both/1"), &[]).await;
    eventually("both in redis", || async {
        redis_has(&redis, "t:{both:1}").await
    })
    .await;
    let hit = get(&proxy.url("/both/1"), &[]).await;
    assert!(
        hit.cache_status().contains("detail=memory"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(backend.hits(), 3);
}
