//! Serde mirror of the YAML file: every field optional where the file may
//! omit it, unknown fields rejected, and each scalar kept with its line and
//! column so that validation errors can point at it.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A value with the place in the file it came from.
pub type Sp<T> = Spanned<T>;

/// The whole file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<Sp<String>>,
    pub upstream: RawUpstream,
    pub admin: Option<RawAdmin>,
    pub memory: Option<RawMemory>,
    pub redis: Option<RawRedis>,
    pub limits: Option<RawLimits>,
    pub defaults: Option<Sp<RawRule>>,
    #[serde(default)]
    pub rules: Vec<Sp<RawRule>>,
}

/// `upstream:` — the backend sidecache sits in front of.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Sp<String>,
    pub connect_timeout: Option<Sp<String>>,
    pub timeout: Option<Sp<String>>,
    pub max_concurrency: Option<Sp<u64>>,
    pub queue: Option<Sp<u64>>,
}

/// `limits:` — what one client may ask of the proxy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub header_timeout: Option<Sp<String>>,
    pub max_header_bytes: Option<Sp<String>>,
    pub max_headers: Option<Sp<u64>>,
    pub max_body: Option<Sp<String>>,
    pub max_connections: Option<Sp<u64>>,
    pub shutdown_grace: Option<Sp<String>>,
}

/// `admin:` — the separate admin listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Sp<String>>,
    pub token: Option<Sp<String>>,
}

/// `memory:` — the L1 bounds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMemory {
    pub max_size: Option<Sp<String>>,
    pub max_object_size: Option<Sp<String>>,
}

/// `redis:` — the optional shared L2.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Sp<String>,
    pub key_prefix: Option<Sp<String>>,
    pub timeout: Option<Sp<String>>,
    pub disconnect_grace: Option<Sp<String>>,
}

/// One rule, or `defaults:` (which may carry every field but `name` and `match`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<Sp<String>>,
    #[serde(rename = "match")]
    pub matcher: Option<Sp<RawMatch>>,
    pub cache: Option<Sp<bool>>,
    pub key: Option<Sp<String>>,
    pub ttl: Option<Sp<String>>,
    pub tier: Option<Sp<String>>,
    pub tags: Option<Vec<Sp<String>>>,
    pub origin_tags: Option<Sp<bool>>,
    pub invalidate_on: Option<Vec<Sp<String>>>,
    pub sliding: Option<Sp<bool>>,
    pub write_through: Option<Sp<RawWriteThrough>>,
    pub stale_while_revalidate: Option<Sp<String>>,
    pub stale_if_error: Option<Sp<String>>,
    pub stale: Option<Sp<String>>,
    pub collapse: Option<Sp<String>>,
    pub warm_on: Option<Vec<Sp<String>>>,
    pub rate_limit: Option<Sp<RawRateLimit>>,
    pub statuses: Option<Vec<Sp<u16>>>,
    pub max_object_size: Option<Sp<String>>,
    pub allow_set_cookie: Option<Sp<bool>>,
    pub allow_authorized: Option<Sp<bool>>,
    pub allow_private: Option<Sp<bool>>,
}

/// `match:` of a rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub methods: Option<Vec<Sp<String>>>,
    pub path: Sp<String>,
    pub host: Option<Sp<String>>,
}

/// `write_through:` of a rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWriteThrough {
    pub methods: Vec<Sp<String>>,
    pub publish: Option<Sp<String>>,
}

/// `rate_limit:` of a rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub key: Sp<String>,
    pub rate: Sp<String>,
    pub burst: Option<Sp<u32>>,
    pub scope: Option<Sp<String>>,
}
