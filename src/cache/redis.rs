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
/// How long a key purge's tombstone (`#kp:<key>`, its time) is kept: a
/// store of an answer fetched before the purge is refused by Redis itself
/// for this long, whichever replica sends it and however late. An answer
/// whose fetch started longer ago than this is never stored.
pub const TOMBSTONE: Duration = Duration::from_secs(600);

/// The time on Redis's clock, in ms, as Lua sees it.
const LUA_NOW: &str = "local t = redis.call('TIME') \
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) ";

/// A Lua script and its SHA1, worked out on first use.
struct Lua {
    code: std::borrow::Cow<'static, str>,
    hash: OnceLock<String>,
}

impl Lua {
    const fn new(code: &'static str) -> Self {
        Self {
            code: std::borrow::Cow::Borrowed(code),
            hash: OnceLock::new(),
        }
    }

    fn owned(code: String) -> Self {
        Self {
            code: std::borrow::Cow::Owned(code),
            hash: OnceLock::new(),
        }
    }

    fn code(&self) -> &str {
        &self.code
    }

    fn hash(&self) -> &str {
        self.hash
            .get_or_init(|| redis::Script::new(&self.code).get_hash().to_owned())
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

    /// Records a purge of `tag` at Redis's time (later than any earlier
    /// purge of it, so it only grows, across a flush too: it is a time, not
    /// a counter), kept for `keep`; answers the time.
    pub async fn purge_tag(&self, tag: &str, keep: Duration) -> Result<u64, StoreError> {
        static PURGE_TAG: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| {
            Lua::owned(format!(
                "{LUA_NOW} \
                local last = tonumber(redis.call('GET', KEYS[1]) or '0') or 0 \
                if last >= now then now = last + 1 end \
                redis.call('SET', KEYS[1], string.format('%.0f', now), 'PX', ARGV[1]) \
                return now"
            ))
        });
        self.run_script::<u64>(&PURGE_TAG, &[self.tag_key(tag)], &[millis(keep)])
            .await
    }

