//! The admin listener, separate from the proxy port.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /` | the live dashboard: per-rule request rate and hit ratio, L1 usage, Redis state, backend latency, last purges |
//! | `GET /metrics` | Prometheus text format; names in [`crate::metrics`] |
//! | `GET /purges` | the last purges applied here (API, `PURGE`, writes, other replicas), newest first, as JSON (bearer token: keys and tags may hold user data) |
//! | `GET /healthz` | liveness: `ok` while the process serves |
//! | `GET /readyz` | readiness: 200 once config is loaded and listeners are bound; the body says whether Redis is `up`, `degraded` or `disabled`, and whether purge announcements are `subscribed`, `cut-off` or `local` (no Redis), how many purges wait in this replica's outbox for Redis (`purges_pending`), and with `regions:` each region's link, lag and whether this replica relays its purges |
//! | `GET /report` | what the cache saved the backend since start, per rule and in total (requests, bytes, backend time), as JSON |
//! | `GET /rules` | the rules as loaded, with this replica's region and the other regions, as JSON |
//! | `POST /reload` | re-read the config file (bearer token); a bad one is refused with its errors and the old one keeps serving |
//! | `POST /purge` | `{"keys": [], "tags": [], "prefixes": []}` with `Authorization: Bearer <admin.token>`; answers the counts; reaches every replica |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use crate::invalidation::Purge;
use crate::metrics::PurgeSource;
use crate::proxy::{Proxy, ProxyBody};

/// The live dashboard: one page, no external resources; it polls
/// `metrics` and `purges` every second.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Largest purge request body.
const MAX_PURGE_BODY: usize = 1024 * 1024;

/// State the admin endpoints read.
pub struct Admin {
    proxy: Arc<Proxy>,
    /// What `GET /metrics` renders.
    metrics: crate::metrics::Metrics,
    ready: AtomicBool,
}

impl Admin {
    /// Admin endpoints over `proxy`, rendering `metrics`.
    pub fn new(proxy: Arc<Proxy>, metrics: crate::metrics::Metrics) -> Self {
        Self {
            proxy,
            metrics,
            ready: AtomicBool::new(false),
        }
    }

    /// Marks the process ready (called once every listener is bound).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether `headers` carry the configured admin token.
    fn token_given(&self, headers: &http::HeaderMap) -> bool {
        self.proxy.config().admin.authorizes(headers)
    }

    /// Answers one admin request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ProxyBody>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match (req.method(), req.uri().path()) {
            (&Method::POST, "/purge") => self.purge(req).await,
            (&Method::POST, "/reload") => self.reload(req.headers()).await,
            (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET | &Method::HEAD, "/readyz") => {
                let ready = self.ready.load(Ordering::Acquire);
                let body = serde_json::json!({
                    "ready": ready,
                    "redis": self.proxy.redis_state(),
                    "redis_mode": self.proxy.redis().map(crate::redis::Redis::mode),
                    "purges": self.proxy.invalidator().channel_state(),
                    "purges_pending": self.proxy.invalidator().purges_pending(),
                    "region": self.proxy.invalidator().regions().map(|r| r.here()),
                    "regions": self.proxy.invalidator().regions().map(|r| r.states()),
                });
                let code = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json(code, &body)
            }
            (&Method::GET | &Method::HEAD, "/rules") => json(StatusCode::OK, &self.rules_json()),
            (&Method::GET | &Method::HEAD, "/report") => {
                let report = self.proxy.offloads().report();
                match serde_json::to_value(&report) {
                    Ok(v) => json(StatusCode::OK, &v),
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "report unavailable\n"),
                }
            }
            (&Method::GET | &Method::HEAD, "/metrics") => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                Bytes::from(self.metrics.render()),
            ),
            // Purged keys and tags may carry cookie, header or query values.
            (&Method::GET | &Method::HEAD, "/purges") if !self.token_given(req.headers()) => {
                unauthorized()
            }
            (&Method::GET | &Method::HEAD, "/purges") => json(
                StatusCode::OK,
                &serde_json::json!({ "purges": self.proxy.invalidator().recent() }),
            ),
            (&Method::GET | &Method::HEAD, "/") => {
                let mut res = respond(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    Bytes::from_static(DASHBOARD.as_bytes()),
                );
                res.headers_mut().insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
                    ),
                );
                res
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    async fn purge<B>(&self, req: Request<B>) -> Response<ProxyBody>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if !self.token_given(req.headers()) {
            return unauthorized();
        }
        let body = match http_body_util::Limited::new(req.into_body(), MAX_PURGE_BODY)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({
                        "error": format!("body unreadable or over {MAX_PURGE_BODY} bytes")
                    }),
                );
            }
        };
        let purge: Purge = match serde_json::from_slice::<Purge>(&body) {
            Ok(p) if p.check().is_ok() => p,
            Ok(p) => {
                let msg = p.check().err().unwrap_or_default();
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": msg }),
                );
            }
            Err(e) => {
                let msg = format!("expected {{\"keys\": [], \"tags\": [], \"prefixes\": []}}: {e}");
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": msg }),
                );
            }
        };
        let counts = self
            .proxy
            .invalidator()
            .purge(&purge, PurgeSource::Api)
            .await;
        json(StatusCode::OK, &serde_json::json!({ "purged": counts }))
    }

    async fn reload(&self, headers: &http::HeaderMap) -> Response<ProxyBody> {
        if !self.token_given(headers) {
            return unauthorized();
        }
        match crate::reload::reload(&self.proxy).await {
            Ok(report) => json(StatusCode::OK, &serde_json::json!({ "reloaded": report })),
            Err(e) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "error": e.to_string() }),
            ),
        }
    }

    fn rules_json(&self) -> serde_json::Value {
        let rules: Vec<_> = self
            .proxy
            .config()
            .rules
            .rules()
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "methods": r.methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
                    "path": r.path,
                    "host": r.host,
                    "cache": r.cache,
                    "key": r.key.source(),
                    "ttl": r.ttl.to_string(),
                    "tier": r.tier.as_str(),
                    "tags": r.tags.iter().map(|t| t.source()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let regions = self.proxy.invalidator().regions();
        serde_json::json!({
            "rules": rules,
            "region": regions.map(|r| r.here()),
            "regions": regions.map(|r| r.names()),
        })
    }
}

/// 401 for an admin request without the token.
fn unauthorized() -> Response<ProxyBody> {
    json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"error": "a bearer token matching admin.token is required"}),
    )
}

fn text(code: StatusCode, body: &'static str) -> Response<ProxyBody> {
    respond(
        code,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

fn json(code: StatusCode, body: &serde_json::Value) -> Response<ProxyBody> {
    respond(code, "application/json", Bytes::from(body.to_string()))
}

fn respond(code: StatusCode, content_type: &'static str, body: Bytes) -> Response<ProxyBody> {
    let mut res = Response::new(Full::new(body).map_err(|e| match e {}).boxed_unsync());
    *res.status_mut() = code;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}
