//! A purge refuses exactly the entries it concerns: writes to other
//! products never stop caching, while a purge of an entry's own key or tag
//! during its fetch keeps the fetched (possibly old) answer out of every
//! replica, even when the purge is announced late.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use sidecache::metrics::PurgeSource;
use support::relay::{Delayed, Relay};
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
admin: { token: "t" }
redis: { url: "REDIS", key_prefix: "scope:", timeout: 1s, disconnect_grace: 10s }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
    tags: ["product:{id}", "category:{response.category_id}"]
    invalidate_on: ["PUT /products/{id}"]
"#;

/// The same rules without Redis.
fn memory_only() -> String {
    RULES.replace(
        "redis: { url: \"REDIS\", key_prefix: \"scope:\", timeout: 1s, disconnect_grace: 10s }\n",
        "",
    )
}

/// Products 1..99 are in category 1, 100..199 in category 2, and so on; a
/// PUT raises a product's version. Every answer names the product's
/// category, so entries carry a tag rendered from the response body.
async fn products() -> Backend {
    let versions: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let reads = Arc::new(AtomicUsize::new(0));
    Backend::start(Duration::ZERO, move |s| {
        let id: u64 = s
            .uri
            .rsplit('/')
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or(0);
        let mut versions = versions.lock().unwrap();
        let v = versions.entry(id).or_default();
        if s.method == "PUT" {
            *v += 1;
        }
        let read = reads.fetch_add(1, Ordering::SeqCst);
        let body = format!(
            "{{\"id\":{id},\"category_id\":{},\"v\":{v},\"read\":{read}}}",
            id / 100 + 1
        );
        (
            StatusCode::OK,
            vec![("content-type", "application/json".to_owned())],
            Bytes::from(body),
        )
    })
    .await
}

/// Reads products 101..=200 twice through `reader` while `writer` takes a
/// steady stream of PUTs to products 1..=50 (each purging its key and its
/// category's tag); answers the second pass's hits and the writes made
/// meanwhile. The backend takes 5 ms an answer, so most fetches overlap a
/// purge of something else.
async fn reads_during_writes(writer: &Proxy, reader: &Proxy) -> (usize, usize) {
    let stop = tokio_util::sync::CancellationToken::new();
    let writes = Arc::new(AtomicUsize::new(0));
    let task = {
        let (stop, writes, url) = (stop.clone(), writes.clone(), writer.url(""));
        tokio::spawn(async move {
            for id in (1..=50).cycle() {
                if stop.is_cancelled() {
                    return;
                }
                let res = send("PUT", &format!("{url}/products/{id}"), &[], "{}").await;
                assert_eq!(res.status, StatusCode::OK);
                writes.fetch_add(1, Ordering::SeqCst);
                // About 100 writes a second.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    eventually("the write stream is flowing", || async {
        writes.load(Ordering::SeqCst) >= 10
    })
    .await;
    let before = writes.load(Ordering::SeqCst);
    for id in 101..=200 {
        let first = get(&reader.url(&format!("/products/{id}")), &[]).await;
        assert_eq!(first.status, StatusCode::OK);
    }
    let mut hits = 0;
    for id in 101..=200 {
        hits += usize::from(
            get(&reader.url(&format!("/products/{id}")), &[])
                .await
                .is_hit(),
        );
    }
    let during = writes.load(Ordering::SeqCst) - before;
    stop.cancel();
    task.await.unwrap();
    (hits, during)
}

/// Writes through replica A purge other products on every replica, yet
/// replica B keeps caching what they do not concern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrelated_writes_keep_caching_across_replicas() {
    let redis = Redis::start();
    let backend = products().await;
    backend.set_delay(Duration::from_millis(5));
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let (hits, writes) = reads_during_writes(&a, &b).await;
    assert!(writes >= 50, "only {writes} writes flowed during the reads");
    assert!(
        b.app
            .invalidator()
            .recent()
            .iter()
            .any(|r| r.source == PurgeSource::Remote),
        "B never heard of A's purges"
    );
    assert!(hits >= 95, "{hits} of 100 second-pass reads were hits");
}

/// The same on one replica without Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrelated_writes_keep_caching_in_memory() {
    let backend = products().await;
    backend.set_delay(Duration::from_millis(5));
    let a = Proxy::start(&memory_only(), &backend.url(), None).await;
    let (hits, writes) = reads_during_writes(&a, &a).await;
    assert!(writes >= 50, "only {writes} writes flowed during the reads");
    assert!(hits >= 95, "{hits} of 100 second-pass reads were hits");
}

