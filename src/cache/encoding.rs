//! Entries stored compressed: a compressible answer (by content type, not
//! already encoded, not tiny) is compressed once, when it is stored, and
//! that one representation is kept in L1 and Redis. It is served as is to a
//! client whose `Accept-Encoding` takes it and decoded on the fly for the
//! others. An internal header ([`ENCODED`]) marks an entry sidecache
//! encoded, as against one the backend sent encoded (left alone).

use std::io::Write as _;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};

use super::{CachedResponse, StoredHeaders};

/// The most an encoded entry may decode to: checking a value from Redis
/// stops there (a body that claims more is refused).
pub const MAX_DECODED: usize = 256 * 1024 * 1024;

/// Internal header on an entry whose body sidecache compressed; never sent.
pub const ENCODED: header::HeaderName = header::HeaderName::from_static("sidecache-encoded");

/// Answers shorter than this are stored as they are: the encoding's own
/// framing would eat most of the gain.
pub const MIN_SIZE: usize = 256;

/// gzip's level: its default, the usual balance of time and size.
const GZIP_LEVEL: u32 = 6;
/// brotli's quality: a moderate one (11 is far slower for little more).
const BROTLI_QUALITY: u32 = 5;
/// brotli's largest window (log2 of bytes); a body smaller than the window
/// gets one just large enough, so a decoder's ring buffer stays small.
const BROTLI_WINDOW: u32 = 22;

/// A content coding sidecache stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// gzip (RFC 1952).
    Gzip,
    /// Brotli (RFC 7932).
    Br,
}

impl Encoding {
    /// Its token in `Content-Encoding` / `Accept-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Br => "br",
        }
    }

    /// The coding named `token`, if sidecache stores it.
    pub fn parse(token: &str) -> Option<Self> {
        match token.trim().to_ascii_lowercase().as_str() {
            "gzip" => Some(Encoding::Gzip),
            "br" => Some(Encoding::Br),
            _ => None,
        }
    }

    /// `body` compressed; `None` if that fails.
    pub fn compress(self, body: &[u8]) -> Option<Bytes> {
        let mut enc = self.encoder_for(body.len());
        let mut out = enc.feed(body).ok()?;
        out.extend_from_slice(&enc.finish().ok()?);
        Some(Bytes::from(out))
    }

    /// An encoder that takes bytes piece by piece.
    pub fn encoder(self) -> Encoder {
        self.encoder_for(usize::MAX)
    }

    /// An encoder for about `len` bytes.
    fn encoder_for(self, len: usize) -> Encoder {
        // Enough window for the whole body (brotli's smallest is 2^10).
        let bits = usize::BITS - len.max(1).leading_zeros();
        let window = bits.clamp(10, BROTLI_WINDOW);
        match self {
            Encoding::Gzip => Encoder::Gzip(Box::new(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            ))),
            Encoding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                BROTLI_QUALITY,
                window,
            ))),
        }
    }

    /// A decoder that takes compressed bytes piece by piece.
    pub fn decoder(self) -> Decoder {
        match self {
            Encoding::Gzip => Decoder::Gzip(Box::new(flate2::write::GzDecoder::new(Vec::new()))),
            Encoding::Br => {
                Decoder::Br(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096)))
            }
        }
    }

    /// `body` decoded whole, if it decodes and is no longer than `limit`.
    pub fn decode_all(self, body: &[u8], limit: usize) -> Option<Bytes> {
        let mut dec = self.decoder();
        let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
        for piece in body.chunks(16 * 1024) {
            out.extend_from_slice(&dec.feed(piece).ok()?);
            if out.len() > limit {
                return None;
            }
        }
        out.extend_from_slice(&dec.finish().ok()?);
        (out.len() <= limit).then(|| Bytes::from(out))
    }
}

/// An incremental encoder.
pub enum Encoder {
    /// gzip.
    Gzip(Box<flate2::write::GzEncoder<Vec<u8>>>),
    /// Brotli.
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl Encoder {
    /// Feeds `input`; answers what it encoded so far.
    pub fn feed(&mut self, input: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => {
                e.write_all(input)?;
                Ok(std::mem::take(e.get_mut()))
            }
            Encoder::Br(e) => {
                e.write_all(input)?;
                Ok(std::mem::take(e.get_mut()))
            }
        }
    }

