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
        metric_sum_or_none(
            &a,
            "sidecache_backend_saved_requests_total",
            r#"rule="product""#,
        )
        .await
            == Some(saved)
    })
    .await;

    // A second replica (its metrics would mix with A's in this process).
    let b = Proxy::start(SHOP, &backend.url(), None).await;
    for i in 0..5 {
        let url = b.url(&format!("/products/{i}"));
        get(&url, &[]).await;
        eventually("a hit", || async { get(&url, &[]).await.is_hit() }).await;
    }
    let saved_b = report(&b).await["rules"][0]["saved_requests"]
        .as_u64()
        .unwrap();
    assert!(saved_b >= 5);

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
    assert_eq!(
        row(&two, "product")[2],
        (saved + saved_b).to_string(),
        "{two}"
    );
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

const ROLLOUT: &str = r#"
upstream: { url: UPSTREAM }
admin: { token: "t" }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
    rollout: { percent: PERCENT, by: "{cookie.session_id}" }
"#;

/// Whether each session uses the cache on `proxy` (`detail=rollout` says it
/// was forwarded), 50 requests at a time.
async fn inside(proxy: &Proxy, sessions: &[String]) -> Vec<bool> {
    let mut sides = Vec::with_capacity(sessions.len());
    for chunk in sessions.chunks(50) {
        let asked = chunk.iter().map(|s| {
            let (url, cookie) = (proxy.url("/products/1"), format!("session_id={s}"));
            async move {
                let got = get(&url, &[("cookie", &cookie)]).await;
                assert_eq!(got.status, http::StatusCode::OK);
                !got.cache_status().contains("detail=rollout")
            }
        });
        sides.extend(futures_util::future::join_all(asked).await);
    }
    sides
}

/// Over 10,000 sessions, 5 % use the cache on two replicas alike (within a
/// point), the forwarded ones say `detail=rollout` and count as `pass`; a
/// reload to 10 % keeps every session that was inside, inside; no cookie
/// falls back to the client address; `explain` says the side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_takes_a_stable_share_of_users() {
    let backend = Backend::json(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidecache.yaml");
    let yaml = |percent: &str| {
        ROLLOUT
            .replace("UPSTREAM", &format!("\"{}\"", backend.url()))
            .replace("PERCENT", percent)
    };
    std::fs::write(&file, yaml("5")).unwrap();
    let a = Proxy::start_file(&file).await;
    let b = Proxy::start(&yaml("5"), "", None).await;
    let sessions: Vec<String> = (0..10_000)
        .map(|i| format!("s{i:05}-{}", i * 7919))
        .collect();
    let on_a = inside(&a, &sessions).await;
    let on_b = inside(&b, &sessions).await;
    assert_eq!(on_a, on_b, "the replicas put sessions on different sides");
    let share =
        |sides: &[bool]| 100.0 * sides.iter().filter(|&&s| s).count() as f64 / sides.len() as f64;
    assert!(
        (share(&on_a) - 5.0).abs() <= 1.0,
        "{}% inside",
        share(&on_a)
    );
    let pass = r#"rule="product",outcome="pass""#;
    let passed = metric_sum(&a, "sidecache_requests_total", pass).await;
    let outside = on_a.iter().filter(|&&s| !s).count() as u64;
    assert_eq!(passed, outside, "A counts its forwarded side as pass");
    assert_eq!(
        metric_sum(&b, "sidecache_requests_total", pass).await,
        outside,
        "B counts its own forwarded side, apart from A's"
    );
    let labels = r#"rule="product",reason="rollout""#;
    assert_eq!(
        metric_sum(&a, "sidecache_passes_total", labels).await,
        passed
    );

    std::fs::write(&file, yaml("10")).unwrap();
    let reloaded = send(
        "POST",
        &format!("http://{}/reload", a.admin),
        &[("authorization", "Bearer t")],
        "",
    )
    .await;
    assert!(reloaded.status.is_success());
    let after = inside(&a, &sessions).await;
    assert!(
        (share(&after) - 10.0).abs() <= 1.0,
        "{}% inside",
        share(&after)
    );
    for (before, now) in on_a.iter().zip(&after) {
        assert!(!before || *now, "a session inside at 5% is outside at 10%");
    }

    // Without the cookie, the client address decides: its bucket, always.
    let bucket = xxhash_rust::xxh3::xxh3_64(b"127.0.0.1") % 10_000;
    let no_cookie: Vec<bool> = futures_util::future::join_all(
        (0..10).map(|_| async { get(&a.url("/products/1"), &[]).await.cache_status() }),
    )
    .await
    .iter()
    .map(|s| !s.contains("detail=rollout"))
    .collect();
    assert!(no_cookie.iter().all(|inside| *inside == (bucket < 1000)));

    let explain = |cookie: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sidecache"))
            .args(["explain", "--config"])
            .arg(&file)
            .args([
                "GET",
                "/products/1",
                "-H",
                &format!("cookie: session_id={cookie}"),
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let first_in = sessions.iter().zip(&after).find(|(_, s)| **s).unwrap().0;
    let first_out = sessions.iter().zip(&after).find(|(_, s)| !**s).unwrap().0;
    let said = explain(first_in);
    assert!(said.contains("rollout: inside"), "{said}");
    let said = explain(first_out);
    assert!(
        said.contains("rollout: outside") && said.contains("detail=rollout"),
        "{said}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sidecache"))
        .args(["explain", "--config"])
        .arg(&file)
        .args(["GET", "/products/1"])
        .output()
        .unwrap();
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.contains(&format!("(bucket {bucket} of 10000")),
        "{said}"
    );
    assert!(said.contains("by the client address, 127.0.0.1"), "{said}");
}

