//! A body that streams the backend's response to the client while keeping
//! a copy for the cache, up to a size cap. When the stream ends cleanly the
//! copy is handed on; on overflow, error, an early drop (client gone) or a
//! body still coming at its deadline, why it was not kept is handed on
//! instead, so nothing half-read is ever stored.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::{BoxError, ProxyBody};

/// What receives the copy, or why there is none.
pub type OnDone = Box<dyn FnOnce(Result<Bytes, NotKept>) + Send>;

/// Why a body's copy was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotKept {
    /// Larger than the rule's `max_object_size`.
    TooLarge,
    /// Still coming at the deadline (see `until`).
    TooSlow,
    /// Broken off: a backend error, or the client went away first.
    CutShort,
}

impl NotKept {
    /// The `reason` label of `sidecache_store_refused_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotKept::TooLarge => "too-large",
            NotKept::TooSlow => "too-slow",
            NotKept::CutShort => "cut-short",
        }
    }
}

/// The tee.
pub struct TeeBody {
    inner: ProxyBody,
    copy: Option<BytesMut>,
    limit: usize,
    on_done: Option<OnDone>,
    /// After this, the copy is given up (the client still gets the rest).
    deadline: Option<std::time::Instant>,
}

impl TeeBody {
    /// Wraps `inner`, keeping up to `limit` bytes.
    pub fn new(inner: ProxyBody, limit: usize, on_done: OnDone) -> Self {
        let hint = inner
            .size_hint()
            .exact()
            .and_then(|n| usize::try_from(n).ok());
        let mut tee = Self {
            inner,
            copy: Some(BytesMut::with_capacity(hint.unwrap_or(8 * 1024).min(limit))),
            limit,
            on_done: Some(on_done),
            deadline: None,
        };
        // hyper never polls a body that is already over (204, length 0):
        // hand on the (empty) copy now.
        if tee.inner.is_end_stream() {
            tee.finish(Ok(()));
        }
        tee
    }

    /// Gives the copy up if the body is not over by `deadline`: a body
    /// that drips for longer holds its collapse flight no longer, and
    /// nothing is stored.
    pub fn until(mut self, deadline: std::time::Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    fn finish(&mut self, end: Result<(), NotKept>) {
        if let Some(done) = self.on_done.take() {
            let copy = self.copy.take();
            done(end.and_then(|()| copy.map(compact).ok_or(NotKept::CutShort)));
        }
    }
}

/// The copy as it will be kept: re-allocated to its length when more than
/// a quarter of its buffer is unused (a body shorter than its hint, or
/// grown by doubling), since the entry keeps the whole buffer.
fn compact(copy: BytesMut) -> Bytes {
    if copy.capacity() - copy.len() > copy.len() / 4 {
        Bytes::copy_from_slice(&copy)
    } else {
        copy.freeze()
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                let late = this.deadline.is_some_and(|d| std::time::Instant::now() > d);
                if let (Some(data), Some(copy)) = (f.data_ref(), this.copy.as_mut()) {
                    if late || copy.len() + data.len() > this.limit {
                        let why = if late {
                            NotKept::TooSlow
                        } else {
                            NotKept::TooLarge
                        };
                        this.copy = None;
                        this.finish(Err(why));
                    } else {
                        copy.extend_from_slice(data);
                    }
                }
                // hyper stops polling once the body says it has ended, so
                // the end is seen here rather than as a final `None`.
                if this.inner.is_end_stream() {
                    this.finish(Ok(()));
                }
            }
            Some(Err(_)) => this.finish(Err(NotKept::CutShort)),
            None => this.finish(Ok(())),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TeeBody {
    fn drop(&mut self) {
        // The client went away before the end: store nothing.
        self.finish(Err(NotKept::CutShort));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::sync::{Arc, Mutex};

    type Slot = Arc<Mutex<Option<Result<Bytes, NotKept>>>>;

    fn collect_into(slot: &Slot) -> OnDone {
        let slot = slot.clone();
        Box::new(move |b| *slot.lock().unwrap() = Some(b))
    }

    /// A body read to the end hands on an identical copy.
    #[tokio::test]
    async fn copies_whole_body() {
        let slot = Arc::new(Mutex::new(None));
        let inner = Full::new(Bytes::from_static(b"hello"))
            .map_err(|e| match e {})
            .boxed_unsync();
        let body = TeeBody::new(inner, 10, collect_into(&slot));
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(out, "hello");
        assert_eq!(
            *slot.lock().unwrap(),
            Some(Ok(Bytes::from_static(b"hello")))
        );
    }

    /// A body over the cap still streams whole but hands on nothing.
    #[tokio::test]
    async fn over_cap_streams_but_not_kept() {
        let slot = Arc::new(Mutex::new(None));
        let inner = Full::new(Bytes::from_static(b"hello world"))
            .map_err(|e| match e {})
            .boxed_unsync();
        let body = TeeBody::new(inner, 4, collect_into(&slot));
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello world");
        assert_eq!(*slot.lock().unwrap(), Some(Err(NotKept::TooLarge)));
    }

    /// A body that is over from the start hands on an empty copy at once.
    #[tokio::test]
    async fn empty_body_copied_at_once() {
        let slot = Arc::new(Mutex::new(None));
        let inner = Full::new(Bytes::new())
            .map_err(|e| match e {})
            .boxed_unsync();
        let _body = TeeBody::new(inner, 4, collect_into(&slot));
        assert_eq!(*slot.lock().unwrap(), Some(Ok(Bytes::new())));
    }

    /// Dropping the body before its end hands on nothing.
    #[tokio::test]
    async fn dropped_early_not_kept() {
        let slot = Arc::new(Mutex::new(None));
        let inner = Full::new(Bytes::from_static(b"x"))
            .map_err(|e| match e {})
            .boxed_unsync();
        drop(TeeBody::new(inner, 4, collect_into(&slot)));
        assert_eq!(*slot.lock().unwrap(), Some(Err(NotKept::CutShort)));
    }

    /// A body still streaming past its deadline is passed on whole, but
    /// its copy is given up.
    #[tokio::test]
    async fn late_body_is_passed_on_but_not_kept() {
        let slot = Arc::new(Mutex::new(None));
        let inner = Full::new(Bytes::from_static(b"late"))
            .map_err(|e| match e {})
            .boxed_unsync();
        let past = std::time::Instant::now() - std::time::Duration::from_secs(1);
        let tee = TeeBody::new(inner, 1024, collect_into(&slot)).until(past);
        let body = tee.collect().await.unwrap().to_bytes();
        assert_eq!(body, "late");
        assert_eq!(*slot.lock().unwrap(), Some(Err(NotKept::TooSlow)));
    }
}
