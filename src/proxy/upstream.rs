//! The pooled HTTP/1.1 client toward the backend (plain, or TLS for an
//! `https://` upstream), with connect and response-header timeouts, and
//! errors sorted into the status the client should get (502 for a refused
//! or broken connection, 504 for a timeout).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body as _;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::ProxyBody;
use crate::config;
use crate::metrics::{UPSTREAM_DURATION, UPSTREAM_ERRORS};

/// Why the backend gave no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection could not be made (refused, unreachable, connect timeout).
    #[error("cannot connect to the backend: {0}")]
    Connect(String),
    /// No response headers within the timeout.
    #[error("the backend did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection broke or the response was not valid HTTP.
    #[error("the backend's answer was broken: {0}")]
    Broken(String),
    /// The client's body went over `limits.max_body` while streaming.
    #[error("request body over limits.max_body")]
    BodyTooLarge,
    /// Too many requests already wait on the backend.
    #[error("the backend is busy; try again shortly")]
    Overloaded,
    /// The client stopped sending its body.
    #[error("the request body stalled: {0}")]
    ClientStalled(String),
    /// The client's body could not be read (a broken chunked encoding).
    #[error("the request body could not be read: {0}")]
    ClientBody(String),
}

impl UpstreamError {
    /// Counts it: refusals as rejected requests, the rest as backend errors.
    fn count(&self) {
        match self {
            UpstreamError::Overloaded => crate::metrics::rejected("backend-busy"),
            UpstreamError::ClientStalled(_) | UpstreamError::ClientBody(_) => {
                crate::metrics::rejected("client-body");
            }
            UpstreamError::BodyTooLarge => crate::metrics::rejected("body-too-large"),
            UpstreamError::Connect(_) => {
                metrics::counter!(UPSTREAM_ERRORS, "reason" => "connect").increment(1);
            }
            UpstreamError::Timeout(_) => {
                metrics::counter!(UPSTREAM_ERRORS, "reason" => "timeout").increment(1);
            }
            UpstreamError::Broken(_) => {
                metrics::counter!(UPSTREAM_ERRORS, "reason" => "broken").increment(1);
            }
        }
    }

    /// The status to answer the client with.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UpstreamError::ClientStalled(_) => StatusCode::REQUEST_TIMEOUT,
            UpstreamError::ClientBody(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Request bodies up to this length are read whole before the request
/// takes a backend place.
const BUFFERED_BODY: u64 = 1 << 20;

/// What a request body that failed while being read tells the client.
fn client_body_error(e: &super::BoxError) -> UpstreamError {
    if e.is::<http_body_util::LengthLimitError>() {
        UpstreamError::BodyTooLarge
    } else if e.is::<super::idle::Stalled>() {
        UpstreamError::ClientStalled(e.to_string())
    } else {
        UpstreamError::ClientBody(e.to_string())
    }
}

/// The backend client.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    scheme: Scheme,
    authority: Authority,
    timeout: Duration,
    /// Places for requests waiting on the backend.
    slots: Arc<Semaphore>,
    /// Requests waiting for a place, and how many may.
    queued: Arc<AtomicUsize>,
    queue: usize,
    /// Failed backend requests, logged one a minute with a count.
    failures: Arc<Failures>,
}

/// Backend failures for the log: the first of each minute is logged as it
/// happens (with its method, path and error), the rest are counted and
/// summed up once a minute, so a backend that is down writes two lines a
/// minute rather than one per request. Each is counted in
/// `sidecache_upstream_errors_total` too.
#[derive(Default)]
pub struct Failures {
    /// Whether this minute's first failure was logged.
    logged: std::sync::atomic::AtomicBool,
    /// Failures since, not logged.
    since: std::sync::atomic::AtomicU64,
    /// The first of those.
    example: std::sync::Mutex<Option<String>>,
}

impl Failures {
    /// Notes a failed request to `path` (its query left out).
    fn note(&self, method: &http::Method, path: &str, e: &UpstreamError) {
        if !self.logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(%method, path, error = %e, "backend request failed");
            return;
        }
        self.since.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut example) = self.example.lock()
            && example.is_none()
        {
            *example = Some(format!("{method} {path}: {e}"));
        }
    }

    /// Logs the failures not logged yet, and starts a new minute.
    pub fn summarise(&self) {
        let failed = self.since.swap(0, Ordering::Relaxed);
        let example = self.example.lock().ok().and_then(|mut e| e.take());
        self.logged.store(false, Ordering::Relaxed);
        if failed > 0 {
            tracing::warn!(
                failed,
                example = example.as_deref().unwrap_or(""),
                "more backend requests failed in the last minute"
            );
        }
    }
}

