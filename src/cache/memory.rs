//! L1: process memory, bounded by bytes (moka with a weigher), each entry
//! expiring at the end of its own lifetime.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use moka::future::Cache;

use super::{Entry, now_ms};

/// moka's own bookkeeping per entry, counted in the weight.
const ENTRY_OVERHEAD: usize = 200;

/// The in-process cache.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<String, Slot>,
}

/// An L1 value: the entry and when it entered L1 (ms since the epoch),
/// which bounds how long L1 trusts it while cut off from purges.
#[derive(Clone)]
pub struct Slot {
    /// The entry.
    pub entry: Arc<Entry>,
    /// When it was put in L1.
    pub at_ms: u64,
}

/// Each entry lives until the end of its grace period; a replaced entry
/// takes the new value's lifetime (moka's default would keep the old one).
struct EntryExpiry;

impl Expiry<String, Slot> for EntryExpiry {
    fn expire_after_create(&self, _key: &String, value: &Slot, _now: Instant) -> Option<Duration> {
        Some(value.entry.keep_for(SystemTime::now()))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Slot,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.entry.keep_for(SystemTime::now()))
    }
}

impl MemoryStore {
    /// A store holding at most `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, value: &Slot| {
                u32::try_from(key.len() + value.entry.weight() + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(EntryExpiry)
            .build();
        Self { cache }
    }

    /// Entries held and their weight in bytes, after moka's pending
    /// bookkeeping is done (its counts lag otherwise).
    pub async fn usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks().await;
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// The limit in bytes.
    pub fn capacity(&self) -> u64 {
        self.cache.policy().max_capacity().unwrap_or(0)
    }

    /// Removes every entry whose key starts with `prefix`; answers how many.
    /// Walks all entries: meant for operator purges, not the request path.
    pub async fn remove_prefix(&self, prefix: &str) -> usize {
        let keys: Vec<_> = self
            .cache
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k)
            .collect();
        let mut removed = 0;
        for k in keys {
            removed += usize::from(self.cache.remove(k.as_str()).await.is_some());
        }
        removed
    }

    /// The entry under `key` with the time it entered L1.
    pub async fn get_slot(&self, key: &str) -> Option<Slot> {
        self.cache.get(key).await
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// Stores `entry` under `key` for the rest of its lifetime.
    pub async fn put(&self, key: &str, entry: Arc<Entry>) {
        if !entry.keep_for(SystemTime::now()).is_zero() {
            self.cache
                .insert(
                    key.to_owned(),
                    Slot {
                        entry,
                        at_ms: now_ms(),
                    },
                )
                .await;
        }
    }

    /// Removes `key`; answers whether it was there.
    pub async fn delete(&self, key: &str) -> bool {
        self.cache.remove(key).await.is_some()
    }
}
