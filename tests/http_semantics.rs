//! HTTP caching semantics against a real backend: revalidation with 304s,
//! freshness and staleness as RFC 9111 and RFC 5861 say, targeted cache
//! control (RFC 9213), and Range requests answered from cache.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
redis: { url: "REDIS", key_prefix: "sem:" }
rules:
  - name: fixed
    match: { path: "/fixed/{*rest}" }
    ttl: 1s
    keep_for_revalidation: 1h
    stale_if_error: 1h
  - name: swr
    match: { path: "/swr/{*rest}" }
    ttl: 1s
    stale_while_revalidate: 1h
  - name: origin
    match: { path: "/origin/{*rest}" }
    ttl: origin
  - name: capped
    match: { path: "/capped/{*rest}" }
    ttl: origin
    stale_while_revalidate: 1s
"#;

/// What the backend answers for one path.
#[derive(Clone)]
struct Script {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: &'static str,
}

type Scripts = Arc<Mutex<HashMap<String, Script>>>;

/// A backend answering each path from its script; a request whose
/// `If-None-Match` equals the script's ETag gets a 304 with the script's
/// headers and no body.
async fn scripted() -> (Backend, Scripts) {
    let scripts: Scripts = Arc::default();
    let s = scripts.clone();
    let backend = Backend::start(Duration::ZERO, move |seen| {
        let path = seen.uri.split('?').next().unwrap_or("").to_owned();
        let Some(script) = s.lock().unwrap().get(&path).cloned() else {
            return (StatusCode::NOT_FOUND, vec![], Bytes::new());
        };
        let etag = script.headers.iter().find(|(n, _)| *n == "etag");
        let inm = seen
            .headers
            .get("if-none-match")
            .map(|v| v.to_str().unwrap());
        if let (Some((_, tag)), Some(inm)) = (etag, inm)
            && tag == inm
        {
            return (StatusCode::NOT_MODIFIED, script.headers, Bytes::new());
        }
        (
            StatusCode::from_u16(script.status).unwrap(),
            script.headers,
            Bytes::from_static(script.body.as_bytes()),
        )
    })
    .await;
    (backend, scripts)
}

fn set(
    scripts: &Scripts,
    path: &str,
    status: u16,
    headers: &[(&'static str, &str)],
    body: &'static str,
) {
    scripts.lock().unwrap().insert(
        path.to_owned(),
        Script {
            status,
            headers: headers.iter().map(|(n, v)| (*n, (*v).to_owned())).collect(),
            body,
        },
    );
}

/// Waits out a 1 s freshness (entries here are stored with short TTLs).
async fn expire() {
    tokio::time::sleep(Duration::from_millis(1_100)).await;
}

async fn start(backend: &Backend, redis: Option<&Redis>) -> Proxy {
    let rules = match redis {
        Some(_) => RULES.to_owned(),
        None => RULES.replace("redis: { url: \"REDIS\", key_prefix: \"sem:\" }\n", ""),
    };
    Proxy::start(&rules, &backend.url(), redis.map(|r| r.url()).as_deref()).await
}

/// Waits until `url` is answered from cache (a store completes in the
/// background once the body has been sent).
async fn hit_soon(url: &str) {
    eventually(&format!("{url} is a hit"), || async {
        get(url, &[]).await.is_hit()
    })
    .await;
}

/// Whether the answer to a first GET of `url` is stored: its Cache-Status
/// says so and the URL then hits, or it does not and a second GET misses.
async fn stored(url: &str) -> bool {
    let first = get(url, &[]).await;
    if first.cache_status().contains("; stored") {
        hit_soon(url).await;
        true
    } else {
        assert!(!get(url, &[]).await.is_hit(), "{url} hit though not stored");
        false
    }
}

/// The count of `sidecache_requests_total` for a rule and outcome.
async fn outcomes(proxy: &Proxy, rule: &str, outcome: &str) -> u64 {
    let text = get(&format!("http://{}/metrics", proxy.admin), &[])
        .await
        .body;
    let line = format!("sidecache_requests_total{{rule=\"{rule}\",outcome=\"{outcome}\"}} ");
    String::from_utf8_lossy(&text)
        .lines()
        .find_map(|l| l.strip_prefix(&line).and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// A stale entry with an ETag is revalidated: the backend gets
/// `If-None-Match`, answers 304, and the entry is refreshed with the 304's
/// headers in L1 and in Redis, without the body crossing the wire again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_modified_refreshes_entry_in_both_tiers() {
    // Both replicas are reached under one public host, which the key holds.
    const SHOP: &[(&str, &str)] = &[("host", "shop.example")];
    let redis = Redis::start();
    let (backend, scripts) = scripted().await;
    set(
        &scripts,
        "/fixed/a",
        200,
        &[("etag", "\"v1\""), ("x-version", "1")],
        "body one",
    );
    let a = start(&backend, Some(&redis)).await;
    let b = start(&backend, Some(&redis)).await;
    let first = get(&a.url("/fixed/a"), SHOP).await;
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    expire().await;
    // The backend's 304 carries a new header value.
    set(
        &scripts,
        "/fixed/a",
        200,
        &[("etag", "\"v1\""), ("x-version", "2")],
        "body two",
    );
    let again = get(&a.url("/fixed/a"), SHOP).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        again.body, "body one",
        "the stored body was confirmed, not replaced"
    );
    assert_eq!(again.header("x-version"), "2");
    assert!(
        again
            .cache_status()
            .contains("fwd=stale; fwd-status=304; stored"),
        "{}",
        again.cache_status()
    );
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["if-none-match"], "\"v1\"");
    assert_eq!(outcomes(&a, "fixed", "revalidated").await, 1);
    // Fresh again here, and in Redis for B.
    eventually("A's entry is fresh again", || async {
        get(&a.url("/fixed/a"), SHOP).await.is_hit()
    })
    .await;
    let hit = get(&a.url("/fixed/a"), SHOP).await;
    assert_eq!(hit.header("x-version"), "2");
    eventually("B finds the refreshed entry in Redis", || async {
        let got = get(&b.url("/fixed/a"), SHOP).await;
        got.is_hit()
            && got.cache_status().contains("detail=redis")
            && got.header("x-version") == "2"
    })
    .await;
    assert_eq!(backend.hits(), 2);
}

/// A client whose own validator matches gets a 304 from a revalidation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revalidation_answers_client_validators() {
    let (backend, scripts) = scripted().await;
    set(&scripts, "/fixed/c", 200, &[("etag", "\"c1\"")], "body");
    let a = start(&backend, None).await;
    get(&a.url("/fixed/c"), &[]).await;
    expire().await;
    let res = get(&a.url("/fixed/c"), &[("if-none-match", "\"c1\"")]).await;
    assert_eq!(res.status, StatusCode::NOT_MODIFIED);
    assert!(
        res.cache_status().contains("fwd-status=304"),
        "{}",
        res.cache_status()
    );
    assert!(res.body.is_empty());
}

