//! Purge times Redis loses (an eviction under `maxmemory`, a `FLUSHALL` of
//! one cluster master) never bring back a purged entry: the heartbeat
//! notices the loss and raises a floor below which no replica, not even one
//! started afterwards, serves an entry.

mod support;

use bytes::Bytes;
use http::StatusCode;
use support::cluster::{Cluster, cli};
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
admin: { token: "t" }
redis: { url: "REDIS", key_prefix: "lost:" }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    tier: redis
    ttl: 1h
    tags: ["product:{id}"]
"#;

/// Caches products 1..=n through `proxy`, then purges their tags: each old
/// entry stays in Redis, refused by its tag's purge time alone. Answers
/// the old bodies.
async fn cache_then_purge_tags(proxy: &Proxy, n: u64) -> Vec<Bytes> {
    let mut old = Vec::new();
    for id in 1..=n {
        let url = proxy.url(&format!("/products/{id}"));
        get(&url, &[]).await;
        old.push(await_hit(&url, &[]).await.body);
    }
    let tags: Vec<String> = (1..=n).map(|id| format!("\"product:{id}\"")).collect();
    let body = format!("{{\"tags\": [{}]}}", tags.join(", "));
    let res = admin_purge(proxy, &body, Some("t")).await;
    assert_eq!(res.status, StatusCode::OK);
    old
}

/// The Redis keys of the products' entries (not their purge times).
async fn entry_keys(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    redis::cmd("KEYS")
        .arg("lost:*product:*")
        .query_async::<Vec<String>>(conn)
        .await
        .unwrap()
        .into_iter()
        .filter(|k| !k.contains('#'))
        .collect()
}

/// How many of products 1..=n `proxy` answers with the old body.
async fn served_old(proxy: &Proxy, old: &[Bytes]) -> usize {
    let mut n = 0;
    for (i, body) in old.iter().enumerate() {
        let got = get(&proxy.url(&format!("/products/{}", i + 1)), &[]).await;
        n += usize::from(got.body == *body);
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicting_redis_never_brings_back_a_purged_entry() {
    let redis = Redis::start();
    let backend = Backend::counting().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let old = cache_then_purge_tags(&a, 30).await;
    let mut conn = redis.conn().await;
    let entries = entry_keys(&mut conn).await;
    assert_eq!(entries.len(), 30, "{entries:?}");
    let floor_before = a.app.invalidator().floor();

    // Redis as caches run it: full, evicting the least recently used.
    // The entries are read all along; the purge times are not.
    let used: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .unwrap();
    let used: u64 = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    for (name, value) in [
        ("maxmemory", (used + (2 << 20)).to_string()),
        ("maxmemory-policy", "allkeys-lru".to_owned()),
        ("maxmemory-samples", "10".to_owned()),
    ] {
        let () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let junk = vec![b'x'; 16 * 1024];
    let lost = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let mut gone = 0;
            for id in 1..=30 {
                let n: u64 = redis::cmd("EXISTS")
                    .arg(format!("lost:#tag:product:{id}"))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                gone += usize::from(n == 0);
            }
            gone
        }
    };
    let mut i = 0;
    while lost(&mut conn).await == 0 {
        assert!(i < 20_000, "no purge time was evicted");
        for k in &entries {
            let _: Option<Vec<u8>> = redis::cmd("GET")
                .arg(k)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        for _ in 0..20 {
            i += 1;
            let () = redis::cmd("SET")
                .arg(format!("junk:{i}"))
                .arg(&junk)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        !entry_keys(&mut conn).await.is_empty(),
        "every entry was evicted too"
    );

    // The replica that saw the evictions raises the floor; a replica
    // started afterwards takes it up and serves none of the old entries.
    eventually("the floor rises", || async {
        a.app.invalidator().floor() > floor_before
    })
    .await;
    let c = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    assert_eq!(served_old(&c, &old).await, 0);
    assert_eq!(served_old(&a, &old).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_cluster_master_never_brings_back_a_purged_entry() {
    let cluster = tokio::task::block_in_place(Cluster::start);
    let backend = Backend::counting().await;
    let yaml = RULES.replace(
        "{ url: \"REDIS\", key_prefix: \"lost:\" }",
        &format!(
            "{{ cluster: {}, key_prefix: \"lost:\" }}",
            cluster.seeds_yaml()
        ),
    );
    let a = Proxy::start(&yaml, &backend.url(), None).await;
    let b = Proxy::start(&yaml, &backend.url(), None).await;
    for p in [&a, &b] {
        eventually("the replica read every master's mark", || async {
            p.app.invalidator().knows_mark() && p.app.invalidator().clock_synced()
        })
        .await;
    }
    let old = cache_then_purge_tags(&a, 30).await;

    // Flush a master that holds purge times of entries kept elsewhere.
    let master = cluster.master_of("lost:#tag:product:1");
    let elsewhere = (1..=30)
        .filter(|id| cluster.master_of(&format!("lost:#tag:product:{id}")) == master)
        .filter(|id| cluster.master_of(&format!("lost:{{product:{id}}}")) != master)
        .count();
    assert!(
        elsewhere > 0,
        "no purge time on {master} guards an entry elsewhere"
    );
    assert_eq!(cli(master, &["FLUSHALL"]), "OK");

    let c = Proxy::start(&yaml, &backend.url(), None).await;
    eventually("the new replica read the marks", || async {
        c.app.invalidator().knows_mark()
    })
    .await;
    assert_eq!(served_old(&c, &old).await, 0);
    assert_eq!(served_old(&b, &old).await, 0);
}
