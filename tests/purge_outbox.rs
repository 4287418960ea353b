//! A write's purge is never lost: when its replica cannot reach Redis, the
//! purge waits in that replica's outbox and reaches Redis and every other
//! replica once the link is back.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use support::relay::{Delayed, Relay};
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
redis: { url: "REDIS", key_prefix: "outbox:", timeout: 200ms, disconnect_grace: 30s }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 24h
    tags: ["product:{id}"]
    invalidate_on: ["PUT /products/{id}"]
"#;

/// Products whose PUT raises their version.
async fn products() -> Backend {
    let versions: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    Backend::start(Duration::ZERO, move |s| {
        let mut versions = versions.lock().unwrap();
        let v = versions.entry(s.uri.clone()).or_default();
        if s.method == "PUT" {
            *v += 1;
        }
        let body = format!("{{\"uri\":\"{}\",\"v\":{v}}}", s.uri);
        let json = vec![("content-type", "application/json".to_owned())];
        (StatusCode::OK, json, Bytes::from(body))
    })
    .await
}

async fn readyz(proxy: &Proxy) -> serde_json::Value {
    let got = get(&format!("http://{}/readyz", proxy.admin), &[]).await;
    serde_json::from_slice(&got.body).unwrap()
}

/// Replica A's link to Redis is cut; a product changes through A while
/// both replicas serve other products; A answers the write (it happened)
/// and says the purge is pending; B, which cannot know yet, keeps the old
/// product only until the link is back, then serves the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_made_while_cut_off_reaches_every_replica_once_the_link_is_back() {
    let redis = Redis::start_tcp();
    let relay = Relay::start(redis.addr().unwrap(), Duration::ZERO, Delayed::All).await;
    let backend = products().await;
    let via_relay = format!("redis://{}/0", relay.addr);
    let a = Proxy::start(RULES, &backend.url(), Some(&via_relay)).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    for proxy in [&a, &b] {
        get(&proxy.url("/products/1"), &[]).await;
        await_hit(&proxy.url("/products/1"), &[]).await;
    }
    assert_eq!(readyz(&a).await["purges_pending"], 0);

    // Reads of other products on both replicas, all through the drill.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (stop, a, b) = (stop.clone(), a.url(""), b.url(""));
        async move {
            let client = client();
            let mut failed = 0;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let base = if i.is_multiple_of(2) { &a } else { &b };
                let url = format!("{base}/products/{}", 2 + i % 5);
                failed += usize::from(try_get(&client, &url).await.is_err());
            }
            failed
        }
    });

    relay.cut();
    let put = send("PUT", &a.url("/products/1"), &[], "{}").await;
    assert_eq!(put.status, StatusCode::OK, "the write happened");
    assert!(
        put.cache_status().contains("detail=purge-pending"),
        "{}",
        put.cache_status()
    );
    assert!(readyz(&a).await["purges_pending"].as_u64().unwrap() >= 1);
    let metrics = get(&format!("http://{}/metrics", a.admin), &[]).await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    let gauge = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sidecache_purges_pending "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(gauge.is_some_and(|v| v >= 1.0), "{metrics}");
    // A itself refuses what the purge names.
    let on_a = get(&a.url("/products/1"), &[]).await;
    assert!(!on_a.is_hit());
    assert!(String::from_utf8_lossy(&on_a.body).contains("\"v\":1"));
    // B cannot know yet.
    let on_b = get(&b.url("/products/1"), &[]).await;
    assert!(on_b.is_hit());
    assert!(String::from_utf8_lossy(&on_b.body).contains("\"v\":0"));

    relay.restore();
    eventually_within(
        Duration::from_secs(10),
        "B serves the new product",
        || async {
            let got = get(&b.url("/products/1"), &[]).await;
            String::from_utf8_lossy(&got.body).contains("\"v\":1")
        },
    )
    .await;
    eventually("the outbox is empty", || async {
        readyz(&a).await["purges_pending"] == 0
    })
    .await;
    // A new replica started now finds nothing old in Redis either.
    let c = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let on_c = get(&c.url("/products/1"), &[]).await;
    assert!(String::from_utf8_lossy(&on_c.body).contains("\"v\":1"));

    stop.store(true, Ordering::Relaxed);
    assert_eq!(traffic.await.unwrap(), 0, "reads of other products failed");
}
