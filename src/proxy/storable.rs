//! Whether a backend response may be stored, for how long, and how long
//! it may be served stale.
//!
//! The safety defaults of the product (no Set-Cookie, no `private`, no
//! `no-store`, no `Vary: *`, a short status list, a size cap) are checked
//! here, each relaxable by the rule where the design allows it. Freshness of
//! `ttl: origin` rules comes from http-cache-semantics (RFC 9111), handed a
//! normalised copy of the response head (`normalised`) where the crate is
//! more lenient or stricter than the RFC. The directives sidecache obeys are
//! those of the targeted field when the backend sends one (RFC 9213:
//! `Sidecache-Cache-Control`, then `CDN-Cache-Control`), else
//! `Cache-Control` ([`Directives`]).
//!
//! Longer than most files because the RFC 9111 decisions (storable,
//! freshness, stale windows, targeted fields) are one policy and are best
//! read in one place, with their tests.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request, response};
use http_cache_semantics::{CacheOptions, CachePolicy};

use crate::rules::{MAX_ORIGIN_TTL, MIN_KEEP_FOR_REVALIDATION, Rule, SetCookie, Ttl};

/// sidecache's own targeted field (RFC 9213); never passed to clients.
pub const SIDECACHE_CACHE_CONTROL: HeaderName = HeaderName::from_static("sidecache-cache-control");
/// The targeted field for CDNs (RFC 9213), which sidecache also obeys.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// Statuses whose meaning sidecache knows (for `must-understand`), the same
/// as its freshness crate's.
const UNDERSTOOD: [u16; 14] = [
    200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
];

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoStore {
    /// Status not in the rule's list (or, under `ttl: origin`, without
    /// explicit freshness), or not a full final answer.
    Status,
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private`.
    Private,
    /// The response sets a cookie.
    SetCookie,
    /// `Vary: *`.
    VaryStar,
    /// Larger than `max_object_size`.
    TooLarge,
    /// `ttl: origin` and the backend gave no freshness (and no validator to
    /// revalidate with).
    NoFreshness,
    /// The body ends when the connection closes (no length, not chunked):
    /// a cut-short body cannot be told from a whole one.
    Unframed,
    /// The entry was purged after its fetch began: the answer may be the
    /// value the purge replaced.
    Purged,
    /// The rule keeps its entries in Redis alone, and Redis does not answer.
    TierDown,
}

impl NoStore {
    /// Name used in `Cache-Status` detail and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NoStore::Status => "status",
            NoStore::NoStore => "no-store",
            NoStore::Private => "private",
            NoStore::SetCookie => "set-cookie",
            NoStore::VaryStar => "vary-star",
            NoStore::TooLarge => "too-large",
            NoStore::NoFreshness => "no-freshness",
            NoStore::Unframed => "unframed",
            NoStore::Purged => "purged",
            NoStore::TierDown => "tier-down",
        }
    }
}

/// Lifetime of a storable response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// When freshness started (now, less the age the backend reported).
    pub stored_at: SystemTime,
    /// How long it is fresh from `stored_at`.
    pub ttl: Duration,
    /// After expiry, how long it may be served while it is refreshed.
    pub stale_while_revalidate: Duration,
    /// After expiry, how long it may be served when the backend fails.
    pub stale_if_error: Duration,
    /// How long it is kept after expiry (for the windows above, and to be
    /// revalidated when it has a validator).
    pub keep: Duration,
}

impl Freshness {
    /// The entry holding `payload` with this lifetime, for an answer whose
    /// fetch started at `fetched_ms`.
    pub fn entry(&self, fetched_ms: u64, payload: crate::cache::Payload) -> crate::cache::Entry {
        crate::cache::Entry {
            stored_at: self.stored_at,
            ttl: self.ttl,
            grace: self.keep,
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            fetched_ms,
            payload,
        }
    }
}

/// The cache directives of a response that sidecache acts on. Names are
/// matched without regard to case; unknown directives are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-store`.
    pub no_store: bool,
    /// `no-cache` (with or without field names): stored, but revalidated
    /// before every use.
    pub no_cache: bool,
    /// `private` (with or without field names).
    pub private: bool,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served stale.
    pub must_revalidate: bool,
    /// `must-understand`.
    pub must_understand: bool,
    /// `max-age` or `s-maxage`: explicit freshness.
    pub explicit: bool,
    /// `stale-while-revalidate=N` (RFC 5861).
    pub stale_while_revalidate: Option<Duration>,
    /// `stale-if-error=N` (RFC 5861).
    pub stale_if_error: Option<Duration>,
}

