//! Compressible answers are stored compressed once and sent as each client
//! takes them: as stored to a client that takes the coding, encoded again
//! in another listed coding, or decoded; with `Content-Length`, HEAD,
//! ranges and validators as for any entry, `Vary: Accept-Encoding` from the
//! backend kept working, an answer the backend encoded left alone, and a
//! compressed value changed in Redis refused.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use support::*;

const RULES: &str = r#"
upstream: { url: UPSTREAM }
redis: { url: "REDIS", key_prefix: "cmp:", timeout: 1s }
rules:
  - name: listing
    match: { path: "/listings/{id}" }
    key: "listing:{id}"
    ttl: 1h
  - name: gzip-only
    match: { path: "/g/{id}" }
    key: "g:{id}"
    ttl: 1h
    compress: [gzip]
  - name: plain
    match: { path: "/plain/{id}" }
    key: "plain:{id}"
    ttl: 1h
    compress: false
  - name: big
    match: { path: "/big/{id}" }
    key: "big:{id}"
    ttl: 1h
"#;

/// The rules without Redis.
fn memory_only() -> String {
    RULES.replace(
        "redis: { url: \"REDIS\", key_prefix: \"cmp:\", timeout: 1s }\n",
        "",
    )
}

/// A listing of `n` products as JSON.
fn listing(n: usize) -> String {
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"name\":\"Product number {i}\",\"price\":{}.99,\"in_stock\":true}}",
                i % 50
            )
        })
        .collect();
    format!("{{\"products\":[{}]}}", items.join(","))
}

/// A JSON document of about 300 KB that compresses only about twice
/// (hex of a pseudo-random sequence): too large to be made whole for a
/// client once compressed.
fn big() -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let items: Vec<String> = (0..4000)
        .map(|i| {
            let hex: String = (0..4)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("{x:016x}")
                })
                .collect();
            format!("{{\"id\":{i},\"h\":\"{hex}\"}}")
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// JSON listings with a strong ETag (`/big/..` [`big`]); `/varying/..`
/// with `Vary: Accept-Encoding`.
async fn backend() -> Backend {
    Backend::start(Duration::ZERO, |s| {
        let path = s.uri.split('?').next().unwrap_or("").to_owned();
        let body = if path.starts_with("/big/") {
            big()
        } else {
            listing(100)
        };
        let mut headers = vec![
            ("content-type", "application/json".to_owned()),
            ("etag", "\"v1\"".to_owned()),
        ];
        if path.contains("/varying") {
            headers.push(("vary", "Accept-Encoding".to_owned()));
        }
        (StatusCode::OK, headers, Bytes::from(body))
    })
    .await
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn unbrotli(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(b, 4096)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// One backend request; a `gzip, br` client gets gzip (as stored), a `br`
/// client br (encoded again), a client without `Accept-Encoding` the JSON
/// as the backend sent it, each with its own `Content-Length`; HEAD and a
/// range apply to the representation sent; the ETag is weak, `Vary` names
/// `Accept-Encoding`, `If-None-Match` gives 304; the backend was asked for
/// the body unencoded.
#[tokio::test]
async fn stored_once_and_sent_as_each_client_takes_it() {
    let backend = backend().await;
    let proxy = Proxy::start(&memory_only(), &backend.url(), None).await;
    let url = proxy.url("/listings/1");
    let original = Bytes::from(listing(100));
    let first = get(&url, &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(
        first.body, original,
        "a miss is sent as the backend sent it"
    );
    let gz = await_hit(&url, &[("accept-encoding", "gzip, br")]).await;
    assert_eq!(gz.header("content-encoding"), "gzip");
    assert_eq!(gz.header("content-length"), gz.body.len().to_string());
    assert!(
        gz.body.len() * 4 < original.len(),
        "{} of {}",
        gz.body.len(),
        original.len()
    );
    assert_eq!(gunzip(&gz.body), original);
    assert_eq!(gz.header("etag"), "W/\"v1\"");
    assert!(
        gz.header("vary")
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );
    assert_eq!(
        gz.header("sidecache-encoded"),
        "",
        "the marker never leaves"
    );

    let br = get(&url, &[("accept-encoding", "br")]).await;
    assert!(br.is_hit());
    assert_eq!(br.header("content-encoding"), "br");
    assert_eq!(unbrotli(&br.body), original);
    assert_eq!(br.header("content-length"), br.body.len().to_string());

    let plain = get(&url, &[]).await;
    assert!(plain.is_hit());
    assert_eq!(plain.header("content-encoding"), "");
    assert_eq!(plain.body, original);
    assert_eq!(plain.header("content-length"), original.len().to_string());
    let refused = get(&url, &[("accept-encoding", "br;q=0, gzip;q=0")]).await;
    assert_eq!(refused.body, original);

    let head = send("HEAD", &url, &[("accept-encoding", "gzip")], "").await;
    assert_eq!(head.header("content-length"), gz.body.len().to_string());
    let head = send("HEAD", &url, &[], "").await;
    assert_eq!(head.header("content-length"), original.len().to_string());

    let part = get(&url, &[("accept-encoding", "gzip"), ("range", "bytes=0-9")]).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, gz.body.slice(0..10));
    assert_eq!(
        part.header("content-range"),
        format!("bytes 0-9/{}", gz.body.len())
    );
    let part = get(&url, &[("range", "bytes=0-9")]).await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, original.slice(0..10));
    assert_eq!(
        part.header("content-range"),
        format!("bytes 0-9/{}", original.len())
    );

    let not_modified = get(&url, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);

    assert_eq!(backend.hits_for("/listings/1"), 1);
    let seen = backend.seen();
    assert_eq!(seen[0].headers["accept-encoding"], "identity");
}

/// A rule may pick its codings (`[gzip]`) or turn compression off; an
/// answer the backend encoded itself is left as it is; a body too large to
/// make whole for a client is decoded as it is sent.
#[tokio::test]
async fn codings_per_rule_and_answers_left_alone() {
    let pre = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(listing(50).as_bytes()).unwrap();
        Bytes::from(enc.finish().unwrap())
    };
    let gz = pre.clone();
    let backend = Backend::start(Duration::ZERO, move |s| {
        let json = ("content-type", "application/json".to_owned());
        if s.uri.starts_with("/plain/pre") {
            let headers = vec![json, ("content-encoding", "gzip".to_owned())];
            return (StatusCode::OK, headers, gz.clone());
        }
        let body = if s.uri.starts_with("/big/") {
            big()
        } else {
            listing(100)
        };
        (StatusCode::OK, vec![json], Bytes::from(body))
    })
    .await;
    let proxy = Proxy::start(&memory_only(), &backend.url(), None).await;

    let both = [("accept-encoding", "br, gzip")];
    let g = await_hit(&proxy.url("/g/1"), &both).await;
    assert_eq!(g.header("content-encoding"), "gzip");
    assert_eq!(gunzip(&g.body), listing(100).as_bytes());
    // Stored in gzip only: a br-only client gets it decoded.
    let br_only = get(&proxy.url("/g/1"), &[("accept-encoding", "br")]).await;
    assert_eq!(br_only.header("content-encoding"), "");
    assert_eq!(br_only.body, listing(100).as_bytes());

    let plain = await_hit(&proxy.url("/plain/1"), &both).await;
    assert_eq!(plain.header("content-encoding"), "");
    assert_eq!(plain.body, listing(100).as_bytes());
    let seen = backend.seen();
    let asked = seen.iter().find(|s| s.uri == "/plain/1").unwrap();
    assert_eq!(asked.headers["accept-encoding"], "br, gzip");

    let pre_hit = await_hit(&proxy.url("/plain/pre"), &both).await;
    assert_eq!(pre_hit.header("content-encoding"), "gzip");
    assert_eq!(pre_hit.body, pre);

    let big = big();
    let stored = await_hit(&proxy.url("/big/1"), &both).await;
    assert!(
        stored.body.len() > sidecache::cache::encoding::MADE_WHOLE,
        "{}",
        stored.body.len()
    );
    let streamed = get(&proxy.url("/big/1"), &[]).await;
    assert!(streamed.is_hit());
    assert_eq!(streamed.header("content-encoding"), "");
    assert_eq!(streamed.body, big.as_bytes());
    let recoded = get(&proxy.url("/big/1"), &[("accept-encoding", "br")]).await;
    assert_eq!(recoded.header("content-encoding"), "br");
    assert_eq!(unbrotli(&recoded.body), big.as_bytes());
}

