//! Responses built by the proxy itself: answers from a cache entry (with
//! `Age`, HEAD and conditional 304 handling) and short error answers.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header, request};

use super::body::{ProxyBody, empty, full, recoded};
use super::headers::append_via;
use super::storable::SIDECACHE_CACHE_CONTROL;
use super::upstream::UpstreamError;
use crate::cache::{CachedResponse, Entry, StoredHeaders, encoding};

/// Headers a 304 repeats from the stored response (RFC 9110 15.4.5).
const NOT_MODIFIED_KEEP: [header::HeaderName; 6] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
];

fn signed_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Freshness left in whole seconds, as `Cache-Status` says it: floored,
/// so an entry 100 ms past its expiry says -1, as RFC 9211 wants stale
/// ones negative.
pub fn ttl_left(entry: &Entry, now: SystemTime) -> i64 {
    (signed_ms(entry.ttl) - signed_ms(entry.age(now))).div_euclid(1000)
}

/// Answers `req` from a stored response.
pub fn from_entry(
    req: &request::Parts,
    entry: &Entry,
    stored: &CachedResponse,
    now: SystemTime,
) -> Response<ProxyBody> {
    let age = HeaderValue::from(entry.age(now).as_secs());
    if stored.status == StatusCode::OK && not_modified(&req.headers, &stored.headers) {
        let mut headers = HeaderMap::new();
        for name in NOT_MODIFIED_KEEP.iter().chain([&header::LAST_MODIFIED]) {
            for v in stored.headers.get_all(name) {
                headers.append(name.clone(), v);
            }
        }
        return finish(StatusCode::NOT_MODIFIED, headers, age, empty());
    }
    let head = req.method == Method::HEAD;
    // The representation this client takes (compressed by sidecache, it
    // may be decoded or encoded again for it).
    let stored = match encoding::shown(&req.headers, stored) {
        encoding::Shown::Ready(r) => r,
        encoding::Shown::Streamed(stored, how) => {
            let mut headers = stored.headers.to_map(4);
            headers.remove(SIDECACHE_CACHE_CONTROL);
            headers.remove(encoding::ENCODED);
            headers.remove(header::CONTENT_LENGTH);
            let (from, to) = match how {
                encoding::Sent::Recoded(from, to) => (from, Some(to)),
                encoding::Sent::Decoded(from) => (from, None),
                encoding::Sent::AsStored => return from_entry_whole(req, stored, age),
            };
            match to {
                Some(to) => headers.insert(
                    header::CONTENT_ENCODING,
                    HeaderValue::from_static(to.as_str()),
                ),
                None => headers.remove(header::CONTENT_ENCODING),
            };
            let body = if head {
                empty()
            } else {
                recoded(stored.body.clone(), from, to)
            };
            return finish(stored.status, headers, age, body);
        }
    };
    from_entry_whole(req, &stored, age)
}

/// The whole of `stored`, as it is.
fn from_entry_whole(
    req: &request::Parts,
    stored: &CachedResponse,
    age: HeaderValue,
) -> Response<ProxyBody> {
    let head = req.method == Method::HEAD;
    let mut headers = stored.headers.to_map(4);
    headers.remove(SIDECACHE_CACHE_CONTROL);
    headers.remove(encoding::ENCODED);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(stored.body.len()));
    let body = if head {
        empty()
    } else {
        full(stored.body.clone())
    };
    finish(stored.status, headers, age, body)
}

/// Answers a Range request from a fresh entry: bytes `part` of its body as
/// a `206`, or a `416` when `part` is `None` (no byte of it can be given).
pub fn from_entry_part(
    req: &request::Parts,
    entry: &Entry,
    stored: &CachedResponse,
    now: SystemTime,
    part: Option<(u64, u64)>,
) -> Response<ProxyBody> {
    let age = HeaderValue::from(entry.age(now).as_secs());
    let mut headers = stored.headers.to_map(4);
    headers.remove(SIDECACHE_CACHE_CONTROL);
    // A range of an entry sidecache compressed is planned only for a
    // client that takes the coding (`range::plan`): bytes of the
    // representation it gets.
    headers.remove(encoding::ENCODED);
    headers.insert(
        header::CONTENT_RANGE,
        super::range::content_range(stored, part),
    );
    let Some((start, end)) = part else {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        return finish(StatusCode::RANGE_NOT_SATISFIABLE, headers, age, empty());
    };
    // `plan` validated the range against the body's length.
    let (start, end) = (
        usize::try_from(start).unwrap_or(usize::MAX),
        usize::try_from(end).unwrap_or(usize::MAX),
    );
    let bytes = stored
        .body
        .get(start..=end)
        .map(|_| stored.body.slice(start..=end));
    let Some(bytes) = bytes else {
        return error(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let body = if req.method == Method::HEAD {
        empty()
    } else {
        full(bytes)
    };
    finish(StatusCode::PARTIAL_CONTENT, headers, age, body)
}

fn finish(
    code: StatusCode,
    mut headers: HeaderMap,
    age: HeaderValue,
    body: ProxyBody,
) -> Response<ProxyBody> {
    headers.insert(header::AGE, age);
    append_via(&mut headers);
    let mut res = Response::new(body);
    *res.status_mut() = code;
    *res.headers_mut() = headers;
    res
}

/// What clients are told about caching an answer from the cache path: the
/// rule's `downstream.cache_control` when it sets one. Otherwise, under a
/// fixed TTL (which overrides the backend's freshness here), once the
/// answer's `Age` exceeds the backend's `max-age` or `s-maxage`, both are
/// raised by the `Age`: a browser or CDN in front then keeps it for the
/// backend's max-age from when it gets it, and `Age` never exceeds the
/// `max-age` it is sent with.
pub fn for_clients(res: &mut Response<ProxyBody>, rule: &crate::rules::Rule) {
    if let Some(cc) = &rule.downstream {
        res.headers_mut().insert(header::CACHE_CONTROL, cc.clone());
        return;
    }
    if !matches!(rule.ttl, crate::rules::Ttl::Fixed(_)) {
        return;
    }
    let age = res
        .headers()
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|a| *a > 0);
    let Some(age) = age else {
        return;
    };
    // Most answers are younger than their max-age: nothing to change.
    let stale_downstream = res
        .headers()
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| d.split_once('='))
        .filter(|(n, _)| {
            n.trim().eq_ignore_ascii_case("max-age") || n.trim().eq_ignore_ascii_case("s-maxage")
        })
        .any(|(_, v)| {
            v.trim()
                .trim_matches('"')
                .parse::<u64>()
                .is_ok_and(|n| n < age)
        });
    if !stale_downstream {
        return;
    }
    let raised: Vec<HeaderValue> = res
        .headers()
        .get_all(header::CACHE_CONTROL)
        .iter()
        .map(|v| {
            v.to_str()
                .map_or_else(|_| v.clone(), |text| raise_max_age(text, age))
        })
        .collect();
    let headers = res.headers_mut();
    headers.remove(header::CACHE_CONTROL);
    for v in raised {
        headers.append(header::CACHE_CONTROL, v);
    }
}

