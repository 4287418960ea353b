//! The one connection to Redis every feature shares: entries (`cache`),
//! purge times (`invalidation`), the purge bus, collapse locks and global
//! rate limits each keep their own commands and hand them to [`Redis`].
//!
//! Redis is an accelerator, never a dependency: the connection is made
//! lazily and re-made in the background by redis's `ConnectionManager`,
//! every command is bounded by the configured timeout, and callers treat any
//! error as "unknown". After [`BREAKER_FAILURES`] failures in a row a
//! circuit breaker stops asking Redis for [`BREAKER_OPEN`]; then one command
//! probes it again. So a dead or black-holed Redis costs a few requests one
//! timeout each, and the rest nothing. Every command's round trip is timed
//! (`sidecache_redis_duration_seconds`) and its failures counted.
//!
//! Scripts run by their SHA1 and are sent whole only when Redis does not
//! know them yet.
//!
//! Entry reads ([`Redis::get`]) from concurrent requests share round trips:
//! while [`GET_ROUND_TRIPS`] reads are in flight, the next ones wait in a
//! queue and go together, each key once, up to [`GET_BATCH`] reads. On one
//! server they go as one `MGET`: under load one socket write and one Redis
//! command for many hits instead of one each (and one copy of a hot key's
//! entry). A cluster client cannot send one command to several slots, so
//! there each distinct key is one `GET`, all sent at once; concurrent reads
//! of a hot key still share one. Alone, a read goes at once.
//!
//! The same connection speaks to one server or to a Redis Cluster
//! ([`Target`]): the cluster client follows `MOVED` and `ASK`, splits a
//! multi-key command (`MGET`, `UNLINK`) per slot and sends the parts at once,
//! and runs a script on the node of its keys (loading it there on
//! `NOSCRIPT`). Its own waits are made explicit and short: each node's
//! connect and response time is `redis.timeout`, and it retries
//! [`CLUSTER_RETRIES`] times between 10 and 100 ms apart, all inside the
//! one timeout every command gets here. Reads go to masters only.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};

use crate::metrics;

/// Consecutive failures that open the breaker.
pub const BREAKER_FAILURES: u32 = 3;
/// How long an open breaker refuses commands before a probe.
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);
/// How often the cluster client retries a command (after `MOVED`, `TRYAGAIN`
/// or a lost node) before it gives up; all within the command's timeout.
pub const CLUSTER_RETRIES: u32 = 2;

/// How log lines name this region's own Redis (another region's is named
/// by that region).
pub const HERE: &str = "here";

/// Entry reads in flight at once; more wait and go together.
pub const GET_ROUND_TRIPS: usize = 2;
/// The most reads that go together.
pub const GET_BATCH: usize = 64;

/// A read waiting for its share of a gathered round trip.
type Waiting = (
    String,
    tokio::sync::oneshot::Sender<Result<Option<Bytes>, Error>>,
);

