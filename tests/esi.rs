//! Edge Side Includes: a page shared by every visitor with holes for what
//! is one visitor's (a CSRF token, a basket), filled per request through
//! the proxy under the fragment's own rule. Two replicas share one Redis.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
redis: { url: "REDIS", key_prefix: "esi:" }
rules:
  - name: page
    match: { path: "/page/{n}" }
    key: "page:{n}"
    ttl: 10m
    esi: true
    set_cookie: strip
  - name: shared-fragment
    match: { path: "/frag/footer" }
    key: "footer"
    ttl: 10m
  - name: loop
    match: { path: "/frag/loop" }
    key: "loop"
    ttl: 10m
    esi: true
"#;

/// The page holds a CSRF fragment (the visitor's token, set when they
/// have none), a shared footer, a fragment that fails, one on another
/// site, ESI-only markup in a comment and markup for non-ESI readers.
async fn site() -> Backend {
    Backend::start(Duration::ZERO, move |s| {
        let cookie = s
            .headers
            .get("cookie")
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .unwrap_or_default();
        let token = cookie
            .split("; ")
            .find_map(|c| c.strip_prefix("csrftoken="))
            .map(str::to_owned);
        let html = |body: String| {
            let headers = vec![("content-type", "text/html; charset=utf-8".to_owned())];
            (StatusCode::OK, headers, Bytes::from(body))
        };
        match s.uri.as_str() {
            "/frag/csrf" => {
                let (token, set) = match token {
                    Some(t) => (t, None),
                    None => {
                        let t = format!("t{}", fastrand::u64(..));
                        (t.clone(), Some(format!("csrftoken={t}; Path=/")))
                    }
                };
                let mut headers = vec![
                    ("content-type", "text/html".to_owned()),
                    ("cache-control", "private, no-store".to_owned()),
                ];
                if let Some(set) = set {
                    headers.push(("set-cookie", set));
                }
                let body = format!("<input name=csrf value={token}>");
                (StatusCode::OK, headers, Bytes::from(body))
            }
            "/frag/footer" => html("<footer>shared</footer>".to_owned()),
            "/frag/broken" => (StatusCode::INTERNAL_SERVER_ERROR, vec![], Bytes::from("oops")),
            "/frag/loop" => html(r#"[<esi:include src="/frag/loop"/>]"#.to_owned()),
            uri => {
                let (status, mut headers, body) = html(format!(
                concat!(
                    r#"<h1>{uri}</h1><form><esi:include src="/frag/csrf"/><button>go</button></form>"#,
                    r#"<esi:include src="/frag/broken"/><esi:include src="http://elsewhere.example/x"/>"#,
                    r#"<esi:remove><a href="/basket">basket</a></esi:remove>"#,
                    r#"<!--esi <esi:include src="/frag/footer"/> -->"#,
                ),
                uri = uri
            ));
                // Validators of the page alone, which the assembled page
                // is not.
                headers.push(("etag", "\"p1\"".to_owned()));
                (status, headers, body)
            }
        }
    })
    .await
}

fn token_in(body: &[u8]) -> String {
    let body = std::str::from_utf8(body).unwrap();
    body.split("value=")
        .nth(1)
        .and_then(|r| r.split('>').next())
        .unwrap_or_default()
        .to_owned()
}

/// Every visitor gets the one stored page with their own token in it (and
/// the cookie it goes with), across both replicas and many visitors at
/// once; the page is fetched once; failed and foreign fragments are left
/// empty; no ESI markup reaches anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_visitor_gets_the_shared_page_with_their_own_fragments() {
    let redis = Redis::start();
    let backend = site().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;

    // A new visitor: the fragment sets their token, which the page holds.
    let first = get(&a.url("/page/1"), &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    let body = std::str::from_utf8(&first.body).unwrap().to_owned();
    let token = token_in(&first.body);
    assert!(token.starts_with('t'), "{body}");
    assert_eq!(
        first.header("set-cookie"),
        format!("csrftoken={token}; Path=/")
    );
    assert_eq!(first.header("cache-control"), "private, no-store");
    assert_eq!(
        body,
        format!(
            "<h1>/page/1</h1><form><input name=csrf value={token}><button>go</button></form> <footer>shared</footer> "
        )
    );
    assert_eq!(first.header("content-length"), body.len().to_string());
    assert!(first.header("etag").is_empty());
    // The page and the shared footer go to Redis just after the answer.
    eventually("the page and the footer are in Redis", || async {
        redis_has(&redis, "esi:{page:1}").await && redis_has(&redis, "esi:{footer}").await
    })
    .await;

    // Many visitors at once, on both replicas, each with their own token:
    // each sees exactly theirs; the page itself is fetched once.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let url = if i % 2 == 0 {
            a.url("/page/1")
        } else {
            b.url("/page/1")
        };
        tasks.push(tokio::spawn(async move {
            let cookie = format!("csrftoken=v{i}; _ga=GA1.{i}");
            let got = get(&url, &[("cookie", &cookie)]).await;
            (i, got)
        }));
    }
    for t in tasks {
        let (i, got) = t.await.unwrap();
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(token_in(&got.body), format!("v{i}"));
        assert!(
            got.header("set-cookie").is_empty(),
            "a known token is not set again"
        );
        assert!(!String::from_utf8_lossy(&got.body).contains("esi:"));
    }
    assert_eq!(backend.hits_for("/page/1"), 1, "the page is shared");
    assert_eq!(
        backend.hits_for("/frag/csrf"),
        41,
        "the token is each visitor's"
    );
    assert_eq!(
        backend.hits_for("/frag/footer"),
        1,
        "a cached fragment is a hit"
    );
    assert!(backend.seen().iter().all(|s| !s.uri.contains("elsewhere")));
    // Each replica counts its own pages: 41 in all.
    let esi = "sidecache_esi_fragments_total";
    let mut counted = [0; 3];
    for proxy in [&a, &b] {
        for (n, result) in counted.iter_mut().zip(["ok", "failed", "skipped"]) {
            *n += metric_sum(proxy, esi, &format!("rule=\"page\",result=\"{result}\"")).await;
        }
    }
    assert_eq!(counted, [82, 41, 41]);

    // The page the backend got asked for as it is (never compressed), and
    // only the fragments carried the visitors' cookies.
    for s in backend.seen() {
        if s.uri == "/page/1" {
            assert_eq!(s.headers.get("accept-encoding").unwrap(), "identity");
            assert!(s.headers.get("cookie").is_none());
        }
    }
}