    /// Deletes `key`'s entry and records the purge's time in its tombstone
    /// (kept [`TOMBSTONE`]), so a late store of an older answer is refused;
    /// if the key has Vary variants, raises their internal tag (kept `keep`)
    /// too. Answers whether an entry went, and the purge's time.
    pub async fn purge_key(
        &self,
        key: &str,
        variants_tag: &str,
        keep: Duration,
    ) -> Result<(bool, u64), StoreError> {
        static PURGE_KEY: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| {
            Lua::owned(format!(
                "{LUA_NOW} \
                local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0 \
                if last >= now then now = last + 1 end \
                redis.call('SET', KEYS[2], string.format('%.0f', now), 'PX', ARGV[1]) \
                local g = redis.call('GET', KEYS[3]) \
                if g then \
                  local t = math.max(now, (tonumber(g) or 0) + 1) \
                  redis.call('SET', KEYS[3], string.format('%.0f', t), 'PX', ARGV[2]) \
                end \
                return {{redis.call('DEL', KEYS[1]), now}}"
            ))
        });
        let keys = [
            self.full_key(key),
            self.tombstone_key(key),
            self.tag_key(variants_tag),
        ];
        let args = [millis(TOMBSTONE), millis(keep)];
        let (deleted, time): (u64, u64) = self.run_script(&PURGE_KEY, &keys, &args).await?;
        Ok((deleted > 0, time))
    }

    /// The latest purge times of `tags` (0 for a tag not purged within its
    /// keep). A value that is not a time counts as a purge just now, so the
    /// entries carrying it are refused, not the whole of L2.
    pub async fn tag_generations(&self, tags: &[&str]) -> Result<Vec<u64>, StoreError> {
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for t in tags {
            cmd.arg(self.tag_key(t));
        }
        let values = self.run::<Vec<Option<Vec<u8>>>>("MGET", cmd).await?;
        Ok(values
            .into_iter()
            .map(|v| match v {
                None => 0,
                Some(v) => std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u64::MAX),
            })
            .collect())
    }

    /// Marks this Redis with `id` if unmarked (kept `keep`, renewed), and
    /// reads its clock. Answers the mark found and Redis's time in ms: a
    /// mark other than the one seen before means Redis was flushed,
    /// replaced or evicted everything.
    pub async fn mark_and_time(
        &self,
        id: &str,
        keep: Duration,
    ) -> Result<(String, u64), StoreError> {
        static MARK: std::sync::LazyLock<Lua> = std::sync::LazyLock::new(|| {
            Lua::owned(format!(
                "local v = redis.call('GET', KEYS[1]) \
                if not v then v = ARGV[1] redis.call('SET', KEYS[1], v, 'PX', ARGV[2]) \
                else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end \
                {LUA_NOW} \
                return {{v, now}}"
            ))
        });
        let key = format!("{}#mark", self.prefix);
        let args = [id.to_owned(), millis(keep).to_string()];
        self.run_script(&MARK, &[key], &args).await
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
        self.run_script::<u64>(&UNLOCK, &[self.lock_key(key)], &[token])
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
        let wait = self.run_script::<u64>(&GCRA, &[key], &args).await?;
        Ok((wait > 0).then(|| Duration::from_micros(wait)))
    }

    /// Runs `script` on `keys` by its SHA1 (EVALSHA), so the script's text
    /// is not sent with every call; sends it whole (EVAL, which also makes
    /// Redis keep it) only when Redis does not know it yet.
    async fn run_script<T: redis::FromRedisValue>(
        &self,
        script: &Lua,
        keys: &[impl AsRef<str>],
        args: &[impl redis::ToRedisArgs],
    ) -> Result<T, StoreError> {
        let call = |name: &str, body: &str| {
            let mut cmd = redis::cmd(name);
            cmd.arg(body).arg(keys.len());
            for k in keys {
                cmd.arg(k.as_ref());
            }
            cmd.arg(args);
            cmd
        };
        match self.run("EVALSHA", call("EVALSHA", script.hash())).await {
            Err(StoreError::Redis(e))
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                self.run("EVAL", call("EVAL", script.code())).await
            }
            other => other,
        }
    }

    /// The tombstone of a key purge: `#kp:<key>`, holding the purge's time.
    fn tombstone_key(&self, key: &str) -> String {
        format!("{}#kp:{key}", self.prefix)
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

    /// Stores unless the key (for a Vary variant, its primary key) was
    /// purged at or after the entry's fetch started: Redis checks the
    /// purge's tombstone in the same script, so a store that arrives after
    /// a purge made on any replica cannot put the old answer back. A
    /// variant also makes sure its primary key's internal variants tag
    /// exists (at 0) for as long as it lives, so a key purge knows to raise
    /// it; keys without variants get none.
    async fn put(&self, key: &str, entry: Arc<Entry>) -> Result<(), StoreError> {
        static STORE: Lua = Lua::new(
            "local t = redis.call('GET', KEYS[2]) \
            if t and (tonumber(t) or math.huge) >= tonumber(ARGV[3]) then return 0 end \
            redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
            if KEYS[3] and not redis.call('SET', KEYS[3], '0', 'NX', 'PX', ARGV[2]) \
              and redis.call('PTTL', KEYS[3]) < tonumber(ARGV[2]) then \
              redis.call('PEXPIRE', KEYS[3], ARGV[2]) end \
            return 1",
        );
        let keep = millis(entry.keep_for(SystemTime::now()));
        if keep == 0 {
            return Ok(());
        }
        let primary = primary_key(key);
        let mut keys = vec![self.full_key(key), self.tombstone_key(primary)];
        if primary.len() < key.len() {
            keys.push(self.tag_key(&crate::invalidation::variant_tag(primary)));
        }
        let value = codec::encode(&entry);
        let (keep, fetched) = (keep.to_string(), entry.fetched_ms.to_string());
        let args: [&[u8]; 3] = [value.as_ref(), keep.as_bytes(), fetched.as_bytes()];
        self.run_script::<u64>(&STORE, &keys, &args)
            .await
            .map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.full_key(key));
        Ok(self.run::<u64>("DEL", cmd).await? > 0)
    }
}

/// Whole milliseconds of `d`, for PX arguments.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The primary key of a cache key: a Vary variant's key is its primary key
/// plus `#vary...` (`#` never appears in a rendered key).
pub fn primary_key(key: &str) -> &str {
    key.split_once('#').map_or(key, |(primary, _)| primary)
}
