//! Header work shared by every path: hop-by-hop removal, the forwarding
//! headers added toward the backend, and the `Cache-Status` (RFC 9211)
//! value told to the client.

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Extensions, StatusCode};

use crate::cache::Layer;
use crate::metrics::Outcome;

/// `Via` value added in both directions.
pub const VIA: &str = "1.1 sidecache";

/// `Cache-Status` detail of an answer the backend never gave.
pub const UPSTREAM_ERROR: &str = "upstream-error";
/// `Cache-Status` detail of a request refused by the rule's rate limit.
pub const RATE_LIMITED: &str = "rate-limited";

/// Headers that describe one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Request headers that make some backends answer for another method or
/// URL than the request line's; never sent on a cacheable fetch.
pub const UNKEYED: [&str; 5] = [
    "x-http-method-override",
    "x-method-override",
    "x-http-method",
    "x-original-url",
    "x-rewrite-url",
];

/// Makes a client's request safe to key: refuses a request without exactly
/// one readable host (RFC 9112 3.2), `CONNECT`, a transfer coding other
/// than `chunked`, and a `Connection` that names `Host`; removes hop-by-hop
/// headers (and those `Connection` names); joins HTTP/2 cookie crumbs into
/// one `Cookie` (RFC 9113 8.2.3).
///
/// From a client that is not a trusted proxy, `X-Forwarded-Proto`,
/// `X-Forwarded-Host` and `Forwarded` are dropped: sidecache sets the first
/// two from what it knows.
pub fn sanitize_request(
    parts: &mut http::request::Parts,
    trusted: bool,
) -> Result<(), (StatusCode, &'static str)> {
    let bad = |why| Err((StatusCode::BAD_REQUEST, why));
    if parts.method == http::Method::CONNECT {
        return Err((StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not proxied"));
    }
    let headers = &mut parts.headers;
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return bad("more than one Host"),
        (Some(h), None) if h.to_str().is_err() || h.is_empty() => {
            return bad("Host is not readable");
        }
        (None, _) if parts.uri.authority().is_none() => return bad("no Host"),
        _ => {}
    }
    let codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .map(|v| v.to_str().unwrap_or("?"))
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .collect::<Vec<_>>();
    if !codings.is_empty() && codings != ["chunked"] {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            "only the chunked transfer coding is understood",
        ));
    }
    let names_host = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|n| n.trim().eq_ignore_ascii_case("host"));
    if names_host {
        return bad("Connection may not name Host");
    }
    strip_hop_by_hop(headers);
    if !trusted {
        for name in ["x-forwarded-proto", "x-forwarded-host", "forwarded"] {
            headers.remove(name);
        }
    }
    if headers.get_all(header::COOKIE).iter().nth(1).is_some() {
        let joined: Vec<&[u8]> = headers
            .get_all(header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
            headers.insert(header::COOKIE, v);
        }
    }
    Ok(())
}

/// Removes hop-by-hop headers, including those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::PROXY_AUTHENTICATE);
}

/// Adds `X-Forwarded-For` (appended), `X-Forwarded-Proto` and
/// `X-Forwarded-Host` (kept if a trusted proxy in front set them; see
/// [`sanitize_request`]) and `Via`.
pub fn add_forwarding(headers: &mut HeaderMap, client: IpAddr) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let prior = headers
        .get(&xff)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let value = match prior {
        Some(p) if !p.trim().is_empty() => format!("{p}, {client}"),
        _ => client.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(xff, v);
    }
    let proto = HeaderName::from_static("x-forwarded-proto");
    if !headers.contains_key(&proto) {
        headers.insert(proto, HeaderValue::from_static("http"));
    }
    let forwarded_host = HeaderName::from_static("x-forwarded-host");
    if !headers.contains_key(&forwarded_host)
        && let Some(host) = headers.get(header::HOST).cloned()
    {
        headers.insert(forwarded_host, host);
    }
    append_via(headers);
}

/// Appends our `Via` entry.
pub fn append_via(headers: &mut HeaderMap) {
    headers.append(header::VIA, HeaderValue::from_static(VIA));
}

