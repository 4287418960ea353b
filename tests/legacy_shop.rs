//! In front of a cookie-driven HTML shop (what Django, Rails and PHP shops
//! send): a CSRF cookie set on every page, `Vary: Cookie`, analytics
//! cookies that differ per visitor, logged-in visitors, and form posts
//! answered with a redirect. Two replicas share one real Redis.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
redis: { url: "REDIS", key_prefix: "shop:" }
rules:
  - name: page
    match: { path: "/catalogue/{slug}" }
    key: "page:{slug}"
    ttl: 10m
    pass_if: { cookies: [sessionid, basket] }
    set_cookie: strip
    invalidate_on: ["POST /dashboard/catalogue/{slug}"]
"#;

/// A shop page: it sets a CSRF cookie on every answer unless the visitor
/// has one, varies on Cookie, shows the logged-in user from `sessionid`,
/// and echoes the cookies it got. A form post is answered 302.
async fn shop() -> Backend {
    let version = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(1));
    Backend::start(Duration::ZERO, move |s| {
        let cookie = s
            .headers
            .get("cookie")
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .unwrap_or_default();
        if s.method == http::Method::POST {
            version.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return (
                StatusCode::FOUND,
                vec![("location", "/dashboard/".to_owned())],
                Bytes::new(),
            );
        }
        let v = version.load(std::sync::atomic::Ordering::SeqCst);
        let user = cookie
            .split("; ")
            .find_map(|c| c.strip_prefix("sessionid="))
            .unwrap_or("anonymous");
        let mut headers = vec![
            ("vary", "Cookie".to_owned()),
            ("content-type", "text/html".to_owned()),
        ];
        if !cookie.contains("csrftoken=") {
            headers.push((
                "set-cookie",
                format!("csrftoken=secret-for-{}; Path=/", s.uri),
            ));
        }
        let body = format!("<p>v{v} user={user} cookies=[{cookie}]</p>");
        (StatusCode::OK, headers, Bytes::from(body))
    })
    .await
}

/// Anonymous browsers with their own analytics cookies share one entry
/// (only keyed cookies reach the backend, so its `Vary: Cookie` sees the
/// same request); each miss's client gets its own CSRF cookie, no hit
/// ever hands one out; a logged-in visitor passes and their page reaches
/// no one; a form post answered 302 purges the page on both replicas; and
/// no cookie value is in any Redis key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_driven_shop_is_cached_safely() {
    let redis = Redis::start();
    let backend = shop().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;

    let first = get(
        &a.url("/catalogue/frob"),
        &[("cookie", "_ga=GA1.1.111; _gid=x1")],
    )
    .await;
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    assert!(
        first.header("set-cookie").starts_with("csrftoken="),
        "the fetching client gets its cookie"
    );
    assert!(
        String::from_utf8_lossy(&first.body).contains("cookies=[]"),
        "{:?}",
        first.body
    );

    // Every visitor, whatever their analytics cookies, is answered the one
    // entry (once stored: the fill job runs just after the first answer).
    for (i, proxy) in [&a, &b, &a, &b, &a, &b].into_iter().enumerate() {
        let analytics = format!("_ga=GA1.1.{i}; _gid=y{i}");
        let got = await_hit(
            &proxy.url("/catalogue/frob"),
            &[("cookie", analytics.as_str())],
        )
        .await;
        assert_eq!(got.header("set-cookie"), "", "a hit handed out a cookie");
        assert!(String::from_utf8_lossy(&got.body).contains("user=anonymous"));
    }

    let alice = get(
        &b.url("/catalogue/frob"),
        &[("cookie", "sessionid=alice; csrftoken=t")],
    )
    .await;
    assert!(
        alice.cache_status().contains("detail=pass-if"),
        "{}",
        alice.cache_status()
    );
    assert!(String::from_utf8_lossy(&alice.body).contains("user=alice"));
    let basket = get(&a.url("/catalogue/frob"), &[("cookie", " basket =1")]).await;
    assert!(
        basket.cache_status().contains("detail=pass-if"),
        "{}",
        basket.cache_status()
    );
    let anon = get(&a.url("/catalogue/frob"), &[]).await;
    assert!(anon.is_hit() && !String::from_utf8_lossy(&anon.body).contains("alice"));

    let post = send(
        "POST",
        &a.url("/dashboard/catalogue/frob"),
        &[("content-type", "application/x-www-form-urlencoded")],
        "price=9",
    )
    .await;
    assert_eq!(post.status, StatusCode::FOUND);
    for proxy in [&a, &b] {
        eventually("the page is purged on both replicas", || async {
            let got = get(&proxy.url("/catalogue/frob"), &[]).await;
            String::from_utf8_lossy(&got.body).contains("<p>v2 ")
        })
        .await;
    }

    // A visitor who has a CSRF cookie keeps it: the backend, not sent it
    // on a miss, sets a new one, which is not passed on.
    let mine = get(
        &a.url("/catalogue/other"),
        &[("cookie", "csrftoken=mine; _ga=1")],
    )
    .await;
    assert!(
        mine.cache_status().contains("stored"),
        "{}",
        mine.cache_status()
    );
    assert_eq!(
        mine.header("set-cookie"),
        "",
        "the visitor's own CSRF cookie was replaced"
    );

    let mut conn = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("shop:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.iter().any(|k| k.contains("#vary&cookie")), "{keys:?}");
    for k in &keys {
        for secret in ["alice", "GA1", "csrftoken", "secret-for", "basket"] {
            assert!(!k.contains(secret), "{secret} in the Redis key {k}");
        }
    }
}

/// `allow_set_cookie: true`, which replayed one visitor's cookie to every
/// other, is refused with the reason and the way out.
#[test]
fn allow_set_cookie_is_refused() {
    let yaml = "upstream: { url: \"http://127.0.0.1:1\" }\nrules:\n  - name: p\n    match: { path: \"/p/{id}\" }\n    allow_set_cookie: true\n";
    let err = sidecache::Config::from_yaml(yaml, std::path::Path::new("t.yaml"), &|_| None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("allow_set_cookie") && err.contains("set_cookie: strip"),
        "{err}"
    );
}
