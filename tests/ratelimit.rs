//! `rate_limit:` on a rule: a client over its allowance gets 429 with
//! `Retry-After` and the backend never sees the request; `scope: global`
//! shares the allowance between replicas through Redis, and falls back to
//! counting per replica when Redis is gone.

mod support;

use http::StatusCode;
use support::*;

const LOCAL: &str = r#"
upstream: { url: UPSTREAM }
rules:
  - name: inventory
    match: { path: "/inventory/{id}" }
    cache: false
    rate_limit: { key: "{header.x-client}", rate: 2/m, burst: 2 }
"#;

const GLOBAL: &str = r#"
upstream: { url: UPSTREAM }
redis: { url: "REDIS", key_prefix: "rl:", timeout: 100ms }
rules:
  - name: inventory-global
    match: { path: "/inventory/{id}" }
    cache: false
    rate_limit: { key: "{header.x-client}", rate: 3/m, burst: 3, scope: global }
"#;

async fn ask(proxy: &Proxy, client: &str) -> Got {
    get(&proxy.url("/inventory/1"), &[("x-client", client)]).await
}

/// Two requests pass, the third gets 429 with Retry-After and a
/// `Cache-Status` that says why, and is counted; another client still
/// passes. The backend saw only the requests that passed.
#[tokio::test]
async fn local_limit_refuses_over_the_burst() {
    let backend = Backend::json(vec![]).await;
    let proxy = Proxy::start(LOCAL, &backend.url(), None).await;
    assert_eq!(ask(&proxy, "a").await.status, StatusCode::OK);
    assert_eq!(ask(&proxy, "a").await.status, StatusCode::OK);
    let refused = ask(&proxy, "a").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    // One request per 30 s on average.
    let retry: u64 = refused.header("retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert!(refused.cache_status().contains("detail=rate-limited"));
    assert_eq!(ask(&proxy, "b").await.status, StatusCode::OK);
    assert_eq!(backend.hits(), 3);

    let text = get(&format!("http://{}/metrics", proxy.admin), &[]).await;
    let text = String::from_utf8_lossy(&text.body);
    assert!(
        text.lines()
            .any(|l| l == r#"sidecache_rate_limited_total{rule="inventory",scope="local"} 1"#),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == r#"sidecache_requests_total{rule="inventory",outcome="rate-limited"} 1"#)
    );
}

/// Three requests in all pass across two replicas; the fourth is refused
/// on either. With Redis killed, each replica counts on its own again.
#[tokio::test]
async fn global_limit_is_shared_and_survives_redis() {
    let mut redis = Redis::start_tcp();
    let backend = Backend::json(vec![]).await;
    let a = Proxy::start(GLOBAL, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(GLOBAL, &backend.url(), Some(&redis.url())).await;
    assert_eq!(ask(&a, "c").await.status, StatusCode::OK);
    assert_eq!(ask(&b, "c").await.status, StatusCode::OK);
    assert_eq!(ask(&a, "c").await.status, StatusCode::OK);
    assert_eq!(ask(&b, "c").await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(ask(&a, "c").await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(backend.hits(), 3);

    redis.kill();
    // Replica a's local count for "c" is fresh: its own burst of 3 passes.
    for _ in 0..3 {
        assert_eq!(ask(&a, "c").await.status, StatusCode::OK);
    }
    assert_eq!(ask(&a, "c").await.status, StatusCode::TOO_MANY_REQUESTS);
}

/// A limit on a rule for a write method (login throttling) holds too: the
/// second POST is refused and never reaches the backend.
#[tokio::test]
async fn writes_are_limited_too() {
    const LOGIN: &str = r#"
upstream: { url: UPSTREAM }
rules:
  - name: login
    match: { path: "/login", methods: [POST] }
    cache: false
    rate_limit: { key: "{client_ip}", rate: 1/m, burst: 1 }
"#;
    let backend = Backend::json(vec![]).await;
    let proxy = Proxy::start(LOGIN, &backend.url(), None).await;
    let first = send("POST", &proxy.url("/login"), &[], "user=a").await;
    assert_eq!(first.status, StatusCode::OK);
    let second = send("POST", &proxy.url("/login"), &[], "user=a").await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(backend.hits(), 1);
}

/// A local limit holds across a reload: a client over its allowance stays
/// over it when the config is reloaded with the same limit (here with a new
/// rule beside it), and gets a fresh allowance only when its rule's limit
/// itself changes.
#[tokio::test]
async fn local_limit_survives_reload() {
    let backend = Backend::json(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecache.yaml");
    let config = |limit: &str, extra: &str| {
        format!(
            "upstream: {{ url: \"{}\" }}\nadmin: {{ token: \"t0k\" }}\nrules:\n  - name: inventory\n    match: {{ path: \"/inventory/{{id}}\" }}\n    cache: false\n    rate_limit: {{ key: \"{{header.x-client}}\", rate: {limit}, burst: 2 }}\n{extra}",
            backend.url()
        )
    };
    std::fs::write(&path, config("2/m", "")).unwrap();
    let proxy = Proxy::start_file(&path).await;
    let reload = || async {
        let got = send(
            "POST",
            &format!("http://{}/reload", proxy.admin),
            &[("authorization", "Bearer t0k")],
            "",
        )
        .await;
        assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    };
    assert_eq!(ask(&proxy, "a").await.status, StatusCode::OK);
    assert_eq!(ask(&proxy, "a").await.status, StatusCode::OK);
    assert_eq!(ask(&proxy, "a").await.status, StatusCode::TOO_MANY_REQUESTS);

    let other = "  - name: other\n    match: { path: \"/other/{id}\" }\n    key: \"other:{id}\"\n    ttl: 1m\n";
    std::fs::write(&path, config("2/m", other)).unwrap();
    reload().await;
    assert_eq!(
        proxy.app.config().rules.rules().len(),
        2,
        "the reload applied"
    );
    assert_eq!(
        ask(&proxy, "a").await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "a reload gave the client a fresh allowance"
    );

    std::fs::write(&path, config("3/m", other)).unwrap();
    reload().await;
    assert_eq!(
        ask(&proxy, "a").await.status,
        StatusCode::OK,
        "a changed limit starts afresh"
    );
}
