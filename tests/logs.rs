//! Logs of the real binary: one span per request with rule, outcome,
//! status and latency, as text or JSON, and never a secret.

mod support;

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use support::*;

const ADMIN_TOKEN: &str = "ADMIN-TOKEN-SECRET";
/// Strings that must never reach a log line.
const SECRETS: [&str; 6] = [
    ADMIN_TOKEN,
    "COOKIE-SECRET",
    "AUTH-SECRET",
    "BODY-SECRET",
    "BACKEND-BODY-SECRET",
    "QUERY-SECRET",
];

/// Runs the binary with `args` and `RUST_LOG=debug`, sends requests that
/// carry every kind of secret, stops it with SIGTERM and answers its stderr.
async fn logs_of(args: &[&str]) -> String {
    let backend = Backend::start(Duration::ZERO, |_| {
        (
            StatusCode::OK,
            vec![("content-type", "application/json".to_owned())],
            Bytes::from_static(br#"{"note":"BACKEND-BODY-SECRET"}"#),
        )
    })
    .await;
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let rest = format!(
        r#"upstream: {{ url: "{}" }}
log: {{ access: all }}
redis: {{ url: "redis://127.0.0.1:1", timeout: 50ms }}
rules:
  - name: product
    match: {{ path: "/products/{{id}}" }}
    key: "product:{{id}}"
    ttl: 1h
    tier: memory
    invalidate_on: ["POST /products/{{id}}"]
  - name: page
    match: {{ path: "/pages/{{*rest}}" }}
    ttl: 1h
  - name: session
    match: {{ path: "/session" }}
    key: "session:{{cookie.session}}"
    ttl: 1h
"#,
        backend.url()
    );
    let token = format!(", token: \"{ADMIN_TOKEN}\"");
    let config = binary_config(&dir, port, admin, &token, &rest);
    let child = start_binary(
        &config,
        admin,
        args,
        &[("RUST_LOG", "debug")],
        Stdio::piped(),
    )
    .await;
    let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
    let admin_url = |p: &str| format!("http://127.0.0.1:{admin}{p}");
    let secret_headers = [
        ("cookie", "session=COOKIE-SECRET"),
        ("authorization", "Bearer AUTH-SECRET"),
    ];
    // A pass (Authorization), a miss, a hit, a write with a body, purges
    // and a reload with the admin token, and one with a wrong token.
    get(&url("/products/1?token=QUERY-SECRET"), &secret_headers).await;
    // Keys holding a query and a cookie, while Redis cannot be reached:
    // the failed L2 lookups and stores are logged without them.
    get(&url("/pages/a?token=QUERY-SECRET"), &[]).await;
    get(&url("/session"), &[("cookie", "session=COOKIE-SECRET")]).await;
    get(&url("/products/2"), &[("cookie", "session=COOKIE-SECRET")]).await;
    eventually("a hit", || async {
        get(&url("/products/2"), &[]).await.is_hit()
    })
    .await;
    send("POST", &url("/products/2"), &secret_headers, "BODY-SECRET").await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let admin_auth = [("authorization", bearer.as_str())];
    send("PURGE", &url("/products/2"), &admin_auth, "").await;
    send(
        "POST",
        &admin_url("/purge"),
        &admin_auth,
        r#"{"keys": ["product:2"]}"#,
    )
    .await;
    send("POST", &admin_url("/reload"), &admin_auth, "").await;
    let refused = send("POST", &admin_url("/reload"), &secret_headers, "").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    signal(&child, "TERM");
    let out = exit_output(child, Duration::from_secs(10)).await;
    assert!(out.status.success(), "{:?}", out.status);
    String::from_utf8(out.stderr).unwrap()
}

/// With `--log-format json` every line is a JSON object; each request has
/// a line whose span carries rule, outcome, status and latency; no secret
/// appears anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_span_and_no_secret() {
    let logs = logs_of(&["--log-format", "json"]).await;
    for secret in SECRETS {
        assert!(!logs.contains(secret), "{secret} was logged:\n{logs}");
    }
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let served: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "served")
        .map(|l| &l["span"])
        .collect();
    let find = |outcome: &str| {
        served
            .iter()
            .find(|s| s["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {outcome} line in {served:?}"))
    };
    let hit = find("hit-memory");
    assert_eq!(hit["name"], "request");
    assert_eq!(hit["rule"], "product");
    assert_eq!(hit["status"], 200);
    assert_eq!(hit["path"], "/products/2");
    // Milliseconds, measured: above zero, and well under the run's 10 s.
    let latency = hit["latency_ms"].as_f64();
    assert!(
        latency.is_some_and(|ms| ms > 0.0 && ms < 10_000.0),
        "{latency:?}"
    );
    assert!(
        served
            .iter()
            .any(|s| s["outcome"] == "miss" && s["rule"] == "product")
    );
    // The secret-bearing keys did reach the code that warns about Redis.
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "L2 lookup failed; treated as a miss"),
        "{logs}"
    );
    assert_eq!(find("pass")["method"], "GET");

    // `log: { access: all }`: one access line per request on the proxy
    // port, each with its own id, the path without its query.
    let access: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["target"] == "sidecache::access")
        .map(|l| &l["fields"])
        .collect();
    assert!(access.len() >= 7, "{access:?}");
    let ids: std::collections::HashSet<&str> =
        access.iter().filter_map(|a| a["id"].as_str()).collect();
    assert_eq!(ids.len(), access.len(), "an id per request: {access:?}");
    let hit = access
        .iter()
        .find(|a| a["outcome"] == "hit-memory")
        .expect("the hit's access line");
    assert_eq!(hit["path"], "/products/2");
    assert_eq!(hit["rule"], "product");
    assert_eq!(hit["status"], 200);
    assert_eq!(hit["client"], "127.0.0.1");
    assert!(hit["cache_status"].as_str().unwrap().contains("hit"));
    assert!(hit["ms"].as_f64().is_some_and(|ms| ms > 0.0));
    assert!(
        access.iter().any(|a| a["path"] == "/products/1"),
        "the query-bearing request, without its query: {access:?}"
    );
}

