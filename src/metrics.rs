//! Metric names, label values and the Prometheus recorder, in one place.
//!
//! Everything is recorded through the `metrics` facade into the proxy's
//! own Prometheus registry ([`Metrics`]), rendered by `GET /metrics` on the
//! admin listener. Names follow Prometheus conventions: `sidecache_` prefix,
//! counters end in `_total`, units in the name (`_seconds`, `_bytes`).
//! Histograms have explicit buckets so they aggregate across replicas.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

/// Requests by `rule` and `outcome` (counter).
pub const REQUESTS: &str = "sidecache_requests_total";
/// Answers by `rule` and status `class` (`2xx`, `4xx`, ...) (counter).
pub const RESPONSES: &str = "sidecache_responses_total";
/// Time from a request's arrival to its response head, by `rule` and
/// `outcome`, in seconds (histogram).
pub const REQUEST_DURATION: &str = "sidecache_request_duration_seconds";
/// Open client connections, by `listener` (`proxy`, `admin`) (gauge).
pub const CONNECTIONS: &str = "sidecache_open_connections";
/// Time until the backend's response head, in seconds (histogram).
pub const UPSTREAM_DURATION: &str = "sidecache_upstream_duration_seconds";
/// Backend requests that got no answer, by `reason` (counter).
pub const UPSTREAM_ERRORS: &str = "sidecache_upstream_errors_total";
/// Redis command round trips by `command`, in seconds (histogram).
pub const REDIS_DURATION: &str = "sidecache_redis_duration_seconds";
/// Redis commands that failed or were skipped by the breaker, by `command` (counter).
pub const REDIS_ERRORS: &str = "sidecache_redis_errors_total";
/// Redis state: one series per `state` (up, degraded, disabled), the current one 1 (gauge).
pub const REDIS_STATE: &str = "sidecache_redis_state";
/// Entries in L1 (gauge).
pub const L1_ENTRIES: &str = "sidecache_l1_entries";
/// Bytes held by L1, as weighed against its limit (gauge).
pub const L1_BYTES: &str = "sidecache_l1_bytes";
/// L1's limit, `memory.max_size` (gauge); it covers the purge memory too.
pub const L1_CAPACITY: &str = "sidecache_l1_capacity_bytes";
/// Keys and tags whose latest purge is remembered (gauge).
pub const PURGE_MEMORY_NAMES: &str = "sidecache_purge_memory_names";
/// Bytes counted for the remembered purges, within a sixteenth of
/// `memory.max_size` (gauge).
pub const PURGE_MEMORY_BYTES: &str = "sidecache_purge_memory_bytes";
/// Keys, tags and prefixes purged, by `kind` and `source` (counter).
pub const PURGES: &str = "sidecache_purges_total";
/// Fetched answers not stored, by `rule` and `reason`: the `Cache-Status`
/// detail (`set-cookie`, `private`, `no-store`, `status`, `too-large`,
/// `vary-star`, `unframed`, `purged`, ...) (counter).
pub const NOT_STORED: &str = "sidecache_not_stored_total";
/// Purge or fetch times beyond Redis's clock (plus a small bound), by
/// `source`, taken as now or refused (counter): a planted value, or a
/// Redis clock that jumped ahead.
pub const UNTRUSTED_TIMES: &str = "sidecache_untrusted_times_total";
/// Purges applied once only, their repeat's queue being full (in bytes:
/// the purge memory budget) (counter).
pub const REPEATS_SKIPPED: &str = "sidecache_purge_repeats_skipped_total";
/// Purges this replica applied that Redis does not have yet (its outbox),
/// so other replicas do not know of them yet (gauge).
pub const PURGES_PENDING: &str = "sidecache_purges_pending";
/// ESI fragments a page of `rule` included, by `result`: `ok`, `failed`
/// (an error status, a timeout, an encoded or oversized body) or `skipped`
/// (past the count or depth bound, or a `src` not a path on this site)
/// (counter).
pub const ESI_FRAGMENTS: &str = "sidecache_esi_fragments_total";
/// Tags a write's trigger names that could not be rendered (a JSON
/// field missing from its answer, an answer not JSON or too long to
/// read), by `rule` (counter); the write purged the rest.
pub const PURGE_TAGS_UNRENDERED: &str = "sidecache_purge_tags_unrendered_total";
/// Purges on a Redis Cluster that no replica had copied within half of
/// `redis.timeout` (counter): a failover of their master right then could
/// lose them.
pub const PURGES_UNCOPIED: &str = "sidecache_purges_uncopied_total";
/// Requests refused by a rule's rate limit, by `rule` and `scope` (counter).
pub const RATE_LIMITED: &str = "sidecache_rate_limited_total";
/// Answers that were admitted for storing but not stored in the end, by
/// `reason`: `too-large`, `too-slow`, `cut-short` (the body), `purged` (a
/// purge of the entry since its fetch), `l2-failed` (Redis did not take it)
/// (counter).
pub const STORE_REFUSED: &str = "sidecache_store_refused_total";
/// Requests refused before reaching the backend, by `reason` (counter).
pub const REJECTED: &str = "sidecache_rejected_total";
/// Purges made in another region and applied here, by that `region` (counter).
pub const REGION_PURGES: &str = "sidecache_region_purges_total";
/// Age of the oldest purge made here that a `region` has not applied yet (gauge).
pub const REGION_LAG: &str = "sidecache_region_purge_lag_seconds";
/// This replica's link to a `region`'s Redis: 1 for its `state` (up, down) (gauge).
pub const REGION_LINK: &str = "sidecache_region_link";
/// 1 while this replica relays a `region`'s purges here (gauge).
pub const REGION_RELAYING: &str = "sidecache_region_relaying";
/// `warm_on` fetches by `rule` and `result`: `fetched`, `failed`,
/// `dropped` (over `limits.warm_in_flight`) (counter).
pub const WARMS: &str = "sidecache_warm_total";
/// Warm-up entries by `source` (`hot`, `urls`) and `result`: `fetched`,
/// `absent` (a hot key no longer in L2), `failed` (counter).
pub const WARMUP: &str = "sidecache_warmup_total";
/// How long the last warm-up took (gauge).
pub const WARMUP_SECONDS: &str = "sidecache_warmup_seconds";
/// Requests answered without the backend, by `rule` (counter).
pub const SAVED_REQUESTS: &str = "sidecache_backend_saved_requests_total";
/// Body bytes answered without the backend sending them, by `rule` (counter).
pub const SAVED_BYTES: &str = "sidecache_backend_saved_bytes_total";
/// Backend time saved, by `rule`: requests answered without the backend
/// times the rule's mean miss time (a gauge, since it is not whole: it
/// only grows).
pub const SAVED_SECONDS: &str = "sidecache_backend_saved_seconds";
/// Requests forwarded without the cache (outcome `pass`), by `rule` and
/// `reason`: the `Cache-Status` detail (`no-rule`, `rule`, `authorization`,
/// `range`, `rollout`, a key's refusal); writes are not counted (counter).
pub const PASSES: &str = "sidecache_passes_total";
/// `verify` checks by `rule` and `result`: `match`, `mismatch`, `error`,
/// `skipped` (counter).
pub const VERIFY: &str = "sidecache_verify_total";
/// Age of the served entry at a `verify` mismatch, by `rule` (histogram).
pub const VERIFY_MISMATCH_AGE: &str = "sidecache_verify_mismatch_age_seconds";
/// Config reloads by `result` (ok, failed) (counter).
pub const RELOADS: &str = "sidecache_config_reloads_total";
/// 1 for the config in effect, labelled with its file's `digest` (0 for
/// the ones it replaced) (gauge).
pub const CONFIG_INFO: &str = "sidecache_config_info";
/// When the config in effect was loaded, in seconds since the epoch (gauge).
pub const CONFIG_LOADED: &str = "sidecache_config_loaded_timestamp_seconds";
/// Always 1, labelled with the `version` (gauge).
pub const BUILD_INFO: &str = "sidecache_build_info";

