//! Attacks on what the cache stores and serves: headers named in
//! `Connection`, ambiguous or empty identities, a query the backend reads
//! differently from the key, unkeyed method overrides, rules that share
//! keys across hosts, internal keys through the purge API, and bodies whose
//! end cannot be known.

mod support;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RULES: &str = r#"
upstream: { url: UPSTREAM }
admin: { token: "t" }
rules:
  - name: session
    match: { path: /session }
    key: "session:{cookie.session_id}"
    ttl: 1h
  - name: lang
    match: { path: "/lang/{id}" }
    key: "lang:{id}"
    ttl: 1h
  - name: listing
    match: { path: /listing }
    key: "listing:{query.page}"
    allow_empty: [query.page]
    ttl: 1h
  - name: any
    match: { path: "/any/{*rest}" }
    ttl: 1h
"#;

/// A backend that answers with what identifies the request: its session
/// cookie, its Accept-Language (varying on it), its URI.
async fn echo() -> Backend {
    Backend::start(Duration::ZERO, |s| {
        let header = |n: &str| {
            s.headers
                .get(n)
                .map(|v| v.to_str().unwrap_or("?").to_owned())
                .unwrap_or_default()
        };
        let mut headers = vec![];
        if s.uri.starts_with("/lang/") {
            headers.push(("vary", "Accept-Language".to_owned()));
        }
        let body = format!(
            "uri={} cookie={} lang={}",
            s.uri,
            header("cookie"),
            header("accept-language")
        );
        (StatusCode::OK, headers, Bytes::from(body))
    })
    .await
}

/// `Connection: host` is refused; a header named in `Connection` is removed
/// before the key or the variant is worked out, so it can never store an
/// answer under an identity the backend did not see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_named_headers_cannot_poison() {
    let backend = echo().await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    let res = get(
        &p.url("/any/x"),
        &[("host", "victim.example"), ("connection", "host")],
    )
    .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    assert_eq!(backend.hits(), 0);
    // The cookie goes before keying: the request has no identity, passes.
    let res = get(
        &p.url("/session"),
        &[("cookie", "session_id=alice"), ("connection", "cookie")],
    )
    .await;
    assert!(
        res.cache_status().contains("key-incomplete"),
        "{}",
        res.cache_status()
    );
    let alice = get(&p.url("/session"), &[("cookie", "session_id=alice")]).await;
    assert!(!alice.is_hit());
    assert!(String::from_utf8_lossy(&alice.body).contains("cookie=session_id=alice"));
    // The varied header goes before the variant is chosen.
    get(
        &p.url("/lang/1"),
        &[("accept-language", "de"), ("connection", "accept-language")],
    )
    .await;
    eventually("the attacker's answer is cached", || async {
        get(&p.url("/lang/1"), &[]).await.is_hit()
    })
    .await;
    let de = get(&p.url("/lang/1"), &[("accept-language", "de")]).await;
    assert!(
        String::from_utf8_lossy(&de.body).ends_with("lang=de"),
        "the de variant holds another answer: {:?}",
        de.body
    );
}

/// A cookie given twice, empty or missing leaves the request unkeyed:
/// forwarded, never stored; a visitor without the cookie never gets a
/// session someone else planted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_and_empty_identities_pass() {
    let backend = echo().await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    let twice = [("cookie", "session_id=; session_id=ATTACKER")];
    for _ in 0..2 {
        let res = get(&p.url("/session"), &twice).await;
        assert!(
            res.cache_status().contains("detail=ambiguous-key"),
            "{}",
            res.cache_status()
        );
    }
    for headers in [&[("cookie", "session_id=")][..], &[][..]] {
        let res = get(&p.url("/session"), headers).await;
        assert!(
            res.cache_status().contains("detail=key-incomplete"),
            "{}",
            res.cache_status()
        );
        assert!(!String::from_utf8_lossy(&res.body).contains("ATTACKER"));
    }
    assert_eq!(backend.hits(), 4);
}

