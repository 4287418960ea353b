//! L2: Redis, shared by every replica. Values are [`codec`](super::codec)
//! bytes under `key_prefix + key`, expiring with the entry.
//!
//! Redis is an accelerator, never a dependency: the connection is made
//! lazily and re-made in the background by redis's `ConnectionManager`,
//! every command is bounded by the configured timeout, and callers treat any
//! error as a miss. After [`BREAKER_FAILURES`] failures in a row a circuit
//! breaker stops asking Redis for [`BREAKER_OPEN`]; then one command probes
//! it again. So a dead or black-holed Redis costs a few requests one timeout
//! each, and the rest nothing.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Entry, Store, StoreError, codec, now_ms};
use crate::config::RedisConfig;

/// Consecutive failures that open the breaker.
pub const BREAKER_FAILURES: u32 = 3;
/// How long an open breaker refuses commands before a probe.
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);

/// A Lua script and its SHA1, worked out on first use.
struct Lua {
    code: &'static str,
    hash: OnceLock<String>,
}

impl Lua {
    const fn new(code: &'static str) -> Self {
        Self {
            code,
            hash: OnceLock::new(),
        }
    }

    fn hash(&self) -> &str {
        self.hash
            .get_or_init(|| redis::Script::new(self.code).get_hash().to_owned())
    }
}

/// The circuit breaker's state, shared by clones of the store.
#[derive(Default)]
struct Breaker {
    failures: AtomicU32,
    /// ms since the epoch until which commands are refused.
    open_until: AtomicU64,
}

/// The Redis store.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
    up: Arc<AtomicBool>,
    breaker: Arc<Breaker>,
}

impl RedisStore {
    /// Prepares a connection; nothing is sent until the first command, so a
    /// Redis that is down at start-up does not stop the proxy from starting.
    pub fn new(cfg: &RedisConfig) -> Result<Self, StoreError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = client.clone().get_connection_manager_lazy(manager_cfg)?;
        Ok(Self {
            client,
            conn,
            prefix: cfg.key_prefix.as_str().into(),
            timeout: cfg.timeout,
            up: Arc::new(AtomicBool::new(false)),
            breaker: Arc::default(),
        })
    }

    /// Whether the last command succeeded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The full Redis key of a cache key.
    pub fn full_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + key.len());
        k.push_str(&self.prefix);
        k.push_str(key);
        k
    }

    /// Runs one command within the timeout, recording whether Redis answered.
    async fn run<T: redis::FromRedisValue>(
        &self,
        command: &'static str,
        cmd: redis::Cmd,
    ) -> Result<T, StoreError> {
        let result = self.run_timed(command, cmd).await;
        if let Err(e) = &result {
            metrics::counter!(crate::metrics::REDIS_ERRORS, "command" => command).increment(1);
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
    ) -> Result<T, StoreError> {
        let until = self.breaker.open_until.load(Ordering::Relaxed);
        if until != 0 {
            if now_ms() < until {
                return Err(StoreError::Disconnected);
            }
            // Half-open: let this one command probe; others wait for its result.
            if self
                .breaker
                .open_until
                .compare_exchange(
                    until,
                    now_ms() + u64::try_from(BREAKER_OPEN.as_millis()).unwrap_or(1000),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                return Err(StoreError::Disconnected);
            }
        }
        let mut conn = self.conn.clone();
        let start = std::time::Instant::now();
        let answer = tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await;
        metrics::histogram!(crate::metrics::REDIS_DURATION, "command" => command)
            .record(start.elapsed());
        let result = match answer {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        // Only a Redis that does not answer counts against the breaker; an
        // error reply (WRONGTYPE, ...) means it is there.
        let unreachable = match &result {
            Err(StoreError::Timeout(_) | StoreError::Disconnected) => true,
            Err(StoreError::Redis(e)) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
            }
            _ => false,
        };
        self.up.store(!unreachable, Ordering::Relaxed);
        if !unreachable {
            self.breaker.failures.store(0, Ordering::Relaxed);
            self.breaker.open_until.store(0, Ordering::Relaxed);
        } else if self.breaker.failures.fetch_add(1, Ordering::Relaxed) + 1 >= BREAKER_FAILURES {
            let until = now_ms() + u64::try_from(BREAKER_OPEN.as_millis()).unwrap_or(1000);
            if self.breaker.open_until.swap(until, Ordering::Relaxed) == 0 {
                tracing::warn!(open_for = ?BREAKER_OPEN, "redis keeps failing; not asking it for a while");
            }
        }
        result
    }
}

