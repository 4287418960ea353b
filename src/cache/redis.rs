//! L2: Redis, shared by every replica. Values are [`codec`]
//! bytes under `key_prefix + key`, expiring with the entry; the connection
//! (timeouts, breaker, scripts) is [`crate::redis::Redis`].
//!
//! This file also owns the layout of sidecache's keys. Everything that
//! belongs to one cache key (its entry, its `Vary` variants, its purge
//! tombstone, its variants' purge time) shares one Redis Cluster slot, so
//! the scripts that store and purge it touch one slot: the primary key is
//! the hash tag, `<prefix>{<key>}`. Other keys hash apart, so a cluster
//! spreads entries over all its masters.
//!
//! - `<prefix>{product:1}`: the entry; `<prefix>{product:1}#vary&...` a
//!   variant (`#` never appears in a rendered key).
//! - `<prefix>{product:1}#!kp`: the key's purge tombstone (its time).
//! - `<prefix>{product:1}#!vary`: the latest purge time of its variants.
//! - `<prefix>#tag:<tag>`: a tag's latest purge time, one key per tag.
//!
//! A key that is empty or holds a brace (which would end the hash tag
//! early) is written `<prefix>{#<key without braces>}<key>`: still one
//! slot for all of it, and never equal to the plain form, whose keys hold
//! no `#`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::vary::primary_key;
use super::{Entry, Store, StoreError, StoreFuture, codec};
use crate::redis::{Redis, Script, millis};

/// How long a key purge's tombstone (`#!kp`, its time) is kept: a store of
/// an answer fetched before the purge is refused by Redis itself for this
/// long, whichever replica sends it and however late. An answer whose
/// fetch started longer ago than this is never stored.
pub const TOMBSTONE: Duration = Duration::from_secs(600);

/// What ends a tombstone's name.
const TOMBSTONE_SUFFIX: &str = "#!kp";
/// What ends the name of a key's variants' purge time.
const VARIANTS_SUFFIX: &str = "#!vary";
/// The internal tag every variant carries starts with this
/// ([`super::vary::variant_tag`]).
const VARIANT_TAG: &str = "#vary:";

/// `key` (a primary key, or a variant's) in its slot group, then `suffix`.
fn grouped(redis: &Redis, key: &str, suffix: &str) -> String {
    let primary = primary_key(key);
    let rest = &key[primary.len()..];
    let own = redis.prefix();
    let mut k = String::with_capacity(own.len() + 2 * key.len() + suffix.len() + 3);
    k.push_str(own);
    k.push('{');
    if primary.is_empty() || primary.contains(['{', '}']) {
        k.push('#');
        k.extend(primary.chars().filter(|c| !matches!(c, '{' | '}')));
        k.push('}');
        k.push_str(primary);
    } else {
        k.push_str(primary);
        k.push('}');
    }
    k.push_str(rest);
    k.push_str(suffix);
    k
}

/// The cache key an entry's Redis key (without the key prefix) stands
/// for; `None` for sidecache's internal keys and for keys not laid out by
/// [`grouped`].
fn cache_key_of(name: &str) -> Option<String> {
    if name.ends_with(TOMBSTONE_SUFFIX) || name.ends_with(VARIANTS_SUFFIX) {
        return None;
    }
    let inner = name.strip_prefix('{')?;
    match inner.strip_prefix('#') {
        Some(odd) => odd.split_once('}').map(|(_, key)| key.to_owned()),
        None => inner
            .split_once('}')
            .map(|(primary, rest)| format!("{primary}{rest}")),
    }
}

/// The Redis key of the entry under `key`.
pub fn entry_key(redis: &Redis, key: &str) -> String {
    grouped(redis, key, "")
}

/// The Redis key holding `tag`'s latest purge time (a key's variants' tag
/// sits beside the key).
pub fn tag_key(redis: &Redis, tag: &str) -> String {
    match tag.strip_prefix(VARIANT_TAG) {
        Some(key) => grouped(redis, key, VARIANTS_SUFFIX),
        None => crate::keyspace::tag(redis, tag),
    }
}