/// HTTP/2 cookie crumbs are joined with "; " before keying and forwarding:
/// the key and the backend see the same identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cookie_crumbs_are_joined() {
    let backend = echo().await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let ask = || async {
        let req = Request::get(p.url("/session"))
            .header("cookie", "theme=dark")
            .header("cookie", "session_id=bob")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        let status = res.headers()["cache-status"].to_str().unwrap().to_owned();
        (status, res.into_body().collect().await.unwrap().to_bytes())
    };
    let (status, body) = ask().await;
    assert!(status.contains("stored"), "{status}");
    // The crumbs were joined before keying: the key's cookie was found
    // among them, and it alone reaches the backend.
    assert!(
        String::from_utf8_lossy(&body).contains("cookie=session_id=bob "),
        "{body:?}"
    );
    eventually("bob's session is cached", || async {
        ask().await.0.contains("hit")
    })
    .await;
    let other = get(&p.url("/session"), &[("cookie", "session_id=eve")]).await;
    assert!(!other.is_hit(), "eve got bob's entry");
}

/// The backend gets the query the key was rendered from: `?pag%65=2` is
/// keyed and forwarded as `page=2`; valueless parameters are not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_what_is_forwarded() {
    let backend = echo().await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    let res = get(&p.url("/listing?pag%65=2"), &[]).await;
    assert!(
        String::from_utf8_lossy(&res.body).contains("uri=/listing?page=2"),
        "{:?}",
        res.body
    );
    eventually("page 2 is cached", || async {
        get(&p.url("/listing?page=2"), &[]).await.is_hit()
    })
    .await;
    assert_eq!(backend.hits_for("/listing?page=2"), 1);
    for url in ["/any/x", "/any/x?preview", "/any/x?debug="] {
        get(&p.url(url), &[]).await;
        eventually("cached", || async { get(&p.url(url), &[]).await.is_hit() }).await;
    }
    assert_eq!(
        backend.hits(),
        4,
        "valueless parameters were served one another's entries"
    );
}

/// Method-override and URL-rewrite headers never reach the backend on a
/// cacheable GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_are_not_forwarded() {
    let backend = echo().await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    get(
        &p.url("/any/thing"),
        &[
            ("x-http-method-override", "DELETE"),
            ("x-method-override", "DELETE"),
            ("x-http-method", "DELETE"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
        ],
    )
    .await;
    let seen = &backend.seen()[0];
    for name in [
        "x-http-method-override",
        "x-method-override",
        "x-http-method",
        "x-original-url",
        "x-rewrite-url",
    ] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} reached the backend"
        );
    }
}

