//! Cache storage: the entry type, the [`Store`] trait, and its three
//! implementations — [`memory`] (L1, moka), [`redis`] (L2, shared by every
//! replica) and [`tiered`] (L1 in front of L2, filling L1 on an L2 hit).

pub mod codec;
pub mod headers;
pub mod memory;
pub mod redis;
pub mod tiered;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, StatusCode};

pub use self::headers::StoredHeaders;

/// Milliseconds since the Unix epoch, the unit of the stores' timestamps.
pub fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// A stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedResponse {
    /// Status.
    pub status: StatusCode,
    /// End-to-end headers as the backend sent them (no hop-by-hop, no Age).
    pub headers: StoredHeaders,
    /// The body; shared, never copied on a hit.
    pub body: Bytes,
    /// Tags rendered when it was stored (`category:12`). A purge of one of
    /// them at or after the entry's [`Entry::fetched_ms`] refuses it.
    pub tags: Vec<String>,
}

/// What a key holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A response.
    Response(CachedResponse),
    /// The response varies on these request headers; each variant is stored
    /// under its own key (see `proxy::vary`).
    Vary(Vec<HeaderName>),
}

/// One cache entry with its lifetime.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When its freshness started (the backend's response time less the age it reported).
    pub stored_at: SystemTime,
    /// Fresh for this long after `stored_at`.
    pub ttl: Duration,
    /// Kept this long after it goes stale (for stale serving and
    /// revalidation).
    pub grace: Duration,
    /// After expiry, served this long while one request refreshes it.
    pub stale_while_revalidate: Duration,
    /// After expiry, served this long when the backend fails.
    pub stale_if_error: Duration,
    /// When the request that produced it went to the backend, in ms on the
    /// purge clock (see `invalidation::clock`). A purge of its key, one of
    /// its tags or a prefix of its key taken at or after this time refuses
    /// it: the backend may have answered with what the purge replaced.
    pub fetched_ms: u64,
    /// The content.
    pub payload: Payload,
}

impl Entry {
    /// Seconds since it was stored, as the `Age` header says it.
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.stored_at).unwrap_or_default()
    }

    /// Whether it is still fresh.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.age(now) < self.ttl
    }

    /// How long past its freshness it is (zero while fresh).
    pub fn overdue(&self, now: SystemTime) -> Duration {
        self.age(now).saturating_sub(self.ttl)
    }

    /// How long a store should keep it from now.
    pub fn keep_for(&self, now: SystemTime) -> Duration {
        (self.ttl + self.grace).saturating_sub(self.age(now))
    }

    /// Approximate bytes it holds.
    pub fn weight(&self) -> usize {
        match &self.payload {
            Payload::Response(r) => {
                r.body.len()
                    + r.headers.byte_len()
                    + r.headers.len() * 8
                    + r.tags.iter().map(|t| t.len() + 24).sum::<usize>()
            }
            Payload::Vary(names) => names.len() * 32,
        }
    }
}

/// Which layer answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Process memory.
    Memory,
    /// Redis.
    Redis,
}

impl Layer {
    /// Name used in `Cache-Status` detail, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Memory => "memory",
            Layer::Redis => "redis",
        }
    }
}

/// A storage failure. Callers treat every one as a miss: a cache failure
/// never fails a request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis is not connected (yet, or any more).
    #[error("redis is not connected")]
    Disconnected,
    /// Redis did not answer within its timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The stored value did not decode.
    #[error("stored value refused: {0}")]
    Decode(#[from] codec::DecodeError),
}

/// A key-value store of entries.
pub trait Store: Send + Sync {
    /// The entry under `key`, if any and not past its grace.
    fn get(&self, key: &str)
    -> impl Future<Output = Result<Option<Arc<Entry>>, StoreError>> + Send;
    /// Stores `entry` under `key` for its lifetime.
    fn put(
        &self,
        key: &str,
        entry: Arc<Entry>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Removes `key`; answers whether it was there.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
