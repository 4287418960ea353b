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
    refresh_ahead: 25%
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

/// [`steady`] load for `seconds` after the first fill: asserts every
/// answer was a hit; answers the backend's refreshes and the TTL periods.
async fn no_miss_under_load(proxies: &[&Proxy], backend: &Backend, seconds: u64) -> (usize, f64) {
    let start = Instant::now();
    let (served, not_hits) = steady(proxies, Duration::from_secs(seconds)).await;
    let refreshes = backend.hits() - 1;
    let periods = start.elapsed().as_secs_f64() / 2.0;
    eprintln!("{served} answers, {refreshes} refreshes over {periods:.1} TTL periods");
    assert_eq!(
        not_hits, 0,
        "{not_hits} of {served} answers waited on the backend"
    );
    (refreshes, periods)
}

/// A hot key with a 2 s TTL under steady load for 20 s: every answer is a
/// hit, and the backend (100 ms per answer) sees about one request per TTL
/// period (a refresh once the entry is in its last 25 %, about every 1.5 s;
/// the window leaves the refresh 400 ms to spare on a busy machine).
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
    // Stored once the fill job has run, just after the answer.
    eventually("a hit", || async {
        get(&proxy.url("/hot/1"), &[]).await.is_hit()
    })
    .await;
    let (refreshes, periods) = no_miss_under_load(&[&proxy], &backend, 20).await;
    assert!(
        (periods * 0.8..=periods * 1.5).contains(&(refreshes as f64)),
        "{refreshes} refreshes over {periods:.1} TTL periods"
    );
}

/// Two replicas sharing Redis with `collapse: global`: still no miss, and
/// about one refresh per period across both (a replica that finds the
/// other's refresh in Redis takes it; one whose lock request fails
/// refreshes alone), where each refreshing on its own makes more than two
/// per period (12 over 5 in a run with `collapse: local`).
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
    let (refreshes, periods) = no_miss_under_load(&[&a, &b], &backend, 10).await;
    assert!(
        (refreshes as f64) <= periods * 2.0,
        "{refreshes} refreshes over {periods:.1} TTL periods: the replicas refreshed each on their own"
    );
}

const WARM: &str = r#"
upstream: { url: UPSTREAM }
limits: { warm_in_flight: IN_FLIGHT }
rules:
  - name: reco
    match: { path: "/recommendations/{user}" }
    # Per user: the session the backend reads is keyed (and so forwarded).
    key: "reco:{user}:{cookie.session}"
    ttl: 1h
    warm_on:
      - { on: "POST /login -> /recommendations/{response.user_id}", forward: [cookie] }
"#;

/// A shop backend: `POST /login` answers the user named in its JSON body
/// (`{"user": "u7"}`), and recommendations say whose cookie asked.
async fn shop(delay: Duration) -> Backend {
    Backend::start(delay, |s| {
        let json = vec![("content-type", "application/json".to_owned())];
        if s.uri == "/login" {
            let body: serde_json::Value = serde_json::from_slice(&s.body).unwrap_or_default();
            let user = body["user"].as_str().unwrap_or("nobody").to_owned();
            let answer = serde_json::json!({ "user_id": user });
            return (http::StatusCode::OK, json, answer.to_string().into());
        }
        let cookie = s
            .headers
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let answer = serde_json::json!({ "for": cookie, "uri": s.uri });
        (http::StatusCode::OK, json, answer.to_string().into())
    })
    .await
}