/// Buckets of the backend latency histogram: 1 ms to 30 s, each at most a
/// third wider than the one before, so a quantile read from them (the
/// dashboard interpolates within a bucket) is off by at most a third of a
/// bucket: 51 ms reads as 51 to 60 ms, not as the middle of 50 to 100 ms.
const UPSTREAM_BUCKETS: [f64; 46] = [
    0.001, 0.00125, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.006, 0.0075, 0.01, 0.0125, 0.015,
    0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6,
    0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.5, 10.0, 12.5, 15.0, 20.0, 25.0, 30.0,
];
/// Buckets of the client latency histogram: 100 µs (a hit) to 30 s.
const REQUEST_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];
/// Entry ages, in seconds: from a second to a day.
const AGE_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0,
];

/// Buckets of the Redis latency histogram: 50 µs to 1 s.
const REDIS_BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];

/// How often the recorder drains histogram samples and the gauges are
/// read from the stores.
pub const UPKEEP: Duration = Duration::from_secs(1);

/// The `outcome` label of a request (see `proxy::outcome::Outcome`, which
/// says more and names its label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// Answered from L1.
    HitMemory,
    /// Answered from Redis.
    HitRedis,
    /// Fetched from the backend under a rule (stored or not).
    Miss,
    /// Answered from an expired entry (stale-while-revalidate or stale-if-error).
    Stale,
    /// Answered with the entry another request fetched.
    Collapsed,
    /// Forwarded without the cache: no rule, `cache: false`, writes, Authorization.
    Pass,
    /// Refused before the backend: unreadable, too large, or the backend busy.
    Rejected,
    /// A `PURGE` request.
    Purge,
    /// The backend could not be reached.
    Error,
    /// Refused by the rule's rate limit (429).
    RateLimited,
    /// A stale entry the backend confirmed with a 304: answered from the
    /// entry, refreshed, without the body crossing the wire again.
    Revalidated,
}

