//! L2 in a real redis-server: shared between replicas, robust against
//! garbage values and a Redis that dies mid-run.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
redis: { url: "REDIS", key_prefix: "sc:", timeout: 100ms }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
"#;

/// A miss on A stores in Redis; B answers it from Redis and fills its own
/// L1, so B's next answer comes from memory. The backend is asked once.
#[tokio::test]
async fn two_replicas_share_l2() {
    let redis = Redis::start();
    let backend = Backend::json(vec![]).await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let first = get(&a.url("/products/5"), &[]).await;
    assert!(first.cache_status().contains("stored"));
    eventually("entry in redis", || async {
        redis_has(&redis, "sc:{product:5}").await
    })
    .await;
    let from_l2 = get(&b.url("/products/5"), &[]).await;
    assert!(
        from_l2.cache_status().contains("hit") && from_l2.cache_status().contains("detail=redis"),
        "{}",
        from_l2.cache_status()
    );
    assert_eq!(from_l2.body, first.body);
    // The store's script was new to Redis (NOSCRIPT, then sent whole):
    // expected, so not counted as a Redis error.
    assert_eq!(
        metric_sum_or_none(&a, sidecache::metrics::REDIS_ERRORS, "").await,
        None,
        "a script Redis did not know yet counted as an error"
    );
    let from_l1 = get(&b.url("/products/5"), &[]).await;
    assert!(
        from_l1.cache_status().contains("detail=memory"),
        "{}",
        from_l1.cache_status()
    );
    assert_eq!(backend.hits(), 1);
    // The TTL in Redis is the entry's.
    let mut c = redis.conn().await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg("sc:{product:5}")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(pttl > 3_500_000 && pttl <= 3_600_000, "pttl {pttl}");
}

