//! The backend gets exactly what the key says. Each test attacks through a
//! part of the request a key does not hold (a query parameter, the Host, a
//! forwarding header, a cookie, an escaped slash, a dot segment) against a
//! backend that reflects everything it receives, then asks the plain
//! request, which must never be served the attacker's answer. And the
//! protocol guards the same principle leans on: HTTP/2 connections that
//! ask for nothing, writes with long answers, slow chunked uploads.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RULES: &str = r#"
upstream: { url: UPSTREAM }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
  - name: search
    match: { path: "/search" }
    key: "search:{query}"
    ignore_query: [utm_*, gclid]
    ttl: 1h
  - name: price
    match: { path: "/price/{id}" }
    key: "price:{id}:{cookie.currency}"
    ttl: 1h
  - name: page
    match: { path: "/pages/{*rest}" }
    ttl: 1h
  - name: static
    match: { path: "/static/{*rest}" }
    key: "static:{rest}"
    statuses: [200, 404]
    ttl: 1h
  - name: varying
    match: { path: "/vary/{id}" }
    key: "vary:{id}"
    ttl: 1h
  - name: device
    match: { path: "/device/{id}" }
    key: "device:{id}"
    forward: { headers: [x-device] }
    ttl: 1h
"#;

/// Every header name the reflecting backend echoes, besides Host and Cookie.
const ECHOED: [&str; 12] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-scheme",
    "x-original-host",
    "forwarded",
    "x-real-ip",
    "x-device",
    "x-evil",
    "user-agent",
];

/// A backend that builds its answer from what it receives, as legacy
/// backends do: its URI (query included), Host, cookies and forwarding
/// headers. `/static/` paths with an escaped slash are a 404, as Apache's
/// default answers them.
async fn reflecting() -> Backend {
    Backend::start(Duration::ZERO, |s| {
        let h = |n: &str| {
            s.headers
                .get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap_or("?").to_owned())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut body = format!("uri={} host={} cookie={}", s.uri, h("host"), h("cookie"));
        for name in ECHOED {
            body.push_str(&format!(" {name}={}", h(name)));
        }
        let status = if s.uri.contains("%2F") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        let headers = if s.uri.starts_with("/vary/") {
            vec![("vary", "X-Device".to_owned())]
        } else {
            vec![]
        };
        (status, headers, Bytes::from(body))
    })
    .await
}

fn text(got: &Got) -> String {
    String::from_utf8_lossy(&got.body).into_owned()
}

/// Query parameters the key does not read never reach the backend: the
/// attacker's `?callback=evil&fields=none` fetches the plain product, and
/// the plain request's hit is that. `ignore_query` drops marketing tags
/// before keying, and `{query}` forwards the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_query_parameters_never_reach_the_backend() {
    let backend = reflecting().await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    let attack = get(&p.url("/products/77?callback=evil&fields=none"), &[]).await;
    assert!(
        attack.cache_status().contains("stored"),
        "{}",
        attack.cache_status()
    );
    assert!(
        text(&attack).starts_with("uri=/products/77 "),
        "{}",
        text(&attack)
    );
    let plain = await_hit(&p.url("/products/77"), &[]).await;
    assert_eq!(text(&plain), text(&attack), "the plain product");
    assert_eq!(backend.hits(), 1);

    let tagged = get(&p.url("/search?utm_source=mail&q=shoes&gclid=x"), &[]).await;
    assert!(
        text(&tagged).starts_with("uri=/search?q=shoes "),
        "{}",
        text(&tagged)
    );
    let plain = await_hit(&p.url("/search?q=shoes"), &[]).await;
    assert!(!text(&plain).contains("utm"), "{}", text(&plain));
    let other = get(&p.url("/search?q=boots"), &[]).await;
    assert!(!other.is_hit() && text(&other).contains("q=boots"));
}