impl Directives {
    /// The directives in effect for sidecache: the targeted field's when
    /// the backend sends one, else `Cache-Control`'s.
    pub fn of(headers: &HeaderMap) -> Self {
        let mut d = Self::default();
        for item in effective(headers)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            let (name, value) = match item.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (item.trim(), None),
            };
            let secs = || {
                value
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs)
            };
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "private" => d.private = true,
                "must-revalidate" | "proxy-revalidate" => d.must_revalidate = true,
                "s-maxage" => {
                    d.must_revalidate = true;
                    d.explicit = true;
                }
                "max-age" => d.explicit = true,
                "must-understand" => d.must_understand = true,
                "stale-while-revalidate" => d.stale_while_revalidate = secs(),
                "stale-if-error" => d.stale_if_error = secs(),
                _ => {}
            }
        }
        d
    }

    /// Whether a stale copy may ever be served (RFC 9111 4.2.4).
    pub fn allow_stale(&self) -> bool {
        !(self.must_revalidate || self.no_cache)
    }
}

/// The field whose directives apply: `Sidecache-Cache-Control`, else
/// `CDN-Cache-Control`, else `Cache-Control`.
fn effective(headers: &HeaderMap) -> Vec<&HeaderValue> {
    for name in [&SIDECACHE_CACHE_CONTROL, &CDN_CACHE_CONTROL] {
        let values: Vec<_> = headers.get_all(name).iter().collect();
        if !values.is_empty() {
            return values;
        }
    }
    headers.get_all(header::CACHE_CONTROL).iter().collect()
}

fn targeted(headers: &HeaderMap) -> bool {
    headers.contains_key(&SIDECACHE_CACHE_CONTROL) || headers.contains_key(&CDN_CACHE_CONTROL)
}

/// Whether the response carries a validator for a conditional request.
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

/// Decides storability from the response head (the body size is checked
/// again while it streams).
pub fn decide(
    rule: &Rule,
    req: &request::Parts,
    res: &response::Parts,
    now: SystemTime,
) -> Result<Freshness, NoStore> {
    let h = &res.headers;
    let d = Directives::of(h);
    let understood = admissible(rule, res, &d)?;
    let origin = rule.ttl == Ttl::Origin;
    let validator = has_validator(h);
    let (stored_at, ttl) = match rule.ttl {
        Ttl::Fixed(ttl) => (now, ttl),
        Ttl::Origin => {
            let (req, res) = normalised(req, res, &d, understood);
            let policy = CachePolicy::new_options(&req, &res, now, CacheOptions::default());
            let left = policy.time_to_live(now).min(MAX_ORIGIN_TTL);
            // Fresh for no time at all is still worth keeping when it can
            // be revalidated (`no-cache`, `max-age=0` with an ETag).
            if !policy.is_storable() || (left.is_zero() && !validator) {
                return Err(NoStore::NoFreshness);
            }
            let age = policy.age(now);
            match now.checked_sub(age) {
                Some(at) if !left.is_zero() => (at, left.saturating_add(age)),
                _ => (now, left),
            }
        }
    };
    let window = |backend: Option<Duration>, own: Option<Duration>| -> Duration {
        if !d.allow_stale() {
            return Duration::ZERO;
        }
        match (origin, backend, own) {
            (true, Some(b), Some(o)) => b.min(o),
            (true, Some(b), None) => b.min(MAX_ORIGIN_TTL),
            (_, _, own) => own.unwrap_or_default(),
        }
    };
    let stale_while_revalidate = window(d.stale_while_revalidate, rule.stale_while_revalidate);
    let stale_if_error = window(d.stale_if_error, rule.stale_if_error);
    let revalidate = if validator {
        rule.keep_for_revalidation
            .unwrap_or(ttl.max(MIN_KEEP_FOR_REVALIDATION))
    } else {
        Duration::ZERO
    };
    Ok(Freshness {
        stored_at,
        ttl,
        stale_while_revalidate,
        stale_if_error,
        keep: stale_while_revalidate.max(stale_if_error).max(revalidate),
    })
}

/// Whether a response may be stored at all under `rule` (status, its
/// directives, cookies, Vary, declared size); answers whether its status is
/// one the cache understands (for `must-understand`).
fn admissible(rule: &Rule, res: &response::Parts, d: &Directives) -> Result<bool, NoStore> {
    let h = &res.headers;
    let code = res.status.as_u16();
    // Only full, final answers are entries.
    if code < 200 || code == 206 || code == 304 {
        return Err(NoStore::Status);
    }
    let understood = UNDERSTOOD.contains(&code);
    if d.must_understand && !understood {
        return Err(NoStore::Status);
    }
    let listed = rule.statuses.contains(&code);
    let origin = rule.ttl == Ttl::Origin;
    if !listed && !(origin && (d.explicit || (!targeted(h) && valid_expires(h)))) {
        return Err(NoStore::Status);
    }
    // With must-understand, a status the cache understands overrides no-store.
    if d.no_store && !(d.must_understand && understood) {
        return Err(NoStore::NoStore);
    }
    if !rule.allow_private && d.private {
        return Err(NoStore::Private);
    }
    if rule.set_cookie == SetCookie::Refuse && h.contains_key(header::SET_COOKIE) {
        return Err(NoStore::SetCookie);
    }
    if vary_names(h).is_none() {
        return Err(NoStore::VaryStar);
    }
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > rule.max_object_size) {
        return Err(NoStore::TooLarge);
    }
    Ok(understood)
}

