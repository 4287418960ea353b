//! L1 in front of L2. One [`Tiered::lookup`] does what every hit needs, in
//! one place: memory first, then the shared store, for the layers the
//! rule's [`Tier`] uses; a Vary marker resolved to the request's variant;
//! the entry checked by the [`Admission`] (a purge since its fetch refuses
//! it, and a refused L1 entry falls through to L2, where another replica
//! may already have put the current answer); an admitted L2 entry copied
//! into L1; and the answer sorted into fresh, stale or absent.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::HeaderMap;

use super::memory::MemoryStore;
use super::vary::{selected, variant_key};
use super::{Admission, CachedResponse, Entry, Layer, Payload, Store, StoreError, Tier};

/// An entry found, with where it was found.
pub struct Found {
    /// The entry.
    pub entry: Arc<Entry>,
    /// Where it was found.
    pub layer: Layer,
    /// For L1: when it entered L1 (ms since the epoch).
    pub l1_since_ms: u64,
}

impl Found {
    /// The stored response, unless the entry is a Vary marker.
    pub fn response(&self) -> Option<&CachedResponse> {
        match &self.entry.payload {
            Payload::Response(r) => Some(r),
            Payload::Vary(_) => None,
        }
    }
}

/// What a lookup found for a request.
pub struct Lookup {
    /// The key the request's entry lives under: the key asked for, or its
    /// Vary variant's key when the key holds a Vary marker.
    pub key: String,
    /// The headers the key's Vary marker names, with the request's values
    /// ([`vary::selected`](super::vary::selected)), when it holds one.
    pub varied: Option<HeaderMap>,
    /// The entry's state.
    pub state: State,
}

/// The state of a request's entry.
pub enum State {
    /// Fresh and admitted.
    Fresh(Found),
    /// Past its freshness but still kept (for its stale windows and for
    /// revalidation), and admitted.
    Stale(Found),
    /// Nothing usable under the key (or a purge refused what was there).
    Absent,
    /// The key holds a Vary marker, but nothing for this request's variant.
    VaryMiss,
}

/// What became of one key in a warm-up from L2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmed {
    /// Now in L1.
    Copied,
    /// Not in L2, or refused by a purge.
    Absent,
    /// L2 did not answer.
    Failed,
}

impl Warmed {
    /// The `result` label of `sidecache_warmup_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Copied => "fetched",
            Self::Absent => "absent",
            Self::Failed => "failed",
        }
    }
}

/// Both layers. L1 is always there; the shared store only when Redis is
/// configured.
#[derive(Clone)]
pub struct Tiered {
    memory: MemoryStore,
    shared: Option<Arc<dyn Store>>,
}

impl Tiered {
    /// L1 over `memory`, in front of `shared` when there is one.
    pub fn new(memory: MemoryStore, shared: Option<Arc<dyn Store>>) -> Self {
        Self { memory, shared }
    }

    /// Looks up the entry for a request with `headers` (and `others`, the
    /// client's headers the backend is sent only when a Vary marker names
    /// them) under `key`, in the layers `tier` uses (see the module's
    /// comment).
    pub async fn lookup(
        &self,
        key: &str,
        (headers, others): (&HeaderMap, &HeaderMap),
        tier: Tier,
        admission: &impl Admission,
        now: SystemTime,
    ) -> Lookup {
        let Some(first) = self.get(key, tier).await else {
            return Lookup {
                key: key.to_owned(),
                varied: None,
                state: State::Absent,
            };
        };
        let (key, found, varied) = match &first.entry.payload {
            Payload::Vary(names) => {
                let varied = selected(names, headers, others);
                let variant = variant_key(key, names, &varied);
                self.fill_l1(key, &first, tier).await;
                let found = self.get(&variant, tier).await;
                (variant, found, Some(varied))
            }
            Payload::Response(_) => (key.to_owned(), Some(first), None),
        };
        let absent = |key: String, varied, state| Lookup { key, varied, state };
        let Some(mut found) = found else {
            return absent(key, varied, State::VaryMiss);
        };
        let mut admitted = admission.admits(&found, &key).await;
        if !admitted
            && found.layer == Layer::Memory
            && let Some(again) = self.get_l2(&key, tier).await
        {
            admitted = admission.admits(&again, &key).await;
            found = again;
        }
        if !admitted || found.response().is_none() {
            return absent(key, varied, State::Absent);
        }
        self.fill_l1(&key, &found, tier).await;
        let state = if found.entry.is_fresh(now) {
            State::Fresh(found)
        } else {
            State::Stale(found)
        };
        Lookup { key, varied, state }
    }

    /// A fresh, admitted entry for the request in the shared store alone
    /// (what another replica just put there), with the key it lives under.
    pub async fn shared_fresh(
        &self,
        key: &str,
        headers: &HeaderMap,
        admission: &impl Admission,
        now: SystemTime,
    ) -> Option<(String, Arc<Entry>)> {
        let first = self.get_l2(key, Tier::Redis).await?;
        let (key, found) = match &first.entry.payload {
            Payload::Vary(names) => {
                let variant = variant_key(key, names, headers);
                let found = self.get_l2(&variant, Tier::Redis).await?;
                (variant, found)
            }
            Payload::Response(_) => (key.to_owned(), first),
        };
        (found.response().is_some()
            && found.entry.is_fresh(now)
            && admission.admits(&found, &key).await)
            .then_some((key, found.entry))
    }