impl Label {
    /// Every outcome, in declaration order (the index of each in
    /// [`RequestCounters`]).
    pub const ALL: [Label; 11] = [
        Label::HitMemory,
        Label::HitRedis,
        Label::Miss,
        Label::Stale,
        Label::Collapsed,
        Label::Pass,
        Label::Rejected,
        Label::Purge,
        Label::Error,
        Label::RateLimited,
        Label::Revalidated,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::HitMemory => "hit-memory",
            Label::HitRedis => "hit-redis",
            Label::Miss => "miss",
            Label::Stale => "stale",
            Label::Collapsed => "collapsed",
            Label::Pass => "pass",
            Label::Rejected => "rejected",
            Label::Purge => "purge",
            Label::Error => "error",
            Label::RateLimited => "rate-limited",
            Label::Revalidated => "revalidated",
        }
    }
}

/// Where a purge came from: the `source` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PurgeSource {
    /// `POST /purge` on the admin listener.
    Api,
    /// An HTTP `PURGE` request on the proxy port.
    Proxy,
    /// A write's `invalidate_on` trigger or its own URL (RFC 9111 §4.4).
    Write,
    /// Announced by another replica.
    Remote,
    /// Made in another region and relayed here.
    Region,
    /// Applied a second time, `invalidation.repeat_after` later.
    Repeat,
    /// A `verify` check found the backend's answer changed
    /// (`purge_on_mismatch`).
    Verify,
}

impl PurgeSource {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PurgeSource::Api => "api",
            PurgeSource::Proxy => "proxy",
            PurgeSource::Write => "write",
            PurgeSource::Remote => "remote",
            PurgeSource::Region => "region",
            PurgeSource::Repeat => "repeat",
            PurgeSource::Verify => "verify",
        }
    }

    /// Whether the purge was made here (and so is logged for the other
    /// regions) rather than relayed or repeated.
    pub fn is_origin(self) -> bool {
        matches!(self, Self::Api | Self::Proxy | Self::Write | Self::Verify)
    }
}

/// One proxy's metrics: a Prometheus registry of its own, rendered by its
/// `GET /metrics`.
///
/// The `metrics` macros record into whichever proxy the running task
/// belongs to: [`Metrics::scope`] makes a task one of this proxy's, and
/// [`spawn`] (and [`scoped`]) carry that on to the tasks it starts. So
/// several proxies in one process (a test, an embedding program) each
/// count only their own requests.
#[derive(Clone)]
pub struct Metrics(Arc<PrometheusRecorder>, Arc<metrics_process::Collector>);