/// The Redis key of `key`'s purge tombstone.
pub fn tombstone_key(redis: &Redis, key: &str) -> String {
    grouped(redis, primary_key(key), TOMBSTONE_SUFFIX)
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
        let Some(bytes) = self.redis.get(entry_key(&self.redis, key)).await? else {
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
        // One slot: the entry, its tombstone, its variants' purge time.
        let mut keys = vec![entry_key(&self.redis, key), tombstone_key(&self.redis, key)];
        if primary.len() < key.len() {
            keys.push(grouped(&self.redis, primary, VARIANTS_SUFFIX));
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
        cmd.arg(entry_key(&self.redis, key));
        Ok(self.redis.run::<u64>("DEL", cmd).await? > 0)
    }

    /// Deletes every entry whose cache key starts with `prefix`, by SCAN on
    /// every master (each step bounded by the timeout); answers how many
    /// went.
    async fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let own = self.redis.prefix();
        let pattern = |tail: &str| {
            let mut p = String::with_capacity(own.len() + tail.len() + 4);
            for c in own.chars().chain(std::iter::once('{')).chain(tail.chars()) {
                if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                    p.push('\\');
                }
                p.push(c);
            }
            p.push('*');
            p
        };
        // The plain layout by the prefix itself; the odd one (keys holding
        // braces) cannot be matched by pattern, so all of it is read.
        let mut patterns = vec![pattern(prefix)];
        if !prefix.is_empty() {
            patterns.push(pattern("#"));
        }
        let masters = self.redis.on_masters("PING", redis::cmd("PING")).await?;
        let mut deleted = 0;
        for (node, _) in &masters {
            for pattern in &patterns {
                deleted += self.delete_matching(node, pattern, prefix).await?;
            }
        }
        Ok(deleted)
    }

    /// Deletes the entries on `node` whose Redis keys match `pattern` and
    /// whose cache keys start with `prefix`.
    async fn delete_matching(
        &self,
        node: &str,
        pattern: &str,
        prefix: &str,
    ) -> Result<usize, StoreError> {
        let own = self.redis.prefix();
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, mut keys): (u64, Vec<String>) =
                self.redis.on_node("SCAN", node, scan).await?;
            // Tombstones and variants' purge times are not entries.
            keys.retain(|k| {
                k.strip_prefix(own)
                    .and_then(cache_key_of)
                    .is_some_and(|key| key.starts_with(prefix))
            });
            if !keys.is_empty() {
                // On a cluster the client splits this per slot.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn redis() -> Redis {
        Redis::new(
            crate::redis::Target::Server("redis://127.0.0.1:1"),
            "sc:",
            Duration::from_millis(10),
            None,
        )
        .expect("a URL")
    }

    /// Hash tag of a Redis key, as Redis Cluster picks it.
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    /// Everything of one cache key shares a hash tag (so a slot), whatever
    /// the key holds; and an entry's Redis key reads back as its cache key.
    #[tokio::test]
    async fn one_key_one_slot() {
        let r = redis();
        for key in ["product:1", "", "}x", "a{b}c", "{", "p}"] {
            let variant = format!("{key}#vary&accept-language=de");
            let names = [
                entry_key(&r, key),
                entry_key(&r, &variant),
                tombstone_key(&r, key),
                tombstone_key(&r, &variant),
                tag_key(&r, &super::super::vary::variant_tag(key)),
            ];
            let tag = hash_tag(&names[0]);
            assert!(!tag.is_empty() && tag != names[0], "{key:?}: {names:?}");
            for n in &names {
                assert_eq!(hash_tag(n), tag, "{key:?}: {n}");
            }
            let own = r.prefix();
            assert_eq!(cache_key_of(&names[0][own.len()..]).as_deref(), Some(key));
            assert_eq!(
                cache_key_of(&names[1][own.len()..]).as_deref(),
                Some(variant.as_str())
            );
            assert_eq!(cache_key_of(&names[2][own.len()..]), None);
            assert_eq!(cache_key_of(&names[4][own.len()..]), None);
        }
        assert_eq!(entry_key(&r, "product:1"), "sc:{product:1}");
        // Tags spread: each its own key, hashed whole.
        assert_eq!(tag_key(&r, "category:4"), "sc:#tag:category:4");
    }
}
