//! L2: Redis, shared by every replica. Values are [`codec`](super::codec)
//! bytes under `key_prefix + key`, expiring with the entry.
//!
//! Redis is an accelerator, never a dependency: the connection is made
//! lazily and re-made in the background by redis's `ConnectionManager`,
//! every command is bounded by the configured timeout, and callers treat any
//! error as a miss.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Entry, Store, StoreError, codec};
use crate::config::RedisConfig;

/// The Redis store.
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
    up: Arc<AtomicBool>,
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
    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        let result = match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        };
        self.up.store(result.is_ok(), Ordering::Relaxed);
        if let Err(e) = &result {
            tracing::debug!(error = %e, "redis command failed");
        }
        result
    }
}

impl RedisStore {
    /// The Redis key holding a tag's generation.
    fn tag_key(&self, tag: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + 4 + tag.len());
        k.push_str(&self.prefix);
        k.push_str("tag:");
        k.push_str(tag);
        k
    }

    /// Raises a tag's generation; answers the new one.
    pub async fn bump_tag(&self, tag: &str) -> Result<u64, StoreError> {
        let mut cmd = redis::cmd("INCR");
        cmd.arg(self.tag_key(tag));
        self.run::<u64>(cmd).await
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
        let values = self.run::<Vec<Option<u64>>>(cmd).await?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// Publishes `payload` on `channel` (used as given, without the prefix).
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.run::<u64>(cmd).await.map(|_| ())
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
            let (next, keys): (u64, Vec<String>) = self.run(scan).await?;
            if !keys.is_empty() {
                let mut unlink = redis::cmd("UNLINK");
                unlink.arg(&keys);
                deleted += self.run::<usize>(unlink).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
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
        let Some(bytes) = self.run::<Option<Bytes>>(cmd).await? else {
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
        self.run::<()>(cmd).await
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.full_key(key));
        Ok(self.run::<u64>(cmd).await? > 0)
    }
}
