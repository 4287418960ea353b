//! Whether a backend response may be stored, and for how long.
//!
//! The safety defaults of the product (no Set-Cookie, no `private`, no
//! `no-store`, no `Vary: *`, a short status list, a size cap) are checked
//! here, each relaxable by the rule where the design allows it. Freshness of
//! `ttl: origin` rules comes from http-cache-semantics (RFC 9111).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, header, request, response};
use http_cache_semantics::{CacheOptions, CachePolicy};

use super::headers::has_directive;
use crate::rules::{Rule, Ttl};

/// Why a response was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoStore {
    /// Status not in the rule's list.
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
    /// `ttl: origin` and the backend gave no freshness.
    NoFreshness,
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
    if !rule.statuses.contains(&res.status.as_u16()) {
        return Err(NoStore::Status);
    }
    if has_directive(h, "no-store") {
        return Err(NoStore::NoStore);
    }
    if !rule.allow_private && has_directive(h, "private") {
        return Err(NoStore::Private);
    }
    if !rule.allow_set_cookie && h.contains_key(header::SET_COOKIE) {
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
    match rule.ttl {
        Ttl::Fixed(ttl) => Ok(Freshness {
            stored_at: now,
            ttl,
        }),
        Ttl::Origin => {
            // The rule's own relaxations decide Set-Cookie, private and
            // Authorization; the policy only judges freshness.
            let mut res = res.clone();
            res.headers.remove(header::SET_COOKIE);
            let mut req = req.clone();
            req.headers.remove(header::AUTHORIZATION);
            let policy = CachePolicy::new_options(&req, &res, now, CacheOptions::default());
            let left = policy.time_to_live(now);
            if !policy.is_storable() || left.is_zero() {
                return Err(NoStore::NoFreshness);
            }
            let age = policy.age(now);
            let left = left.min(crate::rules::MAX_ORIGIN_TTL);
            Ok(match now.checked_sub(age) {
                Some(stored_at) => Freshness {
                    stored_at,
                    ttl: left.saturating_add(age),
                },
                None => Freshness {
                    stored_at: now,
                    ttl: left,
                },
            })
        }
    }
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
