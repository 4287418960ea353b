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
//! 2. The rule set finds the rule for method, host and path. No rule, `cache: false` or a
//!    non-GET/HEAD method: the request is forwarded as it is, body streamed both ways.
//! 3. The rule's key template is rendered from the request (values escaped).
//! 4. L1 (moka) is asked, then L2 (Redis) for rules whose tier uses it; an L2 hit fills L1.
//!    A fresh entry is answered at once, with `Age`, `Cache-Status`, and a 304 when the
//!    client's validators match.
//! 5. On a miss, concurrent requests for the key join one flight: one goes upstream,
//!    the others wait for its entry.
//! 6. The backend's answer is checked for storability; a storable answer streams to the
//!    client while a copy is kept, and is stored in the rule's tiers when the body ends.

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
pub mod reload;
pub mod rules;
pub mod server;
pub mod shutdown;

pub use app::App;
pub use config::Config;
