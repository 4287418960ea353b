//! The proxy pipeline: one function per step, in the order a request takes
//! them — match a rule, render the key, look in L1 then L2, collapse
//! concurrent misses, forward, decide storability, stream back while storing.

pub mod collapse;
pub mod headers;
mod idle;
mod range;
pub mod respond;
mod revalidate;
pub mod storable;
mod store;
pub mod tee;
pub mod upstream;
pub mod vary;
mod write;

use std::net::IpAddr;

use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderName, Method, Request, Response, header, request};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

use self::collapse::{Claim, Flights, Global, GlobalLock, Join, Landing};
use self::headers::{
    CacheStatus, Fwd, add_forwarding, append_via, set_cache_status, strip_hop_by_hop,
};
use self::range::Ranged;
use self::revalidate::Prior;
use self::storable::SIDECACHE_CACHE_CONTROL;
use self::store::{Lookup, Store, own_key, prepare};
use self::upstream::Upstream;
use crate::cache::redis::RedisStore;
use crate::cache::tiered::{Found, Tiered};
use crate::cache::{CachedResponse, Entry, Layer, Payload, Store as _, StoredHeaders};
use crate::config::Config;
use crate::invalidation::Invalidator;
use crate::metrics::{self, Outcome};
use crate::ratelimit::{RateLimit, Scope};
use crate::rules::{Bodies, RequestView, Rule, canonical_query, is_canonical};
use tracing::Instrument as _;

/// Bytes a second a request body must average once `limits.header_timeout`
/// has passed (as Apache's `mod_reqtimeout` asks 500): slower is cut off
/// with 408.
const MIN_UPLOAD_RATE: u64 = 500;

/// Error type of bodies crossing the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type in both directions.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Request headers that would make the backend answer with less than the
/// full representation; dropped on cacheable fetches, since the cache
/// answers the client's conditionals itself.
const CONDITIONAL: [HeaderName; 6] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// A body of `bytes`, already in memory.
pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|e| match e {}).boxed_unsync()
}

/// Everything a request needs; shared by all connections.
pub struct Proxy {
    /// Swapped whole on reload; each request works on one snapshot.
    config: ArcSwap<Config>,
    cache: Tiered,
    upstream: Upstream,
    flights: Arc<Flights>,
    invalidator: Arc<Invalidator>,
}

impl Proxy {
    /// A proxy over `config`'s rules and stores.
    pub fn new(config: Arc<Config>, cache: Tiered) -> Self {
        let upstream = Upstream::new(&config.upstream);
        let grace = config
            .redis
            .as_ref()
            .map_or(Duration::ZERO, |r| r.disconnect_grace);
        let budget = crate::invalidation::budget(config.memory.max_size);
        let invalidator = Arc::new(Invalidator::new(
            cache.clone(),
            grace,
            usize::try_from(budget).unwrap_or(usize::MAX),
        ));
        invalidator.set_horizon(config.rules.longest_lifetime());
        Self {
            config: ArcSwap::new(config),
            cache,
            upstream,
            flights: Arc::new(Flights::default()),
            invalidator,
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

    /// The config in effect.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Puts `config` in effect for the requests that start from now on.
    pub(crate) fn swap_config(&self, config: Arc<Config>) {
        self.invalidator
            .set_horizon(config.rules.longest_lifetime());
        self.config.store(config);
    }

    /// Handles one request. Never fails: every problem becomes a response.
    ///
    /// Counts the request by rule and outcome, and with `RUST_LOG` at
    /// debug logs one line per request (method, path without the query,
    /// rule, outcome, status, time to the response head; never headers).
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>, client: IpAddr) -> Response<ProxyBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let start = Instant::now();
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
        let (res, rule) = self.route(req, client).instrument(span.clone()).await;
        let outcome = res
            .extensions()
            .get::<Outcome>()
            .copied()
            .unwrap_or(Outcome::Pass);
        match &rule {
            Some(r) => r.counters().count(outcome),
            None => metrics::no_rule().count(outcome),
        }
        let rule = rule.as_ref().map_or("", |r| r.name.as_str());
        if !span.is_disabled() {
            span.record("rule", rule);
            span.record("outcome", outcome.as_str());
            span.record("status", res.status().as_u16());
            span.record("latency_ms", start.elapsed().as_secs_f64() * 1e3);
            tracing::debug!(parent: &span, "served");
        }
        res
    }