    /// Ends the stream; answers the rest.
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Br(e) => Ok(e.into_inner()),
        }
    }
}

/// An incremental decoder.
pub enum Decoder {
    /// gzip.
    Gzip(Box<flate2::write::GzDecoder<Vec<u8>>>),
    /// Brotli.
    Br(Box<brotli::DecompressorWriter<Vec<u8>>>),
}

impl Decoder {
    /// Feeds `input`; answers what it decoded so far.
    pub fn feed(&mut self, input: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Decoder::Gzip(d) => {
                d.write_all(input)?;
                d.flush()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::Br(d) => {
                d.write_all(input)?;
                d.flush()?;
                Ok(std::mem::take(d.get_mut()))
            }
        }
    }

    /// Ends the stream: fails if it was cut short or corrupt.
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Decoder::Gzip(d) => d.finish(),
            Decoder::Br(d) => d
                .into_inner()
                .map_err(|_| std::io::Error::other("brotli stream cut short")),
        }
    }
}

/// The coding sidecache stored `headers`' body in, if it did (the first
/// the marker names).
pub fn encoded(headers: &StoredHeaders) -> Option<Encoding> {
    offered(headers).next()
}

/// The codings the marker names: the stored one, then the others the rule
/// lists, which a client that does not take the first gets by
/// re-encoding.
fn offered(headers: &StoredHeaders) -> impl Iterator<Item = Encoding> + '_ {
    let codings = marker(headers).map_or("", |t| t.split(';').next().unwrap_or(""));
    codings.split(',').filter_map(Encoding::parse)
}

/// The marker's text, read in place (no copy: this is on every hit).
fn marker(headers: &StoredHeaders) -> Option<&str> {
    headers
        .iter()
        .find(|(name, _)| *name == ENCODED.as_str().as_bytes())
        .and_then(|(_, value)| std::str::from_utf8(value).ok())
}

/// The digest of a compressed body, as the marker keeps it: brotli has no
/// checksum of its own, and a body changed in Redis must not reach a client
/// that takes the coding as it is.
fn digest(body: &[u8]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(body))
}

/// Whether the body of an entry sidecache compressed is the one it stored
/// (its digest matches the marker's); true for any other entry.
pub fn intact(headers: &StoredHeaders, body: &[u8]) -> bool {
    let Some(marker) = marker(headers) else {
        return true;
    };
    let kept = marker
        .split(';')
        .nth(1)
        .and_then(|p| p.trim().strip_prefix("digest="));
    kept.is_some_and(|d| d == digest(body))
}

/// How an entry is sent to one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// As stored: not encoded by sidecache, or in a coding the client takes.
    AsStored,
    /// Decoded from the first coding and encoded again in the second, which
    /// the client takes and the rule lists.
    Recoded(Encoding, Encoding),
    /// Decoded: the client takes none of the rule's codings.
    Decoded(Encoding),
}

/// How an entry with `stored` headers is sent to a request with `req`.
pub fn sent(req: &HeaderMap, stored: &StoredHeaders) -> Sent {
    // Read in place on every hit: no allocation.
    let mut offered = offered(stored);
    let Some(first) = offered.next() else {
        return Sent::AsStored;
    };
    if accepts(req, first) {
        return Sent::AsStored;
    }
    match offered.find(|e| accepts(req, *e)) {
        Some(other) => Sent::Recoded(first, other),
        None => Sent::Decoded(first),
    }
}

/// `stored` as the backend sent it, if sidecache encoded it: the body
/// decoded, without `Content-Encoding` and the marker. `None` if it does
/// not decode.
pub fn identity_of(stored: &CachedResponse) -> Option<CachedResponse> {
    let enc = encoded(&stored.headers)?;
    let body = enc.decode_all(&stored.body, MAX_DECODED)?;
    let mut headers = stored.headers.to_map(0);
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(ENCODED);
    Some(CachedResponse {
        status: stored.status,
        headers: StoredHeaders::from_map(&headers),
        body,
        tags: stored.tags.clone(),
    })
}

