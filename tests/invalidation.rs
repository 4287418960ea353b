//! Invalidation that reaches every replica: triggers, tags, the purge API,
//! PURGE, sliding TTL, write-through — several proxies on one real Redis.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
admin: { token: "s3cret" }
redis: { url: "REDIS", key_prefix: "inv:", disconnect_grace: 1s }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
    tags: ["product:{id}", "category:{response.category_id}"]
    invalidate_on: ["PUT /products/{id}", "DELETE /products/{id}"]
  - name: category
    match: { path: "/categories/{id}/products" }
    key: "category:{id}:products:{query.page}"
    ttl: 1h
    tags: ["category:{id}"]
  - name: cart
    match: { path: "/cart/{user_id}" }
    key: "cart:{user_id}"
    tier: redis
    ttl: 7d
    write_through: { methods: [PUT, POST, DELETE], publish: "cart_update:{user_id}" }
  - name: session
    match: { path: "/session" }
    key: "session:{cookie.session_id}"
    ttl: 2s
    sliding: true
  - name: things
    match: { path: "/things/{*rest}" }
    ttl: 1h
  - name: tagged
    match: { path: "/tagged/{id}" }
    key: "tagged:{id}"
    ttl: 1h
    origin_tags: true
  - name: bulk
    match: { path: "/bulk/{id}" }
    key: "bulk:{id}"
    ttl: 1h
    tags: ["bulk"]
"#;

/// A backend that remembers what is written to a path and counts reads.
async fn shop() -> Backend {
    let state: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let reads = Arc::new(Mutex::new(0u64));
    Backend::start(Duration::ZERO, move |s| {
        let path = s.uri.split('?').next().unwrap_or("").to_owned();
        let json = vec![("content-type", "application/json".to_owned())];
        match s.method.as_str() {
            "PUT" | "POST" if path.ends_with("/fail") => (
                StatusCode::INTERNAL_SERVER_ERROR,
                vec![("location", "/things/1".into())],
                Bytes::new(),
            ),
            "POST" if path == "/things/moved" => (
                StatusCode::FOUND,
                vec![("location", "/things/1".into())],
                Bytes::new(),
            ),
            "PUT" | "POST" if path.starts_with("/things") => (
                StatusCode::CREATED,
                vec![("location", "/things/1".into())],
                Bytes::new(),
            ),
            "PUT" | "POST" => {
                let body = String::from_utf8_lossy(&s.body).into_owned();
                state.lock().unwrap().insert(path, body.clone());
                let mut headers = json;
                headers.push(("x-cart-version", "2".into()));
                (StatusCode::OK, headers, Bytes::from(body))
            }
            "DELETE" => {
                state.lock().unwrap().remove(&path);
                (StatusCode::NO_CONTENT, vec![], Bytes::new())
            }
            _ => {
                let mut n = reads.lock().unwrap();
                *n += 1;
                let stored = state.lock().unwrap().get(&path).cloned();
                let body = stored.unwrap_or_else(|| {
                    let id = path.rsplit('/').next().unwrap_or("");
                    format!("{{\"id\":\"{id}\",\"category_id\":5,\"v\":0,\"read\":{n}}}")
                });
                let mut headers = json;
                if path.starts_with("/tagged/") {
                    headers.push(("surrogate-key", "deal summer".into()));
                }
                (StatusCode::OK, headers, Bytes::from(body))
            }
        }
    })
    .await
}

async fn hit(proxy: &Proxy, path: &str) -> bool {
    get(&proxy.url(path), &[]).await.is_hit()
}

