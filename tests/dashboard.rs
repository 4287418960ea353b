//! The live dashboard in real headless Chromium: loaded while traffic
//! flows, its charts show non-zero data. The screenshot is kept as
//! `target/tmp/dashboard.png`.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::StatusCode;
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
admin: { token: "dash" }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
    tags: ["product:{id}"]
  - name: category
    match: { path: "/categories/{id}" }
    key: "category:{id}"
    ttl: 1h
    verify: { sample: 100% }
"#;

/// Chromium as the machine's probe starts it: headless, no sandbox (root),
/// no GPU, no calls home; its own empty profile.
fn chromium(profile: &std::path::Path, args: &[&str], url: &str) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium must be installed (the README's test command installs it)")
}

/// The value of attribute `name` on the element with id `id`.
fn attr(dom: &str, id: &str, name: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let from = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[from..].find('"')?;
    Some(tag[from..from + len].to_owned())
}

fn number(dom: &str, id: &str, name: &str) -> f64 {
    attr(dom, id, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("#{id} has no numeric {name}"))
}

/// With two rules under load (mostly hits, some misses) and one purge, the
/// page draws a request-rate and a hit-ratio series per rule with values
/// above zero, backend latency, L1 usage against its limit, the Redis
/// state and the purge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_data_in_chromium() {
    let backend = Backend::start(std::time::Duration::ZERO, |s| {
        let status = if s.uri.contains("missing") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        let body = format!("{{\"uri\":\"{}\"}}", s.uri);
        let headers = if s.uri.contains("private") {
            vec![("cache-control", "private".to_owned())]
        } else {
            vec![]
        };
        (status, headers, bytes::Bytes::from(body))
    })
    .await;
    // A warm-up list of two URLs, one the backend fails.
    let list = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(list.path(), "/products/1\n/products/missing\n").unwrap();
    let rules = RULES.replace(
        "rules:\n",
        &format!(
            "memory: {{ warm: {{ urls: \"{}\" }} }}\nrules:\n",
            list.path().display()
        ),
    );
    let proxy = Proxy::start(&rules, &backend.url(), None).await;
    let purged = send(
        "POST",
        &format!("http://{}/purge", proxy.admin),
        &[("authorization", "Bearer dash")],
        r#"{"tags": ["product:1"]}"#,
    )
    .await;
    assert_eq!(purged.status, StatusCode::OK);

    // Traffic until the page has been read: mostly hits on a few keys,
    // and a new key now and then so the backend keeps being asked.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = tokio::spawn({
        let (stop, base) = (stop.clone(), proxy.url(""));
        async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let path = match i % 10 {
                    0 => format!("/products/new-{i}"),
                    n if n % 2 == 0 => format!("/categories/{}", n % 3),
                    n => format!("/products/{}", n % 4),
                };
                get(&format!("{base}{path}"), &[]).await;
            }
        }
    });
    // An answer the rule does not store (a private one): why shows on the
    // page.
    let private = get(&proxy.url("/products/private"), &[]).await;
    assert!(
        private.cache_status().contains("detail=private"),
        "{}",
        private.cache_status()
    );
    // Let the gauges be read once (every second) before the page loads.
    eventually("L1 gauge above zero", || async {
        let text = get(&format!("http://{}/metrics", proxy.admin), &[]).await;
        String::from_utf8_lossy(&text.body).contains("sidecache_l1_entries ")
            && !String::from_utf8_lossy(&text.body).contains("sidecache_l1_entries 0\n")
    })
    .await;

    // The purges need the token; the page takes it from the fragment.
    let page = format!("http://{}/#token=dash", proxy.admin);
    let profile = tempfile::tempdir().unwrap();
    let dom = {
        let (profile, page) = (profile.path().to_owned(), page.clone());
        tokio::task::spawn_blocking(move || {
            chromium(
                &profile,
                &["--virtual-time-budget=8000", "--dump-dom"],
                &page,
            )
        })
        .await
        .unwrap()
    };
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8(dom.stdout).unwrap();

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let screenshot = {
        let (profile, page, shot) = (profile.path().to_owned(), page, shot.clone());
        tokio::task::spawn_blocking(move || {
            chromium(
                &profile,
                &[
                    "--virtual-time-budget=8000",
                    "--window-size=1280,1000",
                    "--hide-scrollbars",
                    &format!("--screenshot={}", shot.display()),
                ],
                &page,
            )
        })
        .await
        .unwrap()
    };
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    assert!(screenshot.status.success());

    let samples: f64 = dom
        .split("<body")
        .nth(1)
        .and_then(|b| b.split("data-samples=\"").nth(1))
        .and_then(|v| v.split('"').next())
        .and_then(|v| v.parse().ok())
        .expect("body has data-samples");
    assert!(samples >= 2.0, "only {samples} samples");
    assert_eq!(number(&dom, "chart-rate", "data-series"), 2.0, "{dom}");
    assert!(number(&dom, "chart-rate", "data-max") > 0.0);
    assert_eq!(number(&dom, "chart-hit", "data-series"), 2.0);
    assert!(number(&dom, "chart-hit", "data-max") > 0.0);
    assert!(number(&dom, "chart-latency", "data-max") > 0.0);
    assert!(number(&dom, "l1", "data-bytes") > 0.0);
    assert_eq!(number(&dom, "l1", "data-capacity"), 256.0 * 1024.0 * 1024.0);
    assert_eq!(
        attr(&dom, "redis", "data-state").as_deref(),
        Some("disabled")
    );
    assert_eq!(attr(&dom, "live", "data-state").as_deref(), Some("ok"));
    let purges = dom.split("id=\"purges\"").nth(1).unwrap();
    let purges = purges.split("</tbody>").next().unwrap();
    assert!(purges.contains("product:1"), "{purges}");

    assert!(
        !dom.contains("id=\"warmup-card\" hidden"),
        "the warm-up card is hidden"
    );
    let warmup = dom.split("id=\"warmup\"").nth(1).unwrap();
    let warmup = warmup.split("</tbody>").next().unwrap();
    assert!(
        warmup.contains("data-source=\"urls\" data-fetched=\"1\" data-failed=\"1\""),
        "{warmup}"
    );

    let offload = dom.split("id=\"offload\"").nth(1).unwrap();
    let offload = offload.split("</tbody>").next().unwrap();
    let saved = |rule: &str| {
        offload
            .split(&format!("data-rule=\"{rule}\" data-saved=\""))
            .nth(1)
            .and_then(|v| v.split('"').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no offload row for {rule}: {offload}"))
    };
    assert!(
        saved("product") > 0.0 && saved("category") > 0.0,
        "{offload}"
    );
    assert!(
        saved("total") >= saved("product") + saved("category"),
        "{offload}"
    );
    let why = offload
        .split("data-rule=\"product\"")
        .nth(1)
        .and_then(|r| r.split("data-not-stored=\"").nth(1))
        .and_then(|v| v.split('"').next())
        .unwrap_or_else(|| panic!("no not-stored reasons for product: {offload}"));
    assert!(why.starts_with("private "), "{offload}");
    assert!(
        offload.contains("<td>private "),
        "the column shows it: {offload}"
    );

    assert!(
        !dom.contains("id=\"verify-card\" hidden"),
        "the consistency card is hidden"
    );
    let verify = dom.split("id=\"verify\"").nth(1).unwrap();
    let verify = verify.split("</tbody>").next().unwrap();
    assert!(verify.contains("data-rule=\"category\""), "{verify}");
    assert!(verify.contains("data-rate=\"100\""), "{verify}");

    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
}

