//! Tag generations as this replica knows them.
//!
//! Purging a tag raises its generation (in Redis, `INCR`, when configured);
//! an entry remembers each tag's generation from when it was stored and is
//! refused once any of them is behind. That makes a purge by tag O(1) in the
//! number of entries carrying the tag.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::cache::Tag;

/// Tag -> highest generation seen.
///
/// A std `RwLock`: hits only read, for a few hash lookups, and nothing is
/// held across an await. The map grows with the number of distinct tags
/// ever purged, not with the number of entries.
#[derive(Default)]
pub struct Generations {
    map: RwLock<HashMap<String, u64>>,
}

impl Generations {
    // A panic while the lock was held leaves the map as it was between two
    // whole updates, so a poisoned lock is used as it is.
    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, u64>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, u64>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether every tag of an entry is still at its current generation.
    pub fn is_current(&self, tags: &[Tag]) -> bool {
        if tags.is_empty() {
            return true;
        }
        let map = self.read();
        tags.iter()
            .all(|t| map.get(&t.name).is_none_or(|g| *g <= t.generation))
    }

    /// The known generation of `tag` (0 when never purged as far as we know).
    pub fn get(&self, tag: &str) -> Option<u64> {
        self.read().get(tag).copied()
    }

    /// Raises `tag` to at least `generation`.
    pub fn observe(&self, tag: &str, generation: u64) {
        let mut map = self.write();
        let g = map.entry(tag.to_owned()).or_default();
        *g = (*g).max(generation);
    }

    /// Forgets every generation (they are read from Redis again as needed).
    pub fn clear(&self) {
        self.write().clear();
    }

    /// Raises `tag` by one locally (no Redis); answers the new generation.
    pub fn bump_local(&self, tag: &str) -> u64 {
        let mut map = self.write();
        let g = map.entry(tag.to_owned()).or_default();
        *g += 1;
        *g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, generation: u64) -> Tag {
        Tag {
            name: name.into(),
            generation,
        }
    }

    /// An entry is current until a tag of it is raised past its generation.
    #[test]
    fn raised_tag_refuses_older_entries() {
        let g = Generations::default();
        assert!(g.is_current(&[tag("a", 0)]));
        g.observe("a", 2);
        assert!(!g.is_current(&[tag("a", 1), tag("b", 0)]));
        assert!(g.is_current(&[tag("a", 2)]));
        g.observe("a", 1); // never lowered
        assert_eq!(g.get("a"), Some(2));
        assert_eq!(g.bump_local("a"), 3);
    }
}