/// When the validator changed, the backend's 200 replaces the entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_validator_replaces_entry() {
    let (backend, scripts) = scripted().await;
    set(&scripts, "/fixed/b", 200, &[("etag", "\"b1\"")], "old");
    let a = start(&backend, None).await;
    get(&a.url("/fixed/b"), &[]).await;
    expire().await;
    set(&scripts, "/fixed/b", 200, &[("etag", "\"b2\"")], "new");
    let res = get(&a.url("/fixed/b"), &[]).await;
    assert_eq!(res.body, "new");
    assert!(
        res.cache_status()
            .contains("fwd=stale; fwd-status=200; stored"),
        "{}",
        res.cache_status()
    );
    hit_soon(&a.url("/fixed/b")).await;
    assert_eq!(get(&a.url("/fixed/b"), &[]).await.body, "new");
}

/// A stale-while-revalidate refresh in the background is conditional too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_refresh_is_conditional() {
    let (backend, scripts) = scripted().await;
    set(&scripts, "/swr/a", 200, &[("etag", "\"s1\"")], "swr body");
    let a = start(&backend, None).await;
    get(&a.url("/swr/a"), &[]).await;
    expire().await;
    let stale = get(&a.url("/swr/a"), &[]).await;
    assert!(
        stale.cache_status().contains("detail=revalidating"),
        "{}",
        stale.cache_status()
    );
    eventually("the background refresh went out", || async {
        backend.hits() == 2
    })
    .await;
    assert_eq!(backend.seen()[1].headers["if-none-match"], "\"s1\"");
    eventually("the refreshed entry is fresh", || async {
        let got = get(&a.url("/swr/a"), &[]).await;
        got.is_hit() && !got.cache_status().contains("fwd=stale")
    })
    .await;
    assert_eq!(backend.hits(), 2);
}