/// Up to this compressed size, the representation a client gets is made
/// whole (with its length, ranges and HEAD as for any entry); a larger one
/// is decoded as it is sent.
pub const MADE_WHOLE: usize = 64 * 1024;

/// The representation of `stored` one client gets.
pub enum Shown<'a> {
    /// Ready to send as an entry is: the stored one, or one made for this
    /// client (decoded, or encoded again), without the marker.
    Ready(std::borrow::Cow<'a, CachedResponse>),
    /// Too large to make whole: decoded (and encoded again) as it is sent.
    Streamed(&'a CachedResponse, Sent),
}

/// What a request with `req` gets of `stored`.
pub fn shown<'a>(req: &HeaderMap, stored: &'a CachedResponse) -> Shown<'a> {
    use std::borrow::Cow;
    let how = sent(req, &stored.headers);
    if how == Sent::AsStored {
        return Shown::Ready(Cow::Borrowed(stored));
    }
    if stored.body.len() > MADE_WHOLE {
        return Shown::Streamed(stored, how);
    }
    let Some(mut plain) = identity_of(stored) else {
        return Shown::Streamed(stored, how);
    };
    if let Sent::Recoded(_, to) = how {
        let Some(body) = to.compress(&plain.body) else {
            return Shown::Streamed(stored, how);
        };
        let mut headers = plain.headers.to_map(1);
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(to.as_str()),
        );
        plain.headers = StoredHeaders::from_map(&headers);
        plain.body = body;
    }
    Shown::Ready(Cow::Owned(plain))
}

/// Whether an answer with `headers` is worth compressing: a text-like
/// type, not already encoded, and not a range.
pub fn compressible(headers: &HeaderMap) -> bool {
    let encoded = headers.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        v.to_str()
            .map_or(true, |v| !v.trim().eq_ignore_ascii_case("identity"))
    });
    if encoded || headers.contains_key(header::CONTENT_RANGE) {
        return false;
    }
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime.starts_with("text/")
        || mime.ends_with("+json")
        || mime.ends_with("+xml")
        || matches!(
            mime.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/xhtml+xml"
                | "application/x-javascript"
                | "application/ld+json"
                | "application/graphql-response+json"
                | "image/svg+xml"
        )
}

/// Whether `Accept-Encoding` in `req` takes `enc` (RFC 9110 12.5.3: a
/// coding listed with a q above 0, or `*` above 0 when it is not listed).
pub fn accepts(req: &HeaderMap, enc: Encoding) -> bool {
    let mut star = None;
    for item in req
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
            })
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if token.eq_ignore_ascii_case(enc.as_str()) {
            return q > 0.0;
        }
        if token == "*" {
            star = Some(q > 0.0);
        }
    }
    star.unwrap_or(false)
}