fn check(yaml: &str) -> Result<(), String> {
    sidecache::Config::from_yaml(yaml, Path::new("t.yaml"), &|_| None)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `check` refuses two rules on one path for two hosts whose keys could
/// collide, and an empty Redis key prefix.
#[test]
fn check_refuses_shared_keys_and_empty_prefix() {
    let hosts = r#"
upstream: { url: "http://127.0.0.1:1" }
rules:
  - name: a
    match: { path: "/p/{id}", host: a.example }
    key: "{path}"
  - name: b
    match: { path: "/p/{id}", host: b.example }
    key: "{path}"
    allow_authorized: true
"#;
    let err = check(hosts).unwrap_err();
    assert!(err.contains("can render the same key"), "{err}");
    let apart = hosts.replace("key: \"{path}\"", "key: \"{host}{path}\"");
    check(&apart).unwrap();
    let prefix = "upstream: { url: \"http://127.0.0.1:1\" }\nredis: { url: \"redis://127.0.0.1:1\", key_prefix: \"\" }\nrules: []\n";
    let err = check(prefix).unwrap_err();
    assert!(err.contains("redis.key_prefix"), "{err}");
}

/// The purge API refuses internal keys and the empty prefix unless `all`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_api_keeps_to_entries() {
    let backend = echo().await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    for body in [
        r##"{"keys": ["#tag:product:1"]}"##,
        r##"{"prefixes": ["x#"]}"##,
        r##"{"tags": ["#vary:lang:1"]}"##,
        r#"{"prefixes": [""]}"#,
    ] {
        let res = admin_purge(&p, body, Some("t")).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{body}");
    }
    get(&p.url("/any/1"), &[]).await;
    eventually("cached", || async {
        get(&p.url("/any/1"), &[]).await.is_hit()
    })
    .await;
    let res = admin_purge(&p, r#"{"prefixes": [""], "all": true}"#, Some("t")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(!get(&p.url("/any/1"), &[]).await.is_hit());
}

/// A body that ends only when the backend closes the connection is passed
/// on but never stored: a cut-short one would look whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_bodies_are_not_stored() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nwhole?")
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    let p = Proxy::start(RULES, &format!("http://{addr}"), None).await;
    let res = get(&p.url("/any/raw"), &[]).await;
    assert_eq!(res.body, "whole?");
    assert!(
        res.cache_status().contains("detail=unframed"),
        "{}",
        res.cache_status()
    );
    assert!(!get(&p.url("/any/raw"), &[]).await.is_hit());
}

/// Sends `raw` on a new connection; answers the status line.
async fn raw(proxy: &Proxy, raw: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// No Host, two Hosts, or a Host that is not text: 400 (RFC 9112 3.2);
/// CONNECT: 405; a transfer coding other than chunked: 501. None of them
/// reaches the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused() {
    let backend = echo().await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    let cases: [(&[u8], &str); 5] = [
        (b"GET /any/1 HTTP/1.1\r\n\r\n", "400"),
        (b"GET /any/1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"),
        (b"GET /any/1 HTTP/1.1\r\nHost: h\xe9\r\n\r\n", "400"),
        (
            b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
            "405",
        ),
        (
            b"POST /any/1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            "501",
        ),
    ];
    for (request, code) in cases {
        let line = raw(&p, request).await;
        assert!(
            line.starts_with(&format!("HTTP/1.1 {code}")),
            "{:?}: {line}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(backend.hits(), 0);
}

/// What `check` accepts, `run` runs: counts and durations past any sane
/// bound, and configs that would load but never do what they say, are
/// refused with the field named.
#[test]
fn check_refuses_what_run_would_trip_on() {
    let base = |upstream: &str, extra: &str, rule: &str| {
        format!(
            "upstream: {{ url: \"{upstream}\" }}\n{extra}\nrules:\n  - name: r\n    match: {{ path: \"/p/{{id}}\" }}\n{rule}\n"
        )
    };
    let ok = "http://127.0.0.1:1";
    let cases = [
        (
            "upstream: { url: \"http://127.0.0.1:1\", max_concurrency: 18446744073709551615 }\nrules: []\n".to_owned(),
            "upstream.max_concurrency",
        ),
        (base(ok, "limits: { max_connections: 18446744073709551615 }", ""), "limits.max_connections"),
        (base(ok, "limits: { header_timeout: 100000000years }", ""), "limits.header_timeout"),
        (base(ok, "", "    ttl: 100000000years\n    stale_if_error: 1h"), "ttl"),
        (base(ok, "", "    key: \"\""), "key"),
        (base(ok, "", "    key: \"product\""), "key"),
        (base(ok, "", "    statuses: [100, 101]"), "statuses"),
        (base("http://127.0.0.1:1/?a=1", "", ""), "upstream.url"),
        (base("http://user:pw@127.0.0.1:1", "", ""), "upstream.url"),
        (base(ok, "listen: 127.0.0.1:7000\nadmin: { listen: 127.0.0.1:7000 }", ""), "admin.listen"),
    ];
    for (yaml, field) in &cases {
        let yaml = yaml.as_str();
        let err = check(yaml).expect_err(yaml);
        assert!(err.contains(field), "{field} not named for\n{yaml}\n{err}");
    }
    for host in ["shop.example:8080", "*", "sh*p.example", "bücher.example"] {
        let yaml = format!(
            "upstream: {{ url: \"{ok}\" }}\nrules:\n  - name: r\n    match: {{ path: /p, host: \"{host}\" }}\n"
        );
        let err = check(&yaml).expect_err(host);
        assert!(err.contains("match.host"), "{host}: {err}");
    }
    let fine = format!(
        "upstream: {{ url: \"{ok}\" }}\nrules:\n  - name: r\n    match: {{ path: /p, host: \"*.shop.example\" }}\n"
    );
    check(&fine).unwrap();
}

/// `X-Forwarded-Proto` and `X-Forwarded-Host` from a client are replaced by
/// what sidecache knows; `trusted_proxies` keeps the proxy's
/// `X-Forwarded-Proto`, while `X-Forwarded-Host` on a cacheable fetch is
/// always the host the key holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_only_from_trusted_proxies() {
    let backend = echo().await;
    let spoof = [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
    ];
    let p = Proxy::start(RULES, &backend.url(), None).await;
    get(&p.url("/any/f"), &spoof).await;
    let seen = &backend.seen()[0];
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        p.addr.to_string().as_str()
    );
    let trusting = format!("trusted_proxies: [\"127.0.0.0/8\"]\n{RULES}");
    let q = Proxy::start(&trusting, &backend.url(), None).await;
    get(&q.url("/any/g"), &spoof).await;
    let seen = &backend.seen()[1];
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        q.addr.to_string().as_str()
    );
    // The scheme the trusted proxy names keys the entry: the https answer
    // is never served for http, nor the other way round.
    await_hit(&q.url("/any/g"), &spoof).await;
    let http = [("x-forwarded-proto", "http")];
    let plain = get(&q.url("/any/g"), &http).await;
    assert!(!plain.is_hit(), "the https answer was served for http");
    assert_eq!(backend.seen()[2].headers["x-forwarded-proto"], "http");
    await_hit(&q.url("/any/g"), &http).await;
}

