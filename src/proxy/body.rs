//! The body type that crosses the proxy in both directions, and the two
//! bodies it builds itself. A leaf: every module of the pipeline may
//! import it.

use bytes::{Bytes, BytesMut};

use crate::cache::encoding::{Decoder, Encoder, Encoding};
use futures_util::StreamExt as _;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Empty, Full, StreamBody};

/// Error type of bodies crossing the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type in both directions.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// A body of `bytes`, already in memory.
pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|e| match e {}).boxed_unsync()
}

/// `body`, stored in `from`, decoded as it is sent (and encoded again in
/// `to`): 16 KiB of it at a time, so a large page is never held decoded
/// whole.
pub fn recoded(body: Bytes, from: Encoding, to: Option<Encoding>) -> ProxyBody {
    const PIECE: usize = 16 * 1024;
    type State = (Decoder, Option<Encoder>, Bytes);
    fn step(state: &mut State) -> Result<Vec<u8>, BoxError> {
        let (dec, enc, rest) = state;
        let piece = rest.split_to(rest.len().min(PIECE));
        let out = dec.feed(&piece)?;
        Ok(match enc {
            Some(e) => e.feed(&out)?,
            None => out,
        })
    }
    fn last(state: State) -> Result<Vec<u8>, BoxError> {
        let (dec, enc, _) = state;
        let mut out = dec.finish()?;
        if let Some(mut e) = enc {
            out = e.feed(&out)?;
            out.extend_from_slice(&e.finish()?);
        }
        Ok(out)
    }
    let state: Option<State> = Some((from.decoder(), to.map(Encoding::encoder), body));
    let stream = futures_util::stream::unfold(state, |state| async move {
        let mut state = state?;
        loop {
            if state.2.is_empty() {
                let out = last(state).map(|o| Frame::data(Bytes::from(o)));
                return Some((out, None));
            }
            match step(&mut state) {
                Ok(out) if out.is_empty() => continue,
                Ok(out) => return Some((Ok(Frame::data(Bytes::from(out))), Some(state))),
                Err(e) => return Some((Err(e), None)),
            }
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

/// What reading a body ahead found.
pub enum ReadAhead {
    /// The whole body, within the limit.
    Whole(Bytes),
    /// A longer one (or one with trailers): what was read, then the rest,
    /// as one body that streams on.
    Longer(ProxyBody),
}

/// Reads `body` ahead, up to `limit` bytes, whatever its framing
/// (`Content-Length` or chunked): the whole of it when it fits, else a body
/// that gives back what was read and streams the rest. Nothing is lost
/// either way; an error of the body while reading is returned.
pub async fn read_ahead(mut body: ProxyBody, limit: usize) -> Result<ReadAhead, BoxError> {
    let mut frames: Vec<Frame<Bytes>> = Vec::new();
    let mut len = 0usize;
    let mut trailers = false;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.data_ref() {
            Some(data) => len += data.len(),
            None => trailers = true,
        }
        frames.push(frame);
        if len > limit {
            let read = futures_util::stream::iter(frames.into_iter().map(Ok));
            let rest = BodyStream::new(body);
            return Ok(ReadAhead::Longer(
                StreamBody::new(read.chain(rest)).boxed_unsync(),
            ));
        }
    }
    if trailers {
        let read = futures_util::stream::iter(frames.into_iter().map(Ok::<_, BoxError>));
        return Ok(ReadAhead::Longer(StreamBody::new(read).boxed_unsync()));
    }
    let mut whole = BytesMut::with_capacity(len);
    for frame in frames {
        if let Ok(data) = frame.into_data() {
            whole.extend_from_slice(&data);
        }
    }
    Ok(ReadAhead::Whole(whole.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(chunks: &[&'static [u8]]) -> ProxyBody {
        let frames = chunks
            .iter()
            .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c))))
            .collect::<Vec<_>>();
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    /// A chunked body within the limit is read whole; a longer one comes
    /// back whole too, streaming on from where the reading stopped.
    #[tokio::test]
    async fn reads_ahead_whatever_the_framing() {
        let ReadAhead::Whole(b) = read_ahead(chunked(&[b"ab", b"cd"]), 4).await.unwrap() else {
            panic!("not whole")
        };
        assert_eq!(&b[..], b"abcd");
        let ReadAhead::Longer(body) = read_ahead(chunked(&[b"ab", b"cd", b"e", b"fg"]), 4)
            .await
            .unwrap()
        else {
            panic!("not longer")
        };
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcdefg");
    }
}
