//! L2: Redis, shared by every replica. Values are [`codec`]
//! bytes under `key_prefix + key`, expiring with the entry; the connection
//! (timeouts, breaker, scripts) is [`crate::redis::Redis`].
//!
//! This file also owns the layout of sidecache's internal keys, which all
//! start with `#` (never part of a rendered key): a tag's latest purge
//! time (`#tag:<tag>`) and a key purge's tombstone (`#kp:<key>`). The store
//! script reads the tombstone, the purge scripts (`invalidation::shared`)
//! write both.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::vary::{primary_key, variant_tag};
use super::{Entry, Store, StoreError, StoreFuture, codec};
use crate::redis::{Redis, Script, millis};

/// How long a key purge's tombstone (`#kp:<key>`, its time) is kept: a
/// store of an answer fetched before the purge is refused by Redis itself
/// for this long, whichever replica sends it and however late. An answer
/// whose fetch started longer ago than this is never stored.
pub const TOMBSTONE: Duration = Duration::from_secs(600);

/// The Redis key holding `tag`'s latest purge time.
pub fn tag_key(redis: &Redis, tag: &str) -> String {
    redis.key2("#tag:", tag)
}

/// The Redis key of `key`'s purge tombstone.
pub fn tombstone_key(redis: &Redis, key: &str) -> String {
    redis.key2("#kp:", key)
}

/// The entry store on the shared connection.
#[derive(Clone)]
pub struct RedisStore {
    redis: Redis,
}

impl RedisStore {
    /// Entries on `redis`.
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }

    async fn get(&self, key: &str) -> Result<Option<Arc<Entry>>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.redis.key(key));
        let Some(bytes) = self.redis.run::<Option<Bytes>>("GET", cmd).await? else {
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
        static STORE: Script = Script::new(
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
        let mut keys = vec![self.redis.key(key), tombstone_key(&self.redis, primary)];
        if primary.len() < key.len() {
            keys.push(tag_key(&self.redis, &variant_tag(primary)));
        }
        let value = codec::encode(&entry);
        let (keep, fetched) = (keep.to_string(), entry.fetched_ms.to_string());
        let args: [&[u8]; 3] = [value.as_ref(), keep.as_bytes(), fetched.as_bytes()];
        self.redis
            .run_script::<u64>(&STORE, &keys, &args)
            .await
            .map(|_| ())?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.redis.key(key));
        Ok(self.redis.run::<u64>("DEL", cmd).await? > 0)
    }

    /// Deletes every entry whose cache key starts with `prefix`, by SCAN
    /// (each step bounded by the timeout); answers how many went.
    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let own = self.redis.prefix();
        let mut pattern = String::with_capacity(own.len() + prefix.len() + 1);
        for c in own.chars().chain(prefix.chars()) {
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
            let (next, mut keys): (u64, Vec<String>) = self.redis.run("SCAN", scan).await?;
            // Tag times, tombstones and locks are not entries.
            keys.retain(|k| {
                !k.strip_prefix(own)
                    .is_some_and(|rest| rest.starts_with('#'))
            });
            if !keys.is_empty() {
                let mut unlink = redis::cmd("UNLINK");
                unlink.arg(&keys);
                deleted += self.redis.run::<usize>("UNLINK", unlink).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

impl Store for RedisStore {
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<Entry>>> {
        Box::pin(RedisStore::get(self, key))
    }

    fn put<'a>(&'a self, key: &'a str, entry: Arc<Entry>) -> StoreFuture<'a, ()> {
        Box::pin(RedisStore::put(self, key, entry))
    }

    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(RedisStore::delete(self, key))
    }

    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, usize> {
        Box::pin(RedisStore::delete_prefix(self, prefix))
    }
}
