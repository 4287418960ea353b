//! One upstream request per key per process: the first miss of a key leads
//! a "flight"; concurrent misses of the same key follow it and are answered
//! from the entry it stores. When the leader's response is not storable (or
//! it fails), followers are released to fetch on their own.
//!
//! With `collapse: global` the leader of each replica also takes a Redis
//! lock ([`GlobalLock`]); the replica that gets it fetches and fills L2, the
//! others poll L2 until the entry appears, the lock goes away, or the lock's
//! lifetime (upstream timeout + 1 s) passes. Worst case: a fetch slower than
//! the lock's lifetime lets one more replica fetch, so at most one backend
//! request per replica, as without the lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use tokio::sync::watch;

use crate::cache::tiered::Tiered;
use crate::cache::{Admission, Entry};
use crate::redis::{Redis, Script};

/// How a flight ended.
#[derive(Debug, Clone)]
pub enum Landing {
    /// The leader stored this entry under `key`.
    Stored {
        /// The key it was stored under (a Vary variant key, possibly).
        key: String,
        /// The entry.
        entry: Arc<Entry>,
    },
    /// Nothing was stored; followers fetch on their own.
    Abandoned,
}

/// Flights in progress, by key.
///
/// A std `Mutex` is right here: the critical sections are a map insert or
/// remove, never held across an await.
#[derive(Default)]
pub struct Flights {
    map: Mutex<HashMap<String, watch::Receiver<Option<Landing>>>>,
}

/// The role a request takes for its key.
pub enum Join {
    /// First: fetch, then land the flight.
    Leader(FlightGuard),
    /// Wait for the leader.
    Follower(watch::Receiver<Option<Landing>>),
}

/// Held by the leader. Dropping it without landing releases the followers.
pub struct FlightGuard {
    flights: Arc<Flights>,
    key: String,
    tx: watch::Sender<Option<Landing>>,
}

impl Flights {
    /// Joins the flight for `key`, leading it if there is none.
    pub fn join(self: &Arc<Self>, key: &str) -> Join {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(rx) = map.get(key) {
            return Join::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_owned(), rx);
        Join::Leader(FlightGuard {
            flights: self.clone(),
            key: key.to_owned(),
            tx,
        })
    }

    /// Number of flights in progress.
    pub fn len(&self) -> usize {
        self.map.lock().map_or(0, |m| m.len())
    }

    /// Whether no flight is in progress.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FlightGuard {
    /// How many requests wait on this flight.
    #[cfg(test)]
    pub fn followers(&self) -> usize {
        // The map keeps one receiver itself.
        self.tx.receiver_count().saturating_sub(1)
    }

    /// Ends the flight with `landing`, waking every follower.
    pub fn land(self, landing: Landing) {
        self.tx.send_replace(Some(landing));
        // Drop removes the map entry.
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut map = match self.flights.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.remove(&self.key);
        drop(map);
        if self.tx.borrow().is_none() {
            self.tx.send_replace(Some(Landing::Abandoned));
        }
    }
}

/// Waits up to `limit` for the leader; `Abandoned` if it gives up or times out.
pub async fn wait(mut rx: watch::Receiver<Option<Landing>>, limit: Duration) -> Landing {
    match tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await {
        Ok(Ok(v)) => v.clone().unwrap_or(Landing::Abandoned),
        _ => Landing::Abandoned,
    }
}

/// A held Redis lock for one key; released when the entry is in L2, or on
/// drop (an unstorable or failed fetch) so waiters stop waiting at once.
pub struct GlobalLock {
    redis: Redis,
    key: String,
    token: String,
    released: bool,
}

/// What a leading request holds: its replica's flight, and the global
/// lock when `collapse: global` got it.
pub struct Claim {
    /// The replica's flight for the key.
    pub guard: Option<FlightGuard>,
    /// The cross-replica lock.
    pub lock: Option<Box<GlobalLock>>,
}