/// Where Redis is.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// One server: `redis://`, `rediss://` or `redis+unix://`.
    Server(&'a str),
    /// A Redis Cluster, by some of its nodes (the rest is discovered).
    Cluster(&'a [String]),
}

/// The time on Redis's clock, in ms, as Lua sees it: scripts that start
/// with it have `now`.
pub const LUA_NOW: &str = "local t = redis.call('TIME') \
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) ";

/// A Redis command that did not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Not connected (yet, or any more), or the breaker is open.
    #[error("redis is not connected")]
    Disconnected,
    /// No answer within the timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection broke.
    #[error("redis: {0}")]
    Command(#[from] redis::RedisError),
}

/// A Lua script and its SHA1, worked out on first use.
pub struct Script {
    code: Cow<'static, str>,
    hash: OnceLock<String>,
}

impl Script {
    /// A script whose text is known at compile time.
    pub const fn new(code: &'static str) -> Self {
        Self {
            code: Cow::Borrowed(code),
            hash: OnceLock::new(),
        }
    }

    /// A script whose text is put together at run time (from [`LUA_NOW`]).
    pub fn owned(code: String) -> Self {
        Self {
            code: Cow::Owned(code),
            hash: OnceLock::new(),
        }
    }

    fn hash(&self) -> &str {
        self.hash
            .get_or_init(|| redis::Script::new(&self.code).get_hash().to_owned())
    }
}

/// The circuit breaker's state, shared by clones of the connection.
#[derive(Default)]
struct Breaker {
    failures: AtomicU32,
    /// Until when commands are refused, in [`mono_ms`]; 0 when closed.
    open_until: AtomicU64,
}

/// The connection itself: one server's, or the cluster client's (one
/// connection per node, behind one handle).
#[derive(Clone)]
enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The shared connection: cheap to clone, every clone the same connection.
#[derive(Clone)]
pub struct Redis {
    /// What the purge bus subscribes with: the server, or each seed node of
    /// a cluster in turn (a cluster broadcasts `PUBLISH` to every node, so
    /// any node hears every announcement).
    subscribe_to: Arc<[redis::Client]>,
    conn: Conn,
    /// On a cluster, a second connection for purges: `WAIT` after a purge
    /// holds its connection until a replica has copied the purge, and
    /// must not hold the reads behind it.
    purges: Option<ClusterConnection>,
    /// The queue of entry reads to gather, started on the first read.
    gets: Arc<OnceLock<tokio::sync::mpsc::UnboundedSender<Waiting>>>,
    prefix: Arc<str>,
    timeout: Duration,
    /// For another region's Redis, that region's name (its state changes
    /// are logged as such).
    region: Option<Arc<str>>,
    health: Arc<Health>,
    breaker: Arc<Breaker>,
}

/// Whether Redis answers, from the last command (the purge bus's
/// heartbeat asks every second, so it is recent even on an idle replica).
/// A change is logged once; failures in between are only counted.
#[derive(Default)]
struct Health {
    /// 0 until the first command, then [`UP`] or [`DOWN`].
    state: AtomicU8,
    /// Commands that got no answer since [`Redis::take_failures`].
    failures: AtomicU64,
}

/// The last command got an answer.
const UP: u8 = 1;
/// The last command got none.
const DOWN: u8 = 2;

impl Redis {
    /// Prepares a connection to `target`; nothing is sent until the first
    /// command, so a Redis that is down at start-up does not stop the proxy.
    /// Every key sidecache writes starts with `prefix`.
    ///
    /// A `rediss://` URL speaks TLS, checking the server against the
    /// system's root certificates, or against `ca` (PEM) when given.
    pub fn new(
        target: Target<'_>,
        prefix: &str,
        timeout: Duration,
        ca: Option<&[u8]>,
    ) -> Result<Self, Error> {
        let certs = || redis::TlsCertificates {
            client_tls: None,
            root_cert: ca.map(<[u8]>::to_vec),
        };
        // Commands are small and answers awaited: Nagle's algorithm would
        // hold a command back behind an unacknowledged one (up to a delayed
        // ACK, 40 ms on Linux), so every TCP connection sends at once.
        let nodelay = || redis::io::tcp::TcpSettings::default().set_nodelay(true);
        let info = |url: &str| {
            redis::IntoConnectionInfo::into_connection_info(url)
                .map(|i| i.set_tcp_settings(nodelay()))
        };
        let client = |url: &str| match ca {
            Some(_) => redis::Client::build_with_tls(info(url)?, certs()),
            None => redis::Client::open(info(url)?),
        };
        let (subscribe_to, conn, purges) = match target {
            Target::Server(url) => {
                let client = client(url)?;
                let manager_cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(2));
                let conn = client.clone().get_connection_manager_lazy(manager_cfg)?;
                (vec![client], Conn::Server(conn), None)
            }
            Target::Cluster(seeds) => {
                let subscribe_to = seeds
                    .iter()
                    .map(|url| client(url))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut builder = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                    .tcp_settings(nodelay())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(CLUSTER_RETRIES)
                    .min_retry_wait(10)
                    .max_retry_wait(100);
                if ca.is_some() {
                    builder = builder.certs(certs());
                }
                // The config's timeouts replace the builder's (a missing
                // response timeout would mean none), so both are set again.
                let config = ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                let client = builder.build()?;
                let conn = client.get_pending_async_connection_with_config(config.clone());
                let purges = client.get_pending_async_connection_with_config(config);
                (subscribe_to, Conn::Cluster(conn), Some(purges))
            }
        };
        Ok(Self {
            subscribe_to: subscribe_to.into(),
            conn,
            purges,
            gets: Arc::default(),
            prefix: prefix.into(),
            timeout,
            region: None,
            health: Arc::default(),
            breaker: Arc::default(),
        })
    }

    /// This is region `name`'s Redis, not this region's own: its state
    /// changes are logged under that name.
    #[must_use]
    pub fn of_region(mut self, name: &str) -> Self {
        self.region = Some(name.into());
        self
    }

    /// `server` or `cluster`, as `/readyz` and `explain` say it.
    pub fn mode(&self) -> &'static str {
        match self.conn {
            Conn::Server(_) => "server",
            Conn::Cluster(_) => "cluster",
        }
    }

    /// The connection purges are applied and waited on: on a cluster its
    /// own, so a purge's `WAIT` never holds entry reads back; on one server
    /// this one.
    pub fn for_purges(&self) -> Self {
        match &self.purges {
            Some(purges) => Self {
                conn: Conn::Cluster(purges.clone()),
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// Whether the last command got an answer.
    pub fn is_up(&self) -> bool {
        self.health.state.load(Ordering::Relaxed) == UP
    }

    /// Records that Redis cannot be reached (the bus lost its connection,
    /// or could not make one).
    pub fn mark_unreachable(&self) {
        self.set_up(false);
    }

    /// How many commands got no answer since the last call.
    pub fn take_failures(&self) -> u64 {
        self.health.failures.swap(0, Ordering::Relaxed)
    }

    /// Records whether Redis answered; logs a change, once.
    fn set_up(&self, up: bool) {
        let new = if up { UP } else { DOWN };
        if !up {
            self.health.failures.fetch_add(1, Ordering::Relaxed);
        }
        let old = self.health.state.swap(new, Ordering::Relaxed);
        if let Some(region) = &self.region {
            match old {
                old if old == new => {}
                _ if up => tracing::info!(redis = %region, "that region's Redis answers"),
                _ => {
                    tracing::warn!(redis = %region, "that region's Redis does not answer; purges to and from it wait")
                }
            }
            return;
        }
        match old {
            old if old == new => {}
            DOWN => tracing::info!(redis = HERE, "redis answers again"),
            _ if up => tracing::info!(redis = HERE, "redis answers"),
            _ => tracing::warn!(
                redis = HERE,
                "redis does not answer; serving from memory and the backend until it does"
            ),
        }
    }

    /// Which Redis this is, as log lines name it: [`HERE`] or the other
    /// region's name.
    pub fn which(&self) -> &str {
        self.region.as_deref().unwrap_or(HERE)
    }

    /// The Redis key of `name`: the key prefix, then `name`.
    pub fn key(&self, name: &str) -> String {
        self.key2(name, "")
    }

    /// The Redis key of `kind` followed by `name` (`#tag:` and a tag).
    pub fn key2(&self, kind: &str, name: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + kind.len() + name.len());
        k.push_str(&self.prefix);
        k.push_str(kind);
        k.push_str(name);
        k
    }

    /// The key prefix (also the prefix of sidecache's channels).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The per-command timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A client for the purge bus's pub/sub connection at its `attempt`-th
    /// try: the server, or the cluster's seed nodes in turn, so a dead node
    /// is passed over at the next try.
    pub fn subscriber(&self, attempt: usize) -> &redis::Client {
        &self.subscribe_to[attempt % self.subscribe_to.len()]
    }

    /// Reads the string at `key` (a whole Redis key), together with the
    /// reads of other requests made meanwhile.
    pub async fn get(&self, key: String) -> Result<Option<Bytes>, Error> {
        let queue = self.gets.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            // The gatherer holds a copy without the queue, so it ends when
            // the last copy of this connection goes.
            let gatherer = Self {
                gets: Arc::default(),
                ..self.clone()
            };
            crate::metrics::spawn(gather(gatherer, rx));
            tx
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        queue.send((key, tx)).map_err(|_| Error::Disconnected)?;
        // Waiting for a free round trip counts too: never more than twice
        // the timeout in all.
        match tokio::time::timeout(self.timeout * 2, rx).await {
            Ok(answer) => answer.unwrap_or(Err(Error::Disconnected)),
            Err(_) => Err(Error::Timeout(self.timeout * 2)),
        }
    }

    /// Publishes `payload` on `channel` (used as given, without the prefix).
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<(), Error> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.run::<u64>("PUBLISH", cmd).await.map(|_| ())
    }

    /// Runs one command within the timeout, through the breaker; a failure
    /// is counted under `command`.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        cmd: redis::Cmd,
    ) -> Result<T, Error> {
        self.counted(command, self.run_timed(command, cmd, Route::Auto))
            .await
    }

    /// Runs `script` on `keys` by its SHA1 (EVALSHA), so the script's text
    /// is not sent with every call; sends it whole (EVAL, which also makes
    /// Redis keep it) only when Redis does not know it yet.
    pub async fn run_script<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[impl AsRef<str>],
        args: &[impl redis::ToRedisArgs],
    ) -> Result<T, Error> {
        let call = |name: &str, body: &str| {
            let mut cmd = redis::cmd(name);
            cmd.arg(body).arg(keys.len());
            for k in keys {
                cmd.arg(k.as_ref());
            }
            cmd.arg(args);
            cmd
        };
        let no_script = |e: &Error| {
            matches!(e, Error::Command(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
        };
        // A node that does not know the script yet (new, restarted, or
        // promoted in a failover) is expected, not an error to count.
        let first = self
            .run_timed("EVALSHA", call("EVALSHA", script.hash()), Route::Auto)
            .await;
        match first {
            Err(e) if no_script(&e) => self.run("EVAL", call("EVAL", &script.code)).await,
            other => self.counted("EVALSHA", std::future::ready(other)).await,
        }
    }

    /// Runs `cmd` on every master (on the one server when not a cluster),
    /// within one timeout; answers each node's address (`host:port`, or
    /// `server`) with its reply, an error reply included as
    /// [`redis::Value::ServerError`].
    pub async fn on_masters(
        &self,
        command: &'static str,
        cmd: redis::Cmd,
    ) -> Result<Vec<(String, redis::Value)>, Error> {
        let value: redis::Value = self
            .counted(command, self.run_timed(command, cmd, Route::Masters))
            .await?;
        Ok(match (&self.conn, value) {
            (Conn::Cluster(_), redis::Value::Map(nodes)) => nodes
                .into_iter()
                .map(|(addr, v)| {
                    let addr = match addr {
                        redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                        other => format!("{other:?}"),
                    };
                    (addr, v)
                })
                .collect(),
            (_, v) => vec![("server".to_owned(), v)],
        })
    }

    /// Runs `cmd` on the node at `addr`, as [`on_masters`](Self::on_masters)
    /// named it (on the one server when not a cluster).
    pub async fn on_node<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        addr: &str,
        cmd: redis::Cmd,
    ) -> Result<T, Error> {
        self.counted(command, self.run_timed(command, cmd, Route::Node(addr)))
            .await
    }

    /// Counts and logs a failed command.
    async fn counted<T>(
        &self,
        command: &'static str,
        run: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let result = run.await;
        if let Err(e) = &result {
            ::metrics::counter!(metrics::REDIS_ERRORS, "command" => command).increment(1);
            tracing::debug!(command, error = %e, "redis command failed");
        }
        result
    }

    /// [`run`](Self::run) before the error count: the breaker, the timeout,
    /// and the round trip's duration.
    async fn run_timed<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        cmd: redis::Cmd,
        route: Route<'_>,
    ) -> Result<T, Error> {
        if !self.breaker.admits() {
            return Err(Error::Disconnected);
        }
        let start = std::time::Instant::now();
        let answer = tokio::time::timeout(self.timeout, async {
            let conn = match &self.conn {
                Conn::Server(conn) => return cmd.query_async::<T>(&mut conn.clone()).await,
                Conn::Cluster(conn) => conn,
            };
            let routing = match route {
                Route::Auto => return cmd.query_async::<T>(&mut conn.clone()).await,
                Route::Masters => {
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None))
                }
                Route::Node(addr) => {
                    let (host, port) = addr
                        .rsplit_once(':')
                        .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
                        .ok_or_else(|| {
                            redis::RedisError::from((
                                redis::ErrorKind::Client,
                                "not a node address",
                                addr.to_owned(),
                            ))
                        })?;
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port })
                }
            };
            let value = conn.clone().route_command(cmd, routing).await?;
            T::from_redis_value(value).map_err(redis::RedisError::from)
        })
        .await;
        ::metrics::histogram!(metrics::REDIS_DURATION, "command" => command)
            .record(start.elapsed());
        let result = match answer {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Command(e)),
            Err(_) => Err(Error::Timeout(self.timeout)),
        };
        // Only a Redis that does not answer counts against the breaker; an
        // error reply (WRONGTYPE, ...) means it is there.
        let unreachable = match &result {
            Err(Error::Timeout(_) | Error::Disconnected) => true,
            Err(Error::Command(e)) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
            }
            Ok(_) => false,
        };
        self.set_up(!unreachable);
        if self.breaker.record(unreachable) {
            tracing::warn!(
                redis = self.which(),
                open_for = ?BREAKER_OPEN,
                "redis keeps failing; not asking it for a while"
            );
        }
        result
    }
}

