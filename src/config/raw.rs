//! Serde mirror of the YAML file: every field optional where the file may
//! omit it, unknown fields rejected, and each scalar kept with its line and
//! column so that validation errors can point at it.

use std::borrow::Cow;
use std::ops::Deref;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A value with the place in the file it came from. In the JSON Schema it
/// is just the value.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Sp<T>(pub Spanned<T>);

impl<T> Deref for Sp<T> {
    type Target = Spanned<T>;

    fn deref(&self) -> &Spanned<T> {
        &self.0
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// The whole file, as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address the proxy listens on, `host:port`. Default `0.0.0.0:8080`.
    pub listen: Option<Sp<String>>,
    /// The backend sidecache sits in front of.
    pub upstream: RawUpstream,
    /// The admin listener: health, metrics, dashboard, purge, reload.
    pub admin: Option<RawAdmin>,
    /// L1, the in-process memory tier.
    pub memory: Option<RawMemory>,
    /// L2, Redis shared by every replica. Without it every replica has its own L1 and purges stay local.
    pub redis: Option<Sp<RawRedis>>,
    /// This replica's region (e.g. `eu`), with `regions`: every purge made here reaches them.
    pub region: Option<Sp<String>>,
    /// The other regions, by name, each with its own Redis; purges made in any region are applied in all of them.
    pub regions: Option<Sp<std::collections::BTreeMap<String, Sp<RawRegion>>>>,
    /// How purges are applied.
    pub invalidation: Option<RawInvalidation>,
    /// What is logged per request.
    pub log: Option<RawLog>,
    /// What one client may ask of the proxy.
    pub limits: Option<RawLimits>,
    /// Addresses (CIDRs, e.g. `10.0.0.0/8`) of proxies in front whose `X-Forwarded-Proto` / `X-Forwarded-Host` are kept; from anyone else they are replaced.
    pub trusted_proxies: Option<Vec<Sp<String>>>,
    /// Values every rule takes unless it sets its own (any rule field but `name` and `match`).
    pub defaults: Option<Sp<RawRule>>,
    /// The cache rules; the most specific path wins, then file order.
    #[serde(default)]
    pub rules: Vec<Sp<RawRule>>,
}

/// `upstream:` — the backend sidecache sits in front of.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Base URL of the backend, `http://host:port` or `https://host:port`.
    pub url: Sp<String>,
    /// Duration, e.g. `1s`.
    pub connect_timeout: Option<Sp<String>>,
    /// Time allowed for the backend's response head, e.g. `10s`.
    pub timeout: Option<Sp<String>>,
    /// Requests the backend works on at once; more wait in the queue.
    pub max_concurrency: Option<Sp<u64>>,
    /// Requests that may wait for a backend slot; beyond it the client gets 503.
    pub queue: Option<Sp<u64>>,
    /// For `https://`: a PEM file of the CA certificates to trust instead of the system's.
    pub ca: Option<Sp<String>>,
    /// For `https://`: a PEM certificate chain to present to the backend.
    pub client_cert: Option<Sp<String>>,
    /// For `https://`: the PEM private key of `client_cert`.
    pub client_key: Option<Sp<String>>,
    /// The `Host` (and `X-Forwarded-Host`) the backend gets on a cacheable fetch whose key does not hold `{host}`, e.g. `shop.example`; default: the rule's `match.host` when it names one host, else the URL's host and port.
    pub host: Option<Sp<String>>,
}

/// `limits:` — what one client may ask of the proxy.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Time allowed for a request's headers (against slow clients), e.g. `10s`.
    pub header_timeout: Option<Sp<String>>,
    /// Size, e.g. `64KiB`.
    pub max_header_bytes: Option<Sp<String>>,
    /// Number of request headers allowed.
    pub max_headers: Option<Sp<u64>>,
    /// Largest request body, e.g. `10MiB`.
    pub max_body: Option<Sp<String>>,
    /// Open client connections; at the cap, accepting waits.
    pub max_connections: Option<Sp<u64>>,
    /// Warm fetches (`warm_on`) in flight at once on this replica; more are dropped and counted. Default 16.
    pub warm_in_flight: Option<Sp<u64>>,
    /// Consistency checks (`verify`) in flight at once on this replica; more are skipped and counted. Default 4.
    pub verify_in_flight: Option<Sp<u64>>,
    /// How long in-flight requests may finish after SIGTERM, e.g. `10s`.
    pub shutdown_grace: Option<Sp<String>>,
    /// A connection (HTTP/1.1 or HTTP/2) on which no request started for this long is closed once its requests are done, e.g. `60s`; the first request must start within `header_timeout`.
    pub idle_timeout: Option<Sp<String>>,
}