/// `{host}` is the exact authority, port included: `Host: shop:1337`
/// keys apart from `Host: shop`, and the backend gets exactly the keyed
/// Host (and X-Forwarded-Host). A Host with an escape is refused. A key
/// without `{host}` sends the upstream's authority, whatever the client
/// said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_is_keyed_exactly() {
    let backend = reflecting().await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    let attack = get(&p.url("/pages/home"), &[("host", "shop:1337")]).await;
    assert!(
        text(&attack).contains("host=shop:1337"),
        "{}",
        text(&attack)
    );
    assert!(text(&attack).contains("x-forwarded-host=shop:1337"));
    await_hit(&p.url("/pages/home"), &[("host", "Shop:1337")]).await;
    let plain = get(&p.url("/pages/home"), &[("host", "shop")]).await;
    assert!(!plain.is_hit(), "shop:1337's entry served to shop");
    assert!(
        text(&plain).contains("host=shop cookie="),
        "{}",
        text(&plain)
    );
    assert!(
        text(&plain).contains("x-forwarded-host=shop "),
        "{}",
        text(&plain)
    );
    let plain = await_hit(&p.url("/pages/home"), &[("host", "shop")]).await;
    assert!(!text(&plain).contains("1337"), "{}", text(&plain));

    let before = backend.hits();
    let escaped = get(&p.url("/pages/home"), &[("host", "sh%6Fp")]).await;
    assert_eq!(escaped.status, StatusCode::BAD_REQUEST);

    let evil = get(&p.url("/products/5"), &[("host", "evil.example:6666")]).await;
    let upstream = backend.addr.to_string();
    assert!(
        text(&evil).contains(&format!("host={upstream} ")),
        "{}",
        text(&evil)
    );
    assert!(text(&evil).contains(&format!("x-forwarded-host={upstream} ")));
    assert!(!text(&evil).contains("evil.example"));
    assert_eq!(
        backend.hits(),
        before + 1,
        "the escaped Host never reached it"
    );
}

/// The whole forwarding family from a client reaches no backend: a
/// plain request is never served links built from them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_never_reach_the_backend() {
    let backend = reflecting().await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    let spoof = [
        ("x-forwarded-host", "shop2"),
        ("x-forwarded-port", "6666"),
        ("x-forwarded-prefix", "//evil.example"),
        ("x-forwarded-scheme", "http"),
        ("x-original-host", "evil.example"),
        ("forwarded", "host=evil.example;proto=http"),
        ("x-real-ip", "6.6.6.6"),
        ("x-evil", "1"),
        ("user-agent", "evil-bot"),
    ];
    let attack = get(&p.url("/products/9"), &spoof).await;
    for marker in [
        "6666",
        "evil.example",
        "shop2",
        "6.6.6.6",
        "evil-bot",
        "x-evil=1",
    ] {
        assert!(
            !text(&attack).contains(marker),
            "{marker}: {}",
            text(&attack)
        );
    }
    let plain = await_hit(&p.url("/products/9"), &[]).await;
    assert_eq!(text(&plain), text(&attack));
    // A pass is forwarded as received, less the forwarding family.
    get(&p.url("/about"), &spoof).await;
    let seen = backend.seen().pop().unwrap();
    assert_eq!(seen.uri, "/about");
    assert_eq!(seen.headers["x-evil"], "1");
    assert_eq!(seen.headers["user-agent"], "evil-bot");
    for name in [
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-original-host",
        "forwarded",
        "x-real-ip",
    ] {
        assert!(!seen.headers.contains_key(name), "{name} passed");
    }
}

/// A keyed cookie is keyed as the backend reads it: raw (`%45UR` is not
/// `EUR`), names trimmed (`currency =USD` names `currency`, so with
/// `currency=GBP` it is a repeat: passed uncached). Only the cookies the
/// key names reach the backend on a cacheable fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_keyed_as_the_backend_reads_them() {
    let backend = reflecting().await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    let odd = get(
        &p.url("/price/1"),
        &[("cookie", "currency=%45UR; tracking=abc")],
    )
    .await;
    assert!(
        text(&odd).contains("cookie=currency=%45UR "),
        "{}",
        text(&odd)
    );
    await_hit(&p.url("/price/1"), &[("cookie", "currency=%45UR")]).await;
    let eur = get(&p.url("/price/1"), &[("cookie", "currency=EUR")]).await;
    assert!(!eur.is_hit(), "EUR was served the %45UR entry");
    assert!(
        text(&eur).contains("cookie=currency=EUR "),
        "{}",
        text(&eur)
    );
    let twice = get(
        &p.url("/price/1"),
        &[("cookie", "currency=GBP; currency =USD")],
    )
    .await;
    assert!(
        twice.cache_status().contains("detail=ambiguous-key"),
        "{}",
        twice.cache_status()
    );
    // Passed as received: the backend sees both.
    assert!(text(&twice).contains("currency =USD"), "{}", text(&twice));
    // A key with no cookie forwards none.
    let none = get(&p.url("/products/3"), &[("cookie", "sessionid=victim")]).await;
    assert!(text(&none).contains("cookie= "), "{}", text(&none));
}

