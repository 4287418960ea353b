//! The shared tier on a real six-node Redis Cluster (three masters, three
//! replicas): entries, tag, key and prefix purges across masters, global
//! collapse and rate limits, write-through events, and failovers under
//! load.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::cluster::{Cluster, cli};
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
admin: { token: "t" }
redis: { cluster: SEEDS, key_prefix: "cl:", timeout: 200ms, disconnect_grace: 1s }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    tier: redis
    ttl: 1h
    tags: ["product:{id}", "category:{response.category_id}", "brand:{response.brand}"]
  - name: page
    match: { path: "/pages/{id}" }
    key: "page:{id}"
    ttl: 1h
    tags: ["page:{id}", "site"]
  - name: hot
    match: { path: "/hot/{id}" }
    key: "hot:{id}"
    ttl: 1h
    tags: ["hot:{id}"]
  - name: global
    match: { path: "/global/{id}" }
    key: "global:{id}"
    collapse: global
  - name: limited
    match: { path: "/limited" }
    cache: false
    rate_limit: { key: "{header.x-client}", rate: 3/m, burst: 3, scope: global }
  - name: cart
    match: { path: "/cart/{user_id}" }
    key: "cart:{user_id}"
    tier: redis
    ttl: 7d
    write_through: { methods: [PUT], publish: "cart_update:{user_id}" }
"#;

/// A backend whose GET answers name the path's read count (`read`), a
/// category (`id % 4`) and a brand, and whose PUT answers echo the body.
async fn shop() -> Backend {
    let reads: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    Backend::start(Duration::ZERO, move |s| {
        let json = vec![("content-type", "application/json".to_owned())];
        if s.method == http::Method::PUT {
            return (StatusCode::OK, json, s.body.clone());
        }
        let path = s.uri.split('?').next().unwrap_or("").to_owned();
        let id = path.rsplit('/').next().unwrap_or("").to_owned();
        let mut reads = reads.lock().unwrap();
        let n = reads.entry(path).or_default();
        *n += 1;
        let category = id.parse::<u64>().unwrap_or(0) % 4;
        let body = format!(r#"{{"id":"{id}","category_id":{category},"brand":"acme","read":{n}}}"#);
        (StatusCode::OK, json, Bytes::from(body))
    })
    .await
}

/// A replica on the cluster, once its clock is set from the masters' (as
/// it is within a second of starting).
async fn proxy(cluster: &Cluster, backend: &Backend) -> Proxy {
    let yaml = RULES.replace("SEEDS", &cluster.seeds_yaml());
    let p = Proxy::start(&yaml, &backend.url(), None).await;
    eventually("the replica read the cluster's clock", || async {
        p.app.invalidator().knows_mark() && p.app.invalidator().clock_synced()
    })
    .await;
    p
}

/// The `read` number in a backend answer.
fn read_of(got: &Got) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&got.body).expect("json");
    v["read"].as_u64().expect("read")
}