/// `admin:` — the separate admin listener.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of the admin listener, `host:port`.
    pub listen: Option<Sp<String>>,
    /// Bearer token for purge and reload; `${VAR}` reads it from the environment.
    pub token: Option<Sp<String>>,
    /// Whether `PURGE /url` with the token is answered on the proxy port (default true); turn it off when that port is public.
    pub purge_on_proxy_port: Option<Sp<bool>>,
}

/// `memory:` — the L1 bounds.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMemory {
    /// L1 limit in bytes, e.g. `256MiB`.
    pub max_size: Option<Sp<String>>,
    /// Largest response kept, e.g. `1MiB`.
    pub max_object_size: Option<Sp<String>>,
    /// Fill L1 before turning ready: `{ from: hot, top: 1000 }` copies the keys hottest across replicas from Redis; `{ urls: path/to/file }` fetches each URL of the file (one per line) through the pipeline on start and on reload.
    pub warm: Option<Sp<RawWarmUp>>,
}

/// `memory.warm:` — what a starting replica fetches before it is ready.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWarmUp {
    /// `hot`: fill L1 from Redis with the keys most asked for across replicas (of rules with `tier: both`). Needs `redis:`.
    pub from: Option<Sp<String>>,
    /// With `from: hot`, how many keys to copy (default 1000).
    pub top: Option<Sp<u64>>,
    /// A file of URLs or paths (`/products/1`, `http://shop.local/products/2`), one per line; `#` starts a comment.
    pub urls: Option<Sp<String>>,
    /// How long readiness waits for the warm-up, e.g. `10s` (the default); then the replica turns ready anyway.
    pub timeout: Option<Sp<String>>,
}

/// `verify:` — consistency sampling.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    /// The share of hits checked, e.g. `1%` (from 0.01% to 100%).
    pub sample: Sp<String>,
    /// JSON fields left out of the comparison, dotted (`meta.request_id`).
    #[serde(default)]
    pub ignore: Vec<Sp<String>>,
    /// Purge the entry (on every replica) when the backend's answer differs.
    pub purge_on_mismatch: Option<Sp<bool>>,
}

/// `rollout:` — which share of requests use the cache.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// The share that uses the cache, from 0 to 100 (steps of 0.01).
    pub percent: Sp<f64>,
    /// What a user is told apart by, e.g. `{cookie.session_id}`; the client address when it renders empty or is left out.
    pub by: Option<Sp<String>>,
}

/// `redis:` — the optional shared L2.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// One server: `redis://host:port`, `rediss://...` or `redis+unix:///path`.
    pub url: Option<Sp<String>>,
    /// A Redis Cluster instead of `url`: some of its nodes (`redis://host:port`
    /// or `rediss://...`); the rest are discovered.
    pub cluster: Option<Sp<Vec<Sp<String>>>>,
    /// Prefix of every key sidecache writes.
    pub key_prefix: Option<Sp<String>>,
    /// Time allowed per Redis command, e.g. `50ms`; then it counts as a miss.
    pub timeout: Option<Sp<String>>,
    /// How long L1 entries are trusted once cut off from purge announcements.
    pub disconnect_grace: Option<Sp<String>>,
    /// For `rediss://`: a PEM file of the CA certificates to trust instead of the system's.
    pub ca: Option<Sp<String>>,
}

/// One entry of `regions:`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRegion {
    /// That region's Redis: a URL (`redis://host:port`), or the same map as `redis:` (`cluster:` seed nodes, `key_prefix`, `timeout`, `ca`).
    pub redis: Sp<RawRegionRedis>,
}