/// A backend whose products carry a `served_at` that changes on every
/// answer, and a price the test changes behind the proxy's back.
async fn changing_backend(price: Arc<std::sync::Mutex<f64>>) -> Backend {
    Backend::start(Duration::ZERO, move |s| {
        let p = *price.lock().unwrap();
        let body = format!(
            r#"{{"uri":"{}","price":{p},"served_at":{}}}"#,
            s.uri,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        (
            http::StatusCode::OK,
            vec![("content-type", "application/json".to_owned())],
            bytes::Bytes::from(body),
        )
    })
    .await
}

/// `verify` with `ignore: [served_at]` finds every hit matching; without
/// it, every check mismatches; a price changed behind the cache's back is
/// a mismatch that changes nothing, unless `purge_on_mismatch`, which
/// purges the key so the next request gets the new price.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_compares_hits_with_the_backend() {
    const VERIFY: &str = r#"
upstream: { url: UPSTREAM }
limits: { verify_in_flight: 100 }
rules:
  - name: ignoring
    match: { path: "/ignoring/{id}" }
    key: "ignoring:{id}"
    ttl: 1h
    verify: { sample: 100%, ignore: [served_at] }
  - name: strict
    match: { path: "/strict/{id}" }
    key: "strict:{id}"
    ttl: 1h
    verify: { sample: 100% }
  - name: purging
    match: { path: "/purging/{id}" }
    key: "purging:{id}"
    ttl: 1h
    verify: { sample: 100%, ignore: [served_at], purge_on_mismatch: true }
"#;
    let price = Arc::new(std::sync::Mutex::new(10.0));
    let backend = changing_backend(price.clone()).await;
    let proxy = Proxy::start(VERIFY, &backend.url(), None).await;
    let count = |rule: &'static str, result: &'static str| {
        let proxy = &proxy;
        async move {
            let labels = format!(r#"rule="{rule}",result="{result}""#);
            metric_sum(proxy, "sidecache_verify_total", &labels).await
        }
    };
    for path in ["/ignoring/1", "/strict/1"] {
        // Stored once the fill job has run, just after the answer.
        eventually("a hit", || async {
            get(&proxy.url(path), &[]).await.is_hit()
        })
        .await;
        for _ in 0..5 {
            let got = get(&proxy.url(path), &[]).await;
            assert!(got.is_hit(), "{path}: {}", got.cache_status());
        }
    }
    eventually("6 checks of each", || async {
        count("ignoring", "match").await >= 6 && count("strict", "mismatch").await >= 6
    })
    .await;
    assert_eq!(count("ignoring", "mismatch").await, 0);
    assert_eq!(count("strict", "match").await, 0);

    let first = get(&proxy.url("/purging/1"), &[]).await;
    assert!(!first.is_hit());
    eventually("a hit", || async {
        get(&proxy.url("/purging/1"), &[]).await.is_hit()
    })
    .await;
    eventually("a match", || async { count("purging", "match").await >= 1 }).await;
    // A back-office tool changes the price in the backend.
    *price.lock().unwrap() = 12.5;
    let stale = get(&proxy.url("/ignoring/1"), &[]).await;
    assert!(stale.is_hit() && String::from_utf8_lossy(&stale.body).contains("\"price\":10"));
    eventually("the ignoring rule's mismatch", || async {
        count("ignoring", "mismatch").await >= 1
    })
    .await;
    assert!(
        get(&proxy.url("/ignoring/1"), &[]).await.is_hit(),
        "purged without purge_on_mismatch"
    );
    assert!(get(&proxy.url("/purging/1"), &[]).await.is_hit());
    eventually("the purging rule's mismatch purges the key", || async {
        let got = get(&proxy.url("/purging/1"), &[]).await;
        String::from_utf8_lossy(&got.body).contains("\"price\":12.5")
    })
    .await;
    assert!(
        metric_sum(
            &proxy,
            "sidecache_verify_mismatch_age_seconds_count",
            r#"rule="purging""#
        )
        .await
            >= 1
    );
}

/// With `sample: 100%` and a backend that now takes 3 s, 20 concurrent
/// hits are answered from the cache while no check has finished, and only
/// `limits.verify_in_flight` (2) checks reach the backend; the rest are
/// skipped. Having found the backend slow, the checks pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_never_delays_a_hit_and_stays_bounded() {
    const BOUNDED: &str = r#"
upstream: { url: UPSTREAM }
limits: { verify_in_flight: 2 }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
    verify: { sample: 100% }
"#;
    let backend = Backend::json(vec![]).await;
    let proxy = Proxy::start(BOUNDED, &backend.url(), None).await;
    let count = |result: &'static str| {
        let proxy = &proxy;
        async move {
            let labels = format!(r#"rule="product",result="{result}""#);
            metric_sum(proxy, "sidecache_verify_total", &labels).await
        }
    };
    let ended = || async { count("match").await + count("mismatch").await + count("error").await };
    // Stored once the fill job has run; each hit until then starts a check.
    get(&proxy.url("/products/1"), &[]).await;
    eventually("a hit", || async {
        get(&proxy.url("/products/1"), &[]).await.is_hit()
    })
    .await;
    eventually("its check ends", || async {
        ended().await + count("skipped").await == 1
    })
    .await;
    let (done, skipped) = (ended().await, count("skipped").await);
    backend.set_delay(Duration::from_secs(3));
    let before = backend.hits();
    let answers = futures_util::future::join_all(
        (0..20).map(|_| async { get(&proxy.url("/products/1"), &[]).await }),
    )
    .await;
    assert!(answers.iter().all(Got::is_hit));
    // Every hit is answered while the checks still wait on the backend.
    assert_eq!(ended().await, done);
    assert_eq!(count("skipped").await, skipped + 18);
    eventually("the two checks reach the backend", || async {
        backend.hits() == before + 2
    })
    .await;
    eventually_within(Duration::from_secs(10), "the two checks end", || async {
        ended().await == done + 2
    })
    .await;
    assert_eq!(backend.hits(), before + 2);
    // Those checks took 3 s: the backend is slow, and checks pause.
    for _ in 0..5 {
        assert!(get(&proxy.url("/products/1"), &[]).await.is_hit());
    }
    assert_eq!(count("skipped").await, skipped + 18 + 5);
    assert_eq!(backend.hits(), before + 2);
}