impl Upstream {
    /// Its failures, for the minute's summary.
    pub fn failures(&self) -> &Failures {
        &self.failures
    }

    /// A client for the configured backend.
    pub fn new(cfg: &config::Upstream) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.enforce_http(false);
        // A plain upstream never uses the TLS config: an empty one will do,
        // and the system's roots are not read.
        let tls = cfg.tls.as_ref().map_or_else(
            || {
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            },
            |t| (*t.config).clone(),
        );
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Self {
            client,
            scheme: cfg.url.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: cfg
                .url
                .authority()
                .cloned()
                .unwrap_or_else(|| Authority::from_static("127.0.0.1")),
            timeout: cfg.timeout,
            slots: Arc::new(Semaphore::new(cfg.max_concurrency)),
            queued: Arc::new(AtomicUsize::new(0)),
            queue: cfg.queue,
            failures: Arc::default(),
        }
    }

    /// A place among the requests waiting on the backend: at once if one
    /// is free, after a bounded wait in the queue, or `Overloaded`.
    async fn slot(&self) -> Result<OwnedSemaphorePermit, UpstreamError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(UpstreamError::Overloaded);
        }
        // Leaves the queue however the wait ends, a client hanging up included.
        let _in_queue = Queued(&self.queued);
        match tokio::time::timeout(self.timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(UpstreamError::Overloaded),
        }
    }

    /// Whether every place on the backend is taken (requests now wait).
    pub fn busy(&self) -> bool {
        self.slots.available_permits() == 0
    }

    /// How long the backend has for a response head (`upstream.timeout`,
    /// fixed for the proxy's life: a reload does not change it).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `req` (its URI's path and query kept) to the backend.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        // Up to BUFFERED_BODY of a body, whatever its framing, is read
        // before a backend place is taken, so clients uploading slowly never
        // hold the backend's places. (A slower one than `MIN_UPLOAD_RATE`
        // is cut off meanwhile.)
        let (parts, body) = req.into_parts();
        // The declared length decides, not the body's size hint: a body
        // under `limits.max_body` hints that limit as its upper bound.
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let body = if !body.is_end_stream() && declared.is_none_or(|n| n <= BUFFERED_BODY) {
            match super::body::read_ahead(body, BUFFERED_BODY as usize).await {
                Ok(super::body::ReadAhead::Whole(bytes)) => super::full(bytes),
                Ok(super::body::ReadAhead::Longer(body)) => body,
                Err(e) => {
                    let e = client_body_error(&e);
                    e.count();
                    return Err(e);
                }
            }
        } else {
            body
        };
        let mut req = Request::from_parts(parts, body);
        // Held until the response headers arrive: it bounds the requests the
        // backend is working on (bodies then stream at the client's pace).
        let _slot = self.slot().await.inspect_err(|e| e.count())?;
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // For the log (a clone shares the bytes).
        let logged = (req.method().clone(), path.clone());
        // HTTP/2 requests carry the host in the URI; HTTP/1.1 needs the header.
        if !req.headers().contains_key(header::HOST) {
            let host = req.uri().authority().map_or_else(
                || self.authority.as_str().to_owned(),
                |a| a.as_str().to_owned(),
            );
            if let Ok(v) = HeaderValue::from_str(&host) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        *req.uri_mut() = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|e| UpstreamError::Broken(e.to_string()))?;
        *req.version_mut() = Version::HTTP_11;
        // An idempotent request without a body can be sent again if the
        // connection fails before any answer; keep its head for that.
        let again = (req.method().is_idempotent() && req.body().is_end_stream()).then(|| {
            let mut copy = Request::new(super::empty());
            *copy.method_mut() = req.method().clone();
            *copy.uri_mut() = req.uri().clone();
            *copy.version_mut() = req.version();
            *copy.headers_mut() = req.headers().clone();
            copy
        });
        let start = tokio::time::Instant::now();
        let deadline = start + self.timeout;
        let first = tokio::time::timeout_at(deadline, self.client.request(req)).await;
        let outcome = match (first, again) {
            (Ok(Err(e)), Some(copy)) if connection_failed(&e) => {
                tracing::debug!(error = %source_chain(&e), "backend connection failed; retrying once");
                tokio::time::timeout_at(deadline, self.client.request(copy)).await
            }
            (first, _) => first,
        };
        let result = match outcome {
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
            // A body that stalls for as long as a head may take is cut.
            Ok(Ok(res)) => Ok(res.map(|b| {
                http_body_util::BodyExt::boxed_unsync(super::idle::IdleTimeout::new(
                    b,
                    self.timeout,
                    "the backend",
                ))
            })),
            Ok(Err(e)) if over_body_limit(&e) => Err(UpstreamError::BodyTooLarge),
            // The client's body failed while it streamed (a broken chunked
            // encoding, or silence): the client's fault, not the backend's.
            Ok(Err(e)) if let Some(inner) = client_body_failure(&e) => Err(inner),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect(source_chain(&e))),
            Ok(Err(e)) => Err(UpstreamError::Broken(source_chain(&e))),
        };
        match &result {
            Ok(_) => metrics::histogram!(UPSTREAM_DURATION).record(start.elapsed()),
            Err(e) => {
                e.count();
                if matches!(
                    e,
                    UpstreamError::Connect(_)
                        | UpstreamError::Timeout(_)
                        | UpstreamError::Broken(_)
                ) {
                    self.failures.note(&logged.0, logged.1.path(), e);
                }
            }
        }
        result
    }
}

