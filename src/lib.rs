//! sidecache: a caching reverse proxy that runs beside an unchanged backend.
//!
//! # Modules
//!
//! - [`config`]: the YAML file, read into raw structs, `defaults:` merged
//!   into each rule, validated into a typed [`config::Config`].
//! - [`rules`]: plain data: compiled route matching, key and tag templates.
//! - [`redis`]: the one connection to Redis, handed to each feature below.
//! - [`cache`]: entries and their tiers: L1 in memory, the shared L2 behind
//!   the `Store` trait, and `Tiered::lookup`, which owns the cache's policy.
//! - [`invalidation`]: purges, purge times, what writes purge, the bus.
//! - [`ratelimit`]: rate-limit state by rule, local (governor) or global.
//! - [`proxy`]: the request pipeline (below), the upstream client, responses.
//! - [`admin`]: health, readiness, metrics, the dashboard and purges on their own listener.
//! - [`metrics`]: metric names, labels and the Prometheus recorder;
//!   [`offload`]: what the cache saved the backend, per rule.
//! - [`server`]: the accept loop shared by both listeners; [`shutdown`]: signals.
//! - [`app`]: builds the components from a config and runs them; [`reload`]: hot reload.
//! - [`explain`]: what a request would do, from the proxy's own plan.
//!
//! # One request
//!
//! The names are the code's own (`proxy::Proxy::handle` and what it calls).
//!
//! 1. **accept**: [`server`] accepts the connection (HTTP/1.1 or h2c) and
//!    hands each request to `Proxy::handle`, which takes one config
//!    snapshot for the whole request.
//! 2. **sanitize**: the request is made safe to key: hop-by-hop headers
//!    and those `Connection` names go, cookie crumbs are joined, untrusted
//!    forwarding headers dropped, malformed ones refused
//!    (`headers::sanitize_request`); a body that stalls is cut off.
//! 3. **plan**: `Plan::of` decides from the head alone: a `PURGE`, a write,
//!    a pass (no rule, `cache: false`, `Authorization`, outside the rule's
//!    `rollout` share, a key that cannot be rendered exactly) or the cache
//!    with the request's `Keyed` form (rule and key; the backend gets the
//!    query the key was read from). It also names the client key of the
//!    rule's rate limit.
//! 4. **rate limit**: `RateLimits::check` counts the request; over the
//!    limit it is answered 429 before any cache or backend work.
//! 5. **write**: forwarded; on 2xx it purges what `Triggered` renders
//!    from it (keys, tags, its own URL, `Location`) on every replica, then
//!    writes through with the same fill job as a miss.
//! 6. **hit**: `Tiered::lookup` asks L1, then L2 for rules whose tier uses
//!    it, resolves a Vary marker to the request's variant, and asks the
//!    **admission** (the invalidator: purge times against the entry's fetch
//!    time; a refused L1 entry falls through to L2), filling L1 from an
//!    admitted L2 entry; the lookup is counted for `memory.warm.from: hot`.
//!    Fresh: answered at once (a range of it, or a 304), then maybe
//!    refreshed ahead of its end (`refresh_ahead`) or checked against the
//!    backend (`verify`), both in the background. Stale within its
//!    stale-while-revalidate window: answered while one request refreshes
//!    it.
//! 7. **miss**: concurrent misses of the key join one flight (and with
//!    `collapse: global` one Redis lock across replicas); the leader goes
//!    upstream (conditional when a stale entry has a validator; a 304
//!    refreshes it; a failure inside stale-if-error serves it).
//! 8. **fill**: a storable answer (RFC 9111, `storable::decide`) streams
//!    to the client while the tee keeps a copy; when the body ends the
//!    `Fill` job renders its tags and stores it, unless a purge of that
//!    entry happened since the fetch began (**invalidation**).
//! 9. **outcome**: every step returns its response with its `Outcome`;
//!    `handle` sets `Cache-Status`, counts it by rule (and what it saved
//!    the backend, [`offload`]) and logs it.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cache;
pub mod config;
pub mod explain;
pub mod invalidation;
pub mod keyspace;
pub mod metrics;
pub mod offload;
pub mod proxy;
pub mod ratelimit;
pub mod redis;
pub mod reload;
pub mod rules;
pub mod server;
pub mod shutdown;

pub use app::App;
pub use config::Config;