/// Why the cache went to the backend (RFC 9211 `fwd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// No rule, or a rule with `cache: false`.
    Bypass,
    /// The method is not answered from cache.
    Method,
    /// Nothing stored under the key.
    UriMiss,
    /// Something stored, but not for this request's varied headers.
    VaryMiss,
    /// Stored, but stale.
    Stale,
    /// The request asked for a forward (e.g. carried Authorization).
    Request,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Request => "request",
        }
    }
}

/// A `Cache-Status` entry for this cache.
#[derive(Debug, Clone, Default)]
pub struct CacheStatus {
    /// Answered from cache.
    pub hit: bool,
    /// Why it went forward.
    pub fwd: Option<Fwd>,
    /// The backend's status, when forwarded.
    pub fwd_status: Option<u16>,
    /// The response was stored.
    pub stored: bool,
    /// The request waited for another one's response.
    pub collapsed: bool,
    /// A stale entry was confirmed by the backend (304) and answered.
    pub revalidated: bool,
    /// Freshness left, in seconds; negative once stale.
    pub ttl: Option<i64>,
    /// More detail (`memory`, `redis`, a no-store reason).
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    /// The request's outcome, as metrics and logs name it.
    pub fn outcome(&self) -> Outcome {
        match (self.hit, self.fwd) {
            _ if self.collapsed => Outcome::Collapsed,
            _ if self.revalidated => Outcome::Revalidated,
            (true, Some(_)) => Outcome::Stale,
            (true, None) if self.detail == Some(Layer::Redis.as_str()) => Outcome::HitRedis,
            (true, None) => Outcome::HitMemory,
            _ if self.detail == Some(UPSTREAM_ERROR) => Outcome::Error,
            _ if self.detail == Some(RATE_LIMITED) => Outcome::RateLimited,
            (false, Some(Fwd::UriMiss | Fwd::VaryMiss | Fwd::Stale)) => Outcome::Miss,
            (false, _) => Outcome::Pass,
        }
    }

    /// The header value.
    pub fn to_header(&self) -> HeaderValue {
        // Room for the longest combination, so the string never regrows.
        let mut s = String::with_capacity(96);
        s.push_str("sidecache");
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(f) = self.fwd {
            let _ = write!(s, "; fwd={}", f.as_str());
        }
        if let Some(code) = self.fwd_status {
            let _ = write!(s, "; fwd-status={code}");
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(t) = self.ttl {
            let _ = write!(s, "; ttl={t}");
        }
        if let Some(d) = self.detail {
            let _ = write!(s, "; detail={d}");
        }
        // Handed over without a copy; only ASCII was written.
        HeaderValue::from_maybe_shared(Bytes::from(s))
            .unwrap_or(HeaderValue::from_static("sidecache"))
    }
}

/// The `Cache-Status` header name.
pub fn cache_status_name() -> HeaderName {
    HeaderName::from_static("cache-status")
}

/// Sets `Cache-Status` on an answer and keeps its outcome in the
/// extensions, where [`Proxy::handle`](super::Proxy::handle) reads it for
/// metrics and the request's log line.
pub fn set_cache_status(
    headers: &mut HeaderMap,
    extensions: &mut Extensions,
    status: &CacheStatus,
) {
    headers.insert(cache_status_name(), status.to_header());
    extensions.insert(status.outcome());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hop-by-hop headers and those named in Connection go; others stay.
    #[test]
    fn strips_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    /// X-Forwarded-For appends to an earlier proxy's list.
    #[test]
    fn forwarding_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarding(&mut h, "127.0.0.1".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["via"], VIA);
    }

    /// Cache-Status renders in RFC 9211 order.
    #[test]
    fn cache_status_text() {
        let s = CacheStatus {
            fwd: Some(Fwd::UriMiss),
            fwd_status: Some(200),
            stored: true,
            ttl: Some(60),
            ..Default::default()
        };
        assert_eq!(
            s.to_header(),
            "sidecache; fwd=uri-miss; fwd-status=200; stored; ttl=60"
        );
        let h = CacheStatus {
            hit: true,
            ttl: Some(5),
            detail: Some("memory"),
            ..Default::default()
        };
        assert_eq!(h.to_header(), "sidecache; hit; ttl=5; detail=memory");
    }
}