/// An escaped slash in a parameter is keyed apart from a slash, and
/// forwarded as received; a dot segment is refused before anything is
/// matched, keyed or forwarded (web cache deception).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_keyed_as_received() {
    let backend = reflecting().await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    let encoded = get(&p.url("/static/app%2Fmain.js"), &[]).await;
    assert_eq!(encoded.status, StatusCode::NOT_FOUND);
    assert!(text(&encoded).starts_with("uri=/static/app%2Fmain.js "));
    await_hit(&p.url("/static/app%2Fmain.js"), &[]).await;
    let plain = get(&p.url("/static/app/main.js"), &[]).await;
    assert_eq!(plain.status, StatusCode::OK, "the 404 was served for /");
    assert!(!plain.is_hit());
    let before = backend.hits();
    for path in [
        "/static/../account",
        "/static/%2e%2e/account",
        "/static/./x",
    ] {
        let res = get(&p.url(path), &[("cookie", "sessionid=victim")]).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{path}");
    }
    assert_eq!(backend.hits(), before);
}

/// A header `forward` names reaches the backend and keys the entry: two
/// devices get two entries; a header it does not name reaches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_join_the_key() {
    let backend = reflecting().await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    let mobile = get(&p.url("/device/1"), &[("x-device", "mobile")]).await;
    assert!(
        text(&mobile).contains("x-device=mobile "),
        "{}",
        text(&mobile)
    );
    await_hit(&p.url("/device/1"), &[("x-device", "mobile")]).await;
    let desktop = get(&p.url("/device/1"), &[("x-device", "desktop")]).await;
    assert!(!desktop.is_hit(), "desktop was served the mobile entry");
    assert!(text(&desktop).contains("x-device=desktop "));
    let desktop = await_hit(&p.url("/device/1"), &[("x-device", "desktop")]).await;
    assert!(text(&desktop).contains("x-device=desktop "));
    let other = get(&p.url("/products/8"), &[("x-device", "mobile")]).await;
    assert!(text(&other).contains("x-device= "), "{}", text(&other));
}

/// A header the backend's `Vary` names reaches it, and keys the variant,
/// without any `forward`: once the backend said it varies on `X-Device`,
/// each device gets its own answer; the first answer (fetched without the
/// header) is the one for clients that send none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_the_backend_varies_on_reach_it() {
    let backend = reflecting().await;
    let p = Proxy::start(RULES, &backend.url(), None).await;
    let none = get(&p.url("/vary/1"), &[("x-device", "tablet")]).await;
    assert!(
        text(&none).contains("x-device= "),
        "not sent before the backend named it"
    );
    await_hit(&p.url("/vary/1"), &[]).await;
    let mobile = get(&p.url("/vary/1"), &[("x-device", "mobile")]).await;
    assert!(!mobile.is_hit(), "{}", mobile.cache_status());
    assert!(
        text(&mobile).contains("x-device=mobile "),
        "{}",
        text(&mobile)
    );
    let mobile = await_hit(&p.url("/vary/1"), &[("x-device", "mobile")]).await;
    assert!(text(&mobile).contains("x-device=mobile "));
    let plain = await_hit(&p.url("/vary/1"), &[]).await;
    assert!(text(&plain).contains("x-device= "), "{}", text(&plain));
    // The first answer was stored for "no X-Device", not for the tablet
    // that asked before the backend had said it varies.
    let tablet = get(&p.url("/vary/1"), &[("x-device", "tablet")]).await;
    assert!(!tablet.is_hit());
    assert!(
        text(&tablet).contains("x-device=tablet "),
        "{}",
        text(&tablet)
    );
}