/// Whether the failure was the client's body going over its limit.
fn over_body_limit(e: &hyper_util::client::legacy::Error) -> bool {
    let mut cur = std::error::Error::source(e);
    while let Some(inner) = cur {
        if inner.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = inner.source();
    }
    false
}

/// The client-side failure behind a request that failed while its body
/// streamed to the backend, if that is what happened.
fn client_body_failure(e: &hyper_util::client::legacy::Error) -> Option<UpstreamError> {
    let mut cur = std::error::Error::source(e);
    while let Some(inner) = cur {
        if inner.is::<super::idle::Stalled>() {
            return Some(UpstreamError::ClientStalled(inner.to_string()));
        }
        if let Some(h) = inner.downcast_ref::<hyper::Error>()
            && h.is_user()
        {
            return Some(UpstreamError::ClientBody(source_chain(e)));
        }
        cur = inner.source();
    }
    None
}

/// A place in the upstream queue, given back on drop.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection failed before any answer: refused, or closed before the
/// response began. The request did not reach the backend's handler, or
/// was idempotent anyway.
fn connection_failed(e: &hyper_util::client::legacy::Error) -> bool {
    if e.is_connect() {
        return true;
    }
    let mut cur = std::error::Error::source(e);
    while let Some(inner) = cur {
        if let Some(h) = inner.downcast_ref::<hyper::Error>() {
            return h.is_incomplete_message() || h.is_canceled();
        }
        cur = inner.source();
    }
    false
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    /// The first failure of a minute is logged at once, the rest counted
    /// with the first of them as the example; the summary starts a new
    /// minute.
    #[test]
    fn failures_are_logged_once_then_summed_up() {
        let f = Failures::default();
        let e = UpstreamError::Timeout(Duration::from_secs(1));
        for path in ["/a", "/b", "/c"] {
            f.note(&http::Method::GET, path, &e);
        }
        assert_eq!(f.since.load(Ordering::Relaxed), 2);
        let example = f.example.lock().unwrap().clone().unwrap();
        assert!(example.starts_with("GET /b: "), "{example}");
        f.summarise();
        assert_eq!(f.since.load(Ordering::Relaxed), 0);
        assert!(f.example.lock().unwrap().is_none());
        // A new minute: its first failure is logged again, not counted.
        f.note(&http::Method::GET, "/d", &e);
        assert_eq!(f.since.load(Ordering::Relaxed), 0);
    }
}