async fn login(proxy: &Proxy, user: &str) -> Got {
    let body = format!(r#"{{"user": "{user}"}}"#);
    send(
        "POST",
        &proxy.url("/login"),
        &[
            ("cookie", "session=abc"),
            ("content-type", "application/json"),
        ],
        &body,
    )
    .await
}

/// A login warms that user's recommendations: one backend request, made
/// after the login's answer, carrying the login's cookie (the rule forwards
/// it); the user's next GET is a hit.
#[tokio::test]
async fn a_login_warms_that_users_recommendations() {
    let backend = shop(Duration::ZERO).await;
    let proxy = Proxy::start(&WARM.replace("IN_FLIGHT", "16"), &backend.url(), None).await;
    assert_eq!(login(&proxy, "u7").await.status, http::StatusCode::OK);
    eventually("the warm fetch is done", || async {
        metric_sum_or_none(
            &proxy,
            sidecache::metrics::WARMS,
            r#"rule="reco",result="fetched""#,
        )
        .await
            == Some(1)
    })
    .await;
    let got = get(
        &proxy.url("/recommendations/u7"),
        &[("cookie", "session=abc")],
    )
    .await;
    assert!(got.is_hit(), "{}", got.cache_status());
    assert!(String::from_utf8_lossy(&got.body).contains("session=abc"));
    assert_eq!(backend.hits_for("/recommendations/u7"), 1);
    let order: Vec<String> = backend.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(order, ["/login", "/recommendations/u7"]);
}

/// The warm fetch runs behind the login's answer: with a backend that takes
/// 300 ms per answer, the login has its answer while the warm fetch has not
/// finished (had the login waited for it, it would have).
#[tokio::test]
async fn a_warm_fetch_never_delays_the_login() {
    let backend = shop(Duration::from_millis(300)).await;
    let proxy = Proxy::start(&WARM.replace("IN_FLIGHT", "16"), &backend.url(), None).await;
    assert_eq!(login(&proxy, "u8").await.status, http::StatusCode::OK);
    let done = r#"rule="reco",result="#;
    assert_eq!(
        metric_sum_or_none(&proxy, sidecache::metrics::WARMS, done).await,
        None,
        "the login was answered before its warm fetch was done"
    );
    eventually("the warm fetch is done", || async {
        metric_sum_or_none(&proxy, sidecache::metrics::WARMS, done).await == Some(1)
    })
    .await;
}

/// A burst of 20 logins with `warm_in_flight: 2`: two warm fetches run,
/// the other 18 are dropped and counted, and every login is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_bound_holds_under_a_login_burst() {
    let backend = shop(Duration::from_millis(500)).await;
    let proxy = Arc::new(Proxy::start(&WARM.replace("IN_FLIGHT", "2"), &backend.url(), None).await);
    let logins: Vec<_> = (0..20)
        .map(|i| {
            let proxy = proxy.clone();
            tokio::spawn(async move { login(&proxy, &format!("b{i}")).await.status })
        })
        .collect();
    for l in logins {
        assert_eq!(l.await.unwrap(), http::StatusCode::OK);
    }
    eventually("every warm fetch is counted", || async {
        metric_sum_or_none(&proxy, "sidecache_warm_total", "").await == Some(20)
    })
    .await;
    let dropped = r#"rule="reco",result="dropped""#;
    assert_eq!(
        metric_sum(&proxy, "sidecache_warm_total", dropped).await,
        18
    );
    let warmed = backend
        .seen()
        .iter()
        .filter(|s| s.uri.starts_with("/recommendations/"))
        .count();
    assert_eq!(warmed, 2);
}

