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
            sleep: Box::pin(tokio::time::sleep(idle)),
            what,
        }
    }
}

/// The error a stalled body ends with.
#[derive(Debug, thiserror::Error)]
#[error("{0} sent nothing for {1:?}")]
pub struct Stalled(&'static str, Duration);

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
                let next = Instant::now() + this.idle;
                this.sleep.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Stalled(this.what, this.idle).into()))),
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