tokio::task_local! {
    /// The proxy the running task records for.
    static SCOPE: Option<Metrics>;
}

impl Metrics {
    /// A new, empty registry with the build info set and every metric
    /// described.
    pub fn new() -> Self {
        install();
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(UPSTREAM_DURATION.into()), &UPSTREAM_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(REDIS_DURATION.into()), &REDIS_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(VERIFY_MISMATCH_AGE.into()), &AGE_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &REQUEST_BUCKETS)
            });
        let recorder = match builder {
            Ok(b) => b.build_recorder(),
            // Only an empty bucket list fails, and ours are constants.
            Err(_) => PrometheusBuilder::new().build_recorder(),
        };
        // The process's own: CPU seconds, resident and virtual memory, open
        // and maximum file descriptors, threads, start time (`process_*`,
        // as Prometheus names them), read from /proc at each upkeep.
        let process = metrics_process::Collector::default();
        let this = Self(Arc::new(recorder), Arc::new(process));
        this.enter(|| {
            describe();
            this.1.describe();
            this.1.collect();
            preregister();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        });
        this
    }

    /// The Prometheus text of everything recorded here.
    pub fn render(&self) -> String {
        self.0.handle().render()
    }

    /// Drains histogram samples (the recorder keeps them until then) and
    /// reads the process metrics.
    pub fn run_upkeep(&self) {
        self.0.handle().run_upkeep();
        self.enter(|| self.1.collect());
    }

    /// Runs `f` (which does not wait) recording here, as do the tasks it
    /// starts with [`spawn`].
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        SCOPE.sync_scope(Some(self.clone()), || {
            metrics::with_local_recorder(&*self.0, f)
        })
    }

    /// Runs `task` recording here, as do the tasks it starts with [`spawn`].
    pub async fn scope<F: Future>(&self, task: F) -> F::Output {
        SCOPE.scope(Some(self.clone()), task).await
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `task`, recording where the running task records.
pub fn scoped<F: Future>(task: F) -> impl Future<Output = F::Output> {
    SCOPE.scope(SCOPE.try_with(Clone::clone).ok().flatten(), task)
}

/// `tokio::spawn`, the task recording where the running task records.
pub fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(scoped(task))
}

/// The process-wide recorder, which hands each record to the running
/// task's [`Metrics`]. What is recorded outside any proxy's tasks is
/// dropped.
struct Routed;

impl Routed {
    fn with<T>(&self, f: impl FnOnce(&PrometheusRecorder) -> T, none: impl FnOnce() -> T) -> T {
        match SCOPE.try_with(|m| m.as_ref().map(|m| f(&m.0))) {
            Ok(Some(v)) => v,
            Ok(None) | Err(_) => none(),
        }
    }
}

impl metrics::Recorder for Routed {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.with(|r| r.describe_counter(key, unit, description), || ());
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.with(|r| r.describe_gauge(key, unit, description), || ());
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.with(|r| r.describe_histogram(key, unit, description), || ());
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.with(|r| r.register_counter(key, metadata), Counter::noop)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.with(|r| r.register_gauge(key, metadata), Gauge::noop)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.with(|r| r.register_histogram(key, metadata), Histogram::noop)
    }
}

/// Installs [`Routed`] as the process's recorder, once. If the embedding
/// program installed another first, what tasks record goes there, and
/// `/metrics` holds only what [`Metrics::enter`] recorded.
fn install() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if metrics::set_global_recorder(Routed).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics misses what tasks record"
            );
        }
    });
}