/// A PUT through A makes B miss on its next GET, and the product's category
/// listing (tagged from the PUT's JSON answer) is purged on every instance.
#[tokio::test]
async fn write_through_a_purges_b_and_category() {
    let redis = Redis::start();
    let backend = shop().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    for p in [&a, &b] {
        get(&p.url("/products/1"), &[]).await;
        get(&p.url("/categories/5/products?page=1"), &[]).await;
    }
    for p in [&a, &b] {
        eventually("product cached", || hit(p, "/products/1")).await;
        eventually("listing cached", || hit(p, "/categories/5/products?page=1")).await;
    }
    let old_listing = get(&a.url("/categories/5/products?page=1"), &[]).await;
    let put = send(
        "PUT",
        &a.url("/products/1"),
        &[("content-type", "application/json")],
        r#"{"id":"1","category_id":5,"v":1}"#,
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    // B hears of the write's purge over Redis pub/sub, a moment later: it
    // then drops the product from memory (the tag's time is taken first).
    eventually("B heard of the write's purge", || async {
        !b.app.cache().in_l1("product:1").await
    })
    .await;
    // B first: its next GET is a miss, answered with the new product.
    let after = get(&b.url("/products/1"), &[]).await;
    assert!(
        !after.is_hit(),
        "stale product served: {}",
        after.cache_status()
    );
    assert!(String::from_utf8_lossy(&after.body).contains("\"v\":1"));
    let listing = get(&b.url("/categories/5/products?page=1"), &[]).await;
    assert!(
        !listing.is_hit(),
        "stale listing served: {}",
        listing.cache_status()
    );
    // A may now answer from what B stored in Redis, but only the new values.
    let on_a = get(&a.url("/products/1"), &[]).await;
    assert!(
        String::from_utf8_lossy(&on_a.body).contains("\"v\":1"),
        "{}",
        on_a.cache_status()
    );
    let listing_a = get(&a.url("/categories/5/products?page=1"), &[]).await;
    assert_ne!(
        listing_a.body,
        old_listing.body,
        "{}",
        listing_a.cache_status()
    );
}

/// A purge by tag of 10,000 entries answers at once and leaves no instance
/// serving any of them; other tags are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_tag_ten_thousand_across_three() {
    let redis = Redis::start();
    let backend = Backend::json(vec![]).await;
    let proxies = [
        Proxy::start(RULES, &backend.url(), Some(&redis.url())).await,
        Proxy::start(RULES, &backend.url(), Some(&redis.url())).await,
        Proxy::start(RULES, &backend.url(), Some(&redis.url())).await,
    ];
    // Each instance fills a third; every instance then reads a sample of all.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    for i in 0..10_000 {
        let p = &proxies[i % 3];
        let res = client
            .get(p.url(&format!("/bulk/{i}")).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap();
    }
    get(&proxies[0].url("/products/77"), &[]).await;
    let sample: Vec<usize> = (0..10_000).step_by(97).collect();
    let mut old = HashMap::new();
    for (n, p) in proxies.iter().enumerate() {
        for i in &sample {
            let path = format!("/bulk/{i}");
            eventually("cached", || hit(p, &path)).await;
            old.insert((n, *i), get(&p.url(&path), &[]).await.body);
        }
    }
    eventually("other tag cached", || hit(&proxies[0], "/products/77")).await;
    let res = admin_purge(&proxies[1], r#"{"tags": ["bulk"]}"#, Some("s3cret")).await;
    assert_eq!(res.status, StatusCode::OK);
    let counts: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(counts["purged"]["tags"], 1);
    for (n, p) in proxies.iter().enumerate() {
        // The announcement may take a moment to arrive; then no sampled
        // entry is the one held before the purge.
        eventually("purge reached replica", || async {
            get(&p.url("/bulk/0"), &[]).await.body != old[&(n, 0)]
        })
        .await;
        for i in &sample {
            let r = get(&p.url(&format!("/bulk/{i}")), &[]).await;
            assert_ne!(
                r.body,
                old[&(n, *i)],
                "instance {n} served /bulk/{i} from before the purge"
            );
        }
    }
    assert!(
        hit(&proxies[0], "/products/77").await,
        "an entry without the tag was purged"
    );
}

/// Purge by prefix and by key; 401 without the token, 400 on a bad body.
#[tokio::test]
async fn purge_api_keys_prefixes_and_auth() {
    let redis = Redis::start();
    let backend = shop().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let mut old = HashMap::new();
    for (i, p) in [&a, &b].into_iter().enumerate() {
        for path in [
            "/products/1",
            "/products/2",
            "/categories/5/products?page=1",
        ] {
            get(&p.url(path), &[]).await;
            eventually("cached", || hit(p, path)).await;
            old.insert((i, path), get(&p.url(path), &[]).await.body);
        }
    }
    assert_eq!(
        admin_purge(&a, r#"{"prefixes": ["product:"]}"#, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        admin_purge(&a, r#"{"prefixes": ["product:"]}"#, Some("wrong"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        admin_purge(&a, r#"{"prefixes": "product:"}"#, Some("s3cret"))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        admin_purge(&a, "not json", Some("s3cret")).await.status,
        StatusCode::BAD_REQUEST
    );
    assert!(
        hit(&b, "/products/1").await,
        "a refused purge must purge nothing"
    );

    let res = admin_purge(&a, r#"{"prefixes": ["product:"]}"#, Some("s3cret")).await;
    assert_eq!(res.status, StatusCode::OK);
    let counts: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert!(
        counts["purged"]["prefixed"].as_u64().unwrap() >= 2,
        "{counts}"
    );
    // Each replica stops serving what it held (the announcement may take a
    // moment); what comes instead is new, from the backend or from another
    // replica's refill.
    for (i, p) in [&a, &b].into_iter().enumerate() {
        for path in ["/products/1", "/products/2"] {
            eventually("prefix purge reached", || async {
                get(&p.url(path), &[]).await.body != old[&(i, path)]
            })
            .await;
        }
        let listing = get(&p.url("/categories/5/products?page=1"), &[]).await;
        assert_eq!(
            listing.body,
            old[&(i, "/categories/5/products?page=1")],
            "prefix purge went too far"
        );
    }
    let res = admin_purge(&b, r#"{"keys": ["category:5:products:1"]}"#, Some("s3cret")).await;
    assert_eq!(res.status, StatusCode::OK);
    for (i, p) in [&a, &b].into_iter().enumerate() {
        let path = "/categories/5/products?page=1";
        eventually("key purge reached", || async {
            get(&p.url(path), &[]).await.body != old[&(i, path)]
        })
        .await;
    }
}

/// PURGE on the proxy port purges one URL with the token, 401 without.
#[tokio::test]
async fn purge_method_on_proxy_port() {
    let redis = Redis::start();
    let backend = shop().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    get(&a.url("/products/3"), &[]).await;
    eventually("cached", || hit(&a, "/products/3")).await;
    assert_eq!(
        send("PURGE", &a.url("/products/3"), &[], "").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(hit(&a, "/products/3").await);
    let res = send(
        "PURGE",
        &a.url("/products/3"),
        &[("authorization", "Bearer s3cret")],
        "",
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&res.body).contains("\"key\":\"product:3\""));
    assert!(!hit(&a, "/products/3").await);
}

/// With `admin.purge_on_proxy_port: false` a PURGE on the proxy port is
/// refused even with the token, and the entry stays; the admin API still
/// purges it.
#[tokio::test]
async fn purge_method_can_be_turned_off() {
    let backend = shop().await;
    let rules = RULES
        .replace(
            "admin: { token: \"s3cret\" }",
            "admin: { token: \"s3cret\", purge_on_proxy_port: false }",
        )
        .replace(
            "redis: { url: \"REDIS\", key_prefix: \"inv:\", disconnect_grace: 1s }\n",
            "",
        );
    assert!(rules.contains("purge_on_proxy_port: false"), "{rules}");
    let a = Proxy::start(&rules, &backend.url(), None).await;
    get(&a.url("/products/3"), &[]).await;
    eventually("cached", || hit(&a, "/products/3")).await;
    let auth = [("authorization", "Bearer s3cret")];
    let res = send("PURGE", &a.url("/products/3"), &auth, "").await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(hit(&a, "/products/3").await);
    let res = admin_purge(&a, r#"{"keys": ["product:3"]}"#, Some("s3cret")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(!hit(&a, "/products/3").await);
}

/// A successful POST purges its own URL and its Location (RFC 9111 4.4),
/// without any rule saying so, but not a redirect's Location; a failed one
/// purges nothing.
#[tokio::test]
async fn unsafe_method_purges_own_url_and_location() {
    let redis = Redis::start();
    let backend = shop().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    for path in ["/things/new", "/things/1"] {
        get(&a.url(path), &[]).await;
        eventually("cached", || hit(&a, path)).await;
    }
    // A failed write first: its own URL and Location stay cached.
    get(&a.url("/things/fail"), &[]).await;
    eventually("cached", || hit(&a, "/things/fail")).await;
    let res = send("POST", &a.url("/things/fail"), &[], "{}").await;
    assert_eq!(res.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        hit(&a, "/things/fail").await,
        "a failed write purged its URL"
    );
    assert!(
        hit(&a, "/things/1").await,
        "a failed write purged its Location"
    );
    let res = send("POST", &a.url("/things/new"), &[], "{}").await;
    assert_eq!(res.status, StatusCode::CREATED);
    assert!(!hit(&a, "/things/new").await, "own URL not purged");
    assert!(!hit(&a, "/things/1").await, "Location not purged");
    // A redirect's Location is where the browser goes next (a login's
    // catalogue), not what the write changed: kept.
    get(&a.url("/things/1"), &[]).await;
    eventually("cached", || hit(&a, "/things/1")).await;
    let res = send("POST", &a.url("/things/moved"), &[], "{}").await;
    assert_eq!(res.status, StatusCode::FOUND);
    assert!(
        hit(&a, "/things/1").await,
        "a redirect's Location was purged"
    );
}

/// Tags from the backend's Surrogate-Key are honoured with origin_tags.
#[tokio::test]
async fn origin_tags_are_purgeable() {
    let redis = Redis::start();
    let backend = shop().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    get(&a.url("/tagged/1"), &[]).await;
    eventually("cached", || hit(&a, "/tagged/1")).await;
    admin_purge(&a, r#"{"tags": ["summer"]}"#, Some("s3cret")).await;
    assert!(!hit(&a, "/tagged/1").await);
}

/// A session touched twice a second outlives its 2 s TTL; an untouched one expires.
#[tokio::test]
async fn sliding_ttl() {
    let redis = Redis::start();
    let backend = shop().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let touched = [("cookie", "session_id=touched")];
    let idle = [("cookie", "session_id=idle")];
    get(&a.url("/session"), &touched).await;
    get(&a.url("/session"), &idle).await;
    eventually("touched cached", || async {
        get(&a.url("/session"), &touched).await.is_hit()
    })
    .await;
    let mut last = None;
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = get(&a.url("/session"), &touched).await;
        assert!(r.is_hit(), "touched session expired: {}", r.cache_status());
        last = Some(r);
    }
    // Age is the time since the backend answered, whatever renewed it.
    let age: u64 = last.unwrap().header("age").parse().unwrap();
    assert!(age >= 3, "Age reset by the renewal: {age}");
    // 3.5 s after it was stored, the idle session is gone; the touched one lives.
    assert!(
        !get(&a.url("/session"), &idle).await.is_hit(),
        "idle session outlived its TTL"
    );
    let mut c = redis.conn().await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg("inv:{session:touched}")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(pttl > 1000, "Redis expiry not renewed: {pttl}");
}

/// A cart written through A is an L2 hit with the new body on B, and a
/// subscriber gets the event.
#[tokio::test]
async fn cart_write_through_and_event() {
    let redis = Redis::start();
    let backend = shop().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let mut sub = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    sub.subscribe("cart_update:9").await.unwrap();
    let old = get(&b.url("/cart/9"), &[]).await;
    assert!(old.cache_status().contains("stored"));
    let cart = r#"{"user_id":9,"items":[{"product_id":1,"qty":2}]}"#;
    let put = send(
        "PUT",
        &a.url("/cart/9"),
        &[("content-type", "application/json")],
        cart,
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    // The write's purge deleted the old cart from Redis before the answer;
    // the new one is written there just after.
    eventually("the written cart is in Redis", || {
        redis_has(&redis, "inv:{cart:9}")
    })
    .await;
    let reads_before = backend
        .seen()
        .iter()
        .filter(|s| s.method == http::Method::GET)
        .count();
    let on_b = get(&b.url("/cart/9"), &[]).await;
    assert!(
        on_b.cache_status().contains("hit") && on_b.cache_status().contains("detail=redis"),
        "{}",
        on_b.cache_status()
    );
    assert_eq!(on_b.body, cart);
    // The entry keeps the headers a GET's answer would have kept.
    assert_eq!(on_b.header("x-cart-version"), "2");
    assert_eq!(on_b.header("content-type"), "application/json");
    assert_eq!(
        backend
            .seen()
            .iter()
            .filter(|s| s.method == http::Method::GET)
            .count(),
        reads_before
    );
    let event = next_event(&mut sub).await;
    assert_eq!(event["key"], "cart:9");
    assert_eq!(event["rule"], "cart");
    assert_eq!(event["method"], "PUT");
    assert_eq!(event["status"], 200);
    assert!(event["at"].as_u64().unwrap() > 0);
    assert_eq!(event["stored"], true);
    // DELETE answers no body, so the cart is fetched again and stored: B
    // then answers the backend's default cart from Redis.
    let gets = || {
        backend
            .seen()
            .iter()
            .filter(|s| s.method == http::Method::GET)
            .count()
    };
    let before_delete = gets();
    send("DELETE", &a.url("/cart/9"), &[], "").await;
    assert_eq!(gets(), before_delete + 1, "the DELETE did not re-fetch");
    let event = next_event(&mut sub).await;
    assert_eq!(
        (event["method"].as_str(), event["stored"].as_bool()),
        (Some("DELETE"), Some(true))
    );
    eventually("the refetched cart is in Redis", || {
        redis_has(&redis, "inv:{cart:9}")
    })
    .await;
    let after = get(&b.url("/cart/9"), &[]).await;
    assert!(
        after.cache_status().contains("detail=redis"),
        "{}",
        after.cache_status()
    );
    assert!(
        String::from_utf8_lossy(&after.body).contains("\"v\":0"),
        "{:?}",
        after.body
    );
    assert_eq!(gets(), before_delete + 1);
}

/// Cut off from Redis, a replica misses a purge; it stops serving the stale
/// entry within the documented bound, keeps serving L1 meanwhile, and
/// starts over with an empty L1 once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_purge_bounded_while_cut_off() {
    let mut redis = Redis::start_tcp();
    let backend = shop().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    get(&b.url("/products/4"), &[]).await;
    eventually("cached on B", || hit(&b, "/products/4")).await;
    redis.kill();
    let put = send(
        "PUT",
        &a.url("/products/4"),
        &[],
        r#"{"id":"4","category_id":5,"v":7}"#,
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    // Bound: disconnect_grace (1 s) + heartbeat (1 s) + its timeout (0.5 s): under 5 s.
    eventually("B serves the new product", || async {
        let r = get(&b.url("/products/4"), &[]).await;
        r.status == StatusCode::OK && String::from_utf8_lossy(&r.body).contains("\"v\":7")
    })
    .await;
    // L1 still works while cut off: the fresh answer (stored as its body
    // ends) is served from memory.
    eventually("memory hit while cut off", || async {
        let r = get(&b.url("/products/4"), &[]).await;
        r.cache_status().contains("detail=memory")
            && String::from_utf8_lossy(&r.body).contains("\"v\":7")
    })
    .await;
    let ready = get(&format!("http://{}/readyz", b.admin), &[]).await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "Redis down must not make the proxy unready"
    );
    assert!(
        String::from_utf8_lossy(&ready.body).contains("\"purges\":\"cut-off\""),
        "{:?}",
        ready.body
    );
    redis.restart();
    eventually("L1 dropped after reconnect", || async {
        !b.app.cache().in_l1("product:4").await
    })
    .await;
}

/// A purge that lands while a fetch of the same data is on its way keeps
/// that fetch's (possibly old) answer out of the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_during_fetch_keeps_answer_out() {
    let redis = Redis::start();
    let backend = shop().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    backend.set_delay(Duration::from_millis(600));
    let url = a.url("/products/8");
    let fetch = tokio::spawn(async move { get(&url, &[]).await });
    eventually("fetch reached the backend", || async {
        backend.hits_for("/products/8") == 1
    })
    .await;
    let res = admin_purge(&a, r#"{"keys": ["product:8"]}"#, Some("s3cret")).await;
    assert_eq!(res.status, StatusCode::OK);
    let counts: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(counts["purged"]["redis_errors"], 0, "{counts}");
    let first = fetch.await.unwrap();
    assert_eq!(first.status, StatusCode::OK);
    // The purge came before the answer's head: it is passed on, not stored.
    assert!(
        first.cache_status().contains("detail=purged") && !first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    backend.set_delay(Duration::ZERO);
    assert!(
        !hit(&a, "/products/8").await,
        "an answer fetched before the purge was stored"
    );
    assert_eq!(backend.hits_for("/products/8"), 2);
}