/// A region's Redis: a URL, or a map like `redis:`.
#[derive(Debug, JsonSchema)]
#[serde(untagged)]
pub enum RawRegionRedis {
    /// One server's URL.
    Url(String),
    /// The same fields as `redis:`.
    Map(Box<RawRedis>),
}

impl<'de> Deserialize<'de> for RawRegionRedis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        str_or_map(
            d,
            "a Redis URL, or a map with `url` or `cluster`",
            RawRegionRedis::Url,
            |r| RawRegionRedis::Map(Box::new(r)),
        )
    }
}

/// A value written as a string (`plain`) or as a map (`M`'s fields, `map`).
/// By hand rather than `untagged`, which would buffer the map and lose the
/// places of its fields.
fn str_or_map<'de, D, T, M>(
    d: D,
    expecting: &'static str,
    plain: fn(String) -> T,
    map: fn(M) -> T,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    M: Deserialize<'de>,
{
    struct Either<T, M> {
        expecting: &'static str,
        plain: fn(String) -> T,
        map: fn(M) -> T,
    }
    impl<'de, T, M: Deserialize<'de>> serde::de::Visitor<'de> for Either<T, M> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            Ok((self.plain)(v.to_owned()))
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            M::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(self.map)
        }
    }
    d.deserialize_any(Either {
        expecting,
        plain,
        map,
    })
}

/// One `warm_on` entry: a string, or a map that may forward credentials.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum RawWarm {
    /// `"METHOD /trigger/{param} -> /target/{param}"`.
    Plain(String),
    /// The same with what the warm fetch carries of the write.
    Map(RawWarmMap),
}

/// `warm_on: [{ on, forward }]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWarmMap {
    /// `"METHOD /trigger/{param} -> /target/{param}"`.
    pub on: String,
    /// What of the write the warm fetch carries: `cookie`, `authorization`.
    #[serde(default)]
    pub forward: Vec<String>,
}

impl<'de> Deserialize<'de> for RawWarm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        str_or_map(
            d,
            "\"METHOD /path -> /target\", or a map with `on` and `forward`",
            RawWarm::Plain,
            RawWarm::Map,
        )
    }
}

/// `compress:`: `true`, `false`, or the codings, first one stored.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum RawCompress {
    /// On (`[gzip, br]`) or off.
    Flag(bool),
    /// The codings: `gzip`, `br`.
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for RawCompress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawCompress;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or a list of codings such as [gzip]")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawCompress, E> {
                Ok(RawCompress::Flag(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawCompress, A::Error> {
                let mut list = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    list.push(s);
                }
                Ok(RawCompress::List(list))
            }
        }
        d.deserialize_any(V)
    }
}

/// One `invalidate_on` entry: a string, or a map naming what the write
/// changed.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum RawTrigger {
    /// `"METHOD /path/{param}"`: the rule's key and all its tags.
    Plain(String),
    /// The rule's key, and the keys and tags it names.
    Map(RawTriggerMap),
}

/// `invalidate_on: [{ on, keys, tags, if_changed }]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTriggerMap {
    /// `"METHOD /path/{param}"`.
    pub on: String,
    /// Further keys to purge; templates that may read `{request.x}`, `{response.x}` and `{previous.x}` (the written resource's cached answer from before the write).
    #[serde(default)]
    pub keys: Vec<String>,
    /// The tags to purge (instead of the rule's own), templates as `keys`; `{response.items[*].id}` gives one per element.
    #[serde(default)]
    pub tags: Vec<String>,
    /// JSON fields: purge `keys` and `tags` only when one of them differs between the answer from before the write and the write's, e.g. `[category_id]`.
    #[serde(default)]
    pub if_changed: Vec<String>,
}

impl<'de> Deserialize<'de> for RawTrigger {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        str_or_map(
            d,
            "\"METHOD /path\", or a map with `on`, `keys`, `tags` and `if_changed`",
            RawTrigger::Plain,
            RawTrigger::Map,
        )
    }
}