/// Registers at zero the failure counters whose labels are known before
/// the first failure, so an alert's `increase()` sees that first one (a
/// series that appears with the value 1 has no increase).
fn preregister() {
    use metrics::counter;
    for result in ["ok", "failed"] {
        counter!(RELOADS, "result" => result).increment(0);
    }
    for reason in ["connect", "timeout", "broken"] {
        counter!(UPSTREAM_ERRORS, "reason" => reason).increment(0);
    }
    for reason in ["backend-busy", "body-too-large", "client-body"] {
        counter!(REJECTED, "reason" => reason).increment(0);
    }
    for reason in [
        "too-large",
        "too-slow",
        "cut-short",
        "purged",
        "l2-failed",
        "too-many-tags",
    ] {
        counter!(STORE_REFUSED, "reason" => reason).increment(0);
    }
    for source in ["observed", "entry", "redis", "announcement"] {
        counter!(UNTRUSTED_TIMES, "source" => source).increment(0);
    }
    counter!(PURGES_UNCOPIED).increment(0);
    counter!(REPEATS_SKIPPED).increment(0);
}

/// HELP lines for `/metrics`.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS, "Requests by rule and outcome.");
    describe_counter!(RESPONSES, "Answers by rule and status class.");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from a request's arrival to its response head, by rule and outcome."
    );
    describe_gauge!(CONNECTIONS, "Open client connections, by listener.");
    describe_gauge!(
        CONFIG_INFO,
        "1 for the config in effect, by its file's digest; 0 for those it replaced."
    );
    describe_gauge!(
        CONFIG_LOADED,
        "When the config in effect was loaded, in seconds since the epoch."
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "Time until the backend's response head."
    );
    describe_counter!(UPSTREAM_ERRORS, "Backend requests that got no answer.");
    describe_histogram!(REDIS_DURATION, Unit::Seconds, "Redis command round trips.");
    describe_counter!(REDIS_ERRORS, "Redis commands that failed or were skipped.");
    describe_gauge!(REDIS_STATE, "Redis state; the current one is 1.");
    describe_gauge!(L1_ENTRIES, "Entries in the memory tier.");
    describe_counter!(
        REPEATS_SKIPPED,
        "Purges applied once only, their repeat's queue being full."
    );
    describe_counter!(
        UNTRUSTED_TIMES,
        "Purge or fetch times beyond Redis's clock, taken as now or refused."
    );
    describe_gauge!(
        PURGES_PENDING,
        "Purges applied here that Redis does not have yet."
    );
    describe_gauge!(L1_BYTES, Unit::Bytes, "Bytes held by the memory tier.");
    describe_gauge!(L1_CAPACITY, Unit::Bytes, "Limit of the memory tier.");
    describe_gauge!(
        PURGE_MEMORY_NAMES,
        "Keys and tags whose latest purge is remembered."
    );
    describe_gauge!(
        PURGE_MEMORY_BYTES,
        Unit::Bytes,
        "Bytes counted for remembered purges."
    );
    describe_counter!(PURGES, "Keys, tags and prefixes purged.");
    describe_counter!(
        NOT_STORED,
        "Answers fetched for the cache and not stored, by rule and reason."
    );
    describe_counter!(
        ESI_FRAGMENTS,
        "ESI fragments included in pages, by rule and result."
    );
    describe_counter!(
        PURGE_TAGS_UNRENDERED,
        "Tags a write's trigger names that could not be rendered from its bodies."
    );
    describe_counter!(
        PURGES_UNCOPIED,
        "Purges on a Redis Cluster not yet copied to a replica when answered."
    );
    describe_counter!(RATE_LIMITED, "Requests refused by a rule's rate limit.");
    describe_counter!(REJECTED, "Requests refused before reaching the backend.");
    describe_counter!(
        STORE_REFUSED,
        "Answers admitted for storing but not stored in the end."
    );
    describe_counter!(RELOADS, "Config reloads.");
    describe_counter!(
        WARMUP,
        "Warm-up entries by source (hot: copied from Redis; urls: fetched through the pipeline) and result (fetched, absent, failed)."
    );
    describe_gauge!(WARMUP_SECONDS, "How long the last warm-up took.");
    describe_counter!(
        PASSES,
        "Reads forwarded without the cache, by rule and reason (the Cache-Status detail)."
    );
    describe_counter!(
        VERIFY,
        "verify checks by rule and result (match, mismatch, error, skipped)."
    );
    describe_histogram!(
        VERIFY_MISMATCH_AGE,
        "Age of the served entry when a verify check found the backend's answer changed."
    );
    describe_counter!(
        SAVED_REQUESTS,
        "Requests answered without the backend (hits, stale-while-revalidate, collapsed), by rule."
    );
    describe_counter!(
        SAVED_BYTES,
        "Body bytes answered without the backend sending them, by rule."
    );
    describe_gauge!(
        SAVED_SECONDS,
        "Backend time saved by rule: requests answered without the backend times the rule's mean miss time."
    );
    describe_counter!(
        WARMS,
        "warm_on fetches by rule and result (fetched, failed, dropped)."
    );
    describe_counter!(
        REGION_PURGES,
        "Purges made in another region (label region) and applied here."
    );
    describe_gauge!(
        REGION_LAG,
        "Age of the oldest purge made in this region that the labelled region has not applied yet."
    );
    describe_gauge!(
        REGION_LINK,
        "1 for the state (up or down) of this replica's link to the labelled region's Redis."
    );
    describe_gauge!(
        REGION_RELAYING,
        "1 while this replica brings the labelled region's purges into this one."
    );
    describe_gauge!(BUILD_INFO, "Version of this build.");
}