/// The demo backend changed straight (a `PATCH` on its own port, as a
/// back-office tool writing to the database would): the real binary's
/// `verify` reports a mismatch, logging the rule, the entry's age and the
/// field's name, never its value, the key or the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_change_made_behind_the_cache_and_logs_names_only() {
    let (backend, port, admin) = (free_port(), free_port(), free_port());
    let _backend = Spawned::from(
        std::process::Command::new(env!("CARGO_BIN_EXE_demo-backend"))
            .args([
                "--listen",
                &format!("127.0.0.1:{backend}"),
                "--delay-ms",
                "0",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let rest = format!(
        r#"upstream: {{ url: "http://127.0.0.1:{backend}" }}
rules:
  - name: product
    match: {{ path: "/products/{{id}}" }}
    key: "product:{{id}}"
    ttl: 1h
    verify: {{ sample: 100% }}
"#
    );
    let config = binary_config(&dir, port, admin, "", &rest);
    eventually("the demo backend answers", || async {
        try_get(&client(), &format!("http://127.0.0.1:{backend}/products/7"))
            .await
            .is_ok()
    })
    .await;
    let child = start_binary(
        &config,
        admin,
        &[],
        &[("RUST_LOG", "warn")],
        std::process::Stdio::piped(),
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/products/7");
    get(&url, &[]).await;
    // Stored once the fill job has run, just after the answer.
    eventually("a hit", || async { get(&url, &[]).await.is_hit() }).await;
    let metric = |result: &'static str| async move {
        let text = get(&format!("http://127.0.0.1:{admin}/metrics"), &[]).await;
        let line = format!(r#"sidecache_verify_total{{rule="product",result="{result}"}} "#);
        String::from_utf8_lossy(&text.body)
            .lines()
            .find_map(|l| l.strip_prefix(&line)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    eventually("a match", || async { metric("match").await == 1 }).await;
    let changed = send(
        "PATCH",
        &format!("http://127.0.0.1:{backend}/products/7"),
        &[("content-type", "application/json")],
        r#"{"price": 4321.5}"#,
    )
    .await;
    assert!(changed.status.is_success());
    let served = get(&url, &[]).await;
    assert!(served.is_hit() && !String::from_utf8_lossy(&served.body).contains("4321.5"));
    eventually("a mismatch", || async { metric("mismatch").await == 1 }).await;
    signal(&child, "TERM");
    let out = exit_output(child, Duration::from_secs(10)).await;
    let logs = String::from_utf8(out.stderr).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("verify:"))
        .unwrap_or_else(|| panic!("no verify line in:\n{logs}"));
    assert!(line.contains("product") && line.contains("price"), "{line}");
    assert!(line.contains("age_seconds"), "{line}");
    for secret in ["4321.5", "product:7", "Fan 7", "/products/7"] {
        assert!(!line.contains(secret), "{secret} logged: {line}");
    }
}

/// A check that gets a 5xx (or a 429) from the backend is an `error`, not
/// a `mismatch`: the backend failing says nothing about the entry, so
/// `purge_on_mismatch` leaves it, and hits go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_counts_a_failing_backend_as_an_error() {
    let status = Arc::new(std::sync::atomic::AtomicU16::new(200));
    let backend = Backend::start(Duration::ZERO, {
        let status = status.clone();
        move |_| {
            let now = status.load(std::sync::atomic::Ordering::SeqCst);
            (
                http::StatusCode::from_u16(now).unwrap(),
                vec![("content-type", "application/json".to_owned())],
                bytes::Bytes::from(format!(r#"{{"status":{now}}}"#)),
            )
        }
    })
    .await;
    let proxy = Proxy::start(
        r#"
upstream: { url: UPSTREAM }
limits: { verify_in_flight: 100 }
rules:
  - name: checked
    match: { path: "/checked/{id}" }
    key: "checked:{id}"
    ttl: 1h
    verify: { sample: 100%, purge_on_mismatch: true }
"#,
        &backend.url(),
        None,
    )
    .await;
    let count = |result: &'static str| {
        let proxy = &proxy;
        async move {
            let labels = format!(r#"rule="checked",result="{result}""#);
            metric_sum(proxy, "sidecache_verify_total", &labels).await
        }
    };
    await_hit(&proxy.url("/checked/1"), &[]).await;
    for code in [503, 500, 429] {
        status.store(code, std::sync::atomic::Ordering::SeqCst);
        let before = count("error").await;
        let hit = get(&proxy.url("/checked/1"), &[]).await;
        assert!(hit.is_hit(), "{code}: {}", hit.cache_status());
        assert_eq!(hit.body, r#"{"status":200}"#);
        eventually("the check is counted as an error", || async {
            count("error").await > before
        })
        .await;
    }
    assert_eq!(count("mismatch").await, 0);
    let still = get(&proxy.url("/checked/1"), &[]).await;
    assert!(still.is_hit(), "purged on a failing backend");
}
