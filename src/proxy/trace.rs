//! W3C Trace Context: a request that carries a `traceparent` from a proxy
//! `trusted_proxies` names is continued with a span of sidecache's own, so
//! the backend's spans hang under sidecache's hop rather than under the
//! caller's. The trace id and the flags are kept; the parent id becomes a
//! new span id. An unreadable `traceparent` is dropped, with its
//! `tracestate`, as the spec says. A request without one is not given one:
//! whether to trace is the caller's choice.
//!
//! From any other client both are dropped, as its `X-Request-Id` is
//! replaced: a cacheable fetch is shared by every client, and a backend
//! that writes the trace id into its answer would store one client's
//! choice in the entry. A cacheable fetch carries the rewritten
//! `traceparent` (hex digits only, read and written back here) but not
//! `tracestate` (free text the key does not describe); a pass carries
//! both. An entry never stores either (`cache::headers::ONE_REQUEST`).

use http::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Rewrites the request's `traceparent` to a new span of the same trace
/// when it came from a `trusted` client (drops it and its `tracestate`
/// otherwise); answers the trace id (for the access log), or `None` when
/// the request carries no readable one from a trusted client.
pub fn continue_in(headers: &mut HeaderMap, trusted: bool) -> Option<String> {
    let parent = headers.get(&TRACEPARENT)?;
    let Some((trace, flags)) = read(parent.as_bytes()).filter(|_| trusted) else {
        headers.remove(&TRACEPARENT);
        headers.remove(&TRACESTATE);
        return None;
    };
    let span = loop {
        let id = fastrand::u64(..);
        if id != 0 {
            break id;
        }
    };
    let value = format!("00-{trace}-{span:016x}-{flags}");
    let trace = trace.to_owned();
    match HeaderValue::from_str(&value) {
        Ok(v) => {
            headers.insert(TRACEPARENT.clone(), v);
            Some(trace)
        }
        Err(_) => {
            headers.remove(&TRACEPARENT);
            None
        }
    }
}

/// The trace id and flags of a version-00 `traceparent`
/// (`00-<32 hex>-<16 hex>-<2 hex>`, lower case, ids not all zeros).
fn read(value: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    (parts.next().is_none()
        && version == "00"
        && hex(trace, 32)
        && !zero(trace)
        && hex(parent, 16)
        && !zero(parent)
        && hex(flags, 2))
    .then_some((trace, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIVEN: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_trace_is_continued_with_a_new_span() {
        let mut h = HeaderMap::new();
        h.insert(&TRACEPARENT, HeaderValue::from_static(GIVEN));
        h.insert(&TRACESTATE, HeaderValue::from_static("vendor=x"));
        let trace = continue_in(&mut h, true);
        assert_eq!(trace.as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let now = h[&TRACEPARENT].to_str().unwrap();
        assert!(now.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(now.ends_with("-01"));
        assert_ne!(now, GIVEN, "a span of its own");
        assert!(read(now.as_bytes()).is_some());
        assert_eq!(h[&TRACESTATE], "vendor=x");
    }

    #[test]
    fn an_unreadable_traceparent_is_dropped_and_none_is_made() {
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "<script>",
        ] {
            let mut h = HeaderMap::new();
            h.insert(&TRACEPARENT, HeaderValue::from_static(bad));
            h.insert(&TRACESTATE, HeaderValue::from_static("vendor=x"));
            assert_eq!(continue_in(&mut h, true), None, "{bad}");
            assert!(h.is_empty(), "{bad}");
        }
        let mut none = HeaderMap::new();
        assert_eq!(continue_in(&mut none, true), None);
        assert!(none.is_empty());
        // From a client no `trusted_proxies` names, a readable one is
        // dropped too.
        let mut untrusted = HeaderMap::new();
        untrusted.insert(&TRACEPARENT, HeaderValue::from_static(GIVEN));
        untrusted.insert(&TRACESTATE, HeaderValue::from_static("vendor=x"));
        assert_eq!(continue_in(&mut untrusted, false), None);
        assert!(untrusted.is_empty());
    }
}