/// `must-revalidate`, `proxy-revalidate`, `s-maxage` and `no-cache` forbid
/// serving the entry stale, even inside the rule's stale-if-error window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_forbidden_by_the_response() {
    let (backend, scripts) = scripted().await;
    let a = start(&backend, None).await;
    let cases = [
        ("/fixed/mr", "must-revalidate"),
        ("/fixed/pr", "Proxy-Revalidate"),
        ("/fixed/sm", "s-maxage=600"),
        ("/fixed/nc", "no-cache"),
        ("/fixed/ok", "public"),
    ];
    for (path, cc) in cases {
        set(&scripts, path, 200, &[("cache-control", cc)], "good");
        let first = get(&a.url(path), &[]).await;
        assert!(
            first.cache_status().contains("stored"),
            "{cc}: {}",
            first.cache_status()
        );
    }
    expire().await;
    for (path, _) in cases {
        set(&scripts, path, 500, &[], "broken");
    }
    for (path, cc) in cases {
        let res = get(&a.url(path), &[]).await;
        if cc == "public" {
            // The control: nothing forbids it, so stale-if-error applies.
            assert_eq!(res.status, StatusCode::OK, "{}", res.cache_status());
            assert!(res.cache_status().contains("stale-if-error"));
        } else {
            assert_eq!(
                res.status,
                StatusCode::INTERNAL_SERVER_ERROR,
                "{cc} served stale"
            );
        }
    }
}

/// `no-cache` with a validator under `ttl: origin`: stored, but every use
/// is revalidated with the backend first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_is_revalidated_before_every_use() {
    let (backend, scripts) = scripted().await;
    set(
        &scripts,
        "/origin/nc",
        200,
        &[("cache-control", "No-Cache"), ("etag", "\"n1\"")],
        "kept",
    );
    let a = start(&backend, None).await;
    let first = get(&a.url("/origin/nc"), &[]).await;
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    // The store lands in the background; from then on every use asks.
    eventually("the entry is revalidated", || async {
        get(&a.url("/origin/nc"), &[])
            .await
            .cache_status()
            .contains("fwd-status=304")
    })
    .await;
    let before = backend.hits();
    let mut asked = 0;
    for i in 0..3 {
        let res = get(&a.url("/origin/nc"), &[]).await;
        assert_eq!(res.body, "kept");
        // Each use is revalidated, or joins the revalidation just made
        // (its store can still hold the key's flight when the next comes).
        let status = res.cache_status();
        assert!(
            status.contains("fwd-status=304") || status.contains("collapsed"),
            "{i}: {status}"
        );
        asked += usize::from(status.contains("fwd-status=304"));
    }
    assert_eq!(backend.hits(), before + asked);
    let seen = backend.seen();
    assert!(
        seen[before..]
            .iter()
            .all(|s| s.headers["if-none-match"] == "\"n1\"")
    );
}

/// Directive names are matched whatever their case; unknown ones are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directives_ignore_case_and_unknown_names() {
    let (backend, scripts) = scripted().await;
    set(
        &scripts,
        "/origin/upper",
        200,
        &[("cache-control", "MAX-AGE=60, X-Unknown=5, foo")],
        "a",
    );
    set(
        &scripts,
        "/origin/nostore",
        200,
        &[("cache-control", "max-age=60, No-Store")],
        "b",
    );
    let a = start(&backend, None).await;
    assert!(stored(&a.url("/origin/upper")).await);
    let res = get(&a.url("/origin/nostore"), &[]).await;
    assert!(
        res.cache_status().contains("detail=no-store"),
        "{}",
        res.cache_status()
    );
    assert!(!get(&a.url("/origin/nostore"), &[]).await.is_hit());
}

/// Under `ttl: origin` any final status with explicit freshness is stored;
/// `no-store, must-understand` is obeyed for statuses sidecache does not
/// know and overridden for those it does; a fixed TTL keeps its list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_freshness_and_must_understand() {
    let (backend, scripts) = scripted().await;
    let a = start(&backend, None).await;
    let stored = |path: &'static str| {
        let url = a.url(path);
        async move { stored(&url).await }
    };
    set(
        &scripts,
        "/origin/422",
        422,
        &[("cache-control", "max-age=60")],
        "x",
    );
    assert!(
        stored("/origin/422").await,
        "a 422 with max-age was not stored"
    );
    set(
        &scripts,
        "/fixed/422",
        422,
        &[("cache-control", "max-age=60")],
        "x",
    );
    assert!(
        !stored("/fixed/422").await,
        "a fixed TTL stored a status off its list"
    );
    set(
        &scripts,
        "/origin/mu-known",
        200,
        &[("cache-control", "max-age=60, no-store, must-understand")],
        "x",
    );
    assert!(
        stored("/origin/mu-known").await,
        "must-understand with a known status"
    );
    set(
        &scripts,
        "/origin/mu-unknown",
        299,
        &[("cache-control", "max-age=60, no-store, must-understand")],
        "x",
    );
    assert!(
        !stored("/origin/mu-unknown").await,
        "must-understand with an unknown status"
    );
    set(
        &scripts,
        "/origin/206",
        206,
        &[
            ("cache-control", "max-age=60"),
            ("content-range", "bytes 0-0/1"),
        ],
        "x",
    );
    assert!(
        !stored("/origin/206").await,
        "a 206 was stored as a full entry"
    );
}

