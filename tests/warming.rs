//! Warming: `refresh_ahead` keeps a hot key with a short TTL from ever
//! expiring into a miss under steady load, on one replica and, with
//! `collapse: global`, with one refresh across replicas.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
redis: { url: "REDIS" }
rules:
  - name: hot
    match: { path: "/hot/{id}" }
    key: "hot:{id}"
    ttl: 2s
    stale: never
    tier: TIER
    collapse: COLLAPSE
    refresh_ahead: 10%
"#;

/// Steady load on `proxies` for `run`: 4 clients each, one GET every
/// 10 ms. Answers how many answers were not hits (after the first fill).
async fn steady(proxies: &[&Proxy], run: Duration) -> (usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let (served, not_hits) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for p in proxies {
        for _ in 0..4 {
            let (url, stop) = (p.url("/hot/1"), stop.clone());
            let (served, not_hits) = (served.clone(), not_hits.clone());
            clients.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let got = get(&url, &[]).await;
                    served.fetch_add(1, Ordering::Relaxed);
                    if !got.is_hit() {
                        not_hits.fetch_add(1, Ordering::Relaxed);
                        eprintln!("not a hit: {}", got.cache_status());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }));
        }
    }
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    (
        served.load(Ordering::Relaxed),
        not_hits.load(Ordering::Relaxed),
    )
}

/// A hot key with a 2 s TTL under steady load for 20 s: every answer is a
/// hit, and the backend (100 ms per answer) sees about one request per TTL
/// period (a refresh once the entry is in its last 10 %, about every 1.8 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_keeps_a_hot_key_from_missing() {
    let backend = Backend::json(vec![]).await;
    backend.set_delay(Duration::from_millis(100));
    let yaml = RULES
        .replace("redis: { url: \"REDIS\" }\n", "")
        .replace("TIER", "memory")
        .replace("COLLAPSE", "local");
    let proxy = Proxy::start(&yaml, &backend.url(), None).await;
    assert!(!get(&proxy.url("/hot/1"), &[]).await.is_hit());
    let start = Instant::now();
    let (served, not_hits) = steady(&[&proxy], Duration::from_secs(20)).await;
    let refreshes = backend.hits() - 1;
    let periods = start.elapsed().as_secs_f64() / 2.0;
    eprintln!("{served} answers, {refreshes} refreshes over {periods:.1} TTL periods");
    assert_eq!(
        not_hits, 0,
        "{not_hits} of {served} answers waited on the backend"
    );
    assert!(
        (periods * 0.8..=periods * 1.5).contains(&(refreshes as f64)),
        "{refreshes} refreshes over {periods:.1} TTL periods"
    );
}

/// Two replicas sharing Redis with `collapse: global`: still no miss, and
/// one refresh per period across both (a replica that finds the other's
/// refresh in Redis takes it), where each refreshing on its own would
/// double it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_with_global_collapse_refreshes_once_across_replicas() {
    let redis = Redis::start();
    let backend = Backend::json(vec![]).await;
    backend.set_delay(Duration::from_millis(100));
    let yaml = RULES.replace("TIER", "both").replace("COLLAPSE", "global");
    let a = Proxy::start(&yaml, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(&yaml, &backend.url(), Some(&redis.url())).await;
    assert!(!get(&a.url("/hot/1"), &[]).await.is_hit());
    let url = b.url("/hot/1");
    eventually("b has it from Redis", || async {
        get(&url, &[]).await.is_hit()
    })
    .await;
    let start = Instant::now();
    let (served, not_hits) = steady(&[&a, &b], Duration::from_secs(10)).await;
    let refreshes = backend.hits() - 1;
    let periods = start.elapsed().as_secs_f64() / 2.0;
    eprintln!("{served} answers, {refreshes} refreshes over {periods:.1} TTL periods");
    assert_eq!(
        not_hits, 0,
        "{not_hits} of {served} answers waited on the backend"
    );
    assert!(
        (refreshes as f64) <= periods * 1.5,
        "{refreshes} refreshes over {periods:.1} TTL periods: the replicas refreshed each on their own"
    );
}