    /// The pipeline; answers with the rule the request matched, if any.
    async fn route<B>(
        self: &Arc<Self>,
        req: Request<B>,
        client: IpAddr,
    ) -> (Response<ProxyBody>, Option<Arc<Rule>>)
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = req.into_parts();
        let config = self.config();
        // A client that stops sending its body for as long as a head may
        // take is cut off (408), whatever else waits on it.
        // (A request without a body, as most GETs, needs no timer.)
        let body = body.map_err(Into::into).boxed_unsync();
        let body = if http_body::Body::is_end_stream(&body) {
            body
        } else {
            idle::IdleTimeout::new(body, config.limits.header_timeout, "the client")
                .min_rate(MIN_UPLOAD_RATE)
                .boxed_unsync()
        };

        // Step 0: what describes the client's connection to us is removed
        // before anything reads the request, so keys, variants and the
        // backend all see one and the same request.
        if let Err((code, why)) = headers::sanitize_request(&mut parts, config.trusts(client)) {
            let status = pass_status(Fwd::Request, "bad-request");
            return (respond::error(code, why, &status), None);
        }
        // PURGE is answered here, whatever the rules say.
        if parts.method.as_str() == "PURGE" {
            return (self.purge_request(&parts, client).await, None);
        }
        // Step 1: match a rule, for any method (a rule may limit writes).
        let host = request_host(&parts);
        // A cacheable request reaches the backend with the query its key
        // is rendered from, so both read the same parameters.
        let cacheable = |parts: &request::Parts| {
            matches!(parts.method, Method::GET | Method::HEAD)
                && parts.uri.query().is_some_and(|q| !is_canonical(q))
                && config
                    .rules
                    .find(&parts.method, &host, parts.uri.path())
                    .is_some_and(|m| m.rule.cache)
        };
        if cacheable(&parts)
            && let Err(why) = canonical_uri(&mut parts)
        {
            let status = pass_status(Fwd::Request, "bad-request");
            return (
                respond::error(http::StatusCode::BAD_REQUEST, why, &status),
                None,
            );
        }
        let found = config.rules.find(&parts.method, &host, parts.uri.path());
        let rule = found.as_ref().map(|m| m.rule.clone());
        // Step 2: the rule's rate limit, before any cache or backend work.
        if let Some(m) = &found
            && let Some(limit) = &m.rule.rate_limit
        {
            let view = RequestView::of(&parts, &host, client);
            // A client whose key renders empty (a header it did not send)
            // is counted by its address, not in one bucket shared by all.
            let key = limit
                .key
                .render(&view, &m.params, Bodies::default())
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| client.to_string());
            if let Some(wait) = self.rate_limited(m.rule, limit, &key).await {
                return (respond::rate_limited(wait), rule);
            }
        }
        // Step 3: writes go their own way (forward, then purge or write
        // through). No rule and `cache: false` are forwarded untouched.
        if !matches!(parts.method, Method::GET | Method::HEAD) {
            return (self.write(parts, body, client, &host, &config).await, rule);
        }
        let lookup = match found {
            None => Err(pass_status(Fwd::Bypass, "no-rule")),
            Some(m) if !m.rule.cache => Err(pass_status(Fwd::Bypass, "rule")),
            Some(m)
                if !m.rule.allow_authorized
                    && parts.headers.contains_key(header::AUTHORIZATION) =>
            {
                Err(pass_status(Fwd::Request, "authorization"))
            }
            // Step 4: render the key. The backend gets the query the key
            // was rendered from, so both read the same parameters.
            Some(m) => {
                let view = RequestView::of(&parts, &host, client);
                prepare(m.rule, &view, &m.params).map_err(|e| pass_status(Fwd::Bypass, e.as_str()))
            }
        };
        let res = match lookup {
            Err(status) => self.pass(parts, body, client, status).await,
            Ok(lookup) => self.cached(parts, client, lookup).await,
        };
        (res, rule)
    }

    /// Counts one request against `limit`; answers how long to wait when
    /// it is over. A global limit that cannot reach Redis counts here.
    async fn rate_limited(&self, rule: &Rule, limit: &RateLimit, key: &str) -> Option<Duration> {
        let wait = match (limit.scope, &self.cache.redis) {
            (Scope::Global, Some(redis)) => {
                let id = format!("{}:{key}", rule.name);
                match redis
                    .rate_limit(&id, limit.interval, limit.burst.get())
                    .await
                {
                    Ok(wait) => wait,
                    Err(_) => limit.check_local(key),
                }
            }
            _ => limit.check_local(key),
        };
        if wait.is_some() {
            ::metrics::counter!(
                metrics::RATE_LIMITED,
                "rule" => rule.name.clone(),
                "scope" => limit.scope.as_str()
            )
            .increment(1);
        }
        wait
    }

    /// Steps 5 to 7: L1, L2, then one upstream request per key.
    async fn cached(
        self: &Arc<Self>,
        parts: request::Parts,
        client: IpAddr,
        lookup: Lookup,
    ) -> Response<ProxyBody> {
        let now = SystemTime::now();
        let tier = lookup.rule.tier;
        let mut fwd = Fwd::UriMiss;
        let mut flight_key = lookup.key.clone();
        // A stale entry: revalidated with a conditional request, and served
        // if the backend fails inside its stale-if-error window.
        let mut prior = None;
        // Range requests are answered from fresh entries only, else forwarded.
        let ranged = parts.headers.contains_key(header::RANGE);
        if let Some(first) = self.cache.get(&lookup.key, tier).await {
            let mut found = match &first.entry.payload {
                Payload::Vary(names) => {
                    flight_key = vary::variant_key(&lookup.key, names, &parts.headers);
                    self.cache.fill_l1(&lookup.key, &first, tier).await;
                    self.cache.get(&flight_key, tier).await
                }
                Payload::Response(_) => Some(first),
            };
            let mut admitted = match &found {
                Some(f) => self.invalidator.admits(f, &lookup.key).await,
                None => false,
            };
            // A refused L1 entry (purged since) falls through to L2, where
            // another replica may already have put the current answer.
            if !admitted && found.as_ref().is_some_and(|f| f.layer == Layer::Memory) {
                let again = self.cache.get_l2(&flight_key, tier).await;
                if let Some(f) = &again {
                    admitted = self.invalidator.admits(f, &lookup.key).await;
                    found = again;
                }
            }
            if let Some(f) = found.as_ref().filter(|_| admitted) {
                self.cache.fill_l1(&flight_key, f, tier).await;
            }
            match found {
                // An entry a purge made stale, or one L1 may no longer vouch
                // for (cut off from purges too long), counts as absent.
                Some(_) if !admitted => {}
                Some(f) if f.entry.is_fresh(now) => {
                    let e = &f.entry;
                    if let Payload::Response(r) = &e.payload {
                        if lookup.rule.sliding {
                            self.slide(&flight_key, e, &lookup, now).await;
                        }
                        if ranged {
                            return self.ranged(parts, client, e, r, hit_status(f.layer)).await;
                        }
                        return respond::from_entry(&parts, e, r, hit_status(f.layer), now);
                    }
                }
                Some(f) => {
                    let overdue = f.entry.overdue(now);
                    if !ranged
                        && overdue <= f.entry.stale_while_revalidate
                        && let Payload::Response(r) = &f.entry.payload
                    {
                        // Serve it now; one background request per key refreshes it.
                        if let Join::Leader(guard) = self.flights.join(&flight_key) {
                            let (this, parts, lookup) =
                                (self.clone(), parts.clone(), lookup.clone());
                            let prior = Prior {
                                entry: f.entry.clone(),
                                serve_on_error: false,
                            };
                            tokio::spawn(async move {
                                let claim = Claim {
                                    guard: Some(guard),
                                    lock: None,
                                };
                                let res = this
                                    .fetch(parts, client, lookup, Fwd::Stale, claim, Some(prior))
                                    .await;
                                // Reading the body to its end is what stores it.
                                let _ = res.into_body().collect().await;
                            });
                        }
                        let status = stale_status(None, "revalidating");
                        return respond::from_entry(&parts, &f.entry, r, status, now);
                    }
                    fwd = Fwd::Stale;
                    prior = Some(Prior {
                        serve_on_error: overdue <= f.entry.stale_if_error,
                        entry: f.entry,
                    });
                }
                None => fwd = Fwd::VaryMiss,
            }
        }
        if ranged {
            // Nothing fresh to cut it from: the backend answers it, as asked.
            return self
                .pass(parts, empty(), client, pass_status(fwd, "range"))
                .await;
        }
        let guard = match self.flights.join(&flight_key) {
            Join::Leader(guard) => Some(guard),
            Join::Follower(rx) => {
                let wait = self.upstream.timeout();
                if let Landing::Stored { key, entry } = collapse::wait(rx, wait).await
                    && let Payload::Response(r) = &entry.payload
                    && own_key(&lookup.key, r, &parts) == key
                {
                    let status = CacheStatus {
                        fwd: Some(fwd),
                        collapsed: true,
                        ..Default::default()
                    };
                    return respond::from_entry(&parts, &entry, r, status, SystemTime::now());
                }
                None
            }
        };
        // Across replicas: one backend request per key, through a Redis lock.
        let mut lock = None;
        // (A memory-only rule never fills Redis, so there is nothing to wait for.)
        if guard.is_some()
            && lookup.rule.collapse_global
            && tier.uses_redis()
            && let Some(redis) = &self.cache.redis
        {
            match self
                .collapse_globally(redis, &flight_key, &lookup, &parts)
                .await
            {
                Global::Lead(l) => lock = Some(l),
                Global::Filled(entry) => {
                    if let Payload::Response(r) = &entry.payload {
                        // A varying answer belongs under its variant key,
                        // never under the primary one.
                        let stored_key = own_key(&lookup.key, r, &parts);
                        self.cache
                            .fill_l1(
                                &stored_key,
                                &Found {
                                    entry: entry.clone(),
                                    layer: Layer::Redis,
                                    l1_since_ms: 0,
                                },
                                tier,
                            )
                            .await;
                        let status = CacheStatus {
                            fwd: Some(fwd),
                            collapsed: true,
                            ..Default::default()
                        };
                        let res = respond::from_entry(&parts, &entry, r, status, SystemTime::now());
                        if let Some(g) = guard {
                            g.land(Landing::Stored {
                                key: stored_key,
                                entry,
                            });
                        }
                        return res;
                    }
                }
                Global::Alone => {}
            }
        }
        self.fetch(parts, client, lookup, fwd, Claim { guard, lock }, prior)
            .await
    }

    /// A Range request on a fresh entry: a part of it, all of it, a 416,
    /// or, for what it cannot answer, the backend.
    async fn ranged(
        &self,
        parts: request::Parts,
        client: IpAddr,
        entry: &Entry,
        stored: &CachedResponse,
        status: CacheStatus,
    ) -> Response<ProxyBody> {
        let now = SystemTime::now();
        match range::plan(&parts.headers, stored) {
            Ranged::Whole => respond::from_entry(&parts, entry, stored, status, now),
            Ranged::Part { start, end } => {
                respond::from_entry_part(&parts, entry, stored, status, now, Some((start, end)))
            }
            Ranged::Unsatisfiable => {
                respond::from_entry_part(&parts, entry, stored, status, now, None)
            }
            Ranged::Forward => {
                self.pass(parts, empty(), client, pass_status(Fwd::Request, "range"))
                    .await
            }
        }
    }

    /// Takes the key's Redis lock, or waits for the replica holding it to
    /// fill L2 (see [`collapse`]).
    async fn collapse_globally(
        &self,
        redis: &RedisStore,
        key: &str,
        lookup: &Lookup,
        parts: &request::Parts,
    ) -> Global {
        let ttl = self.upstream.timeout() + Duration::from_secs(1);
        match GlobalLock::take(redis, key, ttl).await {
            Ok(Some(lock)) => return Global::Lead(Box::new(lock)),
            Ok(None) => {}
            Err(()) => return Global::Alone,
        }
        let deadline = tokio::time::Instant::now() + ttl;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(collapse::GLOBAL_POLL).await;
            if let Some(entry) = self.filled(redis, key, lookup, parts).await {
                return Global::Filled(entry);
            }
            if !matches!(redis.is_locked(key).await, Ok(true)) {
                // Released without a value (unstorable or failed), or Redis
                // trouble: one last look, then fetch alone.
                return self
                    .filled(redis, key, lookup, parts)
                    .await
                    .map_or(Global::Alone, Global::Filled);
            }
        }
        Global::Alone
    }

    /// A fresh, admitted entry another replica put in L2 for this request.
    async fn filled(
        &self,
        redis: &RedisStore,
        key: &str,
        lookup: &Lookup,
        parts: &request::Parts,
    ) -> Option<Arc<Entry>> {
        let mut entry = redis.get(key).await.ok()??;
        if let Payload::Vary(names) = &entry.payload {
            let variant = vary::variant_key(&lookup.key, names, &parts.headers);
            entry = redis.get(&variant).await.ok()??;
        }
        let found = Found {
            entry,
            layer: Layer::Redis,
            l1_since_ms: 0,
        };
        (found.entry.is_fresh(SystemTime::now())
            && self.invalidator.admits(&found, &lookup.key).await)
            .then_some(found.entry)
    }

    /// A hit on a `sliding` rule: the entry is stored again as if fresh
    /// now, in every tier of the rule, so its expiry moves out by the TTL.
    async fn slide(&self, key: &str, entry: &Entry, lookup: &Lookup, now: SystemTime) {
        let renewed = Arc::new(Entry {
            stored_at: now,
            ..entry.clone()
        });
        self.cache.put(key, renewed, lookup.rule.tier).await;
    }

    /// Step 8: forward a cacheable request (conditional when a stale entry
    /// has validators), decide storability, and stream the answer back
    /// while a copy goes to the cache.
    async fn fetch(
        &self,
        parts: request::Parts,
        client: IpAddr,
        lookup: Lookup,
        fwd: Fwd,
        claim: Claim,
        prior: Option<Prior>,
    ) -> Response<ProxyBody> {
        let mut up = parts.clone();
        // HEAD is fetched as GET so the entry can serve both.
        up.method = Method::GET;
        for name in &CONDITIONAL {
            up.headers.remove(name);
        }
        up.headers.remove(header::CONTENT_LENGTH);
        // Headers some backends act on that the key does not describe: a
        // cached GET must reach the backend as the GET it was keyed as.
        for name in headers::UNKEYED {
            up.headers.remove(name);
        }
        strip_hop_by_hop(&mut up.headers);
        add_forwarding(&mut up.headers, client);
        let conditional = prior
            .as_ref()
            .is_some_and(|p| p.make_conditional(&mut up.headers));
        let mut status = CacheStatus {
            fwd: Some(fwd),
            ..Default::default()
        };
        // A purge of this entry from now on may concern what the backend is
        // about to send; such an answer is passed on but not stored.
        let fetched = self.invalidator.fetch_started();
        let on_error = prior.as_ref().filter(|p| p.serve_on_error);
        let res = match self.upstream.send(Request::from_parts(up, empty())).await {
            Ok(res) => res,
            Err(e) => {
                tracing::warn!(rule = %lookup.rule.name, error = %e, "backend fetch failed");
                if let Some(stale) = on_error {
                    return serve_stale(&parts, &stale.entry, None);
                }
                return respond::upstream_error(&e, status);
            }
        };
        let (mut res_parts, body) = res.into_parts();
        let framed = framed(&res_parts);
        strip_hop_by_hop(&mut res_parts.headers);
        status.fwd_status = Some(res_parts.status.as_u16());
        if res_parts.status.is_server_error()
            && let Some(stale) = on_error
        {
            return serve_stale(&parts, &stale.entry, Some(res_parts.status.as_u16()));
        }
        if conditional
            && res_parts.status == http::StatusCode::NOT_MODIFIED
            && let Some(prior) = prior
        {
            return self.revalidated(
                parts, client, lookup, &prior, &res_parts, status, claim, fetched,
            );
        }
        let now = SystemTime::now();
        let storable = storable::decide(&lookup.rule, &parts, &res_parts, now).and_then(|fresh| {
            if framed {
                Ok(fresh)
            } else {
                Err(storable::NoStore::Unframed)
            }
        });
        let storing = storable.is_ok();
        let body = match storable {
            Err(reason) => {
                status.detail = Some(reason.as_str());
                drop(claim);
                body
            }
            Ok(fresh) => {
                status.stored = true;
                let left = fresh
                    .ttl
                    .saturating_sub(now.duration_since(fresh.stored_at).unwrap_or_default());
                status.ttl = Some(i64::try_from(left.as_secs()).unwrap_or(i64::MAX));
                let limit = usize::try_from(lookup.rule.max_object_size).unwrap_or(usize::MAX);
                let store =
                    self.store_job(&parts, client, lookup, &res_parts, fresh, claim, fetched);
                // A body still coming when a store could no longer be
                // trusted (see TOMBSTONE) is passed on but not kept.
                let deadline = std::time::Instant::now() + crate::cache::redis::TOMBSTONE;
                tee::TeeBody::new(body, limit, Box::new(move |copy| store.finish(copy)))
                    .until(deadline)
                    .boxed_unsync()
            }
        };
        let body = if parts.method == Method::HEAD {
            if storing {
                // The entry still needs the whole body: the tee keeps its
                // copy (up to the size cap) while this drains the frames.
                let mut body = body;
                tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
            }
            empty()
        } else {
            body
        };
        res_parts.headers.remove(SIDECACHE_CACHE_CONTROL);
        append_via(&mut res_parts.headers);
        set_cache_status(&mut res_parts.headers, &mut res_parts.extensions, &status);
        Response::from_parts(res_parts, body)
    }

    /// What storing an answer needs once its body is in.
    #[allow(clippy::too_many_arguments)]
    fn store_job(
        &self,
        parts: &request::Parts,
        client: IpAddr,
        lookup: Lookup,
        res: &http::response::Parts,
        fresh: storable::Freshness,
        claim: Claim,
        fetched: u64,
    ) -> Store {
        let mut headers = res.headers.clone();
        headers.remove(header::AGE);
        Store {
            cache: self.cache.clone(),
            invalidator: self.invalidator.clone(),
            request: store::Snapshot::of(
                &RequestView::of(parts, &request_host(parts), client),
                &[],
            ),
            lookup,
            status: res.status,
            headers,
            fresh,
            guard: claim.guard,
            fetched,
            lock: claim.lock,
        }
    }

    /// The backend answered a conditional fetch with 304: the stale entry
    /// is current. Its headers are updated from the 304, its freshness
    /// worked out again, and it is stored again and answered (a 304 to a
    /// client whose own validators match).
    #[allow(clippy::too_many_arguments)]
    fn revalidated(
        &self,
        parts: request::Parts,
        client: IpAddr,
        lookup: Lookup,
        prior: &Prior,
        not_modified: &http::response::Parts,
        mut status: CacheStatus,
        claim: Claim,
        fetched: u64,
    ) -> Response<ProxyBody> {
        let Some(old) = prior.response() else {
            return respond::error(
                http::StatusCode::BAD_GATEWAY,
                "the backend answered 304 to an unconditional request",
                &status,
            );
        };
        let head = revalidate::updated_head(old, &not_modified.headers);
        let now = SystemTime::now();
        status.revalidated = true;
        let (entry, fresh) = match storable::decide(&lookup.rule, &parts, &head, now) {
            Ok(fresh) => (
                fresh.entry(
                    fetched,
                    Payload::Response(CachedResponse {
                        status: old.status,
                        headers: StoredHeaders::from_map(&head.headers),
                        body: old.body.clone(),
                        tags: old.tags.clone(),
                    }),
                ),
                Some(fresh),
            ),
            Err(reason) => {
                status.detail = Some(reason.as_str());
                let entry = Entry {
                    stored_at: now,
                    ttl: Duration::ZERO,
                    payload: Payload::Response(CachedResponse {
                        headers: StoredHeaders::from_map(&head.headers),
                        ..old.clone()
                    }),
                    ..(*prior.entry).clone()
                };
                (entry, None)
            }
        };
        match fresh {
            Some(fresh) => {
                status.stored = true;
                let body = old.body.clone();
                self.store_job(&parts, client, lookup, &head, fresh, claim, fetched)
                    .finish(Some(body));
            }
            None => drop(claim),
        }
        let Payload::Response(r) = &entry.payload else {
            return respond::error(http::StatusCode::BAD_GATEWAY, "no entry", &status);
        };
        respond::from_entry(&parts, &entry, r, status, now)
    }

    /// Forwards a request that is not answered from cache, streaming both ways.
    async fn pass(
        &self,
        mut parts: request::Parts,
        body: ProxyBody,
        client: IpAddr,
        mut status: CacheStatus,
    ) -> Response<ProxyBody> {
        strip_hop_by_hop(&mut parts.headers);
        add_forwarding(&mut parts.headers, client);
        match self.upstream.send(Request::from_parts(parts, body)).await {
            Ok(res) => {
                let (res_parts, body) = forwarded(res, &mut status);
                Response::from_parts(res_parts, body)
            }
            Err(e) => {
                tracing::warn!(error = %e, "backend request failed");
                respond::upstream_error(&e, status)
            }
        }
    }
}

