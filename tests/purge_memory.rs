//! What purges leave behind: nothing in Redis without an expiry, purge
//! times that stay bounded in memory, and purges that keep working after
//! Redis is flushed.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
admin: { token: "t" }
memory: { max_size: 16MiB }
redis: { url: "REDIS", key_prefix: "pm:", disconnect_grace: 30s }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
    tags: ["product:{id}", "category:{response.category_id}"]
    invalidate_on: ["PUT /products/{id}"]
  - name: cart
    match: { path: "/cart/{user_id}" }
    key: "cart:{user_id}"
    tier: redis
    ttl: 7d
    collapse: global
    write_through: { methods: [PUT] }
  - name: lang
    match: { path: "/lang/{id}" }
    key: "lang:{id}"
    ttl: 1h
  - name: inventory
    match: { path: "/inventory/{id}" }
    cache: false
    rate_limit: { key: "{client_ip}", rate: 100/s, scope: global }
"#;

/// Products with a version raised by each PUT; `/lang/*` varies on
/// Accept-Language.
async fn shop() -> Backend {
    let versions: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let reads = Arc::new(AtomicUsize::new(0));
    Backend::start(Duration::ZERO, move |s| {
        let path = s.uri.split('?').next().unwrap_or("").to_owned();
        let mut versions = versions.lock().unwrap();
        let v = versions.entry(path.clone()).or_default();
        if s.method == "PUT" {
            *v += 1;
        }
        let read = reads.fetch_add(1, Ordering::SeqCst);
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if path.starts_with("/lang/") {
            headers.push(("vary", "accept-language".to_owned()));
        }
        let body = format!("{{\"category_id\":1,\"v\":{v},\"read\":{read}}}");
        (StatusCode::OK, headers, Bytes::from(body))
    })
    .await
}

/// Every key sidecache writes to Redis expires: entries, tag purge times,
/// key tombstones, variants' tags, locks, rate-limit state, the heartbeat
/// mark. Key purges of keys without variants create no variants tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_in_redis_lives_forever() {
    let redis = Redis::start();
    let backend = shop().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    get(&a.url("/products/1"), &[]).await;
    get(&a.url("/lang/1"), &[("accept-language", "de")]).await;
    get(&a.url("/inventory/1"), &[]).await;
    get(&a.url("/cart/0"), &[]).await;
    for user in 1..=200 {
        let res = send("PUT", &a.url(&format!("/cart/{user}")), &[], "{}").await;
        assert_eq!(res.status, StatusCode::OK);
    }
    send("PUT", &a.url("/products/1"), &[], "{}").await;
    admin_purge(
        &a,
        r#"{"keys": ["lang:1"], "tags": ["category:9"], "prefixes": ["nothing:"]}"#,
        Some("t"),
    )
    .await;
    eventually("the heartbeat marked Redis", || async {
        redis_has(&redis, "pm:#mark").await
    })
    .await;
    eventually("the variant's tag exists", || async {
        redis_has(&redis, "pm:{lang:1}#!vary").await
    })
    .await;
    let mut c = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        keys.len() > 200,
        "only {} keys: the test wrote less than it meant",
        keys.len()
    );
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(ttl > 0, "{key} has no expiry (PTTL {ttl})");
    }
    let variant_tags = keys.iter().filter(|k| k.ends_with("#!vary")).count();
    assert_eq!(
        variant_tags, 1,
        "variant tags for keys without variants: {keys:?}"
    );
    assert!(
        keys.iter().any(|k| k == "pm:{cart:200}#!kp"),
        "no tombstone for a purged key"
    );
}

/// After `FLUSHALL` every replica drops its L1 (its heartbeat notices the
/// flush), and a purge made afterwards is honoured everywhere, however
/// often the tag was purged before the flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_work_after_a_flush() {
    let redis = Redis::start();
    let backend = shop().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    // A flush is noticed against the mark a replica has read before it.
    eventually("both replicas read Redis's mark", || async {
        redis_has(&redis, "pm:#mark").await
            && a.app.invalidator().knows_mark()
            && b.app.invalidator().knows_mark()
    })
    .await;
    for _ in 0..5 {
        admin_purge(&a, r#"{"tags": ["product:5"]}"#, Some("t")).await;
    }
    let mut before = Vec::new();
    for p in [&a, &b] {
        get(&p.url("/products/5"), &[]).await;
        eventually("cached", || async {
            get(&p.url("/products/5"), &[]).await.is_hit()
        })
        .await;
        before.push(get(&p.url("/products/5"), &[]).await.body);
    }
    let mut c = redis.conn().await;
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    // Each replica drops its L1 within a heartbeat or two: it stops serving
    // what it held. (What it serves instead may already be a hit: the other
    // replica may have fetched the product again into Redis first. The
    // backend numbers its reads, so a new answer has another body.)
    for (p, old) in [&a, &b].into_iter().zip(&before) {
        eventually("L1 dropped after the flush", || async {
            get(&p.url("/products/5"), &[]).await.body != *old
        })
        .await;
    }
    for p in [&a, &b] {
        eventually("cached again", || async {
            get(&p.url("/products/5"), &[]).await.is_hit()
        })
        .await;
    }
    let cached = get(&b.url("/products/5"), &[]).await.body;
    let res = admin_purge(&a, r#"{"tags": ["product:5"]}"#, Some("t")).await;
    assert_eq!(res.status, StatusCode::OK);
    for p in [&a, &b] {
        eventually("the purge after the flush is honoured", || async {
            let got = get(&p.url("/products/5"), &[]).await;
            !got.is_hit() || got.body != cached
        })
        .await;
    }
}

/// A flood of unique purges keeps the remembered purge times within their
/// budget (a sixteenth of `memory.max_size`, at least 1 MiB); entries
/// fetched before what was forgotten are refused, entries fetched after
/// are cached as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_memory_is_bounded() {
    let backend = shop().await;
    let rules = RULES.replace(
        "redis: { url: \"REDIS\", key_prefix: \"pm:\", disconnect_grace: 30s }\n",
        "",
    );
    let a = Proxy::start(&rules, &backend.url(), None).await;
    get(&a.url("/products/7"), &[]).await;
    eventually("cached", || async {
        get(&a.url("/products/7"), &[]).await.is_hit()
    })
    .await;
    for batch in 0..30 {
        let tags: Vec<String> = (0..1000)
            .map(|i| format!("\"flood:{batch}:{i}\""))
            .collect();
        let body = format!("{{\"tags\": [{}]}}", tags.join(","));
        assert_eq!(
            admin_purge(&a, &body, Some("t")).await.status,
            StatusCode::OK
        );
    }
    let (names, bytes) = a.app.invalidator().usage();
    assert!(
        bytes <= 1 << 20,
        "{bytes} bytes remembered for {names} purges"
    );
    assert!(names > 1000 && names < 30_000, "{names} purges remembered");
    assert!(
        !get(&a.url("/products/7"), &[]).await.is_hit(),
        "an entry older than a forgotten purge was served"
    );
    eventually("cached after the flood", || async {
        get(&a.url("/products/7"), &[]).await.is_hit()
    })
    .await;
}
