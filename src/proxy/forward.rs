//! The backend gets exactly what the key says. On a cacheable request the
//! pipeline works on, and the backend is sent, a head built from the key's
//! inputs ([`crate::rules::KeyInputs`]) and nothing else the client
//! controls: the query parameters the key reads, the cookies it names, the
//! host it holds, the headers it names or `forward` adds, and the few that
//! HTTP semantics need. A backend that builds its answer from anything else
//! (a `?callback=`, an `X-Forwarded-Prefix`, a cookie) never sees it, so no
//! client can store an answer under a key that does not describe it.
//!
//! A pass is forwarded as received (`Proxy::pass`); this module is for the
//! cache path alone.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, request};

use super::headers::add_forwarding;
use crate::config::Config;
use crate::rules::{QueryInputs, Rule, cookies_named};

/// Request headers every cacheable fetch keeps, with [`CONDITIONAL`]:
/// content negotiation (a backend that varies on them says so with
/// `Vary`, which keys them) and cache directives. (The client's validators
/// and ranges are kept for the hit path, which answers them from the
/// entry; `fetch_head` drops them.)
const SEMANTIC: [HeaderName; 6] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::ACCEPT_CHARSET,
    header::CACHE_CONTROL,
    header::PRAGMA,
];

/// Request headers that would make the backend answer with less than the
/// full representation; dropped on cacheable fetches, since the cache
/// answers the client's conditionals itself.
const CONDITIONAL: [HeaderName; 6] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// Forwarding headers kept from a client that `trusted_proxies` names
/// (from any other they are gone already: `headers::sanitize_request`).
const FROM_TRUSTED: [&str; 2] = ["x-forwarded-for", "x-forwarded-proto"];

/// The head of a cacheable request `rule` matched, as the cache path and
/// the backend see it: `query` is the query the key was read from (already
/// canonical, ignored parameters gone), `host` the request's authority.
pub fn keyed_head(
    parts: &request::Parts,
    rule: &Rule,
    host: &str,
    query: Option<&str>,
    config: &Config,
) -> Result<request::Parts, &'static str> {
    let inputs = &rule.inputs;
    let query = forwarded_query(query, &inputs.query);
    let path_and_query = match &query {
        Some(q) => format!("{}?{q}", parts.uri.path()),
        None => parts.uri.path().to_owned(),
    };
    let mut uri = parts.uri.clone().into_parts();
    uri.path_and_query = Some(
        http::uri::PathAndQuery::try_from(path_and_query)
            .map_err(|_| "the query cannot be read")?,
    );
    let uri = http::Uri::from_parts(uri).map_err(|_| "the URI cannot be read")?;

    let kept = SEMANTIC.len() + CONDITIONAL.len() + inputs.headers.len();
    let mut headers = HeaderMap::with_capacity(kept + 4);
    let mut copy = |name: &HeaderName| {
        for v in parts.headers.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    };
    SEMANTIC
        .iter()
        .chain(&CONDITIONAL)
        .chain(&inputs.headers)
        .for_each(&mut copy);
    if rule.allow_authorized {
        copy(&header::AUTHORIZATION);
    }
    FROM_TRUSTED
        .iter()
        .for_each(|n| copy(&HeaderName::from_static(n)));
    // The request's id, which sidecache made (or a trusted proxy gave):
    // never the client's choice, so a backend that reflects it cannot be
    // steered by one.
    copy(&super::request_id::HEADER);
    // Its trace, as `trace` rewrote it (hex digits only); not `tracestate`.
    copy(&super::trace::TRACEPARENT);
    if let Some(cookies) = cookies_named(&parts.headers, &inputs.cookies) {
        let v = HeaderValue::from_str(&cookies).map_err(|_| "a cookie cannot be read")?;
        headers.insert(header::COOKIE, v);
    }
    headers.insert(header::HOST, backend_host(rule, host, config)?);

    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = uri;
    head.version = parts.version;
    head.headers = headers;
    Ok(head)
}

