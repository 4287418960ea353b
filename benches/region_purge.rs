//! Purges across regions, on loopback: each region its own `redis-server`
//! and replicas in this process, the links between regions through a relay
//! that holds every chunk for the set one-way delay (the test support's).
//!
//! - `latency`: three regions of two replicas at 0, 40 and 80 ms one way.
//!   Each round caches one entry in all six replicas, waits a random
//!   0-300 ms (so purges land at any point of the relayers' reads), purges
//!   its tag in one region and polls every replica (every 1 ms) until it no
//!   longer serves the entry. Prints the median and the maximum, over the
//!   rounds, of the time to the farthest replica.
//! - `throughput`: three regions of one replica at 40 ms; tag purges sent
//!   to one region at 250 to 4,000 a second for 10 s each. Prints the rate
//!   made and the farthest region's lag as the origin reports it
//!   (`/readyz`, measured every second) after 5 and 10 s: flat while the
//!   other regions keep up.
//! - `catchup`: two regions of one replica at 40 ms; the link is cut for
//!   30 s while 1,000 purges are made, then restored. Prints the time from
//!   the restore until the cut-off region has applied all of them.
//!
//! Run with:
//!
//!     cargo bench --bench region_purge
//!     cargo bench --bench region_purge -- latency|throughput|catchup

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::regions::{World, region_state};
use support::{Backend, admin_purge, get};

const ROUNDS: usize = 40;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wants = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if wants("latency") {
        for ms in [0, 40, 80] {
            latency(Duration::from_millis(ms)).await;
        }
    }
    if wants("throughput") {
        throughput().await;
    }
    if wants("catchup") {
        catchup().await;
    }
}

/// A small deterministic generator for the random pauses.
fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