/// `headers` as stored for `body`, which sidecache compressed in the first
/// of `codings`: `Content-Encoding`, the marker (all of `codings` and the
/// body's digest), `Vary: Accept-Encoding`, and the ETag made weak (RFC
/// 9110 8.8.1: a strong one names the exact bytes).
pub fn mark(headers: &mut HeaderMap, codings: &[Encoding], body: &[u8]) {
    let Some(enc) = codings.first() else {
        return;
    };
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(enc.as_str()),
    );
    let names: Vec<&str> = codings.iter().map(|c| c.as_str()).collect();
    let marker = format!("{}; digest={}", names.join(", "), digest(body));
    if let Ok(v) = HeaderValue::from_str(&marker) {
        headers.insert(ENCODED, v);
    }
    headers.remove(header::CONTENT_LENGTH);
    let varies = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|n| n.trim() == "*" || n.trim().eq_ignore_ascii_case("accept-encoding"));
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    if let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok())
        && !etag.trim_start().starts_with("W/")
        && let Ok(weak) = HeaderValue::from_str(&format!("W/{}", etag.trim()))
    {
        headers.insert(header::ETAG, weak);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    /// Both codings round-trip, piece by piece too; a corrupt or cut body
    /// does not decode.
    #[test]
    fn round_trip_and_corruption() {
        let body: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"item\"}},").into_bytes())
            .collect();
        for enc in [Encoding::Gzip, Encoding::Br] {
            let packed = enc.compress(&body).unwrap();
            assert!(packed.len() * 4 < body.len(), "{enc:?}: {}", packed.len());
            assert_eq!(enc.decode_all(&packed, usize::MAX).unwrap(), body);
            assert!(enc.decode_all(&packed, 100).is_none());
            let cut = &packed[..packed.len() - 8];
            assert!(enc.decode_all(cut, usize::MAX).is_none(), "{enc:?} cut");
            let mut bad = packed.to_vec();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x55;
            bad[mid + 1] ^= 0xaa;
            let decoded = enc.decode_all(&bad, usize::MAX);
            assert!(decoded.as_deref() != Some(&body[..]), "{enc:?} corrupt");
        }
    }

    /// q-values and `*` as RFC 9110 reads them.
    #[test]
    fn accept_encoding() {
        assert!(accepts(
            &h(&[("accept-encoding", "gzip, br")]),
            Encoding::Br
        ));
        assert!(accepts(
            &h(&[("accept-encoding", "GZIP;q=0.5")]),
            Encoding::Gzip
        ));
        assert!(!accepts(
            &h(&[("accept-encoding", "gzip;q=0, *")]),
            Encoding::Gzip
        ));
        assert!(accepts(&h(&[("accept-encoding", "*")]), Encoding::Br));
        assert!(!accepts(&h(&[("accept-encoding", "*;q=0")]), Encoding::Br));
        assert!(!accepts(
            &h(&[("accept-encoding", "identity")]),
            Encoding::Gzip
        ));
        assert!(!accepts(&h(&[]), Encoding::Gzip));
    }

    /// Text-like types are compressed; images and encoded answers are not.
    #[test]
    fn what_is_compressible() {
        assert!(compressible(&h(&[("content-type", "application/json")])));
        assert!(compressible(&h(&[(
            "content-type",
            "text/html; charset=utf-8"
        )])));
        assert!(compressible(&h(&[(
            "content-type",
            "application/problem+json"
        )])));
        assert!(!compressible(&h(&[("content-type", "image/png")])));
        assert!(!compressible(&h(&[
            ("content-type", "text/html"),
            ("content-encoding", "gzip")
        ])));
        assert!(!compressible(&h(&[])));
    }

    /// A strong ETag is made weak, a weak one kept; Vary gains
    /// Accept-Encoding once.
    #[test]
    fn marked_headers() {
        let mut headers = h(&[("etag", "\"v1\""), ("vary", "accept-encoding")]);
        mark(&mut headers, &[Encoding::Gzip], b"x");
        assert_eq!(headers["etag"], "W/\"v1\"");
        assert_eq!(headers.get_all("vary").iter().count(), 1);
        assert_eq!(headers["content-encoding"], "gzip");
        let mut headers = h(&[("etag", "W/\"v1\"")]);
        mark(&mut headers, &[Encoding::Br, Encoding::Gzip], b"body");
        let stored = StoredHeaders::from_map(&headers);
        assert!(intact(&stored, b"body"));
        assert!(!intact(&stored, b"bodY"));
        assert!(intact(&StoredHeaders::default(), b"anything"));
        let ae = |v: &'static str| h(&[("accept-encoding", v)]);
        assert_eq!(sent(&ae("gzip, br"), &stored), Sent::AsStored);
        assert_eq!(
            sent(&ae("gzip"), &stored),
            Sent::Recoded(Encoding::Br, Encoding::Gzip)
        );
        assert_eq!(sent(&h(&[]), &stored), Sent::Decoded(Encoding::Br));
        assert_eq!(headers["etag"], "W/\"v1\"");
        assert_eq!(headers["vary"], "Accept-Encoding");
    }
}
