//! The proxy pipeline, as a map. [`Proxy::handle`] takes each request
//! through `Proxy::route`: made safe to key ([`headers`]), planned
//! ([`plan`]), counted against its rule's rate limit, then one of four
//! ways: a `PURGE` and a write (`write.rs`), a pass (here), or the cache:
//! the hit path (`hit.rs`) and, when nothing fresh answers, the miss path
//! (`miss.rs`, with [`collapse`] and the fill job, `fill.rs`). Every step returns
//! its response with its [`Outcome`], which `handle` turns into the
//! `Cache-Status` header, the metric and the log line, in one place.

mod access;
pub mod body;
pub mod collapse;
pub mod esi;
mod fill;
pub mod forward;
pub mod headers;
mod hit;
mod idle;
pub mod keyed;
mod miss;
pub mod outcome;
pub mod plan;
mod range;
pub mod request_id;
pub mod respond;
mod revalidate;
pub mod storable;
pub mod tee;
#[cfg(test)]
mod tests;
pub mod trace;
pub mod upstream;
mod verify;
mod warm;
mod write;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tracing::Instrument as _;

pub use self::body::{BoxError, ProxyBody, empty, full};
use self::collapse::Flights;
use self::headers::{add_forwarding, append_via, strip_hop_by_hop};
use self::outcome::{Outcome, Pass, Rejected, cache_status_name};
pub use self::plan::request_host;
use self::plan::{Action, Ctx, Plan};
use self::storable::SIDECACHE_CACHE_CONTROL;
use self::upstream::Upstream;
use crate::cache::hot::Hotness;
use crate::cache::tiered::Tiered;
use crate::config::Config;
use crate::invalidation::Invalidator;
use crate::metrics::{self, RequestCounters};
use crate::offload::{Offload, Offloads};
use crate::ratelimit::RateLimits;
use crate::redis::Redis;

/// Bytes a second a request body must average once `limits.header_timeout`
/// has passed (as Apache's `mod_reqtimeout` asks 500): slower is cut off
/// with 408.
const MIN_UPLOAD_RATE: u64 = 500;

/// How many keys `memory.warm` copies from the hot ones, when it does and
/// there is a Redis to count them in.
fn hot_top(config: &Config, redis: Option<&Redis>) -> Option<usize> {
    redis?;
    config.memory.warm.as_ref()?.hot
}

/// A response with what became of the request.
pub type Answer = (Response<ProxyBody>, Outcome);

/// Everything a request needs; shared by all connections.
pub struct Proxy {
    /// Swapped whole on reload; each request works on one snapshot.
    live: ArcSwap<Live>,
    cache: Tiered,
    upstream: Upstream,
    flights: Arc<Flights>,
    /// Places for `warm_on` fetches (`limits.warm_in_flight`).
    warm_permits: Arc<tokio::sync::Semaphore>,
    invalidator: Arc<Invalidator>,
    limits: RateLimits,
    redis: Option<Redis>,
    /// Lookups counted per key for `memory.warm: { from: hot }`.
    hot: Arc<Hotness>,
    /// What the cache saved the backend, per rule.
    offloads: Arc<Offloads>,
    /// `verify` checks in flight, and their pause.
    verifier: verify::Verifier,
    /// Keys whose refresh ahead failed lately.
    refresh_failures: hit::RefreshFailures,
}

/// The config in effect with the request counters of its rules (by rule
/// index), swapped together.
struct Live {
    config: Arc<Config>,
    counters: Vec<RequestCounters>,
    /// The counters of requests no rule matched, registered on the first
    /// (so a config whose rules match everything shows no such series).
    no_rule: std::sync::OnceLock<RequestCounters>,
    offload: Vec<Arc<Offload>>,
}

