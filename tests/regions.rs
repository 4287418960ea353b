//! Several regions, each with its own `redis-server` and replicas, joined
//! by links that delay every byte 40 ms each way (a relay in user space)
//! and can be cut: a purge made in one region reaches every replica of
//! every region, in order, through cuts and a relayer's death, and
//! `repeat_after` undoes a refill from a lagging database replica.

mod support;

use std::collections::HashMap;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::regions::{World, readyz, region_state, relayer, wait_relaying};
use support::*;

const LINK: Duration = Duration::from_millis(40);

/// GETs `path` on `proxy` until it is a hit; answers the body served.
async fn warm(proxy: &Proxy, path: &str) -> Bytes {
    let url = proxy.url(path);
    for _ in 0..20 {
        let got = get(&url, &[]).await;
        if got.is_hit() {
            return got.body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{url} is not cached");
}

/// Waits (up to `limit`) until `proxy` no longer serves `old` at `path`.
/// (A refused entry is refetched: a replica of the same region may then
/// serve the new answer from Redis, so the body tells, not the status.)
async fn until_replaced(proxy: &Proxy, path: &str, old: &Bytes, limit: Duration) {
    let url = proxy.url(path);
    eventually_within(
        limit,
        &format!("{url} stops serving the purged answer"),
        || async { get(&url, &[]).await.body != *old },
    )
    .await;
}

/// How many purges at `admin`'s `/purges` came with `source`.
async fn purges_from(admin: SocketAddr, source: &str) -> usize {
    let got = get(
        &format!("http://{admin}/purges"),
        &[("authorization", "Bearer t")],
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    v["purges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"] == source)
        .count()
}

/// The sum of `metric{labels...}` at the admin listener `admin`.
async fn metric_at(admin: SocketAddr, metric: &str, labels: &str) -> f64 {
    let text = get(&format!("http://{admin}/metrics"), &[]).await;
    let prefix = format!("{metric}{{{labels}");
    String::from_utf8_lossy(&text.body)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The keys of the purges at `admin`'s `/purges` with `source`, oldest first.
async fn purged_keys(admin: SocketAddr, source: &str) -> Vec<String> {
    let got = get(
        &format!("http://{admin}/purges"),
        &[("authorization", "Bearer t")],
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    let mut keys: Vec<String> = v["purges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"] == source)
        .flat_map(|p| p["keys"].as_array().unwrap().clone())
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    keys.reverse();
    keys
}

/// A tag purge made in one region is refused by all six replicas of three
/// regions; each replica's delay is measured and printed (one link delay
/// plus a few milliseconds for the others), not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tag_purge_reaches_every_replica_of_every_region() {
    let backend = Backend::json(vec![]).await;
    let world = World::start(&["eu", "us", "ap"], 2, LINK, &backend.url(), "").await;
    world.wait_relaying().await;
    let mut old = Vec::new();
    for region in &world.regions {
        for p in &region.replicas {
            old.push(warm(p, "/products/1").await);
        }
    }
    let origin = &world.regions[0].replicas[0];
    // A first purge opens the links' connections; the second, once the
    // relayers wait for more, is measured.
    admin_purge(origin, r#"{"tags": ["product:0"]}"#, Some("t")).await;
    for region in &world.regions[1..] {
        eventually("the first purge is relayed", || async {
            let mut n = 0;
            for p in &region.replicas {
                n += purges_from(p.admin, "region").await;
            }
            n == 1
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let answer = admin_purge(origin, r#"{"tags": ["product:1"]}"#, Some("t")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let mut waits = Vec::new();
    let mut old = old.into_iter();
    for region in &world.regions {
        for (i, p) in region.replicas.iter().enumerate() {
            let url = p.url("/products/1");
            let name = format!("{}/{i}", region.name);
            let old = old.next().unwrap();
            // Refused once a request no longer gets the old answer (a
            // replica of the same region may get the refill from Redis).
            waits.push(tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(10);
                while get(&url, &[]).await.body == old {
                    assert!(
                        Instant::now() < deadline,
                        "{name} still serves the purged entry"
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                (name, start.elapsed())
            }));
        }
    }
    for w in waits {
        let (name, took) = w.await.unwrap();
        eprintln!("the purge was refused by {name} after {took:?}");
    }
    // The other regions applied each purge as a relayed one, once; their
    // other replica heard it on the region's bus.
    for region in &world.regions[1..] {
        let mut relayed = 0;
        for p in &region.replicas {
            relayed += purges_from(p.admin, "region").await;
        }
        assert_eq!(
            relayed, 2,
            "{} applied eu's two purges {relayed} times",
            region.name
        );
    }
}

/// A link cut for seconds delays purges and loses none: the cut-off region
/// applies every purge made meanwhile once the link is back, in order; the
/// third region gets them at once; the origin sees the lag grow and the
/// link down, and stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_link_delays_purges_in_order_and_loses_none() {
    let backend = Backend::json(vec![]).await;
    let world = World::start(&["eu", "us", "ap"], 2, LINK, &backend.url(), "").await;
    world.wait_relaying().await;
    let keys: Vec<String> = (100..115).map(|i| format!("/products/{i}")).collect();
    let (eu, us, ap) = (&world.regions[0], &world.regions[1], &world.regions[2]);
    // What each region's replicas serve (one L2 per region, so both alike).
    let mut old: Vec<[Bytes; 2]> = Vec::new();
    for path in &keys {
        let served_us = warm(&us.replicas[0], path).await;
        assert_eq!(warm(&us.replicas[1], path).await, served_us);
        old.push([served_us, warm(&ap.replicas[0], path).await]);
    }
    world.cut(0, 1);
    let cut_at = Instant::now();
    eventually_within(
        Duration::from_secs(10),
        "eu sees its link to us down",
        || async { region_state(eu.replicas[0].admin, "us").await["link"] == "down" },
    )
    .await;
    for i in 100..115 {
        let body = format!(r#"{{"keys": ["product:{i}"]}}"#);
        let answer = admin_purge(&eu.replicas[0], &body, Some("t")).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    // The region still linked gets every purge.
    for (path, old) in keys.iter().zip(&old) {
        until_replaced(&ap.replicas[0], path, &old[1], Duration::from_secs(5)).await;
    }
    // The cut-off one does not, yet.
    for p in &us.replicas {
        assert_eq!(get(&p.url("/products/100"), &[]).await.body, old[0][0]);
    }
    // The origin sees the lag grow, the link down, and stays ready.
    eventually_within(Duration::from_secs(10), "eu's lag for us grows", || async {
        region_state(eu.replicas[0].admin, "us").await["lag_seconds"]
            .as_f64()
            .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    let ready = get(&format!("http://{}/readyz", eu.replicas[0].admin), &[]).await;
    assert_eq!(ready.status, StatusCode::OK);
    // Several seconds in all.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(cut_at.elapsed())).await;
    world.restore(0, 1);
    for p in &us.replicas {
        for (path, old) in keys.iter().zip(&old) {
            until_replaced(p, path, &old[0], Duration::from_secs(15)).await;
        }
    }
    // In the order they were made.
    let admins: Vec<_> = us.replicas.iter().map(|p| p.admin).collect();
    let at = relayer(&admins, "eu")
        .await
        .expect("a replica of us relays eu");
    let expected: Vec<String> = (100..115).map(|i| format!("product:{i}")).collect();
    assert_eq!(purged_keys(admins[at], "region").await, expected);
    eventually_within(
        Duration::from_secs(10),
        "eu's lag for us is gone",
        || async {
            let s = region_state(eu.replicas[0].admin, "us").await;
            s["lag_seconds"] == 0.0 && s["link"] == "up"
        },
    )
    .await;
}

/// The replica relaying a region's purges is killed (SIGKILL) while purges
/// flow: the other replica takes the lease over, and every purge is
/// applied; none is applied again after it caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_relayer_is_replaced_and_nothing_is_lost() {
    let backend = Backend::json(vec![]).await;
    let (eu_redis, us_redis) = (Redis::start_tcp(), Redis::start_tcp());
    let to_eu =
        support::relay::Relay::start(eu_redis.addr().unwrap(), LINK, support::relay::Delayed::All)
            .await;
    let to_us =
        support::relay::Relay::start(us_redis.addr().unwrap(), LINK, support::relay::Delayed::All)
            .await;
    let eu_yaml = format!(
        "upstream: {{ url: \"{}\" }}\nadmin: {{ token: \"t\" }}\nredis: {{ url: \"{}\", key_prefix: \"rg:\" }}\nregion: eu\nregions:\n  us: {{ redis: \"redis://{}\" }}\n{}",
        backend.url(),
        eu_redis.url(),
        to_us.addr,
        support::regions::RULES
    );
    let eu = Proxy::start(&eu_yaml, &backend.url(), None).await;
    let us_rest = format!(
        "upstream: {{ url: \"{}\" }}\nredis: {{ url: \"{}\", key_prefix: \"rg:\" }}\nregion: us\nregions:\n  eu: {{ redis: \"redis://{}\" }}\n{}",
        backend.url(),
        us_redis.url(),
        to_eu.addr,
        support::regions::RULES
    );
    let mut us = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin) = (free_port(), free_port());
        let path = binary_config(&dir, port, admin, ", token: \"t\"", &us_rest);
        let child = start_binary(&path, admin, &[], &[], std::process::Stdio::null()).await;
        let admin: SocketAddr = ([127, 0, 0, 1], admin).into();
        us.push((child, port, admin, dir));
    }
    let admins: Vec<SocketAddr> = us.iter().map(|u| u.2).collect();
    wait_relaying(&admins, 1).await;
    wait_relaying(&[eu.admin], 1).await;
    let url = |i: usize, path: &str| format!("http://127.0.0.1:{}{path}", us[i].1);
    let keys: Vec<String> = (200..260).map(|i| format!("/products/{i}")).collect();
    for i in 0..2 {
        for path in &keys {
            let u = url(i, path);
            eventually("warmed", || async { get(&u, &[]).await.is_hit() }).await;
        }
    }
    let dead = relayer(&admins, "eu").await.expect("a relayer");
    let alive = 1 - dead;
    let purger = {
        let admin = eu.admin;
        tokio::spawn(async move {
            for i in 200..260 {
                let got = send(
                    "POST",
                    &format!("http://{admin}/purge"),
                    &[("authorization", "Bearer t")],
                    &format!(r#"{{"keys": ["product:{i}"]}}"#),
                )
                .await;
                assert_eq!(got.status, StatusCode::OK);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    eventually("the relayer applied some purges", || async {
        metric_at(
            admins[dead],
            "sidecache_region_purges_total",
            "region=\"eu\"",
        )
        .await
            >= 15.0
    })
    .await;
    let mut child = us.remove(dead).0;
    child.kill().unwrap();
    child.wait().unwrap();
    let alive_idx = if alive > dead { 0 } else { alive };
    let survivor = us[alive_idx].2;
    purger.await.unwrap();
    eventually_within(
        Duration::from_secs(15),
        "the survivor relays eu",
        || async {
            let s = region_state(survivor, "eu").await;
            s["relaying"] == true && s["link"] == "up"
        },
    )
    .await;
    // Caught up: us says (in eu's Redis) it applied eu's log to its last
    // entry. (The lag alone, measured each second, may still be one read
    // before the kill.)
    let mut conn = eu_redis.conn().await;
    let mut info = redis::cmd("XINFO");
    info.arg("STREAM").arg("rg:#region:log");
    let info: HashMap<String, redis::Value> = info.query_async(&mut conn).await.unwrap();
    let last: String =
        redis::FromRedisValue::from_redis_value(info["last-generated-id"].clone()).unwrap();
    eventually_within(Duration::from_secs(15), "us caught up", || {
        let (mut conn, last) = (conn.clone(), last.clone());
        async move {
            let applied: Option<String> = redis::cmd("GET")
                .arg("rg:#region:applied:us")
                .query_async(&mut conn)
                .await
                .unwrap();
            applied.as_deref() == Some(last.as_str())
        }
    })
    .await;
    eventually("eu sees us caught up", || async {
        region_state(eu.admin, "us").await["lag_seconds"] == 0.0
    })
    .await;
    // Every purge reached the survivor, and none comes again afterwards:
    // each key is refused once, then what is stored is served (a purge
    // applied again would bring another answer). The store finishes just
    // after the answer, hence the wait for the hit.
    for path in &keys {
        let u = format!("http://127.0.0.1:{}{path}", us[alive_idx].1);
        let refetched = get(&u, &[]).await;
        assert!(!refetched.is_hit(), "{path} was not purged in us");
        let mut hit = get(&u, &[]).await;
        for _ in 0..100 {
            if hit.is_hit() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            hit = get(&u, &[]).await;
        }
        assert!(hit.is_hit(), "{path} is not stored again");
        // Once hits begin, no purge comes again. (The refetch itself may
        // be fetched once more when its store is refused: a purge time
        // made up while Redis timed out is placed safely late.)
        for _ in 0..3 {
            let again = get(&u, &[]).await;
            assert!(again.is_hit(), "{path} was purged again");
            assert_eq!(again.body, hit.body, "{path} was purged again");
        }
    }
    // Each process's /metrics say the same (eu is the only proxy in this
    // test's process).
    eventually("eu's metrics show us linked and caught up", || async {
        metric_at(
            eu.admin,
            "sidecache_region_link",
            "region=\"us\",state=\"up\"",
        )
        .await
            == 1.0
            && metric_at(
                eu.admin,
                "sidecache_region_purge_lag_seconds",
                "region=\"us\"",
            )
            .await
                == 0.0
    })
    .await;
    assert_eq!(
        metric_at(survivor, "sidecache_region_relaying", "region=\"eu\"").await,
        1.0
    );
    drop(us);
}

/// With `repeat_after`, a purge is applied again in every region: a refill
/// from a database replica that had not seen the write yet (the backend
/// answers the old version until the test lets it catch up) is undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeat_after_undoes_a_refill_from_a_lagging_replica() {
    let caught_up = Arc::new(AtomicBool::new(false));
    let c = caught_up.clone();
    let backend = Backend::start(Duration::ZERO, move |_| {
        let v = if c.load(Ordering::SeqCst) { 2 } else { 1 };
        (
            StatusCode::OK,
            vec![("content-type", "application/json".to_owned())],
            Bytes::from(format!("{{\"price\": {v}}}")),
        )
    })
    .await;
    let world = World::start(
        &["eu", "us"],
        1,
        LINK,
        &backend.url(),
        "invalidation: { repeat_after: 2s }",
    )
    .await;
    world.wait_relaying().await;
    let (eu, us) = (&world.regions[0].replicas[0], &world.regions[1].replicas[0]);
    for p in [eu, us] {
        warm(p, "/products/7").await;
    }
    // The write reached the primary; the replicas the backend reads lag.
    let answer = admin_purge(eu, r#"{"keys": ["product:7"]}"#, Some("t")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let price = |p: &Proxy| {
        let url = p.url("/products/7");
        async move {
            let got = get(&url, &[]).await;
            (
                got.is_hit(),
                String::from_utf8_lossy(&got.body).into_owned(),
            )
        }
    };
    // Both regions refill the old price from the lagging replica.
    for p in [eu, us] {
        let mut refilled = false;
        for _ in 0..500 {
            let (hit, body) = price(p).await;
            if !hit {
                assert!(body.contains("\"price\": 1"), "{body}");
                refilled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(refilled, "the purge did not reach this region");
    }
    assert!(price(eu).await.0, "the old price is cached again");
    caught_up.store(true, Ordering::SeqCst);
    // The repeat, two seconds after the purge, removes it everywhere.
    for p in [eu, us] {
        eventually_within(
            Duration::from_secs(10),
            "the new price is served",
            || async { price(p).await.1.contains("\"price\": 2") },
        )
        .await;
    }
    for p in [eu, us] {
        assert_eq!(purges_from(p.admin, "repeat").await, 1);
    }
}

/// A region cut off for longer than the origin's log keeps purges
/// (`invalidation.region_log: 5`, then 10 purges) cannot know what it
/// missed: when the link is back it purges everything it holds, so even
/// entries no logged purge named are refetched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_that_missed_trimmed_purges_drops_its_cache() {
    let backend = Backend::json(vec![]).await;
    let world = World::start(
        &["eu", "us"],
        2,
        LINK,
        &backend.url(),
        "invalidation: { region_log: 5 }",
    )
    .await;
    world.wait_relaying().await;
    let (eu, us) = (&world.regions[0], &world.regions[1]);
    let held = warm(&us.replicas[0], "/products/999").await;
    for p in &us.replicas {
        assert_eq!(warm(p, "/products/999").await, held);
    }
    world.cut(0, 1);
    eventually_within(
        Duration::from_secs(10),
        "us sees its link to eu down",
        || async {
            let mut down = 0;
            for p in &us.replicas {
                if region_state(p.admin, "eu").await["link"] == "down" {
                    down += 1;
                }
            }
            down == 2
        },
    )
    .await;
    for i in 300..310 {
        let body = format!(r#"{{"keys": ["product:{i}"]}}"#);
        assert_eq!(
            admin_purge(&eu.replicas[0], &body, Some("t")).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        get(&us.replicas[0].url("/products/999"), &[]).await.body,
        held
    );
    world.restore(0, 1);
    for p in &us.replicas {
        until_replaced(p, "/products/999", &held, Duration::from_secs(15)).await;
    }
    let ready = readyz(us.replicas[0].admin).await;
    assert_eq!(ready["region"], "us");
}

/// Every kind of purge made in one region reaches the other: a write's
/// trigger, a write-through, and `PURGE` on the proxy port, while reads of
/// other keys go on in both regions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_and_purge_requests_reach_other_regions() {
    let backend = Backend::json(vec![]).await;
    let world = World::start(&["eu", "us"], 1, LINK, &backend.url(), "").await;
    world.wait_relaying().await;
    let (eu, us) = (&world.regions[0].replicas[0], &world.regions[1].replicas[0]);
    let paths = ["/products/5", "/carts/u1", "/products/6"];
    let mut old = Vec::new();
    for path in paths {
        warm(eu, path).await;
        old.push(warm(us, path).await);
    }
    // Reads of other keys in both regions meanwhile.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic: Vec<_> = [eu.url(""), us.url("")]
        .into_iter()
        .map(|base| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let got = get(&format!("{base}/products/other-{}", i % 20), &[]).await;
                    assert_eq!(got.status, StatusCode::OK);
                }
            })
        })
        .collect();
    let put = send("PUT", &eu.url("/products/5"), &[], "{}").await;
    assert_eq!(put.status, StatusCode::OK);
    let put = send("PUT", &eu.url("/carts/u1"), &[], "{}").await;
    assert_eq!(put.status, StatusCode::OK);
    let purge = send(
        "PURGE",
        &eu.url("/products/6"),
        &[("authorization", "Bearer t")],
        "",
    )
    .await;
    assert!(purge.status.is_success(), "{}", purge.status);
    for (path, old) in paths.iter().zip(&old) {
        until_replaced(us, path, old, Duration::from_secs(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in traffic {
        t.await.unwrap();
    }
}

/// The origin region's Redis is flushed (or replaced by an empty one)
/// while the link to another region is cut, taking purges that region
/// never applied with its log: when the link is back, that region notices
/// its log no longer holds what it applied last, and purges everything it
/// holds, so nothing the lost purges named is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_region_whose_origin_log_was_lost_drops_its_cache() {
    let backend = Backend::json(vec![]).await;
    let world = World::start(&["eu", "us"], 2, LINK, &backend.url(), "").await;
    world.wait_relaying().await;
    let (eu, us) = (&world.regions[0], &world.regions[1]);
    // One purge relayed, so us has applied eu's log up to some entry.
    let body = r#"{"keys": ["product:1"]}"#;
    assert_eq!(
        admin_purge(&eu.replicas[0], body, Some("t")).await.status,
        StatusCode::OK
    );
    eventually_within(Duration::from_secs(10), "us applied eu's purge", || async {
        purges_from(us.replicas[0].admin, "region").await >= 1
    })
    .await;
    let us_conn = us.redis.conn().await;
    // The last entry of eu's log that us applied, as us's Redis notes it
    // (None, or "0-0", when none).
    let seen = || {
        let mut conn = us_conn.clone();
        async move {
            let seen: Option<String> = redis::cmd("GET")
                .arg("rg:#region:seen:eu")
                .query_async(&mut conn)
                .await
                .unwrap();
            seen.filter(|s| s != "0-0")
        }
    };
    eventually("us noted in its own Redis what it applied", || async {
        seen().await.is_some()
    })
    .await;
    let held = warm(&us.replicas[0], "/products/7").await;
    for p in &us.replicas {
        assert_eq!(warm(p, "/products/7").await, held);
    }
    world.cut(0, 1);
    // A purge of product 7 in eu, then eu's Redis loses everything.
    let body = r#"{"keys": ["product:7"]}"#;
    assert_eq!(
        admin_purge(&eu.replicas[0], body, Some("t")).await.status,
        StatusCode::OK
    );
    let mut conn = eu.redis.conn().await;
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    assert_eq!(
        get(&us.replicas[0].url("/products/7"), &[]).await.body,
        held
    );
    world.restore(0, 1);
    for p in &us.replicas {
        until_replaced(p, "/products/7", &held, Duration::from_secs(15)).await;
    }
    // Then us starts over from eu's new log.
    eventually("us starts eu's log anew", || async {
        seen().await.is_none()
    })
    .await;
}
