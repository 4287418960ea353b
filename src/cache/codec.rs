//! The compact, versioned binary form of an entry, as kept in Redis.
//!
//! Layout (integers big-endian): magic `SC`, version `2`, kind (0 response,
//! 1 vary), stored-at (ms since the epoch, u64), ttl (ms, u64), grace (ms,
//! u64), stale-while-revalidate (ms, u64), stale-if-error (ms, u64),
//! fetched-at (ms on the purge clock, u64), then for a response:
//! status (u16), header count (u16) and each header as name (u16 length +
//! bytes) and value (u32 length + bytes), tag count (u16) and each tag
//! (u16 length + bytes), body (u32 length + bytes);
//! for a vary marker: name count (u16) and each name (u16 length + bytes).
//! Anything that does not decode exactly is rejected, never trusted.

use std::time::{Duration, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderName, StatusCode};

use super::{CachedResponse, Entry, Payload, StoredHeaders};

const MAGIC: &[u8; 2] = b"SC";
/// Headers a stored response never holds (connection and framing ones,
/// and `Set-Cookie`, which belongs to one client).
const FORBIDDEN: [&str; 8] = [
    "set-cookie",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
/// Version 1 kept a generation per tag; its entries are refused (a miss)
/// and age out of Redis by their own TTL.
const VERSION: u8 = 2;

/// Why a stored value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Not written by sidecache, or by an unknown version.
    #[error("not a sidecache entry of a known version")]
    Header,
    /// Cut short or with trailing bytes.
    #[error("entry is truncated or has trailing bytes")]
    Length,
    /// A field holds a value HTTP does not allow.
    #[error("entry holds an invalid {0}")]
    Invalid(&'static str),
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Encodes an entry.
pub fn encode(entry: &Entry) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + entry.weight());
    out.put_slice(MAGIC);
    out.put_u8(VERSION);
    let stored = entry
        .stored_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    match &entry.payload {
        Payload::Response(r) => {
            out.put_u8(0);
            put_times(&mut out, stored, entry);
            out.put_u16(r.status.as_u16());
            out.put_u16(len16(r.headers.len()));
            for (name, value) in r.headers.iter().take(usize::from(u16::MAX)) {
                put16(&mut out, name);
                out.put_u32(len32(value.len()));
                out.put_slice(value);
            }
            out.put_u16(len16(r.tags.len()));
            for tag in r.tags.iter().take(usize::from(u16::MAX)) {
                put16(&mut out, tag.as_bytes());
            }
            out.put_u32(len32(r.body.len()));
            out.put_slice(&r.body);
        }
        Payload::Vary(names) => {
            out.put_u8(1);
            put_times(&mut out, stored, entry);
            out.put_u16(len16(names.len()));
            for n in names.iter().take(usize::from(u16::MAX)) {
                put16(&mut out, n.as_str().as_bytes());
            }
        }
    }
    out.freeze()
}

fn put_times(out: &mut BytesMut, stored: Duration, entry: &Entry) {
    out.put_u64(ms(stored));
    out.put_u64(ms(entry.ttl));
    out.put_u64(ms(entry.grace));
    out.put_u64(ms(entry.stale_while_revalidate));
    out.put_u64(ms(entry.stale_if_error));
    out.put_u64(entry.fetched_ms);
}

