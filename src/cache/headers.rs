//! The headers of a stored response, packed for memory.
//!
//! A `HeaderMap` of eight headers takes about 1.4 KiB (index table, buckets
//! of 96 bytes, one allocation per value), more than half the size of a
//! typical 2 KiB product. Every L1 entry keeps its headers for its whole
//! life, so they are kept here as one buffer of names and values plus the
//! end offsets, and a `HeaderMap` is built when an answer is sent (which
//! used to clone the map anyway). Packing also copies the bytes out of
//! hyper's connection read buffer, which the parsed values point into: an
//! entry holding those would keep the whole buffer alive.

use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Packed response headers, in the order the backend sent them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoredHeaders {
    /// Each header's lower-case name, then its value, back to back.
    buf: Bytes,
    /// Per header: where its name ends and where its value ends in `buf`.
    ends: Box<[(u32, u32)]>,
}

/// Headers over 4 GiB in all cannot be packed (offsets are 32-bit).
#[derive(Debug, thiserror::Error)]
#[error("headers too large to store")]
pub struct TooLarge;

/// Response headers that describe the one request that fetched an answer,
/// never stored with it (a hit would hand them to everyone).
pub const ONE_REQUEST: [&str; 5] = [
    "set-cookie",
    "x-request-id",
    "x-correlation-id",
    "traceparent",
    "tracestate",
];

impl StoredHeaders {
    /// Packs `map`, copying every name and value but those of one request
    /// ([`ONE_REQUEST`]): an entry answers many clients, and a cookie
    /// belongs to the one it was set for (`set_cookie: strip` stores such
    /// answers without it), a request id or trace context to the request
    /// that fetched it.
    pub fn from_map(map: &HeaderMap) -> Self {
        let mut packer = Packer::new(
            map.len(),
            map.iter().map(|(n, v)| n.as_str().len() + v.len()).sum(),
        );
        let kept = |name: &http::HeaderName| !ONE_REQUEST.contains(&name.as_str());
        for (name, value) in map.iter().filter(|(n, _)| kept(n)) {
            // A HeaderMap is bounded far below 4 GiB by hyper's limits;
            // should one not be, the rest is dropped rather than mangled.
            if packer
                .push(name.as_str().as_bytes(), value.as_bytes())
                .is_err()
            {
                break;
            }
        }
        packer.finish()
    }

    /// Packs (name, value) pairs read back from storage, refusing any that
    /// is not a valid header. Names are lower-cased.
    pub fn from_pairs(pairs: &[(&[u8], &[u8])]) -> Result<Self, InvalidHeader> {
        let size = pairs.iter().map(|(n, v)| n.len() + v.len()).sum();
        let mut packer = Packer::new(pairs.len(), size);
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name).map_err(|_| InvalidHeader)?;
            // The rule `HeaderValue::from_bytes` applies, without its copy.
            if !value
                .iter()
                .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
            {
                return Err(InvalidHeader);
            }
            packer
                .push(name.as_str().as_bytes(), value)
                .map_err(|_| InvalidHeader)?;
        }
        Ok(packer.finish())
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of names and values.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// Each (lower-case name, value) in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.spans().map(|(n, v)| (&self.buf[n], &self.buf[v]))
    }

    /// Every value of `name`, sharing this buffer.
    pub fn get_all<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = HeaderValue> + 'a {
        let wanted = name.as_str().as_bytes();
        self.spans()
            .filter(move |(n, _)| &self.buf[n.clone()] == wanted)
            .filter_map(|(_, v)| HeaderValue::from_maybe_shared(self.buf.slice(v)).ok())
    }

    /// The first value of `name`.
    pub fn get(&self, name: &HeaderName) -> Option<HeaderValue> {
        self.get_all(name).next()
    }

    /// A `HeaderMap` of them all, with room for `extra` more; the values
    /// share this buffer.
    pub fn to_map(&self, extra: usize) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.len() + extra);
        // Both were valid when packed; a pair that somehow no longer is
        // is left out rather than sent.
        for (n, v) in self.spans() {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&self.buf[n]),
                HeaderValue::from_maybe_shared(self.buf.slice(v)),
            ) {
                map.append(name, value);
            }
        }
        map
    }

    /// Where each header's name and value are in the buffer.
    fn spans(&self) -> impl Iterator<Item = (Range<usize>, Range<usize>)> + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let (n, v) = (name_end as usize, value_end as usize);
            let spans = (start..n, n..v);
            start = v;
            spans
        })
    }
}

/// Builds the buffer and the offsets.
struct Packer {
    buf: BytesMut,
    ends: Vec<(u32, u32)>,
}

impl Packer {
    fn new(headers: usize, bytes: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(bytes),
            ends: Vec::with_capacity(headers),
        }
    }

    fn push(&mut self, name: &[u8], value: &[u8]) -> Result<(), TooLarge> {
        let name_end = u32::try_from(self.buf.len() + name.len()).map_err(|_| TooLarge)?;
        let value_end = u32::try_from(name_end as usize + value.len()).map_err(|_| TooLarge)?;
        self.buf.extend_from_slice(name);
        self.buf.extend_from_slice(value);
        self.ends.push((name_end, value_end));
        Ok(())
    }

    fn finish(self) -> StoredHeaders {
        StoredHeaders {
            buf: self.buf.freeze(),
            ends: self.ends.into_boxed_slice(),
        }
    }
}

/// A stored header that is not a valid name or value.
#[derive(Debug, thiserror::Error)]
#[error("invalid stored header")]
pub struct InvalidHeader;

impl fmt::Debug for StoredHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(n, v)| (String::from_utf8_lossy(n), String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn sample() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.append(header::VARY, HeaderValue::from_static("accept"));
        h.append(header::VARY, HeaderValue::from_static("accept-language"));
        h.insert("x-backend", HeaderValue::from_static("7"));
        h
    }

    /// Packing and unpacking gives the same map, repeated names included.
    #[test]
    fn round_trip() {
        let packed = StoredHeaders::from_map(&sample());
        assert_eq!(packed.len(), 4);
        assert_eq!(packed.to_map(0), sample());
        assert_eq!(
            packed.get(&header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        let vary: Vec<_> = packed.get_all(&header::VARY).collect();
        assert_eq!(vary, ["accept", "accept-language"]);
        assert!(packed.get(&header::ETAG).is_none());
    }

    /// Pairs read back from storage are checked and names lower-cased.
    #[test]
    fn pairs_are_validated() {
        let ok = StoredHeaders::from_pairs(&[(&b"Content-Type"[..], &b"text/plain"[..])]).unwrap();
        assert_eq!(ok.get(&header::CONTENT_TYPE).unwrap(), "text/plain");
        assert!(StoredHeaders::from_pairs(&[(&b"bad name"[..], &b"x"[..])]).is_err());
        assert!(StoredHeaders::from_pairs(&[(&b"x"[..], &b"a\nb"[..])]).is_err());
    }

    /// Empty headers are empty.
    #[test]
    fn empty() {
        let none = StoredHeaders::from_map(&HeaderMap::new());
        assert!(none.is_empty());
        assert!(none.to_map(2).is_empty());
    }
}