/// Whether the response has an `Expires` that is a valid HTTP date.
fn valid_expires(h: &HeaderMap) -> bool {
    h.get(header::EXPIRES)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| httpdate::parse_http_date(v).is_ok())
}

/// The request and response heads as the freshness crate should judge
/// them. Where it differs from RFC 9111, the head is changed here:
/// - the directives are the targeted field's when there is one (and then
///   `Expires` and `Pragma` no longer count, RFC 9213);
/// - it reads `proxy-revalidate` as "fresh for no time", where the RFC only
///   forbids serving stale: dropped here, [`Directives`] enforces it;
/// - it parses `Expires` with an RFC 2822 parser that takes malformed dates
///   (double spaces, dashes, a two-digit year) and refuses the RFC 850 and
///   asctime forms: a valid HTTP date is rewritten in the IMF-fixdate form
///   and anything else becomes a date in the past (RFC 9111 5.3);
/// - it reads `Age: 7200, 0` as no age: the first value counts (5.1);
/// - it stores only the statuses it knows: any other final status with
///   explicit freshness is judged as a 200 (RFC 9111 3);
/// - `no-store` does not apply to a status understood under `must-understand`,
///   and the rule's own relaxations decide Set-Cookie, `private` and
///   Authorization.
fn normalised(
    req: &request::Parts,
    res: &response::Parts,
    d: &Directives,
    understood: bool,
) -> (request::Parts, response::Parts) {
    let mut req = req.clone();
    req.headers.remove(header::AUTHORIZATION);
    let mut res = res.clone();
    if !understood {
        res.status = StatusCode::OK;
    }
    let h = &mut res.headers;
    let directives: Vec<String> = effective(h)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| {
            // The crate matches names as written; RFC 9111 says any case.
            let item = item.trim();
            match item.split_once('=') {
                Some((n, v)) => format!("{}={v}", n.trim().to_ascii_lowercase()),
                None => item.to_ascii_lowercase(),
            }
        })
        .filter(|item| {
            let name = item.split('=').next().unwrap_or("").trim();
            let dropped = name.eq_ignore_ascii_case("proxy-revalidate")
                || name.eq_ignore_ascii_case("private")
                || (d.must_understand && understood && name.eq_ignore_ascii_case("no-store"));
            !dropped
        })
        .collect();
    if targeted(h) {
        h.remove(header::EXPIRES);
        h.remove(header::PRAGMA);
    }
    h.remove(header::CACHE_CONTROL);
    if !directives.is_empty()
        && let Ok(v) = HeaderValue::from_str(&directives.join(", "))
    {
        h.insert(header::CACHE_CONTROL, v);
    }
    h.remove(header::SET_COOKIE);
    if let Some(expires) = h.get(header::EXPIRES) {
        let date = expires
            .to_str()
            .ok()
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(date)) {
            h.insert(header::EXPIRES, v);
        }
    }
    let age = h
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<u64>().ok());
    h.remove(header::AGE);
    if let Some(age) = age {
        h.insert(header::AGE, HeaderValue::from(age));
    }
    (req, res)
}

/// The header names of `Vary`, lower-cased and sorted; `None` for `Vary: *`.
pub fn vary_names(h: &HeaderMap) -> Option<Vec<http::HeaderName>> {
    vary_names_of(h.get_all(header::VARY))
}

/// [`vary_names`] from the `Vary` values alone, wherever they are kept.
pub fn vary_names_of<V: AsRef<[u8]>>(
    values: impl IntoIterator<Item = V>,
) -> Option<Vec<http::HeaderName>> {
    // What `HeaderValue::to_str` accepts; anything else counts as `*`.
    fn text(b: &[u8]) -> Option<&str> {
        if b.iter().all(|&c| c == b'\t' || (0x20..0x7f).contains(&c)) {
            std::str::from_utf8(b).ok()
        } else {
            None
        }
    }
    let mut names = Vec::new();
    for v in values {
        for n in text(v.as_ref()).unwrap_or("*").split(',') {
            let n = n.trim();
            if n == "*" {
                return None;
            }
            if let Ok(name) = http::HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()) {
                names.push(name);
            }
        }
    }
    names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Directives match by name, case-insensitively, ignoring arguments.
    #[test]
    fn directive_lookup() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("Private=\"x\", max-age=5"),
        );
        let d = Directives::of(&h);
        assert!(d.private);
        assert!(!d.no_store);
    }
}
