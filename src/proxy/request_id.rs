//! Every request's id, `X-Request-Id`: passed to the backend, returned to
//! the client and written in the access log. Taken from the request only
//! when a proxy `trusted_proxies` names sent it (a load balancer that made
//! one); otherwise made here, so no client can choose the id the backend
//! and the logs see. Never stored in an entry (`cache::headers::ONE_REQUEST`),
//! so a hit carries its own request's id, never the fetching one's.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::Config;

/// `X-Request-Id`.
pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id taken from a trusted proxy.
const MAX_LEN: usize = 128;

/// The id of a request with `headers` from `client`.
pub fn of(headers: &HeaderMap, client: IpAddr, config: &Config) -> HeaderValue {
    if config.trusts(client)
        && let Some(given) = headers.get(&HEADER)
        && acceptable(given)
    {
        return given.clone();
    }
    made()
}

/// Printable ASCII, no spaces, at most [`MAX_LEN`] bytes.
fn acceptable(id: &HeaderValue) -> bool {
    let b = id.as_bytes();
    !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| c.is_ascii_graphic())
}

/// A new id: 128 random bits in hex.
fn made() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = fastrand::u128(..);
    let mut id = [0u8; 32];
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[((bits >> (4 * (31 - i))) & 0xf) as usize];
    }
    // Hex digits are always a valid header value.
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_ids_are_unique_hex() {
        let (a, b) = (made(), made());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
    }

    #[test]
    fn only_plain_short_ids_are_taken() {
        assert!(acceptable(&HeaderValue::from_static("lb-1234")));
        assert!(!acceptable(&HeaderValue::from_static("")));
        assert!(!acceptable(&HeaderValue::from_static("a b")));
        let long = HeaderValue::from_str(&"x".repeat(MAX_LEN + 1)).unwrap();
        assert!(!acceptable(&long));
    }
}
