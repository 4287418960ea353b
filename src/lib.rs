//! sidecache: a caching reverse proxy that runs beside an unchanged backend.
//!
//! # Modules
//!
//! - [`config`]: the YAML file, read into raw structs, validated into a typed [`config::Config`].
//! - [`rules`]: compiled route matching and key/tag templates.
//! - [`cache`]: entries and their stores — L1 in memory, L2 in Redis, tiered.
//! - [`proxy`]: the request pipeline, the upstream client, response building.
//! - [`admin`]: health, readiness, metrics, the dashboard and purges on their own listener.
//! - [`metrics`]: metric names, outcome labels and the Prometheus recorder.
//! - [`ratelimit`]: per-rule rate limits, local (governor) or global (Redis).
//! - [`server`]: the accept loop shared by both listeners; [`shutdown`]: signals.
//! - [`app`]: builds the components from a config and runs them; [`reload`]: hot reload.
//! - [`explain`]: what a request would do, for `sidecache explain`.
//!
//! # One request
//!
//! 1. [`server`] accepts the connection (HTTP/1.1 or h2c) and hands each request to [`proxy::Proxy::handle`].
//! 2. The request is made safe to key: hop-by-hop headers and those `Connection` names
//!    go, cookie crumbs are joined, untrusted forwarding headers dropped, malformed ones
//!    refused (`proxy::headers::sanitize_request`); a body that stalls is cut off.
//! 3. The rule set finds the rule for method, host and path; its rate limit is counted.
//!    No rule, `cache: false` or a non-GET/HEAD method: the request is forwarded (writes
//!    then purge what they made stale), body streamed both ways.
//! 4. The rule's key template is rendered from the request (values escaped); a request
//!    that cannot be keyed exactly passes. The backend gets the query the key was read from.
//! 5. L1 (moka) is asked, then L2 (Redis) for rules whose tier uses it; an entry a purge
//!    concerns is refused ([`invalidation`]: purge times against the entry's fetch time);
//!    an L2 hit fills L1. A fresh entry is answered at once, with `Age`, `Cache-Status`,
//!    and a 304 when the client's validators match; a stale one within its window is
//!    answered while one request refreshes it.
//! 6. On a miss, concurrent requests for the key join one flight: one goes upstream
//!    (conditional when a stale entry has a validator; a 304 refreshes that entry), the
//!    others wait for its entry.
//! 7. The backend's answer is checked for storability (RFC 9111); a storable answer
//!    streams to the client while a copy is kept, and is stored in the rule's tiers when
//!    the body ends, unless a purge of that entry happened since the fetch began.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cache;
pub mod config;
pub mod explain;
pub mod invalidation;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod redis;
pub mod reload;
pub mod rules;
pub mod server;
pub mod shutdown;

pub use app::App;
pub use config::Config;