/// `text` with every `max-age=N` and `s-maxage=N` raised by `age`.
fn raise_max_age(text: &str, age: u64) -> HeaderValue {
    let parts: Vec<String> = text
        .split(',')
        .map(|d| {
            let d = d.trim();
            let Some((name, value)) = d.split_once('=') else {
                return d.to_owned();
            };
            let name = name.trim();
            let n = value.trim().trim_matches('"').parse::<u64>();
            match n {
                Ok(n)
                    if name.eq_ignore_ascii_case("max-age")
                        || name.eq_ignore_ascii_case("s-maxage") =>
                {
                    format!("{name}={}", n.saturating_add(age))
                }
                _ => d.to_owned(),
            }
        })
        .collect();
    HeaderValue::from_str(&parts.join(", ")).unwrap_or(HeaderValue::from_static("no-cache"))
}

/// Whether the client's validators match the stored response.
fn not_modified(req: &HeaderMap, stored: &StoredHeaders) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let etag = stored.get(&header::ETAG);
        let Some(etag) = etag.as_ref().and_then(|v| v.to_str().ok()) else {
            return inm.trim() == "*";
        };
        let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
        let mine = opaque(etag);
        return inm.split(',').any(|t| t.trim() == "*" || opaque(t) == mine);
    }
    let Some(since) = req
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    let modified = stored
        .get(&header::LAST_MODIFIED)
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    modified.is_some_and(|m| m <= since)
}

/// 429 for a request over its rule's rate limit, with `Retry-After` in
/// whole seconds (at least 1).
pub fn rate_limited(wait: Duration) -> Response<ProxyBody> {
    let mut res = error(
        StatusCode::TOO_MANY_REQUESTS,
        "too many requests; retry later",
    );
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    res
}

/// The answer when the backend gave none: 502, 504 or 503 as `e` says.
pub fn upstream_error(e: &UpstreamError) -> Response<ProxyBody> {
    error(e.status(), &e.to_string())
}

/// A short plain-text answer of the proxy's own.
pub fn error(code: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = Bytes::from(format!("{message}\n"));
    let mut res = Response::new(full(body));
    *res.status_mut() = code;
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if code == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    *res.headers_mut() = h;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    /// A matching, weak or listed ETag gives 304; another does not.
    #[test]
    fn etag_matching() {
        let stored = StoredHeaders::from_map(&h(&[("etag", "\"v1\"")]));
        assert!(not_modified(&h(&[("if-none-match", "\"v1\"")]), &stored));
        assert!(not_modified(&h(&[("if-none-match", "W/\"v1\"")]), &stored));
        assert!(not_modified(
            &h(&[("if-none-match", "\"x\", \"v1\"")]),
            &stored
        ));
        assert!(!not_modified(&h(&[("if-none-match", "\"v2\"")]), &stored));
    }

    /// max-age and s-maxage are raised by the answer's age; the rest stays.
    #[test]
    fn max_age_raised_by_age() {
        assert_eq!(
            raise_max_age("public, max-age=60, S-MaxAge=\"30\", no-transform", 100),
            "public, max-age=160, S-MaxAge=130, no-transform"
        );
        assert_eq!(raise_max_age("no-cache", 5), "no-cache");
    }

    /// If-Modified-Since at or after Last-Modified gives 304; before does not.
    #[test]
    fn modified_since() {
        let stored =
            StoredHeaders::from_map(&h(&[("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT")]));
        assert!(not_modified(
            &h(&[("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &h(&[("if-modified-since", "Tue, 20 Oct 2015 07:28:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &h(&[("if-modified-since", "garbage")]),
            &stored
        ));
    }
}