/// One rule for a named host, one for any host keyed without `{host}`.
const TWO_HOSTS: &str = r#"
upstream: { url: "http://127.0.0.1:1" }
rules:
  - name: a
    match: { path: "/a/{id}", host: a.example }
    key: "a:{id}"
  - name: any
    match: { path: "/b/{id}" }
    key: "b:{id}"
"#;

/// With rules for several hosts, `check` warns about a rule that matches
/// any host but keys without `{host}`.
#[test]
fn check_warns_about_keys_without_host() {
    let yaml = TWO_HOSTS;
    let loaded = sidecache::Config::from_yaml(yaml, Path::new("t.yaml"), &|_| None).unwrap();
    let text: Vec<String> = loaded
        .warnings
        .iter()
        .map(|w| w.display(Path::new("t.yaml")).to_string())
        .collect();
    assert!(
        text.iter()
            .any(|w| w.contains("`any`") && w.contains("{host}")),
        "{text:?}"
    );
    assert!(!text.iter().any(|w| w.contains("`a`")), "{text:?}");
}

/// `explain` gives the same warning for the rule it shows.
#[test]
fn explain_warns_about_keys_without_host() {
    let yaml = TWO_HOSTS;
    let loaded = sidecache::Config::from_yaml(yaml, Path::new("t.yaml"), &|_| None).unwrap();
    let out =
        sidecache::explain::explain(&loaded.config, "GET", "http://x.example/b/1", &[]).unwrap();
    assert!(out.contains("warning: this rule matches any host"), "{out}");
    let out =
        sidecache::explain::explain(&loaded.config, "GET", "http://a.example/a/1", &[]).unwrap();
    assert!(!out.contains("warning"), "{out}");
}