/// A value in Redis that is not a valid entry is a miss, never an error.
#[tokio::test]
async fn garbage_in_redis_is_a_miss() {
    let redis = Redis::start();
    let backend = Backend::json(vec![]).await;
    let proxy = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let mut c = redis.conn().await;
    for (i, junk) in [
        &b"not an entry"[..],
        b"SC\x01\x00\x00",
        b"SC\x09garbage",
        b"",
    ]
    .iter()
    .enumerate()
    {
        let key = format!("sc:{{product:{i}}}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(*junk)
            .query_async(&mut c)
            .await
            .unwrap();
        let res = get(&proxy.url(&format!("/products/{i}")), &[]).await;
        assert_eq!(res.status, StatusCode::OK);
        assert!(
            !res.is_hit(),
            "garbage served as a hit: {}",
            res.cache_status()
        );
    }
    // A wrong type under the key (a list) is a miss too.
    let _: () = redis::cmd("RPUSH")
        .arg("sc:{product:9}")
        .arg("x")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        get(&proxy.url("/products/9"), &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(backend.hits(), 5);
}

/// Killing Redis during a run of 3,000 requests fails none of them; the proxy goes on
/// from L1 and the backend, and uses Redis again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run() {
    let mut redis = Redis::start_tcp();
    let backend = Backend::json(vec![]).await;
    let proxy = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let mut failures = 0;
    for i in 0..3000 {
        if i == 1000 {
            redis.kill();
        }
        let res = get(&proxy.url(&format!("/products/{}", i % 50)), &[]).await;
        if res.status != StatusCode::OK {
            failures += 1;
        }
    }
    assert_eq!(failures, 0);
    redis.restart();
    // New entries reach Redis again without restarting the proxy.
    let mut n = 1000;
    eventually("L2 used again", || {
        n += 1;
        let url = proxy.url(&format!("/products/{n}"));
        let redis = &redis;
        let key = format!("sc:{{product:{n}}}");
        async move {
            get(&url, &[]).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            redis_has(redis, &key).await
        }
    })
    .await;
}

/// A Redis that stops answering (CLIENT PAUSE) costs each request at most
/// about its timeout, and fails none; once it answers again it is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_redis_never_fails_a_request() {
    let redis = Redis::start();
    let backend = Backend::json(vec![]).await;
    let proxy = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    get(&proxy.url("/products/1"), &[]).await;
    eventually("entry in redis", || async {
        redis_has(&redis, "sc:{product:1}").await
    })
    .await;
    let mut c = redis.conn().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("ALL")
        .query_async(&mut c)
        .await
        .unwrap();
    for i in 0..5 {
        // L1 still answers product 1; the others need L2 (paused) and the backend.
        let res = get(&proxy.url(&format!("/products/{}", i + 1)), &[]).await;
        assert_eq!(res.status, StatusCode::OK);
    }
    // Their L2 lookups gave up at the timeout instead of waiting out the
    // pause (a lookup that waited would have been answered, not failed).
    let text = get(&format!("http://{}/metrics", proxy.admin), &[]).await;
    let failed = String::from_utf8_lossy(&text.body)
        .lines()
        .find_map(|l| l.strip_prefix(r#"sidecache_redis_errors_total{command="GET"} "#))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(failed >= 1, "no L2 lookup gave up on the paused Redis");
    let hit = get(&proxy.url("/products/1"), &[]).await;
    assert!(
        hit.is_hit() && hit.cache_status().contains("detail=memory"),
        "{}",
        hit.cache_status()
    );
}

/// After a few timeouts the breaker stops asking a paused Redis, so the
/// rest of the requests pay no Redis timeout at all; once Redis answers
/// again, L2 is used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_stops_waiting_on_dead_redis() {
    let redis = Redis::start();
    let backend = Backend::json(vec![]).await;
    let proxy = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    get(&proxy.url("/products/0"), &[]).await;
    eventually("redis in use", || async {
        redis_has(&redis, "sc:{product:0}").await
    })
    .await;
    // GETs actually sent to Redis (a command the breaker skips is not).
    let sent = || entry_read_round_trips(&proxy);
    let before = sent().await;
    assert!(before >= 1, "the first lookup asked Redis");
    let mut c = redis.conn().await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("ALL")
        .query_async(&mut c)
        .await
        .unwrap();
    for i in 1..=40 {
        // Each is an L1 miss that would ask Redis first (100 ms timeout).
        let res = get(&proxy.url(&format!("/products/{i}")), &[]).await;
        assert_eq!(res.status, StatusCode::OK);
    }
    // Without the breaker all 40 would wait on Redis; with it, the first
    // few do, then one probe a second.
    let waited = sent().await - before;
    assert!(
        (1..=10).contains(&waited),
        "{waited} of 40 lookups waited on the paused Redis"
    );
    let ready = get(&format!("http://{}/readyz", proxy.admin), &[]).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert!(
        String::from_utf8_lossy(&ready.body).contains("\"redis\":\"degraded\""),
        "{:?}",
        ready.body
    );
    eventually("L2 used again after the pause", || async {
        get(&proxy.url("/products/999"), &[]).await;
        // While the pause lasts the test's own EXISTS times out: not yet.
        let mut c = redis.conn().await;
        redis::cmd("EXISTS")
            .arg("sc:{product:999}")
            .query_async::<u64>(&mut c)
            .await
            .is_ok_and(|n| n > 0)
    })
    .await;
}

/// `Cache-Status` says `stored` only for an answer a tier can keep: with
/// Redis gone, a rule kept in Redis alone says why it is not stored, a
/// rule with L1 in front still stores (in memory), and the Redis write it
/// could not make is counted.
#[tokio::test]
async fn stored_only_when_a_tier_takes_it() {
    const TIERS: &str = r#"
upstream: { url: UPSTREAM }
redis: { url: "REDIS", key_prefix: "st:", timeout: 100ms }
rules:
  - name: shared
    match: { path: "/shared/{id}" }
    key: "shared:{id}"
    ttl: 1h
    tier: redis
  - name: both
    match: { path: "/both/{id}" }
    key: "both:{id}"
    ttl: 1h
"#;
    let mut redis = Redis::start_tcp();
    let backend = Backend::json(vec![]).await;
    let a = Proxy::start(TIERS, &backend.url(), Some(&redis.url())).await;
    let up = get(&a.url("/shared/1"), &[]).await;
    assert!(
        up.cache_status().contains("stored"),
        "{}",
        up.cache_status()
    );
    redis.kill();
    eventually("Redis seen down", || async {
        a.app.redis_state() == "degraded"
    })
    .await;
    let shared = get(&a.url("/shared/2"), &[]).await;
    assert!(
        !shared.cache_status().contains("stored")
            && shared.cache_status().contains("detail=tier-down"),
        "{}",
        shared.cache_status()
    );
    let both = get(&a.url("/both/2"), &[]).await;
    assert!(
        both.cache_status().contains("stored"),
        "{}",
        both.cache_status()
    );
    await_hit(&a.url("/both/2"), &[]).await;
    eventually("the failed Redis write is counted", || async {
        let text = get(&format!("http://{}/metrics", a.admin), &[]).await;
        String::from_utf8_lossy(&text.body)
            .lines()
            .any(|l| l.starts_with("sidecache_store_refused_total{reason=\"l2-failed\"}"))
    })
    .await;
}

/// L2 over TLS (`rediss://`), checked against a configured CA: a miss on A
/// is a Redis hit on B, and purges reach B through the TLS connection.
#[tokio::test]
async fn redis_over_tls_with_a_configured_ca() {
    let redis = Redis::start_tls();
    let backend = Backend::json(vec![]).await;
    let rules = RULES.replace(
        "redis: { url: \"REDIS\", key_prefix: \"sc:\", timeout: 100ms }",
        &format!(
            "redis: {{ url: \"REDIS\", key_prefix: \"sc:\", timeout: 1s, ca: \"{}\" }}",
            redis.ca().display()
        ),
    );
    assert!(rules.contains("ca:"), "{rules}");
    let a = Proxy::start(&rules, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(&rules, &backend.url(), Some(&redis.url())).await;
    assert!(
        get(&a.url("/products/7"), &[])
            .await
            .cache_status()
            .contains("stored")
    );
    eventually("stored in Redis", || redis_has(&redis, "sc:{product:7}")).await;
    let from_l2 = get(&b.url("/products/7"), &[]).await;
    assert!(
        from_l2.cache_status().contains("detail=redis"),
        "{}",
        from_l2.cache_status()
    );
    assert_eq!(backend.hits(), 1);
    assert_eq!(b.app.redis_state(), "up");

    // A server whose certificate another CA signed is not trusted: Redis
    // stays unused, and requests are still answered.
    let other = Redis::start_tls();
    let wrong = rules.replace(
        &redis.ca().display().to_string(),
        &other.ca().display().to_string(),
    );
    let c = Proxy::start(&wrong, &backend.url(), Some(&redis.url())).await;
    eventually("the untrusted Redis is degraded", || async {
        c.app.redis_state() == "degraded"
    })
    .await;
    let got = get(&c.url("/products/7"), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(
        !got.cache_status().contains("detail=redis"),
        "{}",
        got.cache_status()
    );
}

/// Concurrent L2 hits of different keys share round trips (their reads go
/// together), and each still gets its own entry; a key holding a list in
/// the same round trip is a miss for that request alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_l2_reads_share_round_trips() {
    let redis = Redis::start();
    let backend = Backend::json(vec![]).await;
    // B reads each product once, from Redis; a longer timeout, since a
    // gathered read carries many keys.
    let rules = RULES.replace("timeout: 100ms", "timeout: 500ms");
    let a = Proxy::start(&rules, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(&rules, &backend.url(), Some(&redis.url())).await;
    let mut bodies = Vec::new();
    for i in 0..60 {
        bodies.push(get(&a.url(&format!("/products/{i}")), &[]).await.body);
    }
    eventually("the 60 entries are in Redis", || async {
        let mut c = redis.conn().await;
        let n: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
        n >= 60
    })
    .await;
    let mut c = redis.conn().await;
    let _: () = redis::cmd("RPUSH")
        .arg("sc:{product:odd}")
        .arg("x")
        .query_async(&mut c)
        .await
        .unwrap();
    let before = entry_read_round_trips(&b).await;
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let url = b.url(&format!("/products/{i}"));
            tokio::spawn(async move { get(&url, &[]).await })
        })
        .chain(std::iter::once({
            let url = b.url("/products/odd");
            tokio::spawn(async move { get(&url, &[]).await })
        }))
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let odd = answers.pop().unwrap();
    assert_eq!(odd.status, StatusCode::OK);
    assert!(!odd.is_hit(), "a list served as an entry");
    for (i, got) in answers.iter().enumerate() {
        assert!(
            got.cache_status().contains("detail=redis"),
            "{i}: {}",
            got.cache_status()
        );
        assert_eq!(got.body, bodies[i], "product {i} got another's entry");
    }
    let used = entry_read_round_trips(&b).await - before;
    // Two round trips in flight, each taking what queued meanwhile: 5 to 7
    // were seen; one a read (61) would be no sharing at all.
    assert!(
        (1..=20).contains(&used),
        "61 concurrent reads took {used} round trips"
    );
}

/// An L1 hit makes no Redis round trip: its purge check is local. Over 200
/// L1 hits the replica sends Redis no entry read and no tag-time read, and
/// nothing but what its once-a-second heartbeat sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l1_hit_makes_no_redis_round_trip() {
    let redis = Redis::start();
    let backend = Backend::json(vec![]).await;
    let proxy = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    await_hit(&proxy.url("/products/1"), &[]).await;
    let sent = |command: &'static str| {
        let proxy = &proxy;
        async move {
            metric_sum_or_none(
                proxy,
                "sidecache_redis_duration_seconds_count",
                &format!("command=\"{command}\""),
            )
            .await
            .unwrap_or(0)
        }
    };
    let all = || metric_sum(&proxy, "sidecache_redis_duration_seconds_count", "");
    let (gets, mgets, before) = (sent("GET").await, sent("MGET").await, all().await);
    assert!(before > 0, "the replica did talk to Redis");
    let start = std::time::Instant::now();
    for _ in 0..200 {
        let hit = get(&proxy.url("/products/1"), &[]).await;
        assert!(hit.cache_status().contains("detail=memory"));
    }
    let seconds = start.elapsed().as_secs();
    assert_eq!(
        sent("GET").await,
        gets,
        "an L1 hit read an entry from Redis"
    );
    assert_eq!(sent("MGET").await, mgets, "an L1 hit read tag times");
    // The heartbeat's few commands a second, at most.
    let others = all().await - before;
    assert!(
        others <= 4 * (seconds + 1),
        "{others} round trips in {seconds} s of 200 hits"
    );
}
