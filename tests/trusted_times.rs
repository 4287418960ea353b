//! Purge times are believed only as far as Redis's clock allows: a
//! far-future time planted in Redis or announced on the purge channel never
//! turns purges off, on any replica.

mod support;

use bytes::Bytes;
use http::StatusCode;
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
admin: { token: "t" }
redis: { url: "REDIS", key_prefix: "trust:" }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 24h
    tags: ["product:{id}"]
    invalidate_on: ["PUT /products/{id}"]
"#;

/// 2100-01-01, in ms.
const FAR: u64 = 4_102_444_800_000;

/// After a tag purge, each replica answers `path` with a new fetch.
async fn purged_everywhere(proxies: &[&Proxy], path: &str, tag: &str) {
    let mut before = Vec::new();
    for p in proxies {
        get(&p.url(path), &[]).await;
        before.push(await_hit(&p.url(path), &[]).await.body);
    }
    let res = admin_purge(proxies[0], &format!(r#"{{"tags": ["{tag}"]}}"#), Some("t")).await;
    assert_eq!(res.status, StatusCode::OK);
    for (p, old) in proxies.iter().zip(before) {
        let url = p.url(path);
        eventually("the purged entry is refetched", || {
            let (url, old) = (url.clone(), old.clone());
            async move { get(&url, &[]).await.body != old }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_future_announcement_never_turns_purges_off() {
    let redis = Redis::start();
    let backend = Backend::counting().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    // Both listen for announcements once a purge reaches the other.
    purged_everywhere(&[&a, &b], "/products/1", "product:1").await;

    let poison =
        format!(r#"{{"from":1,"tags":[["x",{FAR}]],"keys":[["product:9",{FAR}]],"exact":true}}"#);
    let mut conn = redis.conn().await;
    let heard: u64 = redis::cmd("PUBLISH")
        .arg("trust:purge")
        .arg(&poison)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(heard, 2, "both replicas heard it");
    // Entries fetched from now on are still purged by a real purge.
    purged_everywhere(&[&a, &b], "/products/2", "product:2").await;
    eventually("the announcement is counted as not trusted", || async {
        metric_sum_or_none(
            &a,
            "sidecache_untrusted_times_total",
            "source=\"announcement\"",
        )
        .await
        .is_some_and(|n| n >= 2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_tag_time_never_turns_purges_off() {
    let redis = Redis::start();
    let backend = Backend::counting().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let mut conn = redis.conn().await;
    let () = redis::cmd("SET")
        .arg("trust:#tag:product:3")
        .arg(FAR.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    // An ordinary write purges the planted tag.
    let put = send("PUT", &a.url("/products/3"), &[], "{}").await;
    assert_eq!(put.status, StatusCode::OK);
    let stored: String = redis::cmd("GET")
        .arg("trust:#tag:product:3")
        .query_async(&mut conn)
        .await
        .unwrap();
    let stored: u64 = stored.parse().unwrap();
    assert!(stored < FAR, "the planted time was built on: {stored}");
    // Entries fetched afterwards are still purged, on both replicas.
    purged_everywhere(&[&a, &b], "/products/5", "product:5").await;
    // An entry in Redis said to be fetched in the far future (it would
    // outlive every purge) is never served.
    let first = get(&a.url("/products/6"), &[]).await;
    await_hit(&a.url("/products/6"), &[]).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("trust:*product:6*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let key = keys.iter().find(|k| !k.contains('#')).expect("the entry");
    let bytes: Vec<u8> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut entry = sidecache::cache::codec::decode(Bytes::from(bytes)).unwrap();
    entry.fetched_ms = FAR;
    let () = redis::cmd("SET")
        .arg(key)
        .arg(sidecache::cache::codec::encode(&entry).to_vec())
        .query_async(&mut conn)
        .await
        .unwrap();
    let c = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let on_c = get(&c.url("/products/6"), &[]).await;
    assert!(!on_c.is_hit(), "{}", on_c.cache_status());
    assert_ne!(on_c.body, first.body);
    assert!(metric_sum(&c, "sidecache_untrusted_times_total", "source=\"entry\"").await >= 1);
}