/// A purge through `proxy`'s admin API, repeated until Redis took all of
/// it (as the API tells an operator to do); answers the counts.
async fn purge(proxy: &Proxy, body: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = admin_purge(proxy, body, Some("t")).await;
        assert_eq!(got.status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        if v["purged"]["redis_errors"] == 0 {
            return v["purged"].clone();
        }
        assert!(Instant::now() < deadline, "purge kept failing: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Entries, tag purges, key purges and prefix purges across the masters,
/// shared by two replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_tier_and_purges_across_masters() {
    let cluster = tokio::task::block_in_place(Cluster::start);
    let backend = shop().await;
    let a = proxy(&cluster, &backend).await;
    let b = proxy(&cluster, &backend).await;

    // A product whose three tags' purge times live on three masters.
    let tag_master = |t: &str| cluster.master_of(&format!("cl:#tag:{t}"));
    let id = (1..60u64)
        .find(|id| {
            let masters = [
                tag_master(&format!("product:{id}")),
                tag_master(&format!("category:{}", id % 4)),
                tag_master("brand:acme"),
            ];
            masters[0] != masters[1] && masters[1] != masters[2] && masters[0] != masters[2]
        })
        .expect("some product's tags span the three masters");
    let path = format!("/products/{id}");
    // A product no purge below concerns (another category, outside the
    // prefix), stored first.
    let other = format!("/products/{}", 8000 + (id + 1) % 4);
    get(&a.url(&other), &[]).await;
    let first = get(&a.url(&path), &[]).await;
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    let entry = format!("cl:{{product:{id}}}");
    let home = cluster.master_of(&entry);
    eventually("the entry is on its master", || async {
        !cluster.keys(home, &entry).is_empty()
    })
    .await;
    // B reads the entry and its three tags' times (one MGET over three
    // masters, no CROSSSLOT error) and serves it.
    let on_b = get(&b.url(&path), &[]).await;
    assert!(
        on_b.is_hit() && on_b.cache_status().contains("detail=redis"),
        "{}",
        on_b.cache_status()
    );
    assert_eq!(on_b.body, first.body);
    assert_eq!(backend.hits_for(&path), 1);

    // Entries spread over every master.
    for n in 7000..7030 {
        let got = get(&a.url(&format!("/products/{n}")), &[]).await;
        assert!(got.cache_status().contains("stored"));
    }
    eventually("the 30 entries are stored", || async {
        cluster
            .masters()
            .iter()
            .map(|m| cluster.keys(*m, "cl:{product:70*").len())
            .sum::<usize>()
            == 30
    })
    .await;
    for m in cluster.masters() {
        assert!(
            !cluster.keys(m, "cl:{product:70*").is_empty(),
            "master {m} holds no entry"
        );
    }

    // A tag purge made on A is refused on B: the tag's time is read from
    // its master on B's next L2 hit.
    let counts = purge(&a, &format!(r#"{{"tags": ["category:{}"]}}"#, id % 4)).await;
    assert_eq!(counts["tags"], 1);
    let after = get(&b.url(&path), &[]).await;
    assert!(
        !after.is_hit(),
        "purged tag served: {}",
        after.cache_status()
    );
    assert_eq!(read_of(&after), 2);

    // A key purge from A: gone on B, with a tombstone beside the key.
    get(&a.url("/products/7001"), &[]).await;
    let counts = purge(&a, r#"{"keys": ["product:7001"]}"#).await;
    assert_eq!(counts["keys"], 1);
    let m = cluster.master_of("cl:{product:7001}");
    assert!(cluster.keys(m, "cl:{product:7001}").is_empty());
    assert_eq!(cluster.keys(m, "cl:{product:7001}#!kp").len(), 1);
    assert!(!get(&b.url("/products/7001"), &[]).await.is_hit());

    // A prefix purge reaches the entries on all three masters.
    let counts = purge(&a, r#"{"prefixes": ["product:70"]}"#).await;
    assert!(
        counts["prefixed"].as_u64().unwrap() >= 29,
        "prefix purge reached only {counts}"
    );
    for m in cluster.masters() {
        let left: Vec<String> = cluster
            .keys(m, "cl:{product:70*")
            .into_iter()
            .filter(|k| !k.ends_with("#!kp"))
            .collect();
        assert!(left.is_empty(), "master {m} kept {left:?}");
    }
    let before = backend.hits_for("/products/7005");
    assert!(!get(&b.url("/products/7005"), &[]).await.is_hit());
    assert_eq!(backend.hits_for("/products/7005"), before + 1);
    // Entries the purges do not cover stay.
    let kept = get(&b.url(&other), &[]).await;
    assert!(kept.is_hit(), "{}", kept.cache_status());

    // Concurrent L2 reads of one key share one GET.
    let before = entry_read_round_trips(&b).await;
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let url = b.url(&other);
            tokio::spawn(async move { get(&url, &[]).await })
        })
        .collect();
    for t in tasks {
        let got = t.await.unwrap();
        assert!(
            got.cache_status().contains("detail=redis"),
            "{}",
            got.cache_status()
        );
    }
    let used = entry_read_round_trips(&b).await - before;
    // Each gathered round trip sends the key once, two at a time; the
    // first answer goes to L1: 3 to 7 were seen, 40 would be none shared.
    assert!(
        (1..=10).contains(&used),
        "40 concurrent reads of one key took {used} GETs"
    );

    // L1 entries hear purges over the bus, which a cluster broadcasts.
    holds_in_memory(&b, "/pages/1").await;
    purge(&a, r#"{"tags": ["site"]}"#).await;
    eventually("B dropped the purged page", || async {
        !get(&b.url("/pages/1"), &[]).await.is_hit()
    })
    .await;
}

/// Global collapse, global rate limits and write-through events on a
/// cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_limits_and_events_on_a_cluster() {
    let cluster = tokio::task::block_in_place(Cluster::start);
    let backend = shop().await;
    let a = proxy(&cluster, &backend).await;
    let b = proxy(&cluster, &backend).await;

    // /readyz says which Redis this is.
    let ready = get(&format!("http://{}/readyz", a.admin), &[]).await;
    let ready: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(ready["redis_mode"], "cluster");
    assert_eq!(ready["redis"], "up");

    // 100 concurrent requests for one cold key over two replicas: one
    // backend request.
    backend.set_delay(Duration::from_millis(300));
    let proxies = [&a, &b];
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let url = proxies[i % 2].url("/global/1");
            tokio::spawn(async move { get(&url, &[]).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(backend.hits_for("/global/1"), 1, "global collapse leaked");
    backend.set_delay(Duration::ZERO);

    // Three requests pass across both replicas; the fourth is refused.
    let ask = |p: &Proxy| {
        let url = p.url("/limited");
        async move { get(&url, &[("x-client", "c")]).await.status }
    };
    assert_eq!(ask(&a).await, StatusCode::OK);
    assert_eq!(ask(&b).await, StatusCode::OK);
    assert_eq!(ask(&a).await, StatusCode::OK);
    assert_eq!(ask(&b).await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(ask(&a).await, StatusCode::TOO_MANY_REQUESTS);

    // A write-through on A is an L2 hit on B, and its event reaches a
    // subscriber on any node.
    let node = cluster.masters()[0];
    let mut sub = redis::Client::open(format!("redis://127.0.0.1:{node}"))
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    sub.subscribe("cart_update:9").await.unwrap();
    let cart = r#"{"items":[1,2]}"#;
    let put = send(
        "PUT",
        &a.url("/cart/9"),
        &[("content-type", "application/json")],
        cart,
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    // Written to Redis just after the answer.
    let entry = "cl:{cart:9}";
    eventually("the cart is on its master", || async {
        !cluster.keys(cluster.master_of(entry), entry).is_empty()
    })
    .await;
    let on_b = get(&b.url("/cart/9"), &[]).await;
    assert!(
        on_b.is_hit() && on_b.cache_status().contains("detail=redis"),
        "{}",
        on_b.cache_status()
    );
    assert_eq!(on_b.body, cart);
    let event = next_event(&mut sub).await;
    assert_eq!(event["key"], "cart:9");
    assert_eq!(event["stored"], true);
}

/// What the load saw.
#[derive(Default)]
struct Load {
    ok: AtomicUsize,
    failed: AtomicUsize,
    stop: AtomicBool,
}

/// Two replicas under a steady load of hits (a hot key) and misses (new
/// keys): a `CLUSTER FAILOVER` of the hot key's master, then `kill -9` of
/// its master. No client request fails, and a purge made after each fault
/// reaches both replicas. A tag purged just before the kill stays purged
/// for a replica that starts afterwards: the promoted replica has its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_and_master_death_under_load() {
    let mut cluster = tokio::task::block_in_place(Cluster::start);
    let backend = shop().await;
    let a = proxy(&cluster, &backend).await;
    let b = proxy(&cluster, &backend).await;
    let hot = "/hot/1";
    get(&a.url(hot), &[]).await;
    get(&b.url(hot), &[]).await;

    let load = Arc::new(Load::default());
    let urls = [a.url(""), b.url("")];
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (load, base) = (load.clone(), urls[w % 2].clone());
            tokio::spawn(async move {
                let client = client();
                let mut n = 0u64;
                while !load.stop.load(Ordering::Relaxed) {
                    n += 1;
                    // Mostly the hot key; every fourth a new product.
                    let path = if n.is_multiple_of(4) {
                        format!("/products/{}", 100_000 * (w as u64 + 1) + n)
                    } else {
                        hot.to_owned()
                    };
                    match try_get(&client, &format!("{base}{path}")).await {
                        Ok(got) if got.status == StatusCode::OK => {
                            load.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            load.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let ok_now = || load.ok.load(Ordering::Relaxed);
    let start = ok_now();
    eventually("the load runs", || async { ok_now() > start + 100 }).await;

    // 1. CLUSTER FAILOVER on the replica of the hot key's master.
    let master = cluster.master_of("cl:{hot:1}");
    let replica = cluster.replica_of(master).expect("a replica");
    tokio::task::block_in_place(|| cluster.failover(replica));
    purged_everywhere(&backend, &a, &b, hot).await;

    // A product stored, then its tag purged, with the tag's time on the
    // master about to die.
    let doomed = cluster.master_of("cl:{hot:1}");
    assert_eq!(doomed, replica);
    let id = (2..500u64)
        .find(|id| cluster.master_of(&format!("cl:#tag:product:{id}")) == doomed)
        .expect("a product tag on the doomed master");
    let path = format!("/products/{id}");
    get(&a.url(&path), &[]).await;
    let entry = format!("cl:{{product:{id}}}");
    eventually("the product is in Redis", || async {
        !cluster.keys(cluster.master_of(&entry), &entry).is_empty()
    })
    .await;
    purge(&a, &format!(r#"{{"tags": ["product:{id}"]}}"#)).await;

    // 2. kill -9 of that master; its replica is promoted.
    let errors_before = redis_errors(&a).await + redis_errors(&b).await;
    let killed = Instant::now();
    tokio::task::block_in_place(|| cluster.kill_master(doomed));
    let promoted_after = killed.elapsed();
    purged_everywhere(&backend, &a, &b, hot).await;
    let errors = redis_errors(&a).await + redis_errors(&b).await - errors_before;

    // A replica started now reads the tag's time from the promoted master.
    let c = proxy(&cluster, &backend).await;
    let hits = backend.hits_for(&path);
    let fresh = get(&c.url(&path), &[]).await;
    assert!(!fresh.is_hit(), "a purge was lost in the failover");
    assert_eq!(backend.hits_for(&path), hits + 1);

    load.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok_now(), load.failed.load(Ordering::Relaxed));
    eprintln!(
        "failover: {ok} requests answered, {failed} failed; the killed master's replica \
         served after {promoted_after:?}; Redis commands that failed meanwhile: {errors}"
    );
    assert_eq!(failed, 0, "{failed} client requests failed");
    assert!(ok > 200, "the load barely ran: {ok}");
}

/// A purge of `hot`'s tag through `a` reaches both replicas: nothing they
/// serve afterwards was fetched before it.
async fn purged_everywhere(backend: &Backend, a: &Proxy, b: &Proxy, hot: &str) {
    let before = backend.hits_for(hot) as u64;
    purge(a, r#"{"tags": ["hot:1"]}"#).await;
    for p in [a, b] {
        let got = get(&p.url(hot), &[]).await;
        assert!(
            read_of(&got) > before,
            "{} served an answer fetched before the purge",
            p.addr
        );
    }
}

/// `sidecache_redis_errors_total`, summed over commands (0 while none
/// failed: each command's counter is registered on its first failure).
async fn redis_errors(p: &Proxy) -> u64 {
    metric_sum_or_none(p, sidecache::metrics::REDIS_ERRORS, "")
        .await
        .unwrap_or(0)
}

/// Fetches `path` through `p` until `p` answers it from memory.
async fn holds_in_memory(p: &Proxy, path: &str) {
    get(&p.url(path), &[]).await;
    eventually("the replica holds it in memory", || async {
        get(&p.url(path), &[])
            .await
            .cache_status()
            .contains("detail=memory")
    })
    .await;
}

/// A replica started while the whole cluster is down answers from the
/// backend at once, says Redis is degraded, and uses the cluster once it
/// is back, by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_without_the_cluster_and_joins_it_later() {
    let mut cluster = tokio::task::block_in_place(Cluster::start);
    tokio::task::block_in_place(|| cluster.kill_all());
    let backend = shop().await;
    let yaml = RULES.replace("SEEDS", &cluster.seeds_yaml());
    let a = Proxy::start(&yaml, &backend.url(), None).await;
    let got = get(&a.url("/products/1"), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(!got.is_hit());
    eventually("readyz says degraded", || async {
        let ready = get(&format!("http://{}/readyz", a.admin), &[]).await;
        let ready: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
        ready["redis"] == "degraded" && ready["ready"] == true
    })
    .await;

    tokio::task::block_in_place(|| cluster.restart_all());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // A product stored through the cluster is an L2 hit for a second
        // replica: the first one reaches the cluster now.
        get(&a.url("/products/2"), &[]).await;
        let entry = "cl:{product:2}";
        if !cluster.keys(cluster.master_of(entry), entry).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never used the cluster after it came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The cluster came back empty, so the replicas raise the floor: an
    // entry stored just before they noticed is refused, and the next one
    // stored is served from Redis to the second replica.
    let b = proxy(&cluster, &backend).await;
    eventually_within(Duration::from_secs(10), "B answers from Redis", || async {
        get(&a.url("/products/2"), &[]).await;
        get(&b.url("/products/2"), &[])
            .await
            .cache_status()
            .contains("detail=redis")
    })
    .await;
}

/// A master restarted in place without its data (the purge times of its
/// keys gone) makes every replica drop its L1, even when the heartbeat's
/// mark and the purge bus live on other nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_empty_drops_l1() {
    let mut cluster = tokio::task::block_in_place(Cluster::start);
    let backend = shop().await;
    let b = proxy(&cluster, &backend).await;
    holds_in_memory(&b, "/pages/1").await;
    let mark_home = cluster.master_of("cl:#mark");
    let victim = cluster
        .masters()
        .into_iter()
        .find(|m| *m != mark_home && *m != cluster.first_seed())
        .expect("a master holding neither the mark nor the bus");
    tokio::task::block_in_place(|| cluster.restart(victim));
    eventually("B dropped its L1", || async {
        !get(&b.url("/pages/1"), &[])
            .await
            .cache_status()
            .contains("detail=memory")
    })
    .await;
    assert_eq!(b.app.invalidator().channel_state(), "subscribed");
}

/// Regions where one region's Redis is a cluster: its purge log, lease and
/// places live on the cluster, and the other region reads that log through
/// a cluster connection. A purge made on either side reaches the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_on_a_cluster_exchanges_purges_with_one_on_a_server() {
    use support::regions::{RULES as REGION_RULES, wait_relaying};
    let cluster = tokio::task::block_in_place(Cluster::start);
    let redis = Redis::start_tcp();
    let backend = Backend::json(vec![]).await;
    let seeds = cluster.seeds_yaml();
    let eu_yaml = format!(
        "upstream: {{ url: UPSTREAM }}\nadmin: {{ token: \"t\" }}\nredis: {{ url: \"{}\", key_prefix: \"rg:\" }}\nregion: eu\nregions:\n  us: {{ redis: {{ cluster: {seeds} }} }}\n{REGION_RULES}",
        redis.url()
    );
    let us_yaml = format!(
        "upstream: {{ url: UPSTREAM }}\nadmin: {{ token: \"t\" }}\nredis: {{ cluster: {seeds}, key_prefix: \"rg:\", timeout: 300ms }}\nregion: us\nregions:\n  eu: {{ redis: \"{}\" }}\n{REGION_RULES}",
        redis.url()
    );
    let eu = Proxy::start(&eu_yaml, &backend.url(), None).await;
    let us = Proxy::start(&us_yaml, &backend.url(), None).await;
    wait_relaying(&[eu.admin], 1).await;
    wait_relaying(&[us.admin], 1).await;
    let cached = |p: &Proxy, path: &str| {
        let url = p.url(path);
        async move {
            eventually("cached", || async { get(&url, &[]).await.is_hit() }).await;
            get(&url, &[]).await.body
        }
    };
    for (from, to, tag) in [(&eu, &us, "product:1"), (&us, &eu, "product:2")] {
        let path = format!("/products/{}", &tag["product:".len()..]);
        let old = cached(to, &path).await;
        let body = format!(r#"{{"tags": ["{tag}"]}}"#);
        assert_eq!(
            admin_purge(from, &body, Some("t")).await.status,
            StatusCode::OK
        );
        let url = to.url(&path);
        eventually("the purge reached the other region", || async {
            get(&url, &[]).await.body != old
        })
        .await;
    }
    // The cluster holds the us log and the place eu got to in it.
    let log = cluster.keys(cluster.master_of("rg:#region:log"), "rg:#region:log");
    assert_eq!(log, ["rg:#region:log"]);
}

/// `memory.warm: { from: hot }` on a cluster: a replica's counts of two
/// rules go to their sets on whichever masters hold them, and a replica
/// started afterwards has the hottest keys of both rules in L1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_warms_from_hot_keys_on_a_cluster() {
    let cluster = tokio::task::block_in_place(Cluster::start);
    let backend = shop().await;
    let yaml = RULES.replace("SEEDS", &cluster.seeds_yaml()).replace(
        "rules:\n",
        "memory: { warm: { from: hot, top: 6 } }\nrules:\n",
    );
    let a = Proxy::start(&yaml, &backend.url(), None).await;
    for _ in 0..5 {
        for id in 1..=3 {
            get(&a.url(&format!("/pages/{id}")), &[]).await;
            get(&a.url(&format!("/hot/{id}")), &[]).await;
        }
    }
    get(&a.url("/pages/9"), &[]).await;
    // A stopping replica merges its counts.
    drop(a);
    let sets = || {
        cluster
            .masters()
            .iter()
            .map(|m| cli(*m, &["KEYS", "cl:#hot:*"]))
            .filter(|k| !k.is_empty())
            .flat_map(|k| k.lines().map(str::to_owned).collect::<Vec<_>>())
            .count()
    };
    eventually("both rules' counts in the cluster", || async {
        sets() == 2
    })
    .await;
    let b = Proxy::start(&yaml, &backend.url(), None).await;
    let readyz = format!("http://{}/readyz", b.admin);
    eventually("B ready", || async {
        get(&readyz, &[]).await.status == StatusCode::OK
    })
    .await;
    let before = backend.hits();
    for id in 1..=3 {
        for path in [format!("/pages/{id}"), format!("/hot/{id}")] {
            let got = get(&b.url(&path), &[]).await;
            assert!(
                got.cache_status().contains("detail=memory"),
                "{path}: {}",
                got.cache_status()
            );
        }
    }
    let cold = get(&b.url("/pages/9"), &[]).await;
    assert!(
        cold.cache_status().contains("detail=redis"),
        "{}",
        cold.cache_status()
    );
    assert_eq!(backend.hits(), before);
}