/// A replica with `memory.warm.urls` fetches the list through the pipeline
/// before it turns ready (`/readyz` answers 503 meanwhile); its first
/// requests of those URLs are L1 hits. A reload fetches the list again,
/// with what the file holds then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_list_warms_a_starting_replica_and_a_reload() {
    let backend = Backend::json(vec![]).await;
    backend.set_delay(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("top-sellers.txt");
    std::fs::write(
        &list,
        "# top sellers\n/hot/1\n/hot/2  # and a comment\n\nhttp://shop.local/hot/3\n",
    )
    .unwrap();
    let config = dir.path().join("sidecache.yaml");
    let yaml = format!(
        "upstream: {{ url: \"{}\" }}\nadmin: {{ token: \"t\" }}\nmemory: {{ warm: {{ urls: \"{}\" }} }}\nrules:\n  - name: hot\n    match: {{ path: \"/hot/{{id}}\" }}\n    key: \"hot:{{id}}\"\n    ttl: 1h\n",
        backend.url(),
        list.display()
    );
    std::fs::write(&config, yaml).unwrap();
    let proxy = Proxy::start_file(&config).await;
    let readyz = format!("http://{}/readyz", proxy.admin);
    assert_eq!(
        get(&readyz, &[]).await.status,
        http::StatusCode::SERVICE_UNAVAILABLE
    );
    eventually("ready", || async {
        get(&readyz, &[]).await.status == http::StatusCode::OK
    })
    .await;
    assert_eq!(backend.hits(), 3);
    for path in ["/hot/1", "/hot/2", "/hot/3"] {
        let got = get(&proxy.url(path), &[]).await;
        assert!(
            got.cache_status().contains("hit; ttl="),
            "{path}: {}",
            got.cache_status()
        );
        assert!(
            got.cache_status().contains("detail=memory"),
            "{path}: {}",
            got.cache_status()
        );
    }
    assert_eq!(backend.hits(), 3);
    let fetched = r#"source="urls",result="fetched""#;
    assert_eq!(
        metric_sum(&proxy, "sidecache_warmup_total", fetched).await,
        3
    );

    std::fs::write(&list, "/hot/1\n/hot/4\n").unwrap();
    let reloaded = send(
        "POST",
        &format!("http://{}/reload", proxy.admin),
        &[("authorization", "Bearer t")],
        "",
    )
    .await;
    assert_eq!(reloaded.status, http::StatusCode::OK);
    eventually("the new list is fetched", || async {
        backend.hits_for("/hot/4") == 1
    })
    .await;
    eventually("it is stored", || async {
        get(&proxy.url("/hot/4"), &[]).await.is_hit()
    })
    .await;
    assert_eq!(backend.hits_for("/hot/4"), 1);
}

/// `memory.warm: { from: hot }`: replica A serves traffic (five keys often,
/// fifteen once, with writes to other keys beside it) and merges its counts
/// into Redis; replica B, started while A goes on, copies the five hottest
/// from L2 before it turns ready: its first requests of them are L1 hits
/// with no backend request, a purged one among them is not copied, and a
/// cold key is still only in L2. A replica that stops merges what it
/// counted since its last merge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_starts_with_the_hot_keys_in_memory() {
    const HOT: &str = r#"
upstream: { url: UPSTREAM }
redis: { url: "REDIS" }
admin: { token: "t" }
memory: { warm: { from: hot, top: 5 } }
rules:
  - name: hot
    match: { path: "/hot/{id}" }
    key: "hot:{id}"
    ttl: 1h
  - name: carts
    match: { path: "/carts/{id}" }
    key: "cart:{id}"
    ttl: 1h
    tier: memory
    invalidate_on: ["POST /carts/{id}"]