/// `Vary: Accept-Encoding` from the backend: the answer was asked for
/// unencoded, so one entry serves every client; with compression off the
/// variants stay apart as before.
#[tokio::test]
async fn vary_accept_encoding_from_the_backend() {
    let backend = backend().await;
    let proxy = Proxy::start(&memory_only(), &backend.url(), None).await;
    let url = proxy.url("/listings/varying");
    await_hit(&url, &[("accept-encoding", "gzip")]).await;
    let br = get(&url, &[("accept-encoding", "br")]).await;
    assert!(br.is_hit(), "{}", br.cache_status());
    assert_eq!(unbrotli(&br.body), listing(100).as_bytes());
    let plain = get(&url, &[]).await;
    assert!(plain.is_hit());
    assert_eq!(backend.hits_for("/listings/varying"), 1);

    let url = proxy.url("/plain/varying");
    await_hit(&url, &[("accept-encoding", "gzip")]).await;
    let other = get(&url, &[("accept-encoding", "br")]).await;
    assert!(!other.is_hit(), "a variant of another Accept-Encoding");
    assert_eq!(backend.hits_for("/plain/varying"), 2);
}

/// Another replica's L2 hit is sent compressed; Redis holds the compressed
/// body; a compressed value changed in Redis is a miss on a replica that
/// reads it, never a garbled answer.
#[tokio::test]
async fn shared_through_redis_and_a_changed_value_is_refused() {
    let redis = Redis::start();
    let backend = backend().await;
    let a = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let ae = [("accept-encoding", "br")];
    await_hit(&a.url("/listings/7"), &ae).await;
    eventually("the entry is in Redis", || async {
        redis_has(&redis, "cmp:{listing:7}").await
    })
    .await;
    let from_b = get(&b.url("/listings/7"), &ae).await;
    assert!(
        from_b.cache_status().contains("detail=redis"),
        "{}",
        from_b.cache_status()
    );
    assert_eq!(from_b.header("content-encoding"), "br");
    assert_eq!(unbrotli(&from_b.body), listing(100).as_bytes());

    let mut conn = redis.conn().await;
    let value: Vec<u8> = redis::cmd("GET")
        .arg("cmp:{listing:7}")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        value.len() * 3 < listing(100).len(),
        "Redis holds {} bytes",
        value.len()
    );
    // The body is the value's last field: change a byte inside it.
    let mut changed = value.clone();
    let at = changed.len() - 20;
    changed[at] ^= 0x5a;
    let () = redis::cmd("SET")
        .arg("cmp:{listing:7}")
        .arg(changed)
        .query_async(&mut conn)
        .await
        .unwrap();
    let c = Proxy::start(RULES, &backend.url(), Some(&redis.url())).await;
    let from_c = get(&c.url("/listings/7"), &ae).await;
    assert!(!from_c.is_hit(), "{}", from_c.cache_status());
    assert_eq!(from_c.body, listing(100).as_bytes());
    assert_eq!(backend.hits_for("/listings/7"), 2);
}