fn hit_status(layer: Layer) -> CacheStatus {
    CacheStatus {
        hit: true,
        detail: Some(layer.as_str()),
        ..Default::default()
    }
}

/// A forwarded answer as the client gets it: hop-by-hop headers gone, our
/// `Via` and `Cache-Status` (with the backend's status) added.
fn forwarded(
    res: Response<ProxyBody>,
    status: &mut CacheStatus,
) -> (http::response::Parts, ProxyBody) {
    let (mut parts, body) = res.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(SIDECACHE_CACHE_CONTROL);
    append_via(&mut parts.headers);
    status.fwd_status = Some(parts.status.as_u16());
    set_cache_status(&mut parts.headers, &mut parts.extensions, status);
    (parts, body)
}

/// `Cache-Status` of a stale answer.
fn stale_status(fwd_status: Option<u16>, detail: &'static str) -> CacheStatus {
    CacheStatus {
        hit: true,
        fwd: Some(Fwd::Stale),
        fwd_status,
        detail: Some(detail),
        ..Default::default()
    }
}

/// Answers from an expired entry because the backend failed (stale-if-error).
fn serve_stale(
    parts: &request::Parts,
    stale: &Entry,
    fwd_status: Option<u16>,
) -> Response<ProxyBody> {
    match &stale.payload {
        Payload::Response(r) => respond::from_entry(
            parts,
            stale,
            r,
            stale_status(fwd_status, "stale-if-error"),
            SystemTime::now(),
        ),
        Payload::Vary(_) => respond::error(
            http::StatusCode::BAD_GATEWAY,
            "the backend failed",
            &stale_status(fwd_status, "stale-if-error"),
        ),
    }
}

