//! `GET /metrics` after known sequences of requests, and `/readyz` with
//! Redis up and then killed.
//!
//! Each proxy records into its own registry, so the counts are exact under
//! any test runner.

mod support;

use http::StatusCode;
use support::*;

const TOKEN: &str = "metrics-token";

/// The rules of the known sequence, in front of `upstream`.
fn config(upstream: &str) -> String {
    format!(
        r#"
upstream: {{ url: "{upstream}", timeout: 2s }}
admin: {{ token: "{TOKEN}" }}
memory: {{ max_size: 64MiB }}
rules:
  - name: m-product
    match: {{ path: "/products/{{id}}" }}
    key: "product:{{id}}"
    ttl: 1h
    tags: ["product:{{id}}"]
  - name: m-inventory
    match: {{ path: "/inventory/{{id}}" }}
    cache: false
"#
    )
}

/// The value of one series (`name{labels}`) in a Prometheus text body.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

async fn scrape(proxy: &Proxy) -> String {
    let res = get(&format!("http://{}/metrics", proxy.admin), &[]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.header("content-type").starts_with("text/plain"));
    String::from_utf8(res.body.to_vec()).unwrap()
}

/// Misses, hits, passes, an error, a tag purge and two reloads (one bad)
/// show up as exact counts under Prometheus names, with the histograms,
/// the L1 gauges and the Redis state beside them.
#[tokio::test]
async fn metrics_count_a_known_sequence() {
    let backend = Backend::json(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidecache.yaml");
    std::fs::write(&file, config(&backend.url())).unwrap();
    let proxy = Proxy::start_file(&file).await;
    // The backend histogram has no rule label: count from here.
    let upstream_before = value(
        &scrape(&proxy).await,
        "sidecache_upstream_duration_seconds_count",
    )
    .unwrap_or(0.0);

    // miss, then two hits from memory.
    assert!(
        get(&proxy.url("/products/1"), &[])
            .await
            .cache_status()
            .contains("stored")
    );
    eventually("the entry is in L1", || async {
        proxy.app.cache().in_l1("product:1").await
    })
    .await;
    assert!(get(&proxy.url("/products/1"), &[]).await.is_hit());
    assert!(get(&proxy.url("/products/1"), &[]).await.is_hit());
    // No rule, and a rule that never caches.
    get(&proxy.url("/about"), &[]).await;
    get(&proxy.url("/inventory/7"), &[]).await;
    // A tag purge, then a miss again.
    let purged = send(
        "POST",
        &format!("http://{}/purge", proxy.admin),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        r#"{"tags": ["product:1"]}"#,
    )
    .await;
    assert_eq!(purged.status, StatusCode::OK);
    assert!(!get(&proxy.url("/products/1"), &[]).await.is_hit());
    // One good reload and one refused.
    let reload = |body: String| {
        let (file, admin) = (file.clone(), proxy.admin);
        async move {
            std::fs::write(&file, body).unwrap();
            send(
                "POST",
                &format!("http://{admin}/reload"),
                &[("authorization", &format!("Bearer {TOKEN}"))],
                "",
            )
            .await
            .status
        }
    };
    assert_eq!(reload(config(&backend.url())).await, StatusCode::OK);
    assert_eq!(
        reload("rules: [oops".to_owned()).await,
        StatusCode::BAD_REQUEST
    );
    // The backend goes away: an error.
    backend.stop();
    let failed = get(&proxy.url("/products/2"), &[]).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY);

    let text = scrape(&proxy).await;
    let count = |s: &str| value(&text, s).unwrap_or(0.0);
    let misses = count(r#"sidecache_requests_total{rule="m-product",outcome="miss"}"#);
    let hits = count(r#"sidecache_requests_total{rule="m-product",outcome="hit-memory"}"#);
    assert_eq!(hits, 2.0, "{text}");
    assert_eq!(misses, 2.0, "{text}");
    assert_eq!(
        count(r#"sidecache_requests_total{rule="m-product",outcome="error"}"#),
        1.0
    );
    assert_eq!(
        count(r#"sidecache_requests_total{rule="",outcome="pass"}"#),
        1.0
    );
    assert_eq!(
        count(r#"sidecache_requests_total{rule="m-inventory",outcome="pass"}"#),
        1.0
    );
    assert_eq!(
        count(r#"sidecache_purges_total{kind="tag",source="api"}"#),
        1.0
    );
    assert_eq!(count(r#"sidecache_config_reloads_total{result="ok"}"#), 1.0);
    assert_eq!(
        count(r#"sidecache_config_reloads_total{result="failed"}"#),
        1.0
    );
    assert!(count(r#"sidecache_upstream_errors_total{reason="connect"}"#) >= 1.0);
    // Two misses and two passes reached the backend.
    assert_eq!(
        count("sidecache_upstream_duration_seconds_count") - upstream_before,
        4.0
    );
    assert!(text.contains("# TYPE sidecache_upstream_duration_seconds histogram"));
    assert!(text.contains(r#"sidecache_upstream_duration_seconds_bucket{le="0.001"}"#));
    assert!(text.contains("# TYPE sidecache_requests_total counter"));
    let build_info = format!(
        r#"sidecache_build_info{{version="{}"}} 1"#,
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.lines().any(|l| l == build_info), "{text}");

    // Gauges are read from the stores once a second.
    eventually("L1 gauges", || async {
        let text = scrape(&proxy).await;
        value(&text, "sidecache_l1_entries") == Some(1.0)
            && value(&text, "sidecache_l1_bytes").is_some_and(|b| b > 0.0)
            && value(&text, "sidecache_l1_capacity_bytes") == Some(64.0 * 1024.0 * 1024.0)
            && value(&text, r#"sidecache_redis_state{state="disabled"}"#) == Some(1.0)
            && value(&text, r#"sidecache_redis_state{state="up"}"#) == Some(0.0)
    })
    .await;

    // The last purges, newest first; they may hold user data, so only
    // with the token.
    let url = format!("http://{}/purges", proxy.admin);
    assert_eq!(get(&url, &[]).await.status, StatusCode::UNAUTHORIZED);
    let purges = get(&url, &[("authorization", &format!("Bearer {TOKEN}"))]).await;
    let purges: serde_json::Value = serde_json::from_slice(&purges.body).unwrap();
    assert_eq!(purges["purges"][0]["source"], "api");
    assert_eq!(purges["purges"][0]["tags"][0], "product:1");
}

const REDIS_RULES: &str = r#"
upstream: { url: UPSTREAM }
redis: { url: "REDIS", key_prefix: "mx:", timeout: 100ms }
rules:
  - name: r-product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
"#;

/// With Redis up, a second replica's first answer is a Redis hit and
/// `/readyz` says `up`; once Redis is killed the proxy stays ready, says
/// `degraded`, keeps answering, and counts the failed commands.
#[tokio::test]
async fn readiness_and_redis_metrics_follow_redis() {
    let mut redis = Redis::start_tcp();
    let backend = Backend::json(vec![]).await;
    let a = Proxy::start(REDIS_RULES, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(REDIS_RULES, &backend.url(), Some(&redis.url())).await;

    get(&a.url("/products/1"), &[]).await;
    eventually("stored in Redis", || redis_has(&redis, "mx:{product:1}")).await;
    let from_redis = get(&b.url("/products/1"), &[]).await;
    assert!(from_redis.cache_status().contains("detail=redis"));
    let ready = get(&format!("http://{}/readyz", a.admin), &[]).await;
    assert_eq!(ready.status, StatusCode::OK);
    let body: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(body["redis"], "up");
    assert_eq!(body["redis_mode"], "server");
    let text = scrape(&b).await;
    assert_eq!(
        value(
            &text,
            r#"sidecache_requests_total{rule="r-product",outcome="hit-redis"}"#
        ),
        Some(1.0),
        "{text}"
    );
    // Each replica read Redis once (A missed it, B hit it), and counts its
    // own round trip.
    let gets = r#"sidecache_redis_duration_seconds_count{command="GET"}"#;
    assert_eq!(value(&text, gets), Some(1.0), "{text}");
    assert_eq!(value(&scrape(&a).await, gets), Some(1.0));
    eventually("state gauge says up", || async {
        value(&scrape(&a).await, r#"sidecache_redis_state{state="up"}"#) == Some(1.0)
    })
    .await;

    drop(b);
    redis.kill();
    // L1 still answers; a new key goes to the backend.
    assert!(get(&a.url("/products/1"), &[]).await.is_hit());
    assert_eq!(get(&a.url("/products/2"), &[]).await.status, StatusCode::OK);
    let ready = get(&format!("http://{}/readyz", a.admin), &[]).await;
    assert_eq!(ready.status, StatusCode::OK, "degraded is still ready");
    let body: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
    assert_eq!(body["redis"], "degraded");
    eventually("state gauge says degraded", || async {
        let text = scrape(&a).await;
        value(&text, r#"sidecache_redis_state{state="degraded"}"#) == Some(1.0)
            && value(&text, r#"sidecache_redis_state{state="up"}"#) == Some(0.0)
            && value(&text, r#"sidecache_redis_errors_total{command="GET"}"#)
                .is_some_and(|n| n >= 1.0)
    })
    .await;
}

/// `/readyz` reports what Redis is now, without any request: a fresh
/// replica says `up` once the purge bus has checked, an idle one says
/// `degraded` soon after Redis dies, and `up` again when it is back.
#[tokio::test]
async fn redis_state_follows_redis_on_an_idle_replica() {
    let mut redis = Redis::start_tcp();
    let backend = Backend::json(vec![]).await;
    let a = Proxy::start(REDIS_RULES, &backend.url(), Some(&redis.url())).await;
    let redis_state = || async {
        let ready = get(&format!("http://{}/readyz", a.admin), &[]).await;
        let body: serde_json::Value = serde_json::from_slice(&ready.body).unwrap();
        body["redis"].as_str().unwrap_or("").to_owned()
    };
    eventually("up without a request", || async {
        redis_state().await == "up"
    })
    .await;
    redis.kill();
    eventually("degraded without a request", || async {
        redis_state().await == "degraded"
    })
    .await;
    redis.restart();
    eventually("up again", || async { redis_state().await == "up" }).await;
    assert_eq!(backend.hits(), 0, "no request was needed");
}

/// The median backend latency read from the histogram, as the dashboard
/// reads it (interpolating within a bucket), is close to the true one: a
/// backend taking 51 ms reads as at least 51 ms and at most a third more
/// than the median the clients saw (buckets are at most a third wider than
/// the one before; the clients' time includes the backend's).
#[tokio::test]
async fn latency_quantiles_are_close() {
    let backend = Backend::start(std::time::Duration::from_millis(51), |_| {
        (StatusCode::OK, vec![], bytes::Bytes::from_static(b"ok"))
    })
    .await;
    let proxy = Proxy::start(&config(&backend.url()), &backend.url(), None).await;
    let requests = (0..10).map(|i| {
        let url = proxy.url(&format!("/about/{i}"));
        async move {
            let start = std::time::Instant::now();
            get(&url, &[]).await;
            start.elapsed().as_secs_f64()
        }
    });
    let mut seen = futures_util::future::join_all(requests).await;
    seen.sort_by(f64::total_cmp);
    let clients_median = (seen[4] + seen[5]) / 2.0;
    let text = scrape(&proxy).await;
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("sidecache_upstream_duration_seconds_bucket{le=\""))
        .filter_map(|l| {
            let (le, n) = l.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, n.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().unwrap().1;
    assert!(total >= 10.0, "{text}");
    let rank = total / 2.0;
    let i = buckets.iter().position(|(_, n)| *n >= rank).unwrap();
    let (lo, below) = if i == 0 { (0.0, 0.0) } else { buckets[i - 1] };
    let (hi, n) = buckets[i];
    let p50 = lo + (hi - lo) * (rank - below) / (n - below);
    assert!(
        (0.051..=clients_median * 4.0 / 3.0).contains(&p50),
        "p50 read as {:.1} ms; the clients' median was {:.1} ms",
        p50 * 1e3,
        clients_median * 1e3
    );
}

/// A live `/metrics` passes `promtool check metrics` (Prometheus's own
/// lint: names, units, counters ending in `_total`), and the failure
/// counters an alert watches are there at zero before the first failure.
#[tokio::test]
async fn metrics_pass_promtool_and_failures_start_at_zero() {
    let backend = Backend::json(vec![]).await;
    let proxy = Proxy::start(&config(&backend.url()), "", None).await;
    get(&proxy.url("/products/1"), &[]).await;
    get(&proxy.url("/inventory/1"), &[]).await;
    let text = scrape(&proxy).await;
    for series in [
        r#"sidecache_config_reloads_total{result="failed"}"#,
        r#"sidecache_upstream_errors_total{reason="connect"}"#,
        r#"sidecache_store_refused_total{reason="l2-failed"}"#,
        "sidecache_purges_uncopied_total",
    ] {
        assert_eq!(value(&text, series), Some(0.0), "{series} in\n{text}");
    }
    // The process's own metrics, read from /proc.
    for series in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_threads",
    ] {
        assert!(
            value(&text, series).is_some_and(|v| v > 0.0),
            "{series} in\n{text}"
        );
    }
    let checked = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (Debian's prometheus package) runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// The alert rules (deploy/prometheus) pass `promtool check rules` and their
/// unit tests (`promtool test rules`), and every metric they and the Grafana
/// dashboard (deploy/grafana) read is one sidecache exports.
#[test]
fn alert_rules_and_dashboard_read_real_metrics() {
    let promtool = |args: &[&str]| {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir("deploy/prometheus")
            .output()
            .expect("promtool (Debian's prometheus package) runs");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    promtool(&["check", "rules", "alerts.yaml"]);
    promtool(&["test", "rules", "alerts.test.yaml"]);

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("deploy/grafana/sidecache.json").unwrap())
            .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 10);
    exprs.push(std::fs::read_to_string("deploy/prometheus/alerts.yaml").unwrap());
    let exported = std::fs::read_to_string("src/metrics.rs").unwrap();
    let mut read = 0;
    for text in &exprs {
        for (i, _) in text.match_indices("sidecache_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                exported.contains(&format!("\"{base}\"")),
                "{name} is not a metric sidecache exports"
            );
            read += 1;
        }
    }
    assert!(read > 20, "{read} metric reads");
}

/// Per rule: answers by status class and the client's latency per outcome;
/// open connections per listener; which config is in effect (its file's
/// digest, and when it was loaded), which a reload changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_status_classes_connections_and_config_info() {
    let backend = Backend::start(std::time::Duration::ZERO, |s| {
        let status = if s.uri.ends_with("/404") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        (status, vec![], bytes::Bytes::from_static(b"{}"))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidecache.yaml");
    std::fs::write(&file, config(&backend.url())).unwrap();
    let proxy = Proxy::start_file(&file).await;
    get(&proxy.url("/products/1"), &[]).await;
    await_hit(&proxy.url("/products/1"), &[]).await;
    get(&proxy.url("/inventory/404"), &[]).await;
    let text = scrape(&proxy).await;
    let product = |s: &str| value(&text, s).unwrap_or(-1.0);
    assert_eq!(
        product(r#"sidecache_responses_total{rule="m-product",class="2xx"}"#),
        value(
            &text,
            r#"sidecache_requests_total{rule="m-product",outcome="miss"}"#
        )
        .unwrap()
            + value(
                &text,
                r#"sidecache_requests_total{rule="m-product",outcome="hit-memory"}"#
            )
            .unwrap()
    );
    assert_eq!(
        product(r#"sidecache_responses_total{rule="m-inventory",class="4xx"}"#),
        1.0
    );
    assert_eq!(
        product(r#"sidecache_responses_total{rule="m-product",class="5xx"}"#),
        0.0
    );
    assert_eq!(
        product(r#"sidecache_request_duration_seconds_count{rule="m-product",outcome="miss"}"#),
        1.0
    );
    assert!(
        product(
            r#"sidecache_request_duration_seconds_count{rule="m-product",outcome="hit-memory"}"#
        ) >= 1.0
    );

    // A client holding a connection open is counted until it goes.
    let held = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let open = || async {
        value(
            &scrape(&proxy).await,
            r#"sidecache_open_connections{listener="proxy"}"#,
        )
    };
    eventually("the held connection is counted", || async {
        open().await == Some(1.0)
    })
    .await;
    drop(held);
    eventually("the closed connection is not", || async {
        open().await == Some(0.0)
    })
    .await;

    // The config in effect, and the one a reload replaced.
    let digest_of = |text: &str, v: f64| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix("sidecache_config_info{digest=\""))
            .filter(|l| l.ends_with(&format!(" {v}")))
            .map(|l| l.split('"').next().unwrap().to_owned())
            .collect()
    };
    let first = digest_of(&text, 1.0);
    assert_eq!(first.len(), 1, "{text}");
    assert_eq!(first[0].len(), 16);
    assert!(value(&text, "sidecache_config_loaded_timestamp_seconds").unwrap() > 1.7e9);
    std::fs::write(&file, config(&backend.url()).replace("ttl: 1h", "ttl: 2h")).unwrap();
    let reloaded = send(
        "POST",
        &format!("http://{}/reload", proxy.admin),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .await;
    assert_eq!(reloaded.status, StatusCode::OK);
    let after = scrape(&proxy).await;
    let now = digest_of(&after, 1.0);
    assert_eq!(now.len(), 1, "{after}");
    assert_ne!(now, first);
    assert_eq!(digest_of(&after, 0.0), first);
}