/// HEAD, Range and conditionals on an ESI page: never a length, a range or
/// a 304 that only describes the page without its fragments; a fragment
/// including itself stops at the depth bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_ranges_and_loops_are_bounded() {
    let backend = site().await;
    let proxy = Proxy::start(
        &RULES.replace("redis: { url: \"REDIS\", key_prefix: \"esi:\" }\n", ""),
        &backend.url(),
        None,
    )
    .await;
    let full = get(&proxy.url("/page/2"), &[("cookie", "csrftoken=x")]).await;
    await_hit(&proxy.url("/page/2"), &[("cookie", "csrftoken=x")]).await;
    let head = send(
        "HEAD",
        &proxy.url("/page/2"),
        &[("cookie", "csrftoken=x")],
        "",
    )
    .await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.is_hit());
    assert!(
        head.header("content-length").is_empty()
            || head.header("content-length") == full.body.len().to_string()
    );
    let ranged = get(
        &proxy.url("/page/2"),
        &[("cookie", "csrftoken=x"), ("range", "bytes=0-3")],
    )
    .await;
    assert_eq!(ranged.status, StatusCode::OK);
    assert_eq!(ranged.body, full.body);
    let conditional = get(
        &proxy.url("/page/2"),
        &[("cookie", "csrftoken=x"), ("if-none-match", "\"p1\"")],
    )
    .await;
    assert_eq!(
        conditional.status,
        StatusCode::OK,
        "the page's own ETag is not the answer's"
    );
    assert_eq!(conditional.body, full.body);

    let looped = get(&proxy.url("/frag/loop"), &[]).await;
    assert_eq!(looped.status, StatusCode::OK);
    assert_eq!(std::str::from_utf8(&looped.body).unwrap(), "[[[[]]]]");
}
