//! The safety defaults: what is not stored, and each rule relaxation.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
memory: { max_object_size: 1KiB }
rules:
  - name: strict
    match: { path: "/strict/{case}" }
    key: "strict:{case}"
  - name: relaxed
    match: { path: "/relaxed/{case}" }
    key: "relaxed:{case}"
    set_cookie: strip
    allow_private: true
    allow_authorized: true
    statuses: [200, 500]
    max_object_size: 4KiB
  - name: origin
    match: { path: "/origin/{case}" }
    key: "origin:{case}"
    ttl: origin
"#;

fn reply_for(case: &str) -> Reply {
    let ok = StatusCode::OK;
    let small = Bytes::from_static(b"small");
    match case {
        "cookie" => (ok, vec![("set-cookie", "a=b".into())], small),
        "private" => (
            ok,
            vec![("cache-control", "private, max-age=60".into())],
            small,
        ),
        "nostore" => (ok, vec![("cache-control", "no-store".into())], small),
        "varystar" => (ok, vec![("vary", "*".into())], small),
        "error" => (StatusCode::INTERNAL_SERVER_ERROR, vec![], small),
        "large" => (ok, vec![], Bytes::from(vec![b'x'; 2048])),
        "maxage" => (ok, vec![("cache-control", "max-age=60".into())], small),
        "empty" => (StatusCode::NO_CONTENT, vec![], Bytes::new()),
        "aged" => (
            ok,
            vec![("cache-control", "max-age=60".into()), ("age", "20".into())],
            small,
        ),
        _ => (ok, vec![], small),
    }
}

async fn setup() -> (Backend, Proxy) {
    let backend = Backend::start(Duration::ZERO, |s| {
        let case = s.uri.rsplit('/').next().unwrap_or("").to_owned();
        reply_for(&case)
    })
    .await;
    let proxy = Proxy::start(RULES, &backend.url(), None).await;
    (backend, proxy)
}

/// Asks for `path`, then again, and reports whether it is answered from
/// cache: the store happens just after the body ends, so an answer said
/// to be stored is waited for (up to 5 s), any other given its chance.
async fn stored(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> (Got, bool) {
    let first = get(&proxy.url(path), headers).await;
    if first.cache_status().contains("; stored") {
        await_hit(&proxy.url(path), headers).await;
        return (first, true);
    }
    // Let a store task run anyway: it is spawned as the body ends.
    for _ in 0..20 {
        if get(&proxy.url(path), headers).await.is_hit() {
            return (first, true);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (first, false)
}

/// Each safety default refuses storage, and Cache-Status says why.
#[tokio::test]
async fn defaults_refuse() {
    let (_backend, proxy) = setup().await;
    for (case, reason) in [
        ("cookie", "set-cookie"),
        ("private", "private"),
        ("nostore", "no-store"),
        ("varystar", "vary-star"),
        ("error", "status"),
        ("large", "too-large"),
    ] {
        let (first, hit) = stored(&proxy, &format!("/strict/{case}"), &[]).await;
        assert!(!hit, "{case} was stored");
        assert!(
            first.cache_status().contains(&format!("detail={reason}")),
            "{case}: {}",
            first.cache_status()
        );
    }
    let (first, hit) = stored(&proxy, "/strict/auth", &[("authorization", "Bearer x")]).await;
    assert!(!hit, "a request with Authorization was answered from cache");
    assert!(
        first.cache_status().contains("detail=authorization"),
        "{}",
        first.cache_status()
    );
    let (_, hit) = stored(&proxy, "/strict/plain", &[]).await;
    assert!(hit, "a plain response must be stored");
    let (first, hit) = stored(&proxy, "/strict/empty", &[]).await;
    assert_eq!(first.status, StatusCode::NO_CONTENT);
    assert!(hit, "an empty 204 must be stored too");
    // Why, at a glance: counted by rule and reason. (At least: the
    // recorder is the process's, shared with other tests of this file.)
    for reason in [
        "set-cookie",
        "private",
        "no-store",
        "vary-star",
        "status",
        "too-large",
    ] {
        let labels = format!(r#"rule="strict",reason="{reason}""#);
        let n = metric_sum(&proxy, "sidecache_not_stored_total", &labels).await;
        assert!(n >= 1, "{reason} not counted");
    }
}

/// Each relaxation lets the rule store what the defaults refuse.
#[tokio::test]
async fn relaxations_store() {
    let (_backend, proxy) = setup().await;
    for case in ["cookie", "private", "error", "large"] {
        let (_, hit) = stored(&proxy, &format!("/relaxed/{case}"), &[]).await;
        assert!(hit, "{case} not stored under relaxed rule");
    }
    let (_, hit) = stored(&proxy, "/relaxed/auth", &[("authorization", "Bearer x")]).await;
    assert!(hit, "allow_authorized must answer from cache");
    for case in ["nostore", "varystar"] {
        let (_, hit) = stored(&proxy, &format!("/relaxed/{case}"), &[]).await;
        assert!(!hit, "{case} must never be stored");
    }
}

/// `ttl: origin` stores what the backend gives freshness to, for that long
/// less the age it reports, and nothing else.
#[tokio::test]
async fn origin_ttl() {
    let (_backend, proxy) = setup().await;
    let (first, hit) = stored(&proxy, "/origin/maxage", &[]).await;
    assert!(hit);
    assert!(
        first.cache_status().contains("ttl=60") || first.cache_status().contains("ttl=59"),
        "{}",
        first.cache_status()
    );
    let (first, hit) = stored(&proxy, "/origin/aged", &[]).await;
    assert!(hit);
    let status = first.cache_status();
    assert!(
        status.contains("ttl=40") || status.contains("ttl=39"),
        "{status}"
    );
    let again = get(&proxy.url("/origin/aged"), &[]).await;
    let age: u64 = again.header("age").parse().unwrap();
    assert!(
        (20..=21).contains(&age),
        "age {age} must include the backend's 20 s"
    );
    let (first, hit) = stored(&proxy, "/origin/plain", &[]).await;
    assert!(!hit, "no freshness from the backend: nothing stored");
    assert!(
        first.cache_status().contains("detail=no-freshness"),
        "{}",
        first.cache_status()
    );
}
