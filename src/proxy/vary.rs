//! `Vary` support: the primary key holds a marker naming the varied request
//! headers; each variant is stored under the primary key plus the request's
//! values of those headers.

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
