//! Adopting sidecache safely and proving its worth: the offload report
//! (what the cache saved the backend), rollout by share of users, and
//! consistency sampling.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::*;

const SHOP: &str = r#"
upstream: { url: UPSTREAM }
admin: { token: "t" }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
    invalidate_on: ["PUT /products/{id}"]
  - name: cart
    match: { path: "/carts/{id}" }
    cache: false
"#;

/// The report's saved requests equal the requests answered from the cache
/// (`sidecache_requests_total` hits), with reads and writes of other keys
/// going on; `/metrics` carries the same totals; `sidecache report` prints
/// them for one replica and adds up two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offload_report_counts_what_the_cache_answered() {
    let backend = Backend::json(vec![]).await;
    backend.set_delay(Duration::from_millis(20));
    let a = Proxy::start(SHOP, &backend.url(), None).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writes = tokio::spawn({
        let (base, stop) = (a.url(""), stop.clone());
        async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                send(
                    "PUT",
                    &format!("{base}/products/{}", 100 + n % 5),
                    &[],
                    "{}",
                )
                .await;
                get(&format!("{base}/carts/{}", n % 3), &[]).await;
                get(&format!("{base}/products/{}", 100 + n % 5), &[]).await;
                n += 1;
            }
        }
    });
    let reads: Vec<_> = (0..4)
        .map(|c| {
            let base = a.url("");
            tokio::spawn(async move {
                for i in 0..50 {
                    get(&format!("{base}/products/{}", (i + c) % 10), &[]).await;
                }
            })
        })
        .collect();
    for r in reads {
        r.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    writes.await.unwrap();

    let report = |p: &Proxy| {
        let url = format!("http://{}/report", p.admin);
        async move {
            let got = get(&url, &[]).await;
            serde_json::from_slice::<serde_json::Value>(&got.body).unwrap()
        }
    };
    let ra = report(&a).await;
    let product = &ra["rules"][0];
    assert_eq!(product["rule"], "product");
    let saved = product["saved_requests"].as_u64().unwrap();
    let mut from_cache = 0;
    for outcome in ["hit-memory", "hit-redis", "stale", "collapsed"] {
        let labels = format!(r#"rule="product",outcome="{outcome}""#);
        from_cache += metric_sum(&a, "sidecache_requests_total", &labels).await;
    }
    assert!(saved > 150, "{ra}");
    assert_eq!(saved, from_cache, "{ra}");
    let misses = metric_sum(
        &a,
        "sidecache_requests_total",
        r#"rule="product",outcome="miss""#,
    )
    .await;
    assert_eq!(product["requests"].as_u64().unwrap(), from_cache + misses);
    assert!(
        product["saved_bytes"].as_u64().unwrap() > saved * 10,
        "{ra}"
    );
    // Misses took the backend's 20 ms at least.
    assert!(product["backend_ms"].as_f64().unwrap() >= 20.0, "{ra}");
    let seconds = product["saved_seconds"].as_f64().unwrap();
    assert!(seconds >= saved as f64 * 0.020 * 0.9, "{ra}");
    let cart = &ra["rules"][1];
    assert_eq!(
        (cart["rule"].as_str(), cart["saved_requests"].as_u64()),
        (Some("cart"), Some(0))
    );
    // The metrics get the same totals within a second.
    eventually("the metrics have the report's totals", || async {
        metric_sum(
            &a,
            "sidecache_backend_saved_requests_total",
            r#"rule="product""#,
        )
        .await
            == saved
    })
    .await;

    // A second replica (its metrics would mix with A's in this process).
    let b = Proxy::start(SHOP, &backend.url(), None).await;
    for i in 0..5 {
        get(&b.url(&format!("/products/{i}")), &[]).await;
        get(&b.url(&format!("/products/{i}")), &[]).await;
    }

    let cli = |admins: Vec<String>| async move {
        let out = report_command(admins).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let one = cli(vec![format!("http://{}", a.admin)]).await;
    let row = |table: &str, rule: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(rule))
            .unwrap_or_else(|| panic!("no {rule} row:\n{table}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row(&one, "product")[2], saved.to_string(), "{one}");
    assert!(one.contains("1 replica;"), "{one}");
    let two = cli(vec![a.admin.to_string(), format!("http://{}/", b.admin)]).await;
    assert_eq!(row(&two, "product")[2], (saved + 5).to_string(), "{two}");
    assert!(two.contains("2 replicas"), "{two}");

    // A replica that does not answer is named, with a failing exit.
    let out = report_command(vec![format!("http://127.0.0.1:{}", free_port())]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer"));
}

/// `sidecache report --admin A --admin B ...`, run to its end.
async fn report_command(admins: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sidecache"));
        cmd.arg("report");
        for a in &admins {
            cmd.args(["--admin", a]);
        }
        cmd.output().unwrap()
    })
    .await
    .unwrap()
}