fn pass_status(fwd: Fwd, detail: &'static str) -> CacheStatus {
    CacheStatus {
        fwd: Some(fwd),
        detail: Some(detail),
        ..Default::default()
    }
}

/// Whether the backend said where its body ends (a length, chunked, or a
/// status without a body); if not, the body ends when the connection
/// closes, and a cut-short one looks whole, so it is never stored.
fn framed(res: &http::response::Parts) -> bool {
    let chunked = res
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
        });
    matches!(res.status.as_u16(), 204 | 304)
        || chunked
        || res.headers.contains_key(header::CONTENT_LENGTH)
}

/// Rewrites the request's query in the canonical form keys read it in
/// ([`canonical_query`]).
fn canonical_uri(parts: &mut request::Parts) -> Result<(), &'static str> {
    let Some(query) = parts.uri.query() else {
        return Ok(());
    };
    let canonical = canonical_query(query);
    let text = format!("{}?{canonical}", parts.uri.path());
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.path_and_query =
        Some(http::uri::PathAndQuery::try_from(text).map_err(|_| "the query cannot be read")?);
    parts.uri = http::Uri::from_parts(uri).map_err(|_| "the URI cannot be read")?;
    Ok(())
}

/// The request's host, lower-cased, without port: the Host header (HTTP/1)
/// or the URI authority (HTTP/2).
pub fn request_host(parts: &request::Parts) -> String {
    let raw = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let no_port = match raw.rfind(':') {
        Some(i)
            if !raw[i + 1..].is_empty()
                && raw[i + 1..].bytes().all(|b| b.is_ascii_digit())
                && !raw.ends_with(']') =>
        {
            &raw[..i]
        }
        _ => raw,
    };
    no_port.to_ascii_lowercase()
}