impl RedisStore {
    /// The Redis key holding a tag's generation.
    fn tag_key(&self, tag: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + 4 + tag.len());
        k.push_str(&self.prefix);
        // `#` never appears in a cache key, so internal keys cannot collide.
        k.push_str("#tag:");
        k.push_str(tag);
        k
    }

    /// Raises a tag's generation; answers the new one.
    pub async fn bump_tag(&self, tag: &str) -> Result<u64, StoreError> {
        let mut cmd = redis::cmd("INCR");
        cmd.arg(self.tag_key(tag));
        self.run::<u64>("INCR", cmd).await
    }

    /// The current generations of `tags` (0 for a tag never purged).
    pub async fn tag_generations(&self, tags: &[&str]) -> Result<Vec<u64>, StoreError> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for t in tags {
            cmd.arg(self.tag_key(t));
        }
        let values = self.run::<Vec<Option<u64>>>("MGET", cmd).await?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Publishes `payload` on `channel` (used as given, without the prefix).
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.run::<u64>("PUBLISH", cmd).await.map(|_| ())
    }

    /// Deletes every entry whose cache key starts with `prefix`, by SCAN
    /// (each step bounded by the timeout); answers how many went.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let mut pattern = String::with_capacity(self.prefix.len() + prefix.len() + 1);
        for c in self.prefix.chars().chain(prefix.chars()) {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, mut keys): (u64, Vec<String>) = self.run("SCAN", scan).await?;
            // Tag generations and locks are not entries.
            keys.retain(|k| {
                !k.strip_prefix(&*self.prefix)
                    .is_some_and(|rest| rest.starts_with('#'))
            });
            if !keys.is_empty() {
                let mut unlink = redis::cmd("UNLINK");
                unlink.arg(&keys);
                deleted += self.run::<usize>("UNLINK", unlink).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// Takes the lock `lock:<key>` for `ttl` if nobody holds it.
    pub async fn try_lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        cmd.arg(self.lock_key(key))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ms);
        Ok(self.run::<Option<String>>("SET", cmd).await?.is_some())
    }

    /// Whether someone holds `lock:<key>`.
    pub async fn is_locked(&self, key: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(self.lock_key(key));
        Ok(self.run::<u64>("EXISTS", cmd).await? > 0)
    }

    /// Releases `lock:<key>` if it is still ours (it may have expired and
    /// been taken by another replica meanwhile).
    pub async fn unlock(&self, key: &str, token: &str) -> Result<(), StoreError> {
        static UNLOCK: Lua = Lua::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        );
        self.run_script::<u64>(&UNLOCK, &self.lock_key(key), &[token])
            .await
            .map(|_| ())
    }

    /// Counts one request against a GCRA limit kept under `#rl:<id>`:
    /// `interval` between requests on average, `burst` at once. Answers
    /// `None` if it may pass, otherwise how long until it could. Redis's own
    /// clock decides, so replicas with skewed clocks agree.
    pub async fn rate_limit(
        &self,
        id: &str,
        interval: Duration,
        burst: u32,
    ) -> Result<Option<Duration>, StoreError> {
        // tat: the theoretical arrival time of the next request, in µs.
        static GCRA: Lua = Lua::new(
            "local t = redis.call('TIME') \
            local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) \
            local interval = tonumber(ARGV[1]) \
            local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now) \
            local new = tat + interval \
            local allowed = now + interval * tonumber(ARGV[2]) \
            if new > allowed then return new - allowed end \
            redis.call('SET', KEYS[1], new, 'PX', math.ceil((new - now) / 1000)) \
            return 0",
        );
        let micros = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let key = format!("{}#rl:{id}", self.prefix);
        let args = [micros.to_string(), burst.to_string()];
        let wait = self.run_script::<u64>(&GCRA, &key, &args).await?;
        Ok((wait > 0).then(|| Duration::from_micros(wait)))
    }

    /// Runs `script` on one key by its SHA1 (EVALSHA), so the script's text
    /// is not sent with every call; sends it whole (EVAL, which also makes
    /// Redis keep it) only when Redis does not know it yet.
    async fn run_script<T: redis::FromRedisValue>(
        &self,
        script: &Lua,
        key: &str,
        args: &[impl redis::ToRedisArgs],
    ) -> Result<T, StoreError> {
        let call = |name: &str, body: &str| {
            let mut cmd = redis::cmd(name);
            cmd.arg(body).arg(1).arg(key).arg(args);
            cmd
        };
        match self.run("EVALSHA", call("EVALSHA", script.hash())).await {
            Err(StoreError::Redis(e))
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                self.run("EVAL", call("EVAL", script.code)).await
            }
            other => other,
        }
    }

    fn lock_key(&self, key: &str) -> String {
        format!("{}#lock:{key}", self.prefix)
    }

    /// A client for opening the pub/sub connection.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The key prefix (also the prefix of sidecache's channels).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The per-command timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.full_key(key));
        let Some(bytes) = self.run::<Option<Bytes>>("GET", cmd).await? else {
            return Ok(None);
        };
        let entry = codec::decode(bytes)?;
        if entry.keep_for(SystemTime::now()).is_zero() {
            return Ok(None);
        }
        Ok(Some(Arc::new(entry)))
    }

    async fn put(&self, key: &str, entry: Arc<Entry>) -> Result<(), StoreError> {
        let keep = entry.keep_for(SystemTime::now());
        let millis = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return Ok(());
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.full_key(key))
            .arg(codec::encode(&entry).as_ref())
            .arg("PX")
            .arg(millis);
        self.run::<()>("SET", cmd).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.full_key(key));
        Ok(self.run::<u64>("DEL", cmd).await? > 0)
    }
}