/// Sends the reads queued on `rx` as `MGET`s, at most [`GET_ROUND_TRIPS`]
/// at a time; each takes what has queued up meanwhile.
async fn gather(redis: Redis, mut rx: tokio::sync::mpsc::UnboundedReceiver<Waiting>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(GET_ROUND_TRIPS));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Reads whose requests gave up waiting are not sent.
        let mut batch = Vec::with_capacity(8);
        batch.extend(Some(first).filter(|(_, tx)| !tx.is_closed()));
        while batch.len() < GET_BATCH {
            match rx.try_recv() {
                Ok(next) if next.1.is_closed() => {}
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let redis = redis.clone();
        crate::metrics::spawn(async move {
            let _slot = slot;
            // Each key once: a hot key read by many requests at a time is
            // sent, and copied back, once.
            let mut keys: Vec<&str> = Vec::with_capacity(batch.len());
            let mut index = Vec::with_capacity(batch.len());
            for (key, _) in &batch {
                match keys.iter().position(|k| *k == key) {
                    Some(i) => index.push(i),
                    None => {
                        index.push(keys.len());
                        keys.push(key);
                    }
                }
            }
            let values = read_all(&redis, &keys).await;
            for ((_, tx), i) in batch.into_iter().zip(index) {
                let value = values.get(i).cloned().unwrap_or(Err(Error::Disconnected));
                let _ = tx.send(value);
            }
        });
    }
}

