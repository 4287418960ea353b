//! `Vary` support: the primary key holds a marker naming the varied request
//! headers; each variant is stored under the primary key plus the request's
//! values of those headers, and carries the primary key's internal
//! [`variant_tag`], so a purge of the key reaches variants it cannot name.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName};
use percent_encoding::{NON_ALPHANUMERIC, percent_encode};

/// The key of the variant `headers` select. Key templates may not contain
/// `#`, and escaped values never do, so no rendered key equals a variant key.
pub fn variant_key(primary: &str, names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut key = String::with_capacity(primary.len() + 32);
    key.push_str(primary);
    key.push_str("#vary");
    for name in names {
        // Raw bytes, so values that are not UTF-8 stay distinct.
        let mut joined = Vec::new();
        for (i, v) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                joined.push(b',');
            }
            joined.extend_from_slice(v.as_bytes());
        }
        let _ = write!(
            key,
            "&{}={}",
            name.as_str(),
            percent_encode(joined.trim_ascii(), NON_ALPHANUMERIC)
        );
    }
    key
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

    /// Different header values give different keys; equal values the same key.
    #[test]
    fn variants_differ_by_value() {
        let names = [HeaderName::from_static("accept-language")];
        let mut a = HeaderMap::new();
        a.insert("accept-language", HeaderValue::from_static("de"));
        let mut b = HeaderMap::new();
        b.insert("accept-language", HeaderValue::from_static("en&x=1"));
        let ka = variant_key("p:1", &names, &a);
        assert_eq!(ka, "p:1#vary&accept-language=de");
        assert_ne!(ka, variant_key("p:1", &names, &b));
        assert_eq!(ka, variant_key("p:1", &names, &a.clone()));
        assert_eq!(
            variant_key("p:1", &names, &HeaderMap::new()),
            "p:1#vary&accept-language="
        );
    }
}