impl Live {
    fn of(config: Arc<Config>, offloads: &Offloads) -> Self {
        let rules = config.rules.rules();
        let counters = rules
            .iter()
            .map(|r| {
                verify::register(r);
                RequestCounters::new(&r.name)
            })
            .collect();
        let offload = offloads.of(rules.iter().map(|r| r.name.as_str()));
        Self {
            config,
            counters,
            no_rule: std::sync::OnceLock::new(),
            offload,
        }
    }
}

impl Proxy {
    /// A proxy over `config`'s rules, the tiers in `cache`, and `redis`
    /// (for purges, locks and global limits) when configured.
    pub fn new(
        config: Arc<Config>,
        cache: Tiered,
        redis: Option<Redis>,
        regions: Option<crate::invalidation::regions::Regions>,
    ) -> Self {
        let upstream = Upstream::new(&config.upstream);
        let grace = config
            .redis
            .as_ref()
            .map_or(Duration::ZERO, |r| r.disconnect_grace);
        let budget = crate::invalidation::budget(config.memory.max_size);
        let invalidator = Arc::new(
            Invalidator::new(
                cache.clone(),
                redis.clone(),
                grace,
                usize::try_from(budget).unwrap_or(usize::MAX),
            )
            .with(regions, config.invalidation.repeat_after),
        );
        invalidator.set_horizon(config.rules.longest_lifetime());
        let warm_permits = Arc::new(tokio::sync::Semaphore::new(config.limits.warm_in_flight));
        let hot = Arc::new(Hotness::default());
        hot.set(hot_top(&config, redis.as_ref()));
        let offloads = Arc::new(Offloads::default());
        let verifier = verify::Verifier::new(config.limits.verify_in_flight);
        metrics::config_loaded(None, &config.digest);
        Self {
            verifier,
            refresh_failures: hit::RefreshFailures::default(),
            hot,
            limits: RateLimits::new(&config.rules, redis.clone()),
            live: ArcSwap::from_pointee(Live::of(config, &offloads)),
            offloads,
            cache,
            upstream,
            flights: Arc::new(Flights::default()),
            warm_permits,
            invalidator,
            redis,
        }
    }

    /// The purge engine.
    pub fn invalidator(&self) -> &Arc<Invalidator> {
        &self.invalidator
    }

    /// The stores.
    pub fn cache(&self) -> &Tiered {
        &self.cache
    }

    /// The backend client.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// What the cache saved the backend, per rule.
    pub fn offloads(&self) -> &Arc<Offloads> {
        &self.offloads
    }

    /// The lookups counted for `memory.warm: { from: hot }`.
    pub fn hotness(&self) -> &Arc<Hotness> {
        &self.hot
    }

    /// The Redis connection, when configured.
    pub fn redis(&self) -> Option<&Redis> {
        self.redis.as_ref()
    }