fn len16(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put16(out: &mut BytesMut, b: &[u8]) {
    let b = &b[..b.len().min(usize::from(u16::MAX))];
    out.put_u16(len16(b.len()));
    out.put_slice(b);
}

/// Decodes an entry; the body shares `input`'s memory.
pub fn decode(mut input: Bytes) -> Result<Entry, DecodeError> {
    if input.len() < 4 || &input[..2] != MAGIC || input[2] != VERSION {
        return Err(DecodeError::Header);
    }
    input.advance(3);
    let kind = input.get_u8();
    need(&input, 48)?;
    let stored_at = UNIX_EPOCH + Duration::from_millis(input.get_u64());
    let ttl = Duration::from_millis(input.get_u64());
    let grace = Duration::from_millis(input.get_u64());
    let stale_while_revalidate = Duration::from_millis(input.get_u64());
    let stale_if_error = Duration::from_millis(input.get_u64());
    let fetched_ms = input.get_u64();
    let payload = match kind {
        0 => {
            need(&input, 4)?;
            let status = StatusCode::from_u16(input.get_u16())
                .ok()
                // Only full, final answers are ever stored.
                .filter(|s| s.as_u16() >= 200 && !matches!(s.as_u16(), 206 | 304))
                .ok_or(DecodeError::Invalid("status"))?;
            let count = input.get_u16();
            let mut pairs = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let name = take16(&mut input)?;
                need(&input, 4)?;
                let len = input.get_u32() as usize;
                need(&input, len)?;
                pairs.push((name, input.split_to(len)));
            }
            let pairs: Vec<(&[u8], &[u8])> = pairs
                .iter()
                .map(|(n, v)| (n.as_ref(), v.as_ref()))
                .collect();
            // Headers of one connection or of the body's framing are never
            // stored: an entry holding one was not written by sidecache.
            if pairs.iter().any(|(n, _)| {
                FORBIDDEN
                    .iter()
                    .any(|f| n.eq_ignore_ascii_case(f.as_bytes()))
            }) {
                return Err(DecodeError::Invalid("header"));
            }
            let headers =
                StoredHeaders::from_pairs(&pairs).map_err(|_| DecodeError::Invalid("header"))?;
            need(&input, 2)?;
            let count = input.get_u16();
            let mut tags = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let t = take16(&mut input)?;
                tags.push(String::from_utf8(t.to_vec()).map_err(|_| DecodeError::Invalid("tag"))?);
            }
            need(&input, 4)?;
            let len = input.get_u32() as usize;
            need(&input, len)?;
            let body = input.split_to(len);
            // A body sidecache compressed must be the one it stored: a
            // changed one would reach a client that takes the coding as it is.
            if !super::encoding::intact(&headers, &body) {
                return Err(DecodeError::Invalid("compressed body"));
            }
            Payload::Response(CachedResponse {
                status,
                headers,
                body,
                tags,
            })
        }
        1 => {
            need(&input, 2)?;
            let count = input.get_u16();
            let mut names = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let n = take16(&mut input)?;
                names.push(
                    HeaderName::from_bytes(&n).map_err(|_| DecodeError::Invalid("vary name"))?,
                );
            }
            Payload::Vary(names)
        }
        _ => return Err(DecodeError::Header),
    };
    if input.has_remaining() {
        return Err(DecodeError::Length);
    }
    Ok(Entry {
        stored_at,
        ttl,
        grace,
        stale_while_revalidate,
        stale_if_error,
        fetched_ms,
        payload,
    })
}

fn need(input: &Bytes, n: usize) -> Result<(), DecodeError> {
    if input.remaining() < n {
        Err(DecodeError::Length)
    } else {
        Ok(())
    }
}

fn take16(input: &mut Bytes) -> Result<Bytes, DecodeError> {
    need(input, 2)?;
    let len = usize::from(input.get_u16());
    need(input, len)?;
    Ok(input.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn sample() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        Entry {
            stored_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            ttl: Duration::from_secs(60),
            grace: Duration::from_secs(5),
            stale_while_revalidate: Duration::from_secs(2),
            stale_if_error: Duration::from_secs(5),
            fetched_ms: 1_700_000_000_100,
            payload: Payload::Response(CachedResponse {
                status: StatusCode::OK,
                headers: StoredHeaders::from_map(&headers),
                body: Bytes::from_static(b"{\"id\":1}"),
                tags: vec!["product:1".into()],
            }),
        }
    }

    /// An encoded entry decodes to the same entry, headers in order.
    #[test]
    fn round_trip() {
        let e = sample();
        assert_eq!(decode(encode(&e)).unwrap(), e);
        let v = Entry {
            payload: Payload::Vary(vec![HeaderName::from_static("accept")]),
            ..sample()
        };
        assert_eq!(decode(encode(&v)).unwrap(), v);
    }

    /// Every truncation and a trailing byte are refused, never a panic.
    #[test]
    fn truncated_and_trailing_refused() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            assert!(
                decode(bytes.slice(..n)).is_err(),
                "prefix of {n} bytes accepted"
            );
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert_eq!(decode(Bytes::from(long)), Err(DecodeError::Length));
    }

    /// A stored 206 or a stored hop-by-hop or framing header is refused:
    /// sidecache never writes either.
    #[test]
    fn partial_or_hop_by_hop_refused() {
        let mut e = sample();
        if let Payload::Response(r) = &mut e.payload {
            r.status = StatusCode::PARTIAL_CONTENT;
        }
        assert_eq!(decode(encode(&e)), Err(DecodeError::Invalid("status")));
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let mut e = sample();
        if let Payload::Response(r) = &mut e.payload {
            r.headers = StoredHeaders::from_map(&h);
        }
        assert_eq!(decode(encode(&e)), Err(DecodeError::Invalid("header")));
    }

    /// Foreign values and a bad status are refused.
    #[test]
    fn garbage_refused() {
        assert_eq!(
            decode(Bytes::from_static(b"hello world")),
            Err(DecodeError::Header)
        );
        let mut bytes = encode(&sample()).to_vec();
        bytes[52] = 0; // status high byte -> status < 100
        bytes[53] = 7;
        assert_eq!(
            decode(Bytes::from(bytes)),
            Err(DecodeError::Invalid("status"))
        );
    }
}