/// The request a cacheable fetch sends for the keyed head `head`: a GET
/// (the entry answers HEAD too) without the client's validators and
/// ranges, unencoded where `rule` compresses or reads the page, with the
/// forwarding headers sidecache sets (`X-Forwarded-Host` is the `Host`
/// above).
pub fn fetch_head(head: &request::Parts, client: std::net::IpAddr, rule: &Rule) -> request::Parts {
    let mut up = head.clone();
    up.method = http::Method::GET;
    for name in &CONDITIONAL {
        up.headers.remove(name);
    }
    // An ESI page is read as it is, and a rule that compresses stores one
    // representation of its own: both ask for the body unencoded.
    if rule.esi || !rule.compress.is_empty() {
        up.headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
    }
    add_forwarding(&mut up.headers, client);
    up
}

/// The client's headers a backend's `Vary` may bring into the request it
/// gets: those the keyed head left out, less the ones the key alone
/// decides (`Cookie`, `Host`, `Authorization`, forwarding headers), so a
/// `Vary: Cookie` varies on the cookies the key forwards, not on every
/// visitor's own.
pub fn others(mut client: HeaderMap, keyed: &HeaderMap) -> HeaderMap {
    let decided = |n: &HeaderName| {
        keyed.contains_key(n)
            || *n == header::COOKIE
            || *n == header::HOST
            || *n == header::AUTHORIZATION
            || *n == header::VIA
            || n.as_str().starts_with("x-forwarded-")
            || *n == header::CONTENT_LENGTH
    };
    let names: Vec<HeaderName> = client.keys().filter(|n| decided(n)).cloned().collect();
    for n in names {
        client.remove(n);
    }
    client
}

/// Removes from a miss's answer each `Set-Cookie` for a cookie the
/// client sent (`client`) that the keyed head (`keyed`) did not carry: the
/// backend, not sent the client's own, would replace it (a new CSRF
/// secret, a fresh anonymous session). Work only when the answer sets one.
pub fn drop_withheld_set_cookies(
    headers: &mut HeaderMap,
    client: Option<&HeaderValue>,
    keyed: &HeaderMap,
) {
    let Some(client) = client.and_then(|c| c.to_str().ok()) else {
        return;
    };
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let names = |v: &str| -> Vec<String> {
        v.split(';')
            .filter_map(|c| c.split_once('=').map(|(k, _)| k.trim().to_owned()))
            .collect()
    };
    let sent = keyed
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(names)
        .unwrap_or_default();
    let withheld: Vec<String> = names(client)
        .into_iter()
        .filter(|n| !sent.contains(n))
        .collect();
    if withheld.is_empty() {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            let name = v
                .to_str()
                .ok()
                .and_then(|s| s.split_once('='))
                .map(|(k, _)| k.trim());
            !name.is_some_and(|n| withheld.iter().any(|w| w == n))
        })
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in kept {
        headers.append(header::SET_COOKIE, v);
    }
}

/// The part of the keyed query the key reads.
fn forwarded_query(query: Option<&str>, reads: &QueryInputs) -> Option<String> {
    let query = query?;
    match reads {
        QueryInputs::None => None,
        QueryInputs::All => Some(query.to_owned()),
        QueryInputs::Named(names) => {
            // Canonical already: names are encoded one way only.
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| {
                    let name = pair.split_once('=').map_or(*pair, |(k, _)| k);
                    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
                    names.iter().any(|n| *n == name)
                })
                .collect();
            (!kept.is_empty()).then(|| kept.join("&"))
        }
    }
}

/// The `Host` a cacheable fetch sends: the request's when the key holds
/// `{host}`; otherwise one fixed value, so that requests sharing the key
/// share what the backend sees: `upstream.host`, else the rule's
/// `match.host` when it names one host, else the upstream URL's authority.
pub fn backend_host(rule: &Rule, host: &str, config: &Config) -> Result<HeaderValue, &'static str> {
    let fixed = || {
        if let Some(h) = &config.upstream.host {
            return Ok(h.clone());
        }
        let name = match rule.host.as_deref().filter(|h| !h.starts_with("*.")) {
            Some(h) => h,
            None => config.upstream.url.authority().map_or("", |a| a.as_str()),
        };
        HeaderValue::from_str(name)
    };
    let value = if rule.inputs.host {
        HeaderValue::from_str(host)
    } else {
        fixed()
    };
    value.map_err(|_| "the host cannot be read")
}