/// The values at `keys`, one answer per key: one `MGET` on one server; on
/// a cluster (which takes no command across slots) one `GET` per key, all
/// at once.
async fn read_all(redis: &Redis, keys: &[&str]) -> Vec<Result<Option<Bytes>, Error>> {
    if redis.is_cluster() {
        let gets = keys.iter().map(|key| {
            let mut cmd = redis::cmd("GET");
            cmd.arg(*key);
            redis.run::<Option<Bytes>>("GET", cmd)
        });
        return futures_util::future::join_all(gets).await;
    }
    let mut cmd = redis::cmd("MGET");
    cmd.arg(keys);
    // MGET answers nil for a key that holds no string (never WRONGTYPE), so
    // one odd key cannot fail the others.
    match redis.run::<Vec<Option<Bytes>>>("GET", cmd).await {
        Ok(values) if values.len() == keys.len() => values.into_iter().map(Ok).collect(),
        Ok(_) => vec![Err(Error::Disconnected); keys.len()],
        Err(e) => vec![Err(e); keys.len()],
    }
}

/// Where a command goes on a cluster.
#[derive(Clone, Copy)]
enum Route<'a> {
    /// By its keys (or any node for a command without keys).
    Auto,
    /// To every master, each answer kept.
    Masters,
    /// To one node, by address.
    Node(&'a str),
}

