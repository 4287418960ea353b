//! The accept loop shared by the proxy and admin listeners: HTTP/1.1 and
//! h2c on one port, a header-read timeout against slow clients, an idle
//! timeout for connections of either protocol, and a graceful drain when
//! shutdown is signalled.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::proxy::ProxyBody;

/// Serves `listener` with `handler` until `shutdown` fires, then waits up
/// to `limits.shutdown_grace` for in-flight requests before returning.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: CancellationToken,
    limits: &Limits,
) where
    H: Fn(Request<Incoming>, IpAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(Executor);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    builder
        .http2()
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    // Pings find a dead HTTP/2 peer while a long answer is in flight (an
    // idle connection is sent away by `Activity::idle` below).
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.idle_timeout))
        .keep_alive_timeout(limits.header_timeout);
    // Every connection's task, so shutdown can wait for them to drain.
    let tracker = TaskTracker::new();
    // One permit per open connection: at the cap, accepting waits.
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let (first_request, idle) = (limits.header_timeout, limits.idle_timeout);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let activity = Arc::new(Activity::new());
        let seen = activity.clone();
        let service = service_fn(move |req| {
            seen.request_started();
            // Boxed: hyper keeps the service's future inside each
            // connection's own state, so an unboxed one (the request
            // pipeline, about 4 KB) would cost every idle keep-alive
            // connection its size; boxed, it costs one allocation per
            // request instead (see BENCHMARKS.md, memory per connection).
            let response = Box::pin(handler(req, peer.ip()));
            async move { Ok::<_, Infallible>(response.await) }
        });
        let (builder, shutdown) = (builder.clone(), shutdown.clone());
        tracker.spawn(crate::metrics::scoped(async move {
            // Until the protocol is known hyper waits on the first bytes
            // without a timeout: a silent peer must not hold a place.
            let mut probe = [0u8; 1];
            if !matches!(tokio::time::timeout(first_request, stream.peek(&mut probe)).await, Ok(Ok(n)) if n > 0)
            {
                return;
            }
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            // A connection that asks for nothing (HTTP/2 opens with a
            // preface and SETTINGS, then may stay silent, and hyper has no
            // timeout for that) is told to go away: in-flight requests
            // finish, no new one starts. So is one whose requests stopped
            // `idle` ago. Shutdown does the same for every connection.
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = activity.idle(first_request, idle) => {
                    conn.as_mut().graceful_shutdown();
                    if activity.any() {
                        // Answers in flight finish; a peer that stops
                        // answering pings is closed by the keep-alive.
                        conn.await
                    } else {
                        // HTTP/2's goodbye waits for the peer to answer a
                        // ping, which a silent one never does; with no
                        // request there is nothing to finish.
                        tokio::time::timeout(first_request, conn)
                            .await
                            .unwrap_or(Ok(()))
                    }
                }
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        }));
    }
    drop(listener);
    tracker.close();
    let grace = limits.shutdown_grace;
    tokio::select! {
        () = tracker.wait() => {}
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "grace period over; closing open connections"),
    }
}

/// When a connection last started a request, for its idle timeout.
struct Activity {
    opened: tokio::time::Instant,
    /// Requests started so far.
    requests: AtomicU64,
    /// When the last one started, in ms after `opened`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: tokio::time::Instant::now(),
            requests: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn request_started(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a request has started.
    fn any(&self) -> bool {
        self.requests.load(Ordering::Relaxed) > 0
    }

    /// Returns once no request has started for `idle` (or, before the
    /// first, for `first`).
    async fn idle(&self, first: Duration, idle: Duration) {
        loop {
            let deadline = if self.requests.load(Ordering::Relaxed) == 0 {
                self.opened + first
            } else {
                self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
            };
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Spawns hyper's tasks (an HTTP/2 connection's streams, which run the
/// handler) recording where their connection records.
#[derive(Clone, Copy)]
struct Executor;

impl<F> hyper::rt::Executor<F> for Executor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, task: F) {
        crate::metrics::spawn(task);
    }
}