/// `explain` prints the exact request the backend gets, and what it
/// leaves out.
#[test]
fn explain_prints_the_backend_request() {
    let yaml = RULES.replace("UPSTREAM", "\"http://127.0.0.1:3000\"");
    let loaded =
        sidecache::Config::from_yaml(&yaml, std::path::Path::new("t.yaml"), &|_| None).unwrap();
    let out = sidecache::explain::explain(
        &loaded.config,
        "GET",
        "/products/7?callback=evil&fields=none",
        &[
            "Cookie: currency=EUR; sessionid=x".into(),
            "X-Forwarded-Prefix: /evil".into(),
            "Accept: application/json".into(),
        ],
    )
    .unwrap();
    assert!(out.contains("  GET /products/7\n"), "{out}");
    assert!(out.contains("  host: 127.0.0.1:3000\n"), "{out}");
    assert!(out.contains("  accept: application/json\n"), "{out}");
    assert!(out.contains("x-forwarded-host: 127.0.0.1:3000"), "{out}");
    assert!(!out.contains("/evil"), "{out}");
    assert!(out.contains("query parameters callback, fields"), "{out}");
    assert!(out.contains("cookies currency, sessionid"), "{out}");
    let refused = sidecache::explain::explain(&loaded.config, "GET", "/static/../x", &[]);
    assert!(refused.is_err());
}

/// Opens a connection that sends the HTTP/2 preface and an empty
/// SETTINGS frame, then nothing.
async fn silent_h2(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    s
}