    /// The rate-limit state.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Redis as `/readyz` and the metrics report it: `up`, `degraded`
    /// (the last command got no answer) or `disabled` (not configured).
    pub fn redis_state(&self) -> &'static str {
        match &self.redis {
            None => "disabled",
            Some(r) if r.is_up() => "up",
            Some(_) => "degraded",
        }
    }

    /// The config in effect.
    pub fn config(&self) -> Arc<Config> {
        self.live.load().config.clone()
    }

    /// Puts `config` in effect for the requests that start from now on.
    pub(crate) fn swap_config(&self, config: Arc<Config>) {
        self.invalidator
            .set_horizon(config.rules.longest_lifetime());
        self.limits.update(&config.rules);
        self.hot.set(hot_top(&config, self.redis.as_ref()));
        metrics::config_loaded(Some(&self.live.load().config.digest), &config.digest);
        self.live.store(Arc::new(Live::of(config, &self.offloads)));
    }

    /// Handles one request. Never fails: every problem becomes a response.
    ///
    /// Sets `Cache-Status`, counts the request by rule and outcome, and
    /// with `RUST_LOG` at debug logs one line per request (method, path
    /// without the query, rule, outcome, status, time to the response
    /// head; never headers).
    pub async fn handle<B>(
        self: &Arc<Self>,
        mut req: Request<B>,
        client: IpAddr,
    ) -> Response<ProxyBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let start = Instant::now();
        let live = self.live.load_full();
        let id = request_id::of(req.headers(), client, &live.config);
        req.headers_mut()
            .insert(request_id::HEADER.clone(), id.clone());
        let trace = trace::continue_in(req.headers_mut(), live.config.trusts(client));
        let access = access::Line::of(&req, live.config.access_log, trace);
        // Debug level: a disabled span costs the hit path nothing.
        let span = tracing::debug_span!(
            "request",
            method = %req.method(),
            path = req.uri().path(),
            rule = tracing::field::Empty,
            outcome = tracing::field::Empty,
            status = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        let (rule, (mut res, outcome)) = self
            .route(req, client, &live.config)
            .instrument(span.clone())
            .await;
        res.headers_mut()
            .insert(cache_status_name(), outcome.cache_status());
        res.headers_mut().insert(request_id::HEADER.clone(), id);
        let label = outcome.label();
        let (status, took) = (res.status(), start.elapsed());
        match rule.as_ref().and_then(|r| live.counters.get(r.index)) {
            Some(counters) => counters.count(label, status, took),
            None => live
                .no_rule
                .get_or_init(|| RequestCounters::new(""))
                .count(label, status, took),
        }
        if let Outcome::Pass { why, .. } = outcome
            && let Some(reason) = why.as_str()
        {
            let rule = rule.as_ref().map_or(String::new(), |r| r.name.clone());
            ::metrics::counter!(metrics::PASSES, "rule" => rule, "reason" => reason).increment(1);
        }
        if let Some(why) = outcome.not_stored() {
            let rule = rule.as_ref().map_or(String::new(), |r| r.name.clone());
            ::metrics::counter!(metrics::NOT_STORED, "rule" => rule, "reason" => why.as_str())
                .increment(1);
        }
        if let Some(offload) = rule.as_ref().and_then(|r| live.offload.get(r.index)) {
            let bytes = http_body::Body::size_hint(res.body()).exact().unwrap_or(0);
            self.offloads
                .count(offload, outcome.served(), bytes, start.elapsed());
        }
        if let Some(line) = access {
            line.write(&res, rule.as_deref(), label, client, start.elapsed());
        }
        if !span.is_disabled() {
            span.record("rule", rule.as_ref().map_or("", |r| r.name.as_str()));
            span.record("outcome", label.as_str());
            span.record("status", res.status().as_u16());
            span.record("latency_ms", start.elapsed().as_secs_f64() * 1e3);
            tracing::debug!(parent: &span, "served");
        }
        res
    }

    /// The pipeline: answers with the rule the request matched, if any.
    async fn route<B>(
        self: &Arc<Self>,
        req: Request<B>,
        client: IpAddr,
        config: &Arc<Config>,
    ) -> (Option<Arc<crate::rules::Rule>>, Answer)
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = req.into_parts();
        let body = guard_upload(body, config);
        // What describes the client's connection to us is removed before
        // anything reads the request, so keys, variants and the backend
        // all see one and the same request.
        let host = headers::sanitize_request(&mut parts, config.trusts(client)).and_then(|()| {
            request_host(&parts).map_err(|why| (http::StatusCode::BAD_REQUEST, why))
        });
        let host = match host {
            Ok(host) => host,
            Err((code, why)) => {
                let res = respond::error(code, why);
                return (None, (res, Outcome::Rejected(Rejected::BadRequest)));
            }
        };
        let mut ctx = Ctx::new(parts, host, client, config.clone());
        let plan = Plan::of(config, &ctx.parts, &ctx.host, client);
        // The rule's rate limit, before any cache or backend work.
        if let (Some(rule), Some(key)) = (&plan.rule, &plan.limit)
            && let Some(wait) = Box::pin(self.limits.check(rule, key)).await
        {
            return (
                plan.rule,
                (respond::rate_limited(wait), Outcome::RateLimited),
            );
        }
        // The paths that reach the backend are boxed: their futures are
        // large, and a hit, which needs none of them, allocates this one.
        let answer = match plan.action {
            Action::Purge => Box::pin(self.purge_request(&ctx)).await,
            Action::Write => Box::pin(self.write(ctx, body)).await,
            Action::Pass(why) => {
                // A page that passes (a logged-in visitor's) has its
                // includes filled too.
                let esi = plan.rule.as_ref().filter(|r| {
                    r.esi && matches!(ctx.parts.method, http::Method::GET | http::Method::HEAD)
                });
                let page = esi.map(|r| (esi::Page::of(&ctx.parts), r.clone()));
                if page.is_some() {
                    ctx.parts.headers.insert(
                        http::header::ACCEPT_ENCODING,
                        http::HeaderValue::from_static("identity"),
                    );
                }
                let answer = Box::pin(self.pass(ctx, body, why)).await;
                match page {
                    Some((page, rule)) => {
                        Box::pin(self.assemble_passed(answer, page, client, &rule)).await
                    }
                    None => answer,
                }
            }
            Action::Reject(why) => {
                let res = respond::error(http::StatusCode::BAD_REQUEST, why);
                (res, Outcome::Rejected(Rejected::BadRequest))
            }
            Action::Cache { keyed, head } => {
                // From here on the request is what the key says, and
                // nothing else: the hit path, the fetch and its checks all
                // work on this head (`forward`).
                let client_ip = client;
                let client = std::mem::replace(&mut ctx.parts, *head);
                let page = keyed.rule.esi.then(|| esi::Page::of(&client));
                ctx.client_cookie = client.headers.get(http::header::COOKIE).cloned();
                ctx.others = forward::others(client.headers, &ctx.parts.headers);
                let rule = keyed.rule.clone();
                let answer = self.cached(ctx, keyed).await;
                match page {
                    Some(page) => {
                        Box::pin(self.assemble(answer, page, client_ip, &rule.name)).await
                    }
                    None => answer,
                }
            }
        };
        (plan.rule, answer)
    }

    /// Forwards a request that is not answered from cache, streaming both ways.
    async fn pass(&self, ctx: Ctx, body: ProxyBody, why: Pass) -> Answer {
        let Ctx {
            mut parts, client, ..
        } = ctx;
        strip_hop_by_hop(&mut parts.headers);
        add_forwarding(&mut parts.headers, client);
        match self.upstream.send(Request::from_parts(parts, body)).await {
            Ok(res) => {
                let res = forwarded(res);
                let status = res.status().as_u16();
                (res, Outcome::Pass { why, status })
            }
            Err(e) => {
                tracing::debug!(error = %e, "backend request failed");
                (
                    respond::upstream_error(&e),
                    Outcome::no_answer(&e, why.fwd()),
                )
            }
        }
    }
}

/// A client that stops sending its body for as long as a head may take is
/// cut off (408), whatever else waits on it. A request without a body, as
/// most GETs, needs no timer.
fn guard_upload<B>(body: B, config: &Config) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let body = body.map_err(Into::into).boxed_unsync();
    if http_body::Body::is_end_stream(&body) {
        return body;
    }
    idle::IdleTimeout::new(body, config.limits.header_timeout, "the client")
        .min_rate(MIN_UPLOAD_RATE)
        .boxed_unsync()
}

/// A forwarded answer as the client gets it: hop-by-hop headers gone, our
/// `Via` added.
fn forwarded(res: Response<ProxyBody>) -> Response<ProxyBody> {
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(SIDECACHE_CACHE_CONTROL);
    append_via(&mut parts.headers);
    Response::from_parts(parts, body)
}
