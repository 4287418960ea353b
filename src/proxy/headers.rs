//! Header work shared by every path: the request made safe to key,
//! hop-by-hop removal, and the forwarding headers added toward the backend.

use std::net::IpAddr;

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `Via` value added in both directions.
pub const VIA: &str = "1.1 sidecache";

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

/// Forwarding headers a client may only send through a trusted proxy:
/// backends build absolute links, schemes and client addresses from them
/// (Rack, Spring, Werkzeug's ProxyFix read several). Names starting with
/// these prefixes, and the names below.
const FORWARDING_PREFIXES: [&str; 2] = ["x-forwarded-", "x-original-"];
const FORWARDING: [&str; 12] = [
    "forwarded",
    "x-forwarded",
    "front-end-https",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "x-url-scheme",
    "x-scheme",
    "x-host",
    "x-http-host",
    "x-rewrite-url",
];

/// Makes a client's request safe to key: refuses a request without exactly
/// one readable host (RFC 9112 3.2), `CONNECT`, a transfer coding other
/// than `chunked`, and a `Connection` that names `Host`; removes hop-by-hop
/// headers (and those `Connection` names); joins HTTP/2 cookie crumbs into
/// one `Cookie` (RFC 9113 8.2.3).
///
/// Refuses a path with a dot segment (`/a/../b`, `/a/%2e/b`): browsers
/// resolve them before sending, and a backend that resolves them would
/// answer for another path than the one the rules matched and keyed.
///
/// From a client that is not a trusted proxy, the whole forwarding family
/// (`X-Forwarded-*`, `Forwarded`, `X-Original-*`, `X-Real-IP`,
/// `Front-End-Https` and their kin) is dropped: sidecache sets
/// `X-Forwarded-For`, `-Proto` and `-Host` from what it knows.
pub fn sanitize_request(
    parts: &mut http::request::Parts,
    trusted: bool,
) -> Result<(), (StatusCode, &'static str)> {
    let bad = |why| Err((StatusCode::BAD_REQUEST, why));
    if parts.method == http::Method::CONNECT {
        return Err((StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not proxied"));
    }
    if has_dot_segment(parts.uri.path()) {
        return bad("the path holds a `.` or `..` segment");
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
        drop_forwarding(headers);
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

/// Whether a segment of `path` is `.` or `..`, written plainly or
/// escaped (`%2e`), as RFC 3986 5.2.4 would remove it.
fn has_dot_segment(path: &str) -> bool {
    // Some servers take `\` (or `%5c`) for `/` and drop `;params` (`..;`
    // on Tomcat).
    let path = path
        .to_ascii_lowercase()
        .replace("%2e", ".")
        .replace("%5c", "/");
    path.split(['/', '\\']).any(|seg| {
        let seg = seg.split(';').next().unwrap_or("");
        seg == "." || seg == ".."
    })
}

/// Removes the forwarding family (see [`sanitize_request`]).
fn drop_forwarding(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| {
            let n = n.as_str();
            FORWARDING.contains(&n) || FORWARDING_PREFIXES.iter().any(|p| n.starts_with(p))
        })
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
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

    /// The whole forwarding family goes from an untrusted client, and
    /// nothing else does; a dot segment, plain or escaped, is refused.
    #[test]
    fn forwarding_family_and_dot_segments() {
        let req = |path: &str| {
            let mut b = http::Request::builder().uri(path).header("host", "shop");
            for n in [
                "x-forwarded-port",
                "x-forwarded-prefix",
                "X-Original-URL",
                "forwarded",
                "x-real-ip",
                "front-end-https",
            ] {
                b = b.header(n, "evil");
            }
            b.header("x-device", "1").body(()).unwrap().into_parts().0
        };
        let mut parts = req("/a/b");
        sanitize_request(&mut parts, false).unwrap();
        let names: Vec<&str> = parts.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host", "x-device"]);
        let mut parts = req("/a/b");
        sanitize_request(&mut parts, true).unwrap();
        assert_eq!(parts.headers.len(), 8, "a trusted proxy's are kept");
        for path in [
            "/static/../account",
            "/a/..;/b",
            "/a/..%5cb",
            "/a/x%5c..%5cb",
            "/a/./b",
            "/a/%2E%2e/b",
            "/a/%2e",
            "/..",
        ] {
            let mut parts = req(path);
            assert_eq!(
                sanitize_request(&mut parts, false).unwrap_err().0,
                StatusCode::BAD_REQUEST,
                "{path}"
            );
        }
        for path in ["/a/..b/c", "/a/.well-known", "/a/b.."] {
            let mut parts = req(path);
            assert!(sanitize_request(&mut parts, false).is_ok(), "{path}");
        }
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
}
