//! Builds the components from a config and runs both listeners until
//! shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::cache::memory::MemoryStore;
use crate::cache::redis::RedisStore;
use crate::cache::tiered::Tiered;
use crate::config::{Config, RedisServers};
use crate::metrics;
use crate::proxy::Proxy;
use crate::redis::{Redis, Target};

/// The proxy and admin state built from one config.
pub struct App {
    /// The request pipeline.
    pub proxy: Arc<Proxy>,
    /// The admin endpoints.
    pub admin: Arc<Admin>,
    /// What the proxy's tasks record.
    pub metrics: metrics::Metrics,
    /// Reload when the config file changes (on by default).
    pub watch_config: bool,
}

impl App {
    /// Builds the stores and the pipeline. Connects to nothing yet: Redis is
    /// reached lazily, so a Redis that is down does not stop start-up.
    pub fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = metrics::Metrics::new();
        let (proxy, admin) = metrics.enter(|| Self::components(config, &metrics))?;
        Ok(Self {
            proxy,
            admin,
            metrics,
            watch_config: true,
        })
    }

    /// The pipeline and the admin endpoints, built recording into `metrics`.
    fn components(
        config: Config,
        metrics: &metrics::Metrics,
    ) -> anyhow::Result<(Arc<Proxy>, Arc<Admin>)> {
        // What is remembered of purges counts in the memory limit too.
        let max_size = config.memory.max_size;
        let memory = MemoryStore::new(max_size - crate::invalidation::budget(max_size));
        // One connection, handed to every feature that speaks to Redis.
        let redis = match &config.redis {
            Some(r) => Some(
                Redis::new(
                    match &r.servers {
                        RedisServers::Url(url) => Target::Server(url),
                        RedisServers::Cluster(seeds) => Target::Cluster(seeds),
                    },
                    &r.key_prefix,
                    r.timeout,
                    r.ca.as_deref(),
                )
                .map_err(|e| anyhow::anyhow!("redis: {e}"))?,
            ),
            None => None,
        };
        let shared = redis
            .clone()
            .map(|r| Arc::new(RedisStore::new(r)) as Arc<dyn crate::cache::Store>);
        let cache = Tiered::new(memory, shared);
        let regions = match &config.regions {
            Some(r) => Some(
                crate::invalidation::regions::Regions::new(r, config.invalidation.region_log)
                    .map_err(|e| anyhow::anyhow!("regions: {e}"))?,
            ),
            None => None,
        };
        let proxy = Arc::new(Proxy::new(Arc::new(config), cache, redis, regions));
        let admin = Arc::new(Admin::new(proxy.clone(), metrics.clone()));
        Ok((proxy, admin))
    }

    /// Serves on the given (already bound) listeners until `shutdown` fires,
    /// then drains for at most `limits.shutdown_grace`.
    pub async fn run(
        self,
        listener: TcpListener,
        admin_listener: TcpListener,
        shutdown: CancellationToken,
    ) {
        let metrics = self.metrics.clone();
        metrics
            .scope(self.serve(listener, admin_listener, shutdown))
            .await;
    }

    async fn serve(
        self,
        listener: TcpListener,
        admin_listener: TcpListener,
        shutdown: CancellationToken,
    ) {
        let limits = self.proxy.config().limits.clone();
        let proxy = self.proxy.clone();
        let proxy_task = crate::server::serve(
            "proxy",
            listener,
            move |req, ip| {
                let proxy = proxy.clone();
                async move { proxy.handle(req, ip).await }
            },
            shutdown.clone(),
            &limits,
        );
        let admin = self.admin.clone();
        let admin_task = crate::server::serve(
            "admin",
            admin_listener,
            move |req, _ip| {
                let admin = admin.clone();
                async move { admin.handle(req).await }
            },
            shutdown.clone(),
            &limits,
        );
        // The purge subscriber stops with the same token.
        let bus = crate::metrics::spawn(crate::invalidation::bus::run(
            self.proxy.invalidator().clone(),
            shutdown.clone(),
        ));
        let regions = crate::metrics::spawn(crate::invalidation::regions::run(
            self.proxy.invalidator().clone(),
            shutdown.clone(),
        ));
        let repeats = crate::metrics::spawn(crate::invalidation::repeats(
            self.proxy.invalidator().clone(),
            shutdown.clone(),
        ));
        let outbox = crate::metrics::spawn(crate::invalidation::outbox::run(
            self.proxy.invalidator().clone(),
            shutdown.clone(),
        ));
        let hup = crate::metrics::spawn(crate::reload::on_sighup(
            self.proxy.clone(),
            shutdown.clone(),
        ));
        let watch = crate::metrics::spawn({
            let (proxy, shutdown, on) = (self.proxy.clone(), shutdown.clone(), self.watch_config);
            async move {
                if on {
                    crate::reload::watch(proxy, shutdown).await;
                }
            }
        });
        let upkeep = crate::metrics::spawn(upkeep(
            self.proxy.clone(),
            self.metrics.clone(),
            shutdown.clone(),
        ));
        let hot = crate::metrics::spawn(crate::cache::hot::run(
            self.proxy.hotness().clone(),
            self.proxy.redis().cloned(),
            shutdown.clone(),
        ));
        // Ready once L1 holds the hot keys and the warm-up list, or once its time is up (the
        // rest goes on behind); `/readyz` answers 503 meanwhile.
        let ready = crate::metrics::spawn({
            let (proxy, admin) = (self.proxy.clone(), self.admin.clone());
            async move {
                // L2 entries are served once the heartbeat has read the
                // floor (see `invalidation`): wait for it, as long as the
                // warm-up may take.
                if proxy.redis().is_some() {
                    let wait = proxy
                        .config()
                        .memory
                        .warm
                        .as_ref()
                        .map_or(Duration::from_secs(5), |w| w.timeout);
                    let start = tokio::time::Instant::now();
                    while !proxy.invalidator().knows_mark() && start.elapsed() < wait {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                if let Some(warm) = proxy.config().memory.warm.clone() {
                    let timeout = warm.timeout;
                    let run =
                        crate::metrics::spawn(async move { proxy.warm_up(&warm, true).await });
                    if tokio::time::timeout(timeout, run).await.is_err() {
                        tracing::warn!(?timeout, "warm-up not done in time; ready anyway");
                    }
                }
                admin.set_ready();
            }
        });
        tokio::join!(proxy_task, admin_task);
        ready.abort();
        let _ = tokio::join!(bus, regions, repeats, outbox, hup, watch, upkeep, hot);
        // What the requests drained since shutdown began were counted as.
        if let Some(redis) = self.proxy.redis() {
            self.proxy.hotness().merge(redis).await;
        }
    }
}

/// How many upkeep beats between two summaries of Redis failures.
const SUMMARY_EVERY: u64 = 60;

/// While Redis fails, one line a minute says how often (each failure is
/// counted in `sidecache_redis_errors_total`, not logged).
fn redis_summary(proxy: &Proxy) {
    let failed = proxy.redis().map_or(0, crate::redis::Redis::take_failures);
    if failed > 0 {
        tracing::warn!(
            failed,
            state = proxy.redis_state(),
            "redis commands without an answer in the last minute"
        );
    }
}

/// Every [`metrics::UPKEEP`]: drains histogram samples (the recorder keeps
/// them until then), reads the gauges from the stores, and lets the local
/// rate limiters forget idle clients, until `shutdown`.
async fn upkeep(proxy: Arc<Proxy>, recorded: metrics::Metrics, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(metrics::UPKEEP);
    let mut beats = 0u64;
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        recorded.run_upkeep();
        let (entries, bytes) = proxy.cache().l1_usage().await;
        ::metrics::gauge!(metrics::L1_ENTRIES).set(entries as f64);
        ::metrics::gauge!(metrics::L1_BYTES).set(bytes as f64);
        // The configured limit, which covers L1 and the purge memory.
        let max_size = proxy.config().memory.max_size;
        ::metrics::gauge!(metrics::L1_CAPACITY).set(max_size as f64);
        let (names, purge_bytes) = proxy.invalidator().usage();
        ::metrics::gauge!(metrics::PURGE_MEMORY_NAMES).set(names as f64);
        ::metrics::gauge!(metrics::PURGE_MEMORY_BYTES).set(purge_bytes as f64);
        metrics::redis_state(proxy.redis_state());
        beats += 1;
        if beats.is_multiple_of(SUMMARY_EVERY) {
            redis_summary(&proxy);
            proxy.upstream().failures().summarise();
        }
        proxy.limits().forget_idle();
        proxy.offloads().export();
    }
}