/// One rule's request counters (one per outcome, and one per status
/// class), registered once so that counting a request is an atomic add (no
/// label allocation, no registry lookup), and its latency histograms, one
/// per outcome, registered on the outcome's first request.
#[derive(Debug)]
pub struct RequestCounters {
    rule: String,
    outcomes: [Counter; Label::ALL.len()],
    classes: [Counter; STATUS_CLASSES.len()],
    latency: [OnceLock<Histogram>; Label::ALL.len()],
}

/// The `class` label of [`RESPONSES`], by the status's first digit less one.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl RequestCounters {
    /// The counters of `rule` (`""` for requests no rule matched).
    /// Registers with the recorder of the running task's [`Metrics`].
    pub fn new(rule: &str) -> Self {
        Self {
            rule: rule.to_owned(),
            outcomes: Label::ALL.map(
                |o| metrics::counter!(REQUESTS, "rule" => rule.to_owned(), "outcome" => o.as_str()),
            ),
            classes: STATUS_CLASSES
                .map(|c| metrics::counter!(RESPONSES, "rule" => rule.to_owned(), "class" => c)),
            latency: Default::default(),
        }
    }

    /// Counts one finished request, answered `status` after `took` (to the
    /// response head).
    pub fn count(&self, outcome: Label, status: http::StatusCode, took: Duration) {
        self.outcomes[outcome as usize].increment(1);
        if let Some(class) = (status.as_u16() / 100)
            .checked_sub(1)
            .and_then(|i| self.classes.get(usize::from(i)))
        {
            class.increment(1);
        }
        self.latency[outcome as usize]
            .get_or_init(|| {
                metrics::histogram!(
                    REQUEST_DURATION,
                    "rule" => self.rule.clone(),
                    "outcome" => outcome.as_str()
                )
            })
            .record(took);
    }
}

/// Says which config is in effect (`old` the one it replaces, if any).
pub fn config_loaded(old: Option<&str>, new: &str) {
    if let Some(old) = old.filter(|o| *o != new) {
        metrics::gauge!(CONFIG_INFO, "digest" => old.to_owned()).set(0.0);
    }
    metrics::gauge!(CONFIG_INFO, "digest" => new.to_owned()).set(1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    metrics::gauge!(CONFIG_LOADED).set(now.as_secs_f64());
}

/// Counts a request refused before the backend (`backend-busy`, `body-too-large`).
pub fn rejected(reason: &'static str) {
    metrics::counter!(REJECTED, "reason" => reason).increment(1);
}

/// Counts an answer that was admitted for storing but not stored.
pub fn store_refused(reason: &'static str) {
    metrics::counter!(STORE_REFUSED, "reason" => reason).increment(1);
}

/// Sets the Redis state gauges.
pub fn redis_state(state: &'static str) {
    for s in ["up", "degraded", "disabled"] {
        metrics::gauge!(REDIS_STATE, "state" => s).set(if s == state { 1.0 } else { 0.0 });
    }
}