/// `invalidation:` — how purges are applied.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawInvalidation {
    /// Apply every purge once more after this delay (e.g. `2s`), in every region: undoes a refill from a database replica that had not seen the write yet.
    pub repeat_after: Option<Sp<String>>,
    /// With `regions`: how many of this region's purges are kept in Redis for the other regions to catch up (default 100000). A region cut off for longer drops its cache when it is back.
    pub region_log: Option<Sp<u64>>,
}

/// `log:` — what is logged per request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// The access log, one line per request at info level: `all`, `errors` (answers of 500 and over, and requests refused or failed; the default), `off`, or a share such as `1%`.
    pub access: Option<Sp<String>>,
}

/// One rule, or `defaults:` (which may carry every field but `name` and `match`).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// Unique; labels metrics, logs and Cache-Status.
    pub name: Option<Sp<String>>,
    /// Which requests the rule covers.
    #[serde(rename = "match")]
    pub matcher: Option<Sp<RawMatch>>,
    /// `false`: always forwarded (still a trigger).
    pub cache: Option<Sp<bool>>,
    /// Key template, e.g. `product:{id}`; placeholders `{param}`, `{query.x}`, `{header.x}`, `{cookie.x}`, `{host}`, `{path}`.
    pub key: Option<Sp<String>>,
    /// A duration (`24h`) or `origin` (freshness from the backend's headers).
    pub ttl: Option<Sp<String>>,
    /// Where entries live.
    #[schemars(extend("enum" = ["memory", "redis", "both", null]))]
    pub tier: Option<Sp<String>>,
    /// Tag templates; a purge of a tag removes every entry carrying it.
    pub tags: Option<Vec<Sp<String>>>,
    /// Also take tags from the backend's `Surrogate-Key` / `Cache-Tag` header.
    pub origin_tags: Option<Sp<bool>>,
    /// Writes that purge this rule's key and tags: `"PUT /products/{id}"`, or `{ on, keys, tags, if_changed }` naming what the write changed.
    pub invalidate_on: Option<Vec<Sp<RawTrigger>>>,
    /// Each hit pushes the expiry out by the TTL again.
    pub sliding: Option<Sp<bool>>,
    /// Refresh an entry in the background when it is requested in the last part of its life, e.g. `10%`: a hot key then never expires into a miss.
    pub refresh_ahead: Option<Sp<String>>,
    /// Writes whose 2xx answer becomes the cached entry.
    pub write_through: Option<Sp<RawWriteThrough>>,
    /// Window after expiry in which the stale entry is served while one request refreshes it.
    pub stale_while_revalidate: Option<Sp<String>>,
    /// Window after expiry in which the stale entry is served when the backend fails.
    pub stale_if_error: Option<Sp<String>>,
    /// `never` forbids stale answers.
    #[schemars(extend("enum" = ["never", null]))]
    pub stale: Option<Sp<String>>,
    /// Key placeholders that may render empty, e.g. `[query.page]`; any other that is missing or empty makes the request pass uncached.
    pub allow_empty: Option<Vec<Sp<String>>>,
    /// Query parameters dropped before keying and forwarding, as globs: `[utm_*, gclid, fbclid]`.
    pub ignore_query: Option<Vec<Sp<String>>>,
    /// More request headers a cacheable fetch sends the backend: `{ headers: [x-device] }`; each joins the key (as a Vary variant).
    pub forward: Option<Sp<RawForward>>,
    /// How long a stale entry with a validator (`ETag` / `Last-Modified`) is kept to be revalidated with a conditional request (default: the entry's TTL).
    pub keep_for_revalidation: Option<Sp<String>>,
    /// One backend request per key per replica (`local`) or across replicas (`global`).
    #[schemars(extend("enum" = ["local", "global", null]))]
    pub collapse: Option<Sp<String>>,
    /// Compare a share of hits with the backend's answer in the background: `{ sample: 1%, ignore: [served_at, meta.request_id], purge_on_mismatch: false }`.
    pub verify: Option<Sp<RawVerify>>,
    /// Use the cache for a share of users only: `{ percent: 5, by: "{cookie.session_id}" }`; the rest are forwarded as with `cache: false`.
    pub rollout: Option<Sp<RawRollout>>,
    /// Writes that warm this rule's cache: `"POST /login -> /recommendations/{response.user_id}"`, or `{ on: "...", forward: [cookie, authorization] }` to send the write's cookies or Authorization with the warm fetch.
    pub warm_on: Option<Vec<Sp<RawWarm>>>,
    /// Requests per client allowed through this rule; over it, 429.
    pub rate_limit: Option<Sp<RawRateLimit>>,
    /// Status codes that may be stored (default 200, 203, 204, 300, 301, 404, 410).
    pub statuses: Option<Vec<Sp<u16>>>,
    /// Largest response kept under this rule, e.g. `512KiB`.
    pub max_object_size: Option<Sp<String>>,
    /// Refused: it replayed one visitor's Set-Cookie to every other. Use `set_cookie: strip`.
    #[schemars(skip)]
    pub allow_set_cookie: Option<Sp<bool>>,
    /// An answer that sets a cookie: not stored (the default), or `strip`: stored without its Set-Cookie (the client whose request fetched it still gets its own).
    #[schemars(extend("enum" = ["strip", null]))]
    pub set_cookie: Option<Sp<String>>,
    /// Requests carrying any of these are forwarded as received and never answered from cache: `{ cookies: [sessionid, basket], headers: [authorization] }`.
    pub pass_if: Option<Sp<RawPassIf>>,
    /// Answer requests that carry Authorization from cache.
    pub allow_authorized: Option<Sp<bool>>,
    /// Store responses marked `Cache-Control: private`.
    pub allow_private: Option<Sp<bool>>,
    /// What clients are told about caching the rule's answers.
    pub downstream: Option<Sp<RawDownstream>>,
    /// Edge Side Includes in the rule's HTML answers: `<esi:include src="/fragment"/>` is fetched through the proxy (under the fragment's own rule) for every client, `<esi:remove>` dropped, `<!--esi ...-->` unwrapped.
    pub esi: Option<Sp<bool>>,
    /// Store compressible answers (text, JSON, XML, SVG; not already encoded; 256 bytes and more) compressed once, in the first of these codings (default `[gzip, br]`): sent as stored to a client that takes it, re-encoded in another listed coding the client takes, else decoded; `false` turns it off.
    pub compress: Option<Sp<RawCompress>>,
}

