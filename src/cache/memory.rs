//! L1: process memory, bounded by bytes (moka with a weigher), each entry
//! expiring at the end of its own lifetime.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use moka::future::Cache;

use super::{Entry, now_ms};

/// What an entry costs beyond its key and [`Entry::weight`]: moka's own
/// bookkeeping (its node, the key twice, the expiry and frequency data),
/// the `Arc<Entry>` and its payload's vectors, and the allocator's slack.
/// Measured, not guessed: `cargo bench --bench l1_memory` stores 100,000
/// tiny answers (a 20-byte 404 under a unique URL's key) and 10,000
/// 2 KB ones; RSS grew 983 and 2,948 bytes per entry where the weight
/// without this term was 322 and 2,276, so the rest is 661 and 672 bytes
/// (BENCHMARKS.md, "L1 memory per entry").
pub const ENTRY_OVERHEAD: usize = 700;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{CachedResponse, Payload, StoredHeaders};

    /// An entry weighs its key, body, headers and the measured overhead,
    /// so a flood of tiny answers fills `max_size` at what they cost.
    #[tokio::test]
    async fn tiny_entries_weigh_what_they_cost() {
        let store = MemoryStore::new(1 << 30);
        let entry = Arc::new(Entry {
            stored_at: SystemTime::now(),
            ttl: Duration::from_secs(60),
            grace: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            fetched_ms: 0,
            payload: Payload::Response(CachedResponse {
                status: http::StatusCode::NOT_FOUND,
                headers: StoredHeaders::default(),
                body: bytes::Bytes::from_static(b"{}"),
                tags: Vec::new(),
            }),
        });
        for i in 0..100 {
            store.put(&format!("k{i:03}"), entry.clone()).await;
        }
        let (count, weighed) = store.usage().await;
        assert_eq!(count, 100);
        assert_eq!(weighed, 100 * (4 + 2 + ENTRY_OVERHEAD as u64));
        // A bound of 64 such entries keeps at most 64 of them.
        let small = MemoryStore::new(64 * (4 + 2 + ENTRY_OVERHEAD as u64));
        for i in 0..100 {
            small.put(&format!("k{i:03}"), entry.clone()).await;
        }
        let (count, weighed) = small.usage().await;
        assert!(
            count <= 64 && weighed <= 64 * (4 + 2 + ENTRY_OVERHEAD as u64),
            "{count} {weighed}"
        );
    }
}
