//! `Vary` support: the primary key holds a marker naming the varied request
//! headers; each variant is stored under the primary key plus the request's
//! values of those headers, and carries the primary key's internal
//! [`variant_tag`], so a purge of the key reaches variants it cannot name.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName};

/// The key of the variant `headers` select. Key templates may not contain
/// `#`, and escaped values never do, so no rendered key equals a variant key.
///
/// The values are never in clear: each varied header's value is a 128-bit
/// XXH3 hash, so a `Vary: Cookie` variant's key in Redis holds no session
/// a `SCAN` could collect, and a long value makes no long key. An absent
/// header and an empty one are told apart.
pub fn variant_key(primary: &str, names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut key = String::with_capacity(primary.len() + 8 + names.len() * 56);
    key.push_str(primary);
    key.push_str("#vary");
    for name in names {
        // Raw bytes, so values that are not UTF-8 stay distinct.
        let mut joined = Vec::new();
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            let _ = write!(key, "&{}", name.as_str());
            continue;
        }
        for (i, v) in values.enumerate() {
            if i > 0 {
                joined.push(b',');
            }
            joined.extend_from_slice(v.as_bytes());
        }
        let hash = xxhash_rust::xxh3::xxh3_128(joined.trim_ascii());
        let _ = write!(key, "&{}={hash:032x}", name.as_str());
    }
    key
}

/// The headers a Vary marker's `names` select for a request: each name's
/// values from `keyed` (the request as the backend gets it) when it holds
/// that name, else from `others` (what the client sent besides, less what
/// the backend never gets from a client). A backend that varies on a
/// header is then sent it, and the variant is keyed on it.
pub fn selected(names: &[HeaderName], keyed: &HeaderMap, others: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in names {
        let from = if keyed.contains_key(name) {
            keyed
        } else {
            others
        };
        for v in from.get_all(name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

/// The primary key of a cache key: a Vary variant's key is its primary key
/// plus `#vary...` (`#` never appears in a rendered key).
pub fn primary_key(key: &str) -> &str {
    key.split_once('#').map_or(key, |(primary, _)| primary)
}

/// The internal tag every Vary variant of `key` carries.
pub fn variant_tag(key: &str) -> String {
    format!("#vary:{key}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Different header values give different keys, equal values the same
    /// key, and no value appears in it; absent and empty differ.
    #[test]
    fn variants_differ_by_value() {
        let names = [HeaderName::from_static("cookie")];
        let mut a = HeaderMap::new();
        a.insert("cookie", HeaderValue::from_static("sessionid=s3cr3t"));
        let mut b = HeaderMap::new();
        b.insert("cookie", HeaderValue::from_static("sessionid=other"));
        let ka = variant_key("p:1", &names, &a);
        assert!(ka.starts_with("p:1#vary&cookie="), "{ka}");
        assert!(!ka.contains("s3cr3t") && !ka.contains("sessionid"), "{ka}");
        assert_eq!(ka.len(), "p:1#vary&cookie=".len() + 32);
        assert_ne!(ka, variant_key("p:1", &names, &b));
        assert_eq!(ka, variant_key("p:1", &names, &a.clone()));
        let absent = variant_key("p:1", &names, &HeaderMap::new());
        assert_eq!(absent, "p:1#vary&cookie");
        let mut empty = HeaderMap::new();
        empty.insert("cookie", HeaderValue::from_static(""));
        assert_ne!(absent, variant_key("p:1", &names, &empty));
    }
}
