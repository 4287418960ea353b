//! A body that ends with an error when no frame arrives for a while: a
//! peer that sends its head and then stalls cannot hold a response, a
//! collapse flight or a backend place forever. The tee never stores a body
//! that ended in an error, so a stalled answer is passed on cut short and
//! never cached.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::BoxError;

/// `inner`, cut off after `idle` without a frame.
pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    /// Bytes a second the body must average once `idle` has passed.
    min_rate: Option<u64>,
    bytes: u64,
    started: Instant,
    /// Boxed so the body stays `Unpin` (no unsafe pinning here).
    sleep: Pin<Box<Sleep>>,
    what: &'static str,
}

impl<B> IdleTimeout<B> {
    /// Wraps `inner`; `what` names the stalled side in the error.
    pub fn new(inner: B, idle: Duration, what: &'static str) -> Self {
        Self {
            inner,
            idle,
            min_rate: None,
            bytes: 0,
            started: Instant::now(),
            sleep: Box::pin(tokio::time::sleep(idle)),
            what,
        }
    }

    /// Also cuts the body off when, after the first `idle`, it averages
    /// fewer than `bytes_per_sec` (a trickle that never quite stalls).
    pub fn min_rate(mut self, bytes_per_sec: u64) -> Self {
        self.min_rate = Some(bytes_per_sec);
        self
    }
}

/// The error a stalled body ends with.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Stalled(String);

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let now = Instant::now();
                this.sleep.as_mut().reset(now + this.idle);
                if let (Some(Ok(f)), Some(min)) = (&frame, this.min_rate) {
                    this.bytes += f.data_ref().map_or(0, |d| d.len() as u64);
                    let elapsed = now.duration_since(this.started);
                    if elapsed > this.idle
                        && (this.bytes as f64) < min as f64 * elapsed.as_secs_f64()
                    {
                        let why = format!("{} sent under {min} bytes a second", this.what);
                        return Poll::Ready(Some(Err(Stalled(why).into())));
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let why = format!("{} sent nothing for {:?}", this.what, this.idle);
                    Poll::Ready(Some(Err(Stalled(why).into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