    /// Copies the entry under `key` from L2 into L1, as a lookup that
    /// found it there would: a Vary marker as it is, a response only if
    /// the admission takes it. For warming a starting replica.
    pub async fn warm_l1(&self, key: &str, admission: &impl Admission) -> Warmed {
        let Some(shared) = &self.shared else {
            return Warmed::Absent;
        };
        let entry = match shared.get(key).await {
            Ok(Some(entry)) => entry,
            Ok(None) => return Warmed::Absent,
            Err(e) => {
                tracing::debug!(error = %e, "L2 read for the warm-up failed");
                return Warmed::Failed;
            }
        };
        let found = Found {
            entry,
            layer: Layer::Redis,
            l1_since_ms: u64::MAX,
        };
        if found.response().is_some() && !admission.admits(&found, key).await {
            return Warmed::Absent;
        }
        self.fill_l1(key, &found, Tier::Both).await;
        Warmed::Copied
    }

    /// Puts an entry found in L2 into L1, if the tier uses L1. (Boxed: a
    /// hit from L1 never takes this path, and its future would otherwise
    /// make every lookup's larger.)
    pub async fn fill_l1(&self, key: &str, found: &Found, tier: Tier) {
        if found.layer == Layer::Redis && tier.uses_memory() {
            Box::pin(self.memory.put(key, found.entry.clone())).await;
        }
    }

    /// The entry under `key` in the first layer of `tier` that has one.
    async fn get(&self, key: &str, tier: Tier) -> Option<Found> {
        if tier.uses_memory()
            && let Some(slot) = self.memory.get_slot(key).await
        {
            return Some(Found {
                entry: slot.entry,
                layer: Layer::Memory,
                l1_since_ms: slot.at_ms,
            });
        }
        // L1 is filled once the entry is admitted, never before.
        self.get_l2(key, tier).await
    }

    /// The entry under `key` in L2 alone (when the tier uses it). A failure
    /// is logged and counted as a miss: a cache failure never fails a request.
    async fn get_l2(&self, key: &str, tier: Tier) -> Option<Found> {
        let shared = self.shared.as_ref().filter(|_| tier.uses_redis())?;
        match shared.get(key).await {
            Ok(Some(entry)) => Some(Found {
                entry,
                layer: Layer::Redis,
                l1_since_ms: u64::MAX,
            }),
            Ok(None) => None,
            Err(e) => {
                // The connection logs Redis's state changes; one line per
                // request would flood the log during an outage.
                tracing::debug!(error = %e, "L2 lookup failed; treated as a miss");
                None
            }
        }
    }

    /// Stores in the layers `tier` uses. L1 is written at once; the shared
    /// write runs in the background so it never delays the response.
    pub async fn put(&self, key: &str, entry: Arc<Entry>, tier: Tier) {
        if tier.uses_memory() {
            self.memory.put(key, entry.clone()).await;
        }
        if let Some(shared) = self.shared.as_ref().filter(|_| tier.uses_redis()) {
            let shared = shared.clone();
            let key = key.to_owned();
            crate::metrics::spawn(async move {
                if let Err(e) = shared.put(&key, entry).await {
                    crate::metrics::store_refused("l2-failed");
                    tracing::debug!(error = %e, "L2 store failed");
                }
            });
        }
    }

    /// Stores in the layers `tier` uses and waits for the shared store;
    /// answers whether every layer took it.
    pub async fn put_now(&self, key: &str, entry: Arc<Entry>, tier: Tier) -> bool {
        if tier.uses_memory() {
            self.memory.put(key, entry.clone()).await;
        }
        match self.shared.as_ref().filter(|_| tier.uses_redis()) {
            Some(shared) => match shared.put(key, entry).await {
                Ok(()) => true,
                Err(e) => {
                    crate::metrics::store_refused("l2-failed");
                    tracing::debug!(error = %e, "L2 store failed");
                    false
                }
            },
            None => true,
        }
    }

    /// The body of the answer stored under `key`, from L1 or else the
    /// shared store, unencoded (none for an absent key, a Vary marker or a
    /// body the backend sent encoded).
    pub async fn body_of(&self, key: &str) -> Option<Bytes> {
        let found = match self.memory.get_slot(key).await {
            Some(slot) => Some(slot.entry),
            None => self.get_l2(key, Tier::Redis).await.map(|f| f.entry),
        };
        match found.as_deref().map(|e| &e.payload) {
            Some(Payload::Response(r))
                if r.headers.get(&http::header::CONTENT_ENCODING).is_none() =>
            {
                Some(r.body.clone())
            }
            _ => None,
        }
    }

    /// Removes `key` from L1; answers whether it was there.
    pub async fn evict(&self, key: &str) -> bool {
        self.memory.delete(key).await
    }

    /// Removes every L1 entry whose key starts with `prefix`; answers how many.
    pub async fn evict_prefix(&self, prefix: &str) -> usize {
        self.memory.remove_prefix(prefix).await
    }

    /// Drops the whole of L1.
    pub fn clear_l1(&self) {
        self.memory.clear();
    }

    /// Removes every shared entry whose key starts with `prefix`.
    pub async fn delete_shared_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        match &self.shared {
            Some(shared) => shared.delete_prefix(prefix).await,
            None => Ok(0),
        }
    }

    /// Whether L1 holds an entry under `key`.
    pub async fn in_l1(&self, key: &str) -> bool {
        self.memory.get_slot(key).await.is_some()
    }

    /// L1's entries and bytes.
    pub async fn l1_usage(&self) -> (u64, u64) {
        self.memory.usage().await
    }
}
