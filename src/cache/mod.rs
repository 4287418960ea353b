//! Cache storage: the entry type, [`memory`] (L1, moka), the [`Store`]
//! trait of the shared tier with [`redis`] (L2, shared by every replica)
//! behind it, and [`tiered`]: L1 in front of L2, where one lookup resolves
//! Vary, asks the [`Admission`] whether a purge refuses what it found, and
//! fills L1 on an L2 hit. `fake` stands in for L2 in unit tests.

pub mod codec;
pub mod encoding;
#[cfg(test)]
pub mod fake;
pub mod headers;
pub mod hot;
pub mod memory;
pub mod redis;
pub mod tiered;
pub mod vary;

use std::future::Future;
use std::pin::Pin;
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
    /// under its own key (see [`vary`]).
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
    /// Redis gave no answer.
    #[error(transparent)]
    Redis(#[from] crate::redis::Error),
    /// The stored value did not decode.
    #[error("stored value refused: {0}")]
    Decode(#[from] codec::DecodeError),
}

/// What a [`Store`] call returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The shared tier (L2): a key-value store of entries every replica sees.
/// [`Tiered`](tiered::Tiered) holds it as a trait object, so a store on
/// another connection (or `fake` in tests) stands behind the same lookup.
pub trait Store: Send + Sync {
    /// The entry under `key`, if any and not past its grace.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Arc<Entry>>>;
    /// Stores `entry` under `key` for its lifetime, unless a purge of the
    /// key since the entry's fetch refuses it.
    fn put<'a>(&'a self, key: &'a str, entry: Arc<Entry>) -> StoreFuture<'a, ()>;
    /// Removes `key`; answers whether it was there.
    fn delete<'a>(&'a self, key: &'a str) -> StoreFuture<'a, bool>;
    /// Removes every entry whose key starts with `prefix`; answers how many.
    fn delete_prefix<'a>(&'a self, prefix: &'a str) -> StoreFuture<'a, usize>;
}

/// Where a rule's entries live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Process memory only (L1).
    Memory,
    /// Redis only (L2), shared by all replicas.
    Redis,
    /// L1 in front of L2.
    Both,
}

impl Tier {
    /// Its name in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Redis => "redis",
            Tier::Both => "both",
        }
    }

    /// Whether entries go to L1.
    pub fn uses_memory(self) -> bool {
        matches!(self, Tier::Memory | Tier::Both)
    }

    /// Whether entries go to L2.
    pub fn uses_redis(self) -> bool {
        matches!(self, Tier::Redis | Tier::Both)
    }
}

/// Whether a found entry may be served: implemented by the purge engine
/// (`invalidation::Invalidator`), which knows what was purged when.
pub trait Admission: Send + Sync {
    /// Whether `found`, looked up under `key`, is still valid: nothing it
    /// concerns was purged since its fetch began.
    fn admits(&self, found: &tiered::Found, key: &str) -> impl Future<Output = bool> + Send;
}