/// Under `ttl: origin` the backend's stale-while-revalidate applies, capped
/// by the rule's own window when it sets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_stale_windows_capped_by_the_rule() {
    let (backend, scripts) = scripted().await;
    let cc = "max-age=1, stale-while-revalidate=60";
    set(&scripts, "/origin/w", 200, &[("cache-control", cc)], "w");
    set(&scripts, "/capped/w", 200, &[("cache-control", cc)], "w");
    let a = start(&backend, None).await;
    get(&a.url("/origin/w"), &[]).await;
    get(&a.url("/capped/w"), &[]).await;
    // Past the rule's 1 s window but inside the backend's 60 s one.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let origin = get(&a.url("/origin/w"), &[]).await;
    assert!(
        origin.cache_status().contains("detail=revalidating"),
        "{}",
        origin.cache_status()
    );
    let capped = get(&a.url("/capped/w"), &[]).await;
    assert!(
        !capped.is_hit(),
        "served stale past the rule's window: {}",
        capped.cache_status()
    );
}

/// An `Expires` that is not a valid HTTP date means already expired; a
/// valid date in the RFC 850 form counts (the freshness crate alone reads
/// it as expired); `Age: 7200, 0` is 7200 seconds old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_expires_and_age() {
    let (backend, scripts) = scripted().await;
    let a = start(&backend, None).await;
    for (path, expires) in [
        ("/origin/dashes", "Thu, 01-Jan-2099 00:00:00 GMT"),
        ("/origin/spaces", "Thu, 01 Jan 2099  00:00:00 GMT"),
        ("/origin/twodigit", "Thu, 01 Jan 99 00:00:00 GMT"),
    ] {
        set(&scripts, path, 200, &[("expires", expires)], "e");
        let res = get(&a.url(path), &[]).await;
        assert!(
            res.cache_status().contains("no-freshness"),
            "{expires}: {}",
            res.cache_status()
        );
    }
    // The RFC 850 form is a valid HTTP date (RFC 9110 5.6.7): 2049 here.
    set(
        &scripts,
        "/origin/rfc850",
        200,
        &[("expires", "Friday, 01-Jan-49 00:00:00 GMT")],
        "e",
    );
    assert!(stored(&a.url("/origin/rfc850")).await);
    let future = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    set(
        &scripts,
        "/origin/valid",
        200,
        &[("expires", Box::leak(future.into_boxed_str()))],
        "e",
    );
    assert!(stored(&a.url("/origin/valid")).await);
    set(
        &scripts,
        "/origin/age",
        200,
        &[("cache-control", "max-age=3600"), ("age", "7200, 0")],
        "e",
    );
    let res = get(&a.url("/origin/age"), &[]).await;
    assert!(
        res.cache_status().contains("no-freshness"),
        "{}",
        res.cache_status()
    );
}

/// `Sidecache-Cache-Control` and `CDN-Cache-Control` take precedence over
/// `Cache-Control`; the first never reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_cache_control() {
    let (backend, scripts) = scripted().await;
    set(
        &scripts,
        "/origin/t",
        200,
        &[
            ("cache-control", "max-age=0"),
            ("sidecache-cache-control", "max-age=3600"),
        ],
        "t",
    );
    set(
        &scripts,
        "/origin/cdn",
        200,
        &[
            ("cache-control", "max-age=60"),
            ("cdn-cache-control", "no-store"),
        ],
        "c",
    );
    let a = start(&backend, None).await;
    let first = get(&a.url("/origin/t"), &[]).await;
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    assert_eq!(first.header("sidecache-cache-control"), "");
    assert_eq!(first.header("cache-control"), "max-age=0");
    hit_soon(&a.url("/origin/t")).await;
    let hit = get(&a.url("/origin/t"), &[]).await;
    assert_eq!(hit.header("sidecache-cache-control"), "");
    let cdn = get(&a.url("/origin/cdn"), &[]).await;
    assert!(
        cdn.cache_status().contains("detail=no-store"),
        "{}",
        cdn.cache_status()
    );
}

