//! L1 in front of L2: a lookup tries memory, then Redis, and an L2 hit
//! fills L1 with the entry's remaining lifetime. Which layers a rule uses
//! is its [`Tier`].

use std::sync::Arc;

use super::memory::MemoryStore;
use super::redis::RedisStore;
use super::{Entry, Layer, Store};
use crate::rules::Tier;

/// A lookup's result.
pub struct Found {
    /// The entry.
    pub entry: Arc<Entry>,
    /// Where it was found.
    pub layer: Layer,
    /// For L1: when it entered L1 (ms since the epoch).
    pub l1_since_ms: u64,
}

/// Both layers.
#[derive(Clone)]
pub struct Tiered {
    /// L1.
    pub memory: MemoryStore,
    /// L2, when configured.
    pub redis: Option<RedisStore>,
}

impl Tiered {
    /// Redis as `/readyz` and the metrics report it: `up`, `degraded`
    /// (the last command failed) or `disabled` (not configured).
    pub fn redis_state(&self) -> &'static str {
        match &self.redis {
            None => "disabled",
            Some(r) if r.is_up() => "up",
            Some(_) => "degraded",
        }
    }

    /// Puts an entry found in L2 into L1, if the tier uses L1.
    pub async fn fill_l1(&self, key: &str, found: &Found, tier: Tier) {
        if found.layer == Layer::Redis && tier.uses_memory() {
            let _ = self.memory.put(key, found.entry.clone()).await;
        }
    }

    /// Looks `key` up in the layers `tier` uses. A Redis failure is logged
    /// and counted as a miss: a cache failure never fails a request.
    pub async fn get(&self, key: &str, tier: Tier) -> Option<Found> {
        if tier.uses_memory()
            && let Some(slot) = self.memory.get_slot(key).await
        {
            return Some(Found {
                entry: slot.entry,
                layer: Layer::Memory,
                l1_since_ms: slot.at_ms,
            });
        }
        // L1 is filled by the caller once it has admitted the entry (tags
        // current), never before.
        self.get_l2(key, tier).await
    }

    /// Looks `key` up in L2 alone (when the tier uses it): after L1, or for
    /// an L1 entry that was refused, since another replica may already have
    /// put the current one in Redis.
    pub async fn get_l2(&self, key: &str, tier: Tier) -> Option<Found> {
        let redis = self.redis.as_ref().filter(|_| tier.uses_redis())?;
        match redis.get(key).await {
            Ok(Some(entry)) => Some(Found {
                entry,
                layer: Layer::Redis,
                l1_since_ms: u64::MAX,
            }),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "L2 lookup failed; treated as a miss");
                None
            }
        }
    }

    /// Stores in the layers `tier` uses. L1 is written at once; the Redis
    /// write runs in the background so it never delays the response.
    pub async fn put(&self, key: &str, entry: Arc<Entry>, tier: Tier) {
        if tier.uses_memory() {
            let _ = self.memory.put(key, entry.clone()).await;
        }
        if let Some(redis) = self.redis.as_ref().filter(|_| tier.uses_redis()) {
            let redis = redis.clone();
            let key = key.to_owned();
            tokio::spawn(async move {
                if let Err(e) = redis.put(&key, entry).await {
                    tracing::warn!(error = %e, "L2 store failed");
                }
            });
        }
    }

    /// Stores in the layers `tier` uses and waits for Redis; answers
    /// whether every layer took it.
    pub async fn put_now(&self, key: &str, entry: Arc<Entry>, tier: Tier) -> bool {
        if tier.uses_memory() {
            let _ = self.memory.put(key, entry.clone()).await;
        }
        match self.redis.as_ref().filter(|_| tier.uses_redis()) {
            Some(redis) => match redis.put(key, entry).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(error = %e, "L2 store failed");
                    false
                }
            },
            None => true,
        }
    }
}
