//! What this replica knows of recent purges: the time of the latest purge
//! of each key and tag, and the recent prefix purges, on the purge clock
//! ([`super::clock`]).
//!
//! An entry is refused when any of its key, its tags or a prefix of its key
//! was purged at or after the entry's fetch started ([`Entry::fetched_ms`]).
//! That check is as narrow as the entry: purges of other entries never
//! refuse it, however many there are.
//!
//! Bounded: a purge is remembered for the longest lifetime an entry can have
//! (the horizon; no entry alive can be older), and within a byte budget
//! taken from `memory.max_size`. When the budget is full the oldest purges
//! are forgotten and the floor rises to the latest of them: an entry fetched
//! before the floor is refused, since a forgotten purge may have concerned
//! it. So forgetting costs re-fetches, never a stale answer.
//!
//! [`Entry::fetched_ms`]: crate::cache::Entry::fetched_ms

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Bytes counted per remembered name besides its length: two map slots, the
/// ordered index, the shared string's header.
const PER_NAME: usize = 96;
/// Prefix purges remembered (an operator's tool: few, and each checked
/// against every entry, so kept short); older ones raise the floor.
const MAX_PREFIXES: usize = 64;

/// Whether a name is a cache key or a tag: the two never share a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A cache key (a variant checks its primary key).
    Key,
    /// A tag.
    Tag,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<Arc<str>, u64>,
    tags: HashMap<Arc<str>, u64>,
    /// Every remembered name by time, oldest first, for forgetting.
    by_time: BTreeSet<(u64, Kind, Arc<str>)>,
    /// Recent prefix purges, oldest first.
    prefixes: Vec<(String, u64)>,
    /// Anything fetched at or before this time is refused.
    floor: u64,
    bytes: usize,
}

/// The purge times of one replica.
///
/// A std `RwLock`: a hit only reads, a few hash lookups, and nothing is
/// held across an await.
pub struct PurgeTimes {
    inner: RwLock<Inner>,
    budget: usize,
}

impl PurgeTimes {
    /// Remembers purges within `budget` bytes.
    pub fn new(budget: usize) -> Self {
        Self {
            inner: RwLock::default(),
            budget,
        }
    }