"#;
    let redis = Redis::start();
    let backend = Backend::json(vec![]).await;
    let a = Proxy::start(HOT, &backend.url(), Some(&redis.url())).await;
    // Writes and reads of other keys go on beside the counted traffic.
    let stop = Arc::new(AtomicBool::new(false));
    let other = tokio::spawn({
        let (base, stop) = (a.url(""), stop.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let cart = format!("{base}/carts/{}", n % 7);
                send("POST", &cart, &[], "{}").await;
                get(&cart, &[]).await;
                n += 1;
            }
        }
    });
    for round in 0..10 {
        for id in 1..=5 {
            get(&a.url(&format!("/hot/{id}")), &[]).await;
        }
        if round == 0 {
            for id in 6..=20 {
                get(&a.url(&format!("/hot/{id}")), &[]).await;
            }
        }
    }
    // The merge every 5 s puts A's counts in Redis while A runs (in one
    // period's set, or two if a period ends meanwhile).
    let conn = redis.conn().await;
    eventually_within(Duration::from_secs(15), "A's counts merged", || {
        let conn = conn.clone();
        async move {
            counted(conn.clone(), "hot:1").await == 10.0 && counted(conn, "hot:20").await == 1.0
        }
    })
    .await;
    assert!(
        admin_purge(&a, r#"{"keys": ["hot:5"]}"#, Some("t"))
            .await
            .status
            .is_success()
    );
    let hot_hits = || {
        backend
            .seen()
            .iter()
            .filter(|s| s.uri.starts_with("/hot/"))
            .count()
    };
    let before = hot_hits();

    let b = Proxy::start(HOT, &backend.url(), Some(&redis.url())).await;
    let readyz = format!("http://{}/readyz", b.admin);
    eventually("B ready", || async {
        get(&readyz, &[]).await.status == http::StatusCode::OK
    })
    .await;
    for id in 1..=4 {
        let got = get(&b.url(&format!("/hot/{id}")), &[]).await;
        assert!(
            got.cache_status().contains("hit;") && got.cache_status().contains("detail=memory"),
            "/hot/{id} on B: {}",
            got.cache_status()
        );
    }
    let cold = get(&b.url("/hot/6"), &[]).await;
    assert!(
        cold.cache_status().contains("detail=redis"),
        "/hot/6 on B: {}",
        cold.cache_status()
    );
    assert_eq!(hot_hits(), before, "B's first requests reached the backend");
    let purged = get(&b.url("/hot/5"), &[]).await;
    assert!(
        !purged.is_hit(),
        "the purged key was copied: {}",
        purged.cache_status()
    );
    let hot = |result: &str| format!("source=\"hot\",result=\"{result}\"");
    assert_eq!(
        metric_sum(&b, "sidecache_warmup_total", &hot("fetched")).await,
        4
    );
    assert_eq!(
        metric_sum(&b, "sidecache_warmup_total", &hot("absent")).await,
        1
    );

    // A stopping merges what it counted since its last merge.
    stop.store(true, Ordering::Relaxed);
    other.await.unwrap();
    for _ in 0..3 {
        get(&a.url("/hot/20"), &[]).await;
    }
    drop(a);
    eventually("A's last counts merged", || {
        let conn = conn.clone();
        async move { counted(conn, "hot:20").await == 4.0 }
    })
    .await;
}

/// The lookups of `key` counted under the `hot` rule, over every period's
/// set.
async fn counted(mut conn: redis::aio::MultiplexedConnection, key: &str) -> f64 {
    let sets: Vec<String> = redis::cmd("KEYS")
        .arg("sidecache:#hot:hot:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut sum = 0.0;
    for set in sets {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&set)
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        sum += score.unwrap_or(0.0);
    }
    sum
}

/// A refresh ahead that fails (the backend now answers 500) leaves the
/// entry to serve hits, and the key is not refreshed again for a second:
/// 50 hits over about a second inside the window cost the failing backend
/// one request, then at most one a second (two in all on a machine that
/// keeps up), not one per hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_refresh_is_retried_once_a_second() {
    const AHEAD: &str = r#"
upstream: { url: UPSTREAM }
rules:
  - name: hot
    match: { path: "/hot/{id}" }
    key: "hot:{id}"
    ttl: 10s
    stale: never
    refresh_ahead: 90%
"#;
    let failing = Arc::new(AtomicBool::new(false));
    let backend = Backend::start(Duration::ZERO, {
        let failing = failing.clone();
        move |s| {
            let status = if failing.load(Ordering::Relaxed) {
                http::StatusCode::INTERNAL_SERVER_ERROR
            } else {
                http::StatusCode::OK
            };
            (status, vec![], bytes::Bytes::from(s.uri.clone()))
        }
    })
    .await;
    let proxy = Proxy::start(AHEAD, &backend.url(), None).await;
    get(&proxy.url("/hot/1"), &[]).await;
    eventually("a hit", || async {
        get(&proxy.url("/hot/1"), &[]).await.is_hit()
    })
    .await;
    // The entry is in its last 90 % from its second second on.
    failing.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (before, started) = (backend.hits(), Instant::now());
    for _ in 0..50 {
        let got = get(&proxy.url("/hot/1"), &[]).await;
        assert!(got.is_hit(), "{}", got.cache_status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (refreshes, took) = (backend.hits() - before, started.elapsed());
    // The first hit refreshes; each later refresh waits a second after
    // the one before failed (50 ms to spare for times in whole ms).
    let most = 1 + usize::try_from((took + Duration::from_millis(50)).as_secs()).unwrap();
    assert!(
        (1..=most).contains(&refreshes),
        "{refreshes} refreshes of a failing backend in {took:?}"
    );
}