/// Two replicas on one Redis, A's purge announcements held back by a relay
/// so they reach A only well after its fetch has ended. While A fetches
/// product 7 (category 1), B purges `purge`; then neither B, nor A once
/// told, nor a new replica may serve the answer A fetched.
async fn purge_on_b_during_fetch_on_a(purge: &str) {
    let redis = Redis::start_tcp();
    let relay = Relay::start(
        redis.addr().unwrap(),
        Duration::from_millis(1500),
        Delayed::Subscribers,
    )
    .await;
    let backend = products().await;
    let via_relay = format!("redis://{}/0", relay.addr);
    let a = Proxy::start(RULES, &backend.url(), Some(&via_relay)).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    eventually("both replicas subscribed to purges", || async {
        let mut c = redis.conn().await;
        let (_, n): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("scope:purge")
            .query_async(&mut c)
            .await
            .unwrap();
        n == 2
    })
    .await;
    backend.set_delay(Duration::from_millis(600));
    let url = a.url("/products/7");
    let fetch = tokio::spawn(async move { get(&url, &[]).await });
    eventually("A's fetch reached the backend", || async {
        backend.hits_for("/products/7") == 1
    })
    .await;
    assert_eq!(
        admin_purge(&b, purge, Some("t")).await.status,
        StatusCode::OK
    );
    let old = fetch.await.unwrap();
    assert_eq!(old.status, StatusCode::OK);
    backend.set_delay(Duration::ZERO);
    let heard = || {
        a.app
            .invalidator()
            .recent()
            .iter()
            .any(|r| r.source == PurgeSource::Remote)
    };
    assert!(
        !heard(),
        "the announcement was not held back: the test shows nothing"
    );
    eventually("A heard of B's purge", || async { heard() }).await;
    // By now A's store has long been sent to Redis. A replica with an empty
    // L1 sees only what Redis holds; then B, then A itself.
    let c = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let from_c = get(&c.url("/products/7"), &[]).await;
    assert_ne!(
        from_c.body, old.body,
        "Redis held the answer fetched before the purge"
    );
    let from_b = get(&b.url("/products/7"), &[]).await;
    assert_ne!(
        from_b.body, old.body,
        "B served the answer fetched before the purge"
    );
    let from_a = get(&a.url("/products/7"), &[]).await;
    assert_ne!(
        from_a.body, old.body,
        "A served the answer fetched before the purge"
    );
}

/// A key purge on another replica during the fetch, announced late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_key_purged_on_other_replica_during_fetch() {
    purge_on_b_during_fetch_on_a(r#"{"keys": ["product:7"]}"#).await;
}

/// A purge of a tag rendered from the response body, on another replica
/// during the fetch, announced late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_body_tag_purged_on_other_replica_during_fetch() {
    purge_on_b_during_fetch_on_a(r#"{"tags": ["category:1"]}"#).await;
}

/// On one replica: a purge of the entry's body tag during its fetch keeps
/// the answer out; the next read goes to the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_body_tag_purged_during_fetch_same_replica() {
    let redis = Redis::start();
    let backend = products().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    backend.set_delay(Duration::from_millis(600));
    let url = a.url("/products/8");
    let fetch = tokio::spawn(async move { get(&url, &[]).await });
    eventually("the fetch reached the backend", || async {
        backend.hits_for("/products/8") == 1
    })
    .await;
    let res = admin_purge(&a, r#"{"tags": ["category:1"]}"#, Some("t")).await;
    assert_eq!(res.status, StatusCode::OK);
    let old = fetch.await.unwrap();
    backend.set_delay(Duration::ZERO);
    let again = get(&a.url("/products/8"), &[]).await;
    assert!(!again.is_hit(), "{}", again.cache_status());
    assert_ne!(again.body, old.body);
    assert_eq!(backend.hits_for("/products/8"), 2);
}

/// Followers collapsed on a hot key's fetch get its answer even when other
/// entries are purged meanwhile: one backend request in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrelated_purge_keeps_collapsed_followers_waiting() {
    let redis = Redis::start();
    let backend = products().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    backend.set_delay(Duration::from_millis(800));
    let clients: Vec<_> = (0..5)
        .map(|_| {
            let url = a.url("/products/9");
            tokio::spawn(async move { get(&url, &[]).await })
        })
        .collect();
    eventually("the leader reached the backend", || async {
        backend.hits_for("/products/9") == 1
    })
    .await;
    let res = admin_purge(
        &a,
        r#"{"keys": ["product:1"], "tags": ["category:2", "product:10"]}"#,
        Some("t"),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let mut collapsed = 0;
    for c in clients {
        let got = c.await.unwrap();
        assert_eq!(got.status, StatusCode::OK);
        collapsed += usize::from(got.cache_status().contains("collapsed"));
    }
    assert_eq!(
        backend.hits_for("/products/9"),
        1,
        "followers were released"
    );
    assert_eq!(collapsed, 4);
    assert!(get(&a.url("/products/9"), &[]).await.is_hit());
}