/// `max_connections` silent HTTP/2 connections hold no place for long:
/// each is sent away once `header_timeout` passes without a request, so
/// the next client is answered; the admin port answers probes meanwhile.
/// A connection whose requests stopped is closed after `idle_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_http2_connections_are_closed() {
    let backend = reflecting().await;
    let yaml =
        format!("limits: {{ max_connections: 4, header_timeout: 1s, idle_timeout: 1s }}\n{RULES}");
    let p = Proxy::start(&yaml, &backend.url(), None).await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(silent_h2(p.addr).await);
    }
    let health = get(&format!("http://{}/healthz", p.admin), &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    let answered =
        tokio::time::timeout(Duration::from_secs(20), get(&p.url("/products/1"), &[])).await;
    assert_eq!(
        answered.expect("no answer while the port was full").status,
        StatusCode::OK
    );
    // Each silent connection was closed by the proxy: reading ends.
    for mut s in silent {
        let mut buf = vec![0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a silent connection stayed open");
    }
    // A real HTTP/2 client that stops asking is sent away too.
    let stream = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let done = tokio::spawn(conn);
    let req = Request::get(p.url("/products/2"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), done).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection stayed open");
}

/// A backend whose answer to a PUT is a 3 MiB chunked body, and whose GETs
/// carry the product's category.
async fn chunky_backend() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gets = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let gets = gets.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let n = gets.fetch_add(
                        usize::from(req.method() == http::Method::GET),
                        std::sync::atomic::Ordering::SeqCst,
                    );
                    async move {
                        let body: http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible> =
                            if req.method() == http::Method::GET {
                                Full::new(Bytes::from(format!(
                                    "{{\"category_id\": 4, \"n\": {n}}}"
                                )))
                                .boxed_unsync()
                            } else {
                                let chunks = (0..48).map(|_| {
                                    Ok::<_, Infallible>(Frame::data(Bytes::from(vec![
                                        b' ';
                                        64 * 1024
                                    ])))
                                });
                                StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync()
                            };
                        Ok::<_, Infallible>(Response::new(body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// A write answered with a chunked body longer than the JSON bound still
/// purges what it names, and the client gets the whole answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_write_answers_still_purge() {
    let backend = chunky_backend().await;
    let yaml = r#"
upstream: { url: UPSTREAM }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    tags: ["category:{response.category_id}"]
    invalidate_on: ["PUT /products/{id}"]
    ttl: 1h
"#;
    let p = Proxy::start(yaml, &backend, None).await;
    let first = get(&p.url("/products/1"), &[]).await;
    assert!(text(&first).contains("\"n\": 0"), "{}", text(&first));
    await_hit(&p.url("/products/1"), &[]).await;
    let put = send(
        "PUT",
        &p.url("/products/1"),
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.cache_status());
    assert_eq!(put.body.len(), 3 * 1024 * 1024);
    let after = get(&p.url("/products/1"), &[]).await;
    assert!(!after.is_hit(), "the write's purge was lost");
    assert!(text(&after).contains("\"n\": 1"), "{}", text(&after));
}

/// Chunked uploads are read ahead before they take a backend place: two
/// uploads stalled halfway hold neither of the backend's two places, so
/// a GET is answered while they wait; both then arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_uploads_hold_no_backend_place() {
    let backend = reflecting().await;
    let yaml = RULES.replace(
        "upstream: { url: UPSTREAM }",
        "upstream: { url: UPSTREAM, max_concurrency: 2, queue: 1, timeout: 30s }",
    );
    let p = Proxy::start(&yaml, &backend.url(), None).await;
    let mut uploads = Vec::new();
    for i in 0..2 {
        let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        s.write_all(
            format!("POST /orders/{i} HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n").as_bytes(),
        )
        .await
        .unwrap();
        uploads.push(s);
    }
    // A round trip through the proxy's runtime, so their heads are read
    // before the GET arrives.
    let health = get(&format!("http://{}/healthz", p.admin), &[]).await;
    assert_eq!(health.status, StatusCode::OK);
    let got = tokio::time::timeout(Duration::from_secs(10), get(&p.url("/products/4"), &[]))
        .await
        .expect("a GET waited on stalled uploads");
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        backend.hits(),
        1,
        "an upload reached the backend before its body"
    );
    for mut s in uploads {
        s.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    let bodies: Vec<Bytes> = backend
        .seen()
        .into_iter()
        .filter(|s| s.method == http::Method::POST)
        .map(|s| s.body)
        .collect();
    assert_eq!(
        bodies,
        [Bytes::from("hello world"), Bytes::from("hello world")]
    );
}

/// A backend that tags each answer with its own request id and trace
/// context (Rails and most frameworks do): the client whose miss fetched
/// it gets its request's id; a hit never hands that one request's id, or
/// its trace context, to anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_headers_are_never_replayed_from_an_entry() {
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let backend = Backend::start(Duration::ZERO, move |_| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let headers = vec![
            ("x-request-id", format!("backend-{i}")),
            ("traceparent", format!("00-{i:032x}-00f067aa0ba902b7-01")),
            ("x-kept", "yes".to_owned()),
        ];
        (StatusCode::OK, headers, Bytes::from("product"))
    })
    .await;
    let proxy = Proxy::start(RULES, &backend.url(), None).await;
    let miss = get(&proxy.url("/products/1"), &[("x-request-id", "client-a")]).await;
    // The client gets the id the backend was sent (the request's own).
    let fetched_with = backend.seen()[0].headers["x-request-id"].clone();
    assert_eq!(miss.header("x-request-id"), fetched_with.to_str().unwrap());
    let hit = await_hit(&proxy.url("/products/1"), &[("x-request-id", "client-b")]).await;
    assert_eq!(hit.header("x-kept"), "yes");
    let own = hit.header("x-request-id");
    assert!(
        !own.is_empty() && own != miss.header("x-request-id") && !own.starts_with("backend-"),
        "{:?}",
        hit.headers
    );
    assert!(hit.header("traceparent").is_empty(), "{:?}", hit.headers);
}