async fn latency(delay: Duration) {
    let backend = Backend::json(vec![]).await;
    let world = World::start(&["eu", "us", "ap"], 2, delay, &backend.url(), "").await;
    world.wait_relaying().await;
    let origin = &world.regions[0].replicas[0];
    let replicas: Vec<_> = world.regions.iter().flat_map(|r| &r.replicas).collect();
    let mut seed = 7u64;
    let (mut farthest, mut local) = (Vec::new(), Vec::new());
    for round in 0..=ROUNDS {
        let path = format!("/products/{round}");
        let mut old = Vec::new();
        for p in &replicas {
            let url = p.url(&path);
            loop {
                let got = get(&url, &[]).await;
                if got.is_hit() {
                    old.push(got.body);
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(next(&mut seed) % 300)).await;
        let start = Instant::now();
        let body = format!(r#"{{"tags": ["product:{round}"]}}"#);
        let answer = admin_purge(origin, &body, Some("t")).await;
        assert!(answer.status.is_success());
        let mut waits = Vec::new();
        for (p, old) in replicas.iter().zip(old) {
            let url = p.url(&path);
            waits.push(tokio::spawn(async move {
                while get(&url, &[]).await.body == old {
                    assert!(start.elapsed() < Duration::from_secs(30), "not purged");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                start.elapsed()
            }));
        }
        let mut took = Vec::new();
        for w in waits {
            took.push(w.await.unwrap());
        }
        // The first round opens the links' connections: not counted.
        if round > 0 {
            local.push(took[..2].iter().copied().max().unwrap());
            farthest.push(took.iter().copied().max().unwrap());
        }
    }
    let (lm, _) = stats(&mut local);
    let (fm, fmax) = stats(&mut farthest);
    println!(
        "latency: one-way {:>3} ms: farthest of 6 replicas median {:>6.1} ms, max {:>6.1} ms; origin region median {:>5.1} ms ({ROUNDS} purges)",
        delay.as_millis(),
        ms(fm),
        ms(fmax),
        ms(lm),
    );
}

fn stats(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort_unstable();
    (v[v.len() / 2], v[v.len() - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn throughput() {
    let backend = Backend::json(vec![]).await;
    let delay = Duration::from_millis(40);
    let world = World::start(&["eu", "us", "ap"], 1, delay, &backend.url(), "").await;
    world.wait_relaying().await;
    let origin = world.regions[0].replicas[0].admin;
    let lag = || async {
        let us = region_state(origin, "us").await["lag_seconds"]
            .as_f64()
            .unwrap_or(-1.0);
        let ap = region_state(origin, "ap").await["lag_seconds"]
            .as_f64()
            .unwrap_or(-1.0);
        us.max(ap)
    };
    for rate in [250u64, 500, 1000, 2000, 4000] {
        let made = Arc::new(AtomicU64::new(0));
        let start = tokio::time::Instant::now();
        let mut clients = Vec::new();
        // 8 clients, each sending at its share of the rate for 10 s.
        for c in 0..8u64 {
            let made = made.clone();
            clients.push(tokio::spawn(async move {
                let every = Duration::from_secs_f64(8.0 / rate as f64);
                let mut i = 0u64;
                while start.elapsed() < Duration::from_secs(10) {
                    i += 1;
                    let got = support::send(
                        "POST",
                        &format!("http://{origin}/purge"),
                        &[("authorization", "Bearer t")],
                        &format!(r#"{{"tags": ["t:{rate}:{c}:{i}"]}}"#),
                    )
                    .await;
                    assert!(got.status.is_success());
                    made.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep_until(start + every * i as u32).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let at5 = lag().await;
        for c in clients {
            c.await.unwrap();
        }
        let at10 = lag().await;
        let done = Instant::now();
        support::eventually_within(Duration::from_secs(300), "caught up", || async {
            lag().await == 0.0
        })
        .await;
        println!(
            "throughput: asked {rate:>4}/s, made {:>4}/s; farthest region's lag after 5 s {at5:.1} s, after 10 s {at10:.1} s; back to 0 {:.1} s after the last",
            made.load(Ordering::Relaxed) / 10,
            done.elapsed().as_secs_f64()
        );
    }
}

/// Purges from `eu` applied in this process (only `us` applies them).
async fn relayed(admin: std::net::SocketAddr) -> f64 {
    let text = get(&format!("http://{admin}/metrics"), &[]).await;
    String::from_utf8_lossy(&text.body)
        .lines()
        .filter(|l| l.starts_with("sidecache_region_purges_total{region=\"eu\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn catchup() {
    let backend = Backend::json(vec![]).await;
    let delay = Duration::from_millis(40);
    let world = World::start(&["eu", "us"], 1, delay, &backend.url(), "").await;
    world.wait_relaying().await;
    let (eu, us) = (&world.regions[0].replicas[0], &world.regions[1].replicas[0]);
    world.cut(0, 1);
    let cut = Instant::now();
    let mut clients = Vec::new();
    for c in 0..8 {
        let admin = eu.admin;
        clients.push(tokio::spawn(async move {
            for i in 0..125 {
                let got = support::send(
                    "POST",
                    &format!("http://{admin}/purge"),
                    &[("authorization", "Bearer t")],
                    &format!(r#"{{"keys": ["product:{c}-{i}"]}}"#),
                )
                .await;
                assert!(got.status.is_success());
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let made_in = cut.elapsed();
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(cut.elapsed())).await;
    let before = relayed(us.admin).await;
    world.restore(0, 1);
    let restored = Instant::now();
    let mut relinked = None;
    loop {
        let n = relayed(us.admin).await - before;
        if relinked.is_none() && n > 0.0 {
            relinked = Some(restored.elapsed());
        }
        if n >= 1000.0 {
            break;
        }
        assert!(
            restored.elapsed() < Duration::from_secs(120),
            "not caught up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "catchup: 1,000 purges made in {:.1} s during a 30 s cut; the first applied in the cut-off region {:.2} s after the link came back, all {:.2} s after",
        made_in.as_secs_f64(),
        relinked.unwrap_or_default().as_secs_f64(),
        restored.elapsed().as_secs_f64()
    );
}