/// What a global collapse decided.
pub enum Global {
    /// This replica holds the lock: fetch, store, then release.
    Lead(Box<GlobalLock>),
    /// Another replica filled L2 with this entry, under this key (its
    /// Vary variant's, possibly).
    Filled(String, Arc<Entry>),
    /// No lock could be had or waited for: fetch alone.
    Alone,
}

/// Poll interval of replicas waiting for another's fill.
pub const GLOBAL_POLL: Duration = Duration::from_millis(20);

/// Takes the key's Redis lock, or waits for the replica holding it to
/// fill L2: polls for a fresh, admitted entry every [`GLOBAL_POLL`] until
/// one appears, the lock goes away, or `ttl` (the lock's own lifetime)
/// passes.
pub async fn globally(
    redis: &Redis,
    cache: &Tiered,
    admission: &impl Admission,
    key: &str,
    headers: &HeaderMap,
    ttl: Duration,
) -> Global {
    match GlobalLock::take(redis, key, ttl).await {
        Ok(Some(lock)) => return Global::Lead(Box::new(lock)),
        Ok(None) => {}
        Err(()) => return Global::Alone,
    }
    let filled = || async {
        cache
            .shared_fresh(key, headers, admission, SystemTime::now())
            .await
            .map(|(key, entry)| Global::Filled(key, entry))
    };
    let deadline = tokio::time::Instant::now() + ttl;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(GLOBAL_POLL).await;
        if let Some(found) = filled().await {
            return found;
        }
        if !matches!(GlobalLock::is_held(redis, key).await, Ok(true)) {
            // Released without a value (unstorable or failed), or Redis
            // trouble: one last look, then fetch alone.
            return filled().await.unwrap_or(Global::Alone);
        }
    }
    Global::Alone
}

impl GlobalLock {
    /// Tries to take the lock of `key` (`#lock:<key>`) for `ttl`.
    pub async fn take(redis: &Redis, key: &str, ttl: Duration) -> Result<Option<Self>, ()> {
        let token = format!(
            "{:x}",
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), key)
        );
        let mut cmd = redis::cmd("SET");
        let ms = crate::redis::millis(ttl).max(1);
        cmd.arg(crate::keyspace::lock(redis, key))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ms);
        match redis.run::<Option<String>>("SET", cmd).await {
            Ok(Some(_)) => Ok(Some(Self {
                redis: redis.clone(),
                key: key.to_owned(),
                token,
                released: false,
            })),
            Ok(None) => Ok(None),
            Err(_) => Err(()),
        }
    }

    /// Whether someone holds the lock of `key`.
    async fn is_held(redis: &Redis, key: &str) -> Result<bool, crate::redis::Error> {
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(crate::keyspace::lock(redis, key));
        Ok(redis.run::<u64>("EXISTS", cmd).await? > 0)
    }

    /// Releases the lock (if still ours).
    pub async fn release(mut self) {
        self.released = true;
        unlock(&self.redis, &self.key, &self.token).await;
    }
}

/// Releases the lock of `key` if it is still `token`'s (it may have
/// expired and been taken by another replica meanwhile).
async fn unlock(redis: &Redis, key: &str, token: &str) {
    static UNLOCK: Script = Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    );
    let _ = redis
        .run_script::<u64>(&UNLOCK, &[crate::keyspace::lock(redis, key)], &[token])
        .await;
}

impl Drop for GlobalLock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (redis, key, token) = (
                self.redis.clone(),
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.token),
            );
            rt.spawn(crate::metrics::scoped(async move {
                unlock(&redis, &key, &token).await
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The second joiner follows; dropping the guard abandons and frees the key.
    #[tokio::test]
    async fn follower_released_on_drop() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(guard) = flights.join("k") else {
            panic!("first must lead")
        };
        let Join::Follower(rx) = flights.join("k") else {
            panic!("second must follow")
        };
        drop(guard);
        assert!(matches!(
            wait(rx, Duration::from_secs(1)).await,
            Landing::Abandoned
        ));
        assert!(flights.is_empty());
        assert!(matches!(flights.join("k"), Join::Leader(_)));
    }
}