impl Breaker {
    /// Whether a command may be sent: the breaker is closed, or it is open
    /// past its time and this command is the one probe.
    fn admits(&self) -> bool {
        let until = self.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let now = mono_ms();
        // Half-open: let one command probe; others wait for its result.
        now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now + millis(BREAKER_OPEN),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Records whether the last command went unanswered; answers whether
    /// that opened the breaker.
    fn record(&self, unreachable: bool) -> bool {
        if !unreachable {
            self.failures.store(0, Ordering::Relaxed);
            self.open_until.store(0, Ordering::Relaxed);
        } else if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= BREAKER_FAILURES {
            let until = mono_ms() + millis(BREAKER_OPEN);
            return self.open_until.swap(until, Ordering::Relaxed) == 0;
        }
        false
    }
}

/// Milliseconds on a monotonic clock that starts at 1 (0 means "closed").
fn mono_ms() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    millis(START.get_or_init(std::time::Instant::now).elapsed()) + 1
}

/// Whole milliseconds of `d`, for PX arguments.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Log lines name the Redis: this region's own, or another region's by
    /// its name (as `Regions` makes them).
    #[tokio::test]
    async fn log_lines_say_which_redis() {
        let redis = |t| Redis::new(t, "p:", Duration::from_millis(100), None).unwrap();
        let own = redis(Target::Server("redis://127.0.0.1:1"));
        assert_eq!(own.which(), HERE);
        assert_eq!(
            redis(Target::Server("redis://127.0.0.1:1"))
                .of_region("us")
                .which(),
            "us"
        );
    }
}