/// One range of a cached 200 is cut from the entry; an `If-Range` that does
/// not match gives the whole entry; several ranges, and any Range on a miss,
/// go to the backend untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_from_cache() {
    let (backend, scripts) = scripted().await;
    set(
        &scripts,
        "/origin/r",
        200,
        &[("cache-control", "max-age=60"), ("etag", "\"r1\"")],
        "0123456789",
    );
    let a = start(&backend, None).await;
    let miss = get(&a.url("/origin/r"), &[("range", "bytes=0-1")]).await;
    assert_eq!(
        backend.seen()[0].headers["range"],
        "bytes=0-1",
        "a miss with Range was not forwarded as it is"
    );
    assert!(!miss.cache_status().contains("stored"));
    hit_soon(&a.url("/origin/r")).await;
    let hits_before = backend.hits();
    let part = get(&a.url("/origin/r"), &[("range", "bytes=2-4")]).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, "234");
    assert_eq!(part.header("content-range"), "bytes 2-4/10");
    assert!(part.is_hit());
    let tail = get(
        &a.url("/origin/r"),
        &[("range", "bytes=-3"), ("if-range", "\"r1\"")],
    )
    .await;
    assert_eq!(
        (tail.status, tail.body.as_ref()),
        (StatusCode::PARTIAL_CONTENT, &b"789"[..])
    );
    let other = get(
        &a.url("/origin/r"),
        &[("range", "bytes=2-4"), ("if-range", "\"old\"")],
    )
    .await;
    assert_eq!(
        (other.status, other.body.as_ref()),
        (StatusCode::OK, &b"0123456789"[..])
    );
    let beyond = get(&a.url("/origin/r"), &[("range", "bytes=50-60")]).await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(backend.hits(), hits_before);
    get(&a.url("/origin/r"), &[("range", "bytes=0-1,4-5")]).await;
    assert_eq!(
        backend.hits(),
        hits_before + 1,
        "several ranges were not forwarded"
    );
    assert_eq!(
        backend.seen().last().unwrap().headers["range"],
        "bytes=0-1,4-5"
    );
}

/// What clients in front are told: under a fixed TTL the backend's
/// `max-age` is raised by the answer's `Age`, so `Age` never exceeds it;
/// `downstream.cache_control` replaces it on hits and misses alike.
#[tokio::test]
async fn downstream_freshness() {
    const DOWNSTREAM: &str = r#"
upstream: { url: UPSTREAM }
rules:
  - name: fixed
    match: { path: "/fixed/{id}" }
    key: "fixed:{id}"
    ttl: 1h
  - name: told
    match: { path: "/told/{id}" }
    key: "told:{id}"
    ttl: 1h
    downstream: { cache_control: "private, max-age=5" }
"#;
    let backend = Backend::json(vec![("cache-control", "public, max-age=1".into())]).await;
    let proxy = Proxy::start(DOWNSTREAM, &backend.url(), None).await;
    let miss = get(&proxy.url("/fixed/1"), &[]).await;
    assert_eq!(miss.header("cache-control"), "public, max-age=1");
    // An entry older than the backend's max-age, as a busy shop's are
    // (asked again once stored: a miss has no Age).
    let give_up = Instant::now() + Duration::from_secs(10);
    let (hit, age) = loop {
        let hit = await_hit(&proxy.url("/fixed/1"), &[]).await;
        let age: u64 = hit.header("age").parse().expect("a hit has an Age");
        if age >= 2 {
            break (hit, age);
        }
        assert!(Instant::now() < give_up, "the entry's Age stays at {age}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        hit.header("cache-control"),
        format!("public, max-age={}", 1 + age),
        "age {age}"
    );

    let miss = get(&proxy.url("/told/1"), &[]).await;
    assert_eq!(miss.header("cache-control"), "private, max-age=5");
    let hit = await_hit(&proxy.url("/told/1"), &[]).await;
    assert_eq!(hit.header("cache-control"), "private, max-age=5");
}

/// Freshness from the backend is capped at 30 days: a year's `max-age`
/// under `ttl: origin` is stored with a TTL of 30 days, and a hit says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_freshness_is_capped_at_thirty_days() {
    let (backend, scripts) = scripted().await;
    let a = start(&backend, None).await;
    set(
        &scripts,
        "/origin/year",
        200,
        &[("cache-control", "max-age=31536000")],
        "x",
    );
    let hit = await_hit(&a.url("/origin/year"), &[]).await;
    let status = hit.cache_status();
    let ttl: u64 = status
        .split("; ")
        .find_map(|p| p.strip_prefix("ttl="))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no ttl in {status}"));
    let month = 30 * 24 * 3600;
    assert!(
        (month - 60..=month).contains(&ttl),
        "a year's max-age kept for {ttl} s"
    );
}