/// Text is the default format, with the span's fields on the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_by_default_and_no_secret() {
    let logs = logs_of(&[]).await;
    for secret in SECRETS {
        assert!(!logs.contains(secret), "{secret} was logged:\n{logs}");
    }
    assert!(!logs.trim_start().starts_with('{'));
    // Not a terminal: no colour codes in the file.
    assert!(!logs.contains('\u{1b}'), "ANSI escapes in piped logs");
    let line = logs
        .lines()
        .find(|l| l.contains("served") && l.contains("hit-memory"))
        .unwrap_or_else(|| panic!("no hit line:\n{logs}"));
    for field in [
        "rule=\"product\"",
        "outcome=\"hit-memory\"",
        "status=200",
        "latency_ms=",
        "path=\"/products/2\"",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
}

/// A Redis outage is logged when it starts, not once per lookup or store:
/// 100 requests while Redis cannot be reached give a handful of warnings,
/// not hundreds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_logged_once_not_per_request() {
    let backend = Backend::json(vec![]).await;
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let rest = format!(
        r#"upstream: {{ url: "{}" }}
redis: {{ url: "redis://127.0.0.1:1", timeout: 50ms }}
rules:
  - name: product
    match: {{ path: "/products/{{id}}" }}
    key: "product:{{id}}"
    ttl: 1h
"#,
        backend.url()
    );
    let config = binary_config(&dir, port, admin, "", &rest);
    let child = start_binary(&config, admin, &[], &[("RUST_LOG", "info")], Stdio::piped()).await;
    for i in 0..100 {
        let got = get(&format!("http://127.0.0.1:{port}/products/{i}"), &[]).await;
        assert_eq!(got.status, StatusCode::OK);
    }
    signal(&child, "TERM");
    let out = exit_output(child, Duration::from_secs(10)).await;
    let logs = String::from_utf8(out.stderr).unwrap();
    let warnings = logs.lines().filter(|l| l.contains("WARN")).count();
    let down = logs
        .lines()
        .find(|l| l.contains("redis does not answer"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(down.contains("redis=\"here\""), "which Redis: {down}");
    assert!(
        warnings <= 10,
        "{warnings} warnings for 100 requests:\n{logs}"
    );
}

/// A backend that is down is logged as it happens, with the failed
/// request's method and path (never its query), and not once per request:
/// 100 failed requests give one warning (the rest are summed up once a
/// minute, and counted in the metrics); with the default access log each
/// failed request gets its access line (they are errors).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_outage_is_logged_once_with_its_path() {
    let (port, admin, down) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let rest = format!(
        r#"upstream: {{ url: "http://127.0.0.1:{down}" }}
rules:
  - name: product
    match: {{ path: "/products/{{id}}" }}
    key: "product:{{id}}"
    ttl: 1h
"#
    );
    let config = binary_config(&dir, port, admin, "", &rest);
    let child = start_binary(&config, admin, &[], &[("RUST_LOG", "info")], Stdio::piped()).await;
    for i in 0..100 {
        let got = get(
            &format!("http://127.0.0.1:{port}/products/{i}?q=QUERY-SECRET"),
            &[],
        )
        .await;
        assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    }
    signal(&child, "TERM");
    let out = exit_output(child, Duration::from_secs(10)).await;
    let logs = String::from_utf8(out.stderr).unwrap();
    assert!(!logs.contains("QUERY-SECRET"), "{logs}");
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(
        warnings[0].contains("backend request failed") && warnings[0].contains("/products/0"),
        "{logs}"
    );
    let access = logs
        .lines()
        .filter(|l| l.contains("sidecache::access") && l.contains("status=502"))
        .count();
    assert_eq!(access, 100, "{logs}");
}
