//! The accept loop shared by the proxy and admin listeners: HTTP/1.1 and
//! h2c on one port, a header-read timeout against slow clients, an idle
//! timeout for connections of either protocol, and a graceful drain when
//! shutdown is signalled.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
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
    name: &'static str,
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
    let open = metrics::gauge!(crate::metrics::CONNECTIONS, "listener" => name);
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
        let service = service_fn(move |req: Request<Incoming>| {
            let http1 = req.version() < http::Version::HTTP_2;
            seen.request_started(http1);
            // Boxed: hyper keeps the service's future inside each
            // connection's own state, so an unboxed one (the request
            // pipeline, about 4 KB) would cost every idle keep-alive
            // connection its size; boxed, it costs one allocation per
            // request instead (see BENCHMARKS.md, memory per connection).
            let response = Box::pin(handler(req, peer.ip()));
            let seen = seen.clone();
            async move {
                let mut response = response.await;
                // Draining: the client learns from this answer that the
                // connection ends with it (hyper closes after writing it).
                if http1 && seen.closing() {
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        });
        let (builder, shutdown) = (builder.clone(), shutdown.clone());
        let open = open.clone();
        open.increment(1.0);
        tracker.spawn(crate::metrics::scoped(async move {
            let _open = Open(open);
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
                    activity.close();
                    if activity.http1() {
                        // A keep-alive client may have sent its next
                        // request already: closing now would leave it
                        // unanswered. Its answer says `Connection: close`
                        // and hyper closes after it; a connection quiet
                        // for `DRAIN_QUIET` is closed as idle.
                        tokio::select! {
                            r = conn.as_mut() => r,
                            () = activity.quiet(DRAIN_QUIET) => {
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                        }
                    } else {
                        // HTTP/2 (GOAWAY: the streams in flight finish, no
                        // new one starts), or no request yet.
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
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

/// How long a draining HTTP/1 connection may stay without a new request
/// before it is closed as idle (a keep-alive client sends its next request
/// at once, and it is answered with `Connection: close`).
const DRAIN_QUIET: Duration = Duration::from_millis(200);

/// When a connection last started a request, for its idle timeout and its
/// drain.
struct Activity {
    opened: tokio::time::Instant,
    /// Requests started so far.
    requests: AtomicU64,
    /// When the last one started, in ms after `opened`.
    last_ms: AtomicU64,
    /// Whether its requests are HTTP/1 (known from the first).
    http1: AtomicBool,
    /// Whether shutdown has begun: each answer closes the connection.
    closing: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: tokio::time::Instant::now(),
            requests: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            http1: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        }
    }

    fn request_started(&self, http1: bool) {
        let ms = self.now_ms();
        self.last_ms.store(ms, Ordering::Relaxed);
        self.http1.store(http1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether it speaks HTTP/1 (false before its first request).
    fn http1(&self) -> bool {
        self.http1.load(Ordering::Relaxed)
    }

    /// Shutdown began: the next answers close the connection.
    fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Returns once no request has started for `quiet`, counted from now
    /// at the earliest.
    async fn quiet(&self, quiet: Duration) {
        let from = self.now_ms();
        loop {
            let last = self.last_ms.load(Ordering::Relaxed).max(from);
            let deadline = self.opened + Duration::from_millis(last) + quiet;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
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

/// One open connection in the gauge, until dropped (on every path out of
/// the connection's task).
struct Open(metrics::Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.decrement(1.0);
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