/// After a tag purge, the replica that fetches first puts the current
/// answer in Redis; another replica whose L1 copy is refused finds it
/// there instead of asking the backend again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_l1_entry_falls_through_to_l2() {
    let redis = Redis::start();
    let backend = products().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let stored = || async {
        let mut c = redis.conn().await;
        redis::cmd("GET")
            .arg("scope:{product:12}")
            .query_async::<Option<Vec<u8>>>(&mut c)
            .await
            .unwrap()
    };
    get(&a.url("/products/12"), &[]).await;
    // A's store reaches Redis just after its answer: B is asked once it is
    // there, so B's first request is an L2 hit.
    eventually("A's answer is in Redis", || async {
        stored().await.is_some()
    })
    .await;
    for p in [&a, &b] {
        eventually("cached", || async {
            get(&p.url("/products/12"), &[]).await.is_hit()
        })
        .await;
    }
    assert_eq!(backend.hits_for("/products/12"), 1);
    let before = stored().await;
    assert!(before.is_some());
    assert_eq!(
        admin_purge(&a, r#"{"tags": ["category:1"]}"#, Some("t"))
            .await
            .status,
        StatusCode::OK
    );
    eventually("B heard of the purge", || async {
        b.app
            .invalidator()
            .recent()
            .iter()
            .any(|r| r.source == PurgeSource::Remote)
    })
    .await;
    let fresh = get(&a.url("/products/12"), &[]).await;
    assert!(!fresh.is_hit());
    eventually("A's new answer is in Redis", || async {
        stored().await != before
    })
    .await;
    let from_b = get(&b.url("/products/12"), &[]).await;
    assert!(
        from_b.is_hit() && from_b.cache_status().contains("detail=redis"),
        "{}",
        from_b.cache_status()
    );
    assert_eq!(from_b.body, fresh.body);
    assert_eq!(backend.hits_for("/products/12"), 2);
}

/// A write purges what its entry was as well as what it becomes, when the
/// trigger reads the answer from before the write: product 43 moves from
/// category 4 to 5, and the listing of category 4 (which held it) is
/// purged too, though the write's answer names only category 5. A listing
/// of another category stays.
#[tokio::test]
async fn a_moved_product_leaves_its_old_listing() {
    const MOVES: &str = r#"
upstream: { url: UPSTREAM }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
    invalidate_on:
      - on: "PUT /products/{id}"
        tags: ["category:{previous.category_id}", "category:{response.category_id}"]
  - name: listing
    match: { path: "/categories/{id}/products" }
    key: "category:{id}:products"
    ttl: 1h
    tags: ["category:{id}"]
"#;
    let category = Arc::new(Mutex::new(4u64));
    let backend = Backend::start(Duration::ZERO, {
        let category = category.clone();
        move |s| {
            let json = vec![("content-type", "application/json".to_owned())];
            let body = if s.method == "PUT" {
                *category.lock().unwrap() = 5;
                "{\"id\":43,\"category_id\":5}".to_owned()
            } else if s.uri.starts_with("/products/43") {
                format!("{{\"id\":43,\"category_id\":{}}}", category.lock().unwrap())
            } else {
                let id = s.uri.split('/').nth(2).unwrap_or("0").to_owned();
                format!("{{\"category_id\":{id},\"products\":[43]}}")
            };
            (StatusCode::OK, json, Bytes::from(body))
        }
    })
    .await;
    let proxy = Proxy::start(MOVES, &backend.url(), None).await;
    for path in [
        "/products/43",
        "/categories/4/products",
        "/categories/5/products",
        "/categories/6/products",
    ] {
        get(&proxy.url(path), &[]).await;
        eventually("cached", || async {
            get(&proxy.url(path), &[]).await.is_hit()
        })
        .await;
    }
    let put = send(
        "PUT",
        &proxy.url("/products/43"),
        &[],
        "{\"category_id\":5}",
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    for path in [
        "/products/43",
        "/categories/4/products",
        "/categories/5/products",
    ] {
        let got = get(&proxy.url(path), &[]).await;
        assert!(!got.is_hit(), "{path} still cached: {}", got.cache_status());
    }
    assert!(
        get(&proxy.url("/categories/6/products"), &[])
            .await
            .is_hit()
    );
}