/// `pass_if:` of a rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPassIf {
    /// Cookie names.
    pub cookies: Option<Vec<Sp<String>>>,
    /// Header names.
    pub headers: Option<Vec<Sp<String>>>,
}

/// `forward:` of a rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    /// Request headers sent to the backend on a cacheable fetch, and keyed.
    pub headers: Vec<Sp<String>>,
}

/// `downstream:` of a rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDownstream {
    /// Replaces the backend's `Cache-Control` on every answer from the cache path, e.g. `public, max-age=60`, `private` or `no-store`.
    pub cache_control: Sp<String>,
}

/// `match:` of a rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Methods the rule matches (default GET, HEAD).
    pub methods: Option<Vec<Sp<String>>>,
    /// Path pattern: `/products/{id}`, `/static/{*rest}`. Quote it in flow style.
    pub path: Sp<String>,
    /// Host the rule is limited to.
    pub host: Option<Sp<String>>,
}

/// `write_through:` of a rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawWriteThrough {
    /// Write methods, e.g. `[PUT, POST]`.
    pub methods: Vec<Sp<String>>,
    /// Redis channel template announced after a write-through, e.g. `cart_update:{user_id}`.
    pub publish: Option<Sp<String>>,
}

/// `rate_limit:` of a rule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// What a client is counted by, e.g. `{client_ip}` or `{header.x-api-key}`.
    pub key: Sp<String>,
    /// Average rate: `100/s`, `20/m`, `1000/h`.
    pub rate: Sp<String>,
    /// Requests allowed at once (default: the rate's count).
    pub burst: Option<Sp<u32>>,
    /// `local` (per replica) or `global` (shared through Redis).
    #[schemars(extend("enum" = ["local", "global", null]))]
    pub scope: Option<Sp<String>>,
}
