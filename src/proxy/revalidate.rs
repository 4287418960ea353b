//! Revalidation (RFC 9111 section 4.3): a stale entry with a validator is
//! fetched with a conditional request, and a `304 Not Modified` refreshes it
//! instead of sending the body again.

use http::{HeaderMap, HeaderName, header, response};
use std::sync::Arc;

use crate::cache::{CachedResponse, Entry, Payload};

/// Headers of a 304 that never replace the stored ones (RFC 9111 3.2): the
/// framing of the stored body, and `Age`, which is never stored.
const KEEP_STORED: [HeaderName; 4] = [
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::TRANSFER_ENCODING,
    header::AGE,
];

/// A stale entry a fetch may use: to ask the backend whether it is still
/// current, and to answer from when the backend fails.
#[derive(Clone)]
pub(super) struct Prior {
    /// The entry.
    pub entry: Arc<Entry>,
    /// Inside its stale-if-error window: served when the backend fails.
    pub serve_on_error: bool,
}

impl Prior {
    /// The stored response, if the entry holds one.
    pub fn response(&self) -> Option<&CachedResponse> {
        match &self.entry.payload {
            Payload::Response(r) => Some(r),
            Payload::Vary(_) => None,
        }
    }

    /// Makes `up` a conditional request on the entry's validators
    /// (`If-None-Match` from its ETag, `If-Modified-Since` from its
    /// Last-Modified); answers whether it has any.
    pub fn make_conditional(&self, up: &mut HeaderMap) -> bool {
        let Some(r) = self.response() else {
            return false;
        };
        let mut any = false;
        for (from, to) in [
            (header::ETAG, header::IF_NONE_MATCH),
            (header::LAST_MODIFIED, header::IF_MODIFIED_SINCE),
        ] {
            if let Some(v) = r.headers.get(&from) {
                up.insert(to, v);
                any = true;
            }
        }
        any
    }
}

/// The stored response's head updated by a 304's headers: each header the
/// 304 carries replaces every stored value of it, but for the framing
/// headers of the stored body.
pub(super) fn updated_head(stored: &CachedResponse, not_modified: &HeaderMap) -> response::Parts {
    let mut headers = stored.headers.to_map(not_modified.len());
    for name in not_modified.keys() {
        if KEEP_STORED.contains(name) {
            continue;
        }
        headers.remove(name);
        for v in not_modified.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    let mut res = http::Response::new(());
    *res.status_mut() = stored.status;
    *res.headers_mut() = headers;
    res.into_parts().0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::StoredHeaders;
    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};
    use std::time::{Duration, SystemTime};

    fn stored() -> CachedResponse {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.append("x-note", HeaderValue::from_static("a"));
        h.append("x-note", HeaderValue::from_static("b"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
        CachedResponse {
            status: StatusCode::OK,
            headers: StoredHeaders::from_map(&h),
            body: Bytes::from_static(b"hello"),
            tags: vec![],
        }
    }

    /// Every header of the 304 replaces the stored one, all its values;
    /// Content-Length stays the stored body's.
    #[test]
    fn not_modified_headers_replace_stored_ones() {
        let mut nm = HeaderMap::new();
        nm.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=60"),
        );
        nm.insert("x-note", HeaderValue::from_static("c"));
        nm.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let head = updated_head(&stored(), &nm);
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.headers[header::CACHE_CONTROL], "max-age=60");
        let notes: Vec<_> = head.headers.get_all("x-note").iter().collect();
        assert_eq!(notes, ["c"]);
        assert_eq!(head.headers[header::CONTENT_LENGTH], "5");
        assert_eq!(head.headers[header::ETAG], "\"v1\"");
    }

    /// The conditional request carries the entry's validators.
    #[test]
    fn conditional_request_from_validators() {
        let prior = Prior {
            entry: Arc::new(Entry {
                stored_at: SystemTime::now(),
                ttl: Duration::ZERO,
                grace: Duration::from_secs(60),
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                fetched_ms: 0,
                payload: Payload::Response(stored()),
            }),
            serve_on_error: false,
        };
        let mut up = HeaderMap::new();
        assert!(prior.make_conditional(&mut up));
        assert_eq!(up[header::IF_NONE_MATCH], "\"v1\"");
        assert!(!up.contains_key(header::IF_MODIFIED_SINCE));
    }
}