/// Every request gets an id of its own, made here: the backend gets it on
/// a cacheable fetch and on a pass, the client gets it back, a hit carries
/// its own request's id (never the fetching one's), and a client's own
/// `X-Request-Id` is replaced unless a trusted proxy sent it.
#[tokio::test]
async fn each_request_has_its_own_id_and_a_client_cannot_choose_it() {
    let backend = Backend::start(Duration::ZERO, |s| {
        let id = s
            .headers
            .get("x-request-id")
            .map_or("none", |v| v.to_str().unwrap_or("?"))
            .to_owned();
        (
            StatusCode::OK,
            vec![("x-request-id", id.clone())],
            Bytes::from(format!("made for {id}")),
        )
    })
    .await;
    let proxy = Proxy::start(RULES, &backend.url(), None).await;
    let chosen = [("x-request-id", "attacker-chosen")];
    let miss = get(&proxy.url("/products/1"), &chosen).await;
    let id = miss.header("x-request-id");
    assert_eq!(id.len(), 32, "{id}");
    assert_ne!(id, "attacker-chosen");
    assert_eq!(text(&miss), format!("made for {id}"), "the backend got it");
    let hit = await_hit(&proxy.url("/products/1"), &chosen).await;
    let own = hit.header("x-request-id");
    assert_eq!(own.len(), 32);
    assert_ne!(own, id, "a hit replayed the fetching request's id");
    assert_ne!(own, "attacker-chosen");
    // A pass (no rule) carries it too.
    let pass = get(&proxy.url("/elsewhere"), &[]).await;
    let seen = backend.seen();
    let passed = seen.iter().find(|s| s.uri == "/elsewhere").unwrap();
    assert_eq!(
        passed.headers["x-request-id"].to_str().unwrap(),
        pass.header("x-request-id")
    );

    // Behind a trusted load balancer its id is kept.
    let trusting = Proxy::start(
        &format!("trusted_proxies: [\"127.0.0.0/8\"]\n{RULES}"),
        &backend.url(),
        None,
    )
    .await;
    let given = [("x-request-id", "lb-7f3a")];
    let kept = get(&trusting.url("/products/2"), &given).await;
    assert_eq!(kept.header("x-request-id"), "lb-7f3a");
    assert_eq!(text(&kept), "made for lb-7f3a");
}

/// A trusted proxy's W3C trace is continued: the backend gets its trace
/// id under a span of sidecache's own, on a cacheable fetch and on a pass;
/// the free-text `tracestate` only on the pass (the key does not describe
/// it); an unreadable `traceparent` never reaches the backend, nor does
/// one from a client `trusted_proxies` does not name (a backend that
/// reflected it would store that client's choice in a shared entry).
#[tokio::test]
async fn a_trace_is_continued_with_a_span_of_its_own() {
    let backend = Backend::json(vec![]).await;
    let untrusting = Proxy::start(RULES, &backend.url(), None).await;
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    get(&untrusting.url("/products/9"), &[("traceparent", given)]).await;
    let seen = backend.seen();
    let fetched = seen.iter().find(|s| s.uri == "/products/9").unwrap();
    assert!(!fetched.headers.contains_key("traceparent"));
    let proxy = Proxy::start(
        &format!("trusted_proxies: [\"127.0.0.0/8\"]\n{RULES}"),
        &backend.url(),
        None,
    )
    .await;
    let headers = [("traceparent", given), ("tracestate", "vendor=evil")];
    get(&proxy.url("/products/1"), &headers).await;
    get(&proxy.url("/elsewhere"), &headers).await;
    get(
        &proxy.url("/products/2"),
        &[("traceparent", "00-<script>-00f067aa0ba902b7-01")],
    )
    .await;
    let seen = backend.seen();
    let of = |uri: &str| seen.iter().find(|s| s.uri == uri).unwrap();
    for uri in ["/products/1", "/elsewhere"] {
        let sent = of(uri).headers["traceparent"].to_str().unwrap();
        assert!(
            sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent.ends_with("-01"),
            "{uri}: {sent}"
        );
        assert_ne!(sent, given, "{uri}: the caller's span, not one of its own");
    }
    assert!(!of("/products/1").headers.contains_key("tracestate"));
    assert_eq!(of("/elsewhere").headers["tracestate"], "vendor=evil");
    assert!(!of("/products/2").headers.contains_key("traceparent"));
}
