//! Reading the request as the backend will: query pairs (`+` a space,
//! `%XX` decoded), the canonical query a key is read from, and cookies by
//! name (the first of a repeated name, as most frameworks read it).

use http::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, percent_encode};

/// Bytes a rendered value keeps as they are; everything else is `%XX`.
pub(super) const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `raw` decoded, then encoded canonically with `set` (`%41` and `A`
/// render alike).
pub(super) fn push_escaped(out: &mut String, raw: &str, set: &'static AsciiSet) {
    // Decode first so `%41` and `A` render alike, then encode canonically.
    let bytes: Vec<u8> = percent_decode_str(raw).collect();
    out.extend(percent_encode(&bytes, set));
}

/// A query name as the backend reads it: `+` is a space, `%XX` decoded.
pub(super) fn decoded(raw: &str) -> String {
    percent_decode_str(&raw.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// `name=value` pairs of a raw query string, still percent-encoded.
pub fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query_pairs_raw(query).map(|(k, v)| (k, v.unwrap_or("")))
}

/// Like [`query_pairs`], telling `a` (no value) from `a=` (an empty one).
pub(super) fn query_pairs_raw(query: Option<&str>) -> impl Iterator<Item = (&str, Option<&str>)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        })
}

/// The query as keys read it, in the request's own order: each name and
/// value decoded (`+` is a space) and encoded again the one way keys
/// encode them. The backend gets this query, so the parameters it reads
/// are always the ones the key was rendered from (`?pag%65=2` reaches it
/// as `?page=2`).
pub fn canonical_query(query: &str) -> String {
    if is_canonical(query) {
        return query.to_owned();
    }
    let mut out = String::with_capacity(query.len());
    for (k, v) in query_pairs_raw(Some(query)) {
        if !out.is_empty() {
            out.push('&');
        }
        out.extend(percent_encode(decoded(k).as_bytes(), VALUE));
        if let Some(v) = v {
            out.push('=');
            push_escaped(&mut out, &v.replace('+', " "), VALUE);
        }
    }
    out
}

/// The `name=value` pairs of the request's `Cookie` headers.
pub(super) fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.split_once('='))
        // Names and values trimmed, as backends read them: `currency =USD`
        // names `currency`.
        .map(|(k, v)| (k.trim(), v.trim()))
}

/// Whether `query` is already in the form [`canonical_query`] gives: only
/// bytes that are never encoded, at most one `=` per parameter, no empty
/// parameter. Most queries are, and need no allocation to tell.
pub fn is_canonical(query: &str) -> bool {
    query.split('&').all(|pair| {
        !pair.is_empty()
            && pair.bytes().filter(|b| *b == b'=').count() <= 1
            && pair
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'='))
    })
}

/// How many times the request's `Cookie` headers name `name`.
pub(super) fn cookie_count(headers: &HeaderMap, name: &str) -> usize {
    cookie_pairs(headers).filter(|(k, _)| *k == name).count()
}

/// The raw value of cookie `name` in the request's `Cookie` headers (not
/// decoded, quotes kept: what the backend reads).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    cookie_pairs(headers)
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The request's `Cookie` as a backend gets it on a cacheable fetch: only
/// the cookies `names` lists, raw, in the request's order; `None` when it
/// carries none of them.
pub fn cookies_named(headers: &HeaderMap, names: &[String]) -> Option<String> {
    let mut out = String::new();
    for (k, v) in cookie_pairs(headers).filter(|(k, _)| names.iter().any(|n| n == k)) {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    (!out.is_empty()).then_some(out)
}