/// With regions, the page lists each other region with its link and purge
/// lag: a cut link shows as down, and a purge made meanwhile as lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_each_regions_link_and_lag() {
    use std::time::Duration;
    use support::regions::{World, region_state};
    let backend = Backend::json(vec![]).await;
    let world = World::start(
        &["eu", "us"],
        1,
        Duration::from_millis(5),
        &backend.url(),
        "",
    )
    .await;
    world.wait_relaying().await;
    world.cut(0, 1);
    let eu = &world.regions[0].replicas[0];
    eventually_within(Duration::from_secs(10), "eu sees us down", || async {
        region_state(eu.admin, "us").await["link"] == "down"
    })
    .await;
    let purged = admin_purge(eu, r#"{"keys": ["product:1"]}"#, Some("t")).await;
    assert_eq!(purged.status, StatusCode::OK);
    eventually_within(Duration::from_secs(10), "a lag for us", || async {
        region_state(eu.admin, "us").await["lag_seconds"]
            .as_f64()
            .unwrap_or(0.0)
            >= 1.0
    })
    .await;
    let profile = tempfile::tempdir().unwrap();
    let page = format!("http://{}/", eu.admin);
    let dom = tokio::task::spawn_blocking({
        let profile = profile.path().to_owned();
        move || {
            chromium(
                &profile,
                &["--virtual-time-budget=3000", "--dump-dom"],
                &page,
            )
        }
    })
    .await
    .unwrap();
    assert!(dom.status.success());
    let dom = String::from_utf8(dom.stdout).unwrap();
    assert!(
        !dom.contains("id=\"regions-card\" hidden"),
        "the regions card is hidden"
    );
    let row = dom
        .split("data-region=\"us\"")
        .nth(1)
        .and_then(|r| r.split('>').next())
        .unwrap_or_else(|| panic!("no row for us in:\n{dom}"));
    let value = |name: &str| {
        row.split(&format!("{name}=\""))
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(value("data-link"), "down", "{row}");
    assert!(value("data-lag").parse::<f64>().unwrap() >= 1.0, "{row}");
    world.restore(0, 1);
}