    // A panic while the lock was held leaves the maps as they were between
    // two whole updates, so a poisoned lock is used as it is.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latest purge that concerns an entry under `key` carrying `tags`
    /// (the floor at least): the entry is current only if it was fetched
    /// after it.
    pub fn latest<'a>(&self, key: &str, tags: impl IntoIterator<Item = &'a str>) -> u64 {
        let inner = self.read();
        let mut latest = inner.floor;
        if let Some(t) = inner.keys.get(key) {
            latest = latest.max(*t);
        }
        if !inner.tags.is_empty() {
            for tag in tags {
                if let Some(t) = inner.tags.get(tag) {
                    latest = latest.max(*t);
                }
            }
        }
        for (prefix, t) in &inner.prefixes {
            if key.starts_with(prefix.as_str()) {
                latest = latest.max(*t);
            }
        }
        latest
    }

    /// Notes a purge of `name` at `time`; forgets what is past `horizon_ms`
    /// before `now` or over the budget.
    pub fn record(&self, kind: Kind, name: &str, time: u64, now: u64, horizon_ms: u64) {
        // Most calls repeat what is known (every L2 hit reports its tags'
        // times): a shared read answers them without the write lock.
        {
            let inner = self.read();
            let map = match kind {
                Kind::Key => &inner.keys,
                Kind::Tag => &inner.tags,
            };
            if map.get(name).is_some_and(|t| *t >= time) || time <= inner.floor {
                return;
            }
        }
        let mut inner = self.write();
        let inner = &mut *inner;
        let map = match kind {
            Kind::Key => &mut inner.keys,
            Kind::Tag => &mut inner.tags,
        };
        match map.get_key_value(name) {
            Some((_, old)) if *old >= time => {}
            Some((shared, old)) => {
                let (shared, old) = (shared.clone(), *old);
                inner.by_time.remove(&(old, kind, shared.clone()));
                inner.by_time.insert((time, kind, shared.clone()));
                map.insert(shared, time);
            }
            None => {
                let shared: Arc<str> = name.into();
                inner.by_time.insert((time, kind, shared.clone()));
                map.insert(shared, time);
                inner.bytes += name.len() + PER_NAME;
            }
        }
        self.forget(inner, now, horizon_ms);
    }

    /// Notes a purge of every key starting with `prefix` at `time`.
    pub fn record_prefix(&self, prefix: &str, time: u64) {
        let mut inner = self.write();
        inner.prefixes.retain(|(p, _)| p != prefix);
        inner.prefixes.push((prefix.to_owned(), time));
        if inner.prefixes.len() > MAX_PREFIXES {
            let (_, t) = inner.prefixes.remove(0);
            inner.floor = inner.floor.max(t);
        }
    }

    /// Forgets everything; entries fetched at or before `now` are refused
    /// from then on (used when purges may have been missed).
    pub fn forget_all(&self, now: u64) {
        let mut inner = self.write();
        *inner = Inner {
            floor: inner.floor.max(now),
            ..Inner::default()
        };
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Names remembered and the bytes they are counted for.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.read();
        (inner.keys.len() + inner.tags.len(), inner.bytes)
    }

    fn forget(&self, inner: &mut Inner, now: u64, horizon_ms: u64) {
        while let Some(first) = inner.by_time.first() {
            let (time, kind, _) = first;
            let expired = time.saturating_add(horizon_ms) < now;
            if !expired && inner.bytes <= self.budget {
                break;
            }
            let (time, kind, name) = (*time, *kind, first.2.clone());
            inner.by_time.pop_first();
            let map = match kind {
                Kind::Key => &mut inner.keys,
                Kind::Tag => &mut inner.tags,
            };
            map.remove(&name);
            inner.bytes = inner.bytes.saturating_sub(name.len() + PER_NAME);
            if !expired {
                // Still able to concern a live entry: refuse all older ones.
                inner.floor = inner.floor.max(time);
            }
        }
        let cutoff = now.saturating_sub(horizon_ms);
        inner.prefixes.retain(|(_, t)| *t >= cutoff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;

    /// A purge concerns entries of its own key or tag, never others.
    #[test]
    fn purge_is_as_narrow_as_its_name() {
        let p = PurgeTimes::new(1 << 20);
        p.record(Kind::Tag, "category:1", 100, 100, HOUR);
        p.record(Kind::Key, "product:1", 200, 200, HOUR);
        assert_eq!(p.latest("product:2", ["category:2"]), 0);
        assert_eq!(p.latest("product:2", ["category:1"]), 100);
        assert_eq!(p.latest("product:1", ["category:2"]), 200);
        // A tag and a key of the same name are different things.
        assert_eq!(p.latest("category:1", []), 0);
        // Times never go back.
        p.record(Kind::Key, "product:1", 150, 300, HOUR);
        assert_eq!(p.latest("product:1", []), 200);
    }

    /// Prefix purges concern every key they start.
    #[test]
    fn prefixes_concern_their_keys() {
        let p = PurgeTimes::new(1 << 20);
        p.record_prefix("product:", 500);
        assert_eq!(p.latest("product:9", []), 500);
        assert_eq!(p.latest("cart:9", []), 0);
    }

    /// Over the budget the oldest purges are forgotten and the floor rises
    /// to them; past the horizon they are forgotten without raising it.
    #[test]
    fn bounded_and_safe() {
        let p = PurgeTimes::new(10 * (PER_NAME + 8));
        for i in 0..100u64 {
            p.record(
                Kind::Tag,
                &format!("tag:{i:04}"),
                1_000 + i,
                1_000 + i,
                HOUR,
            );
        }
        let (names, bytes) = p.usage();
        assert!(names <= 10, "{names} names kept");
        assert!(bytes <= 10 * (PER_NAME + 8));
        // A forgotten purge still refuses entries fetched before it.
        assert!(p.latest("tag:0001", []) >= 1_001);
        assert!(p.latest("other", []) >= 1_089);
        let q = PurgeTimes::new(1 << 20);
        q.record(Kind::Tag, "old", 10, 10, 1_000);
        q.record(Kind::Tag, "new", 5_000, 5_000, 1_000);
        assert_eq!(q.usage().0, 1);
        assert_eq!(q.latest("x", ["old"]), 0);
    }
}
