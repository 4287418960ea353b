//! Every Redis key sidecache keeps beside its entries, named in one place.
//! An entry lives at `<prefix>{<key>}` (the braces make a cluster put it
//! and its variants in one slot); the rest at `<prefix>#<kind>:<name>`,
//! which no entry's key can be.

use crate::redis::Redis;

/// A tag's latest purge time.
pub fn tag(redis: &Redis, tag: &str) -> String {
    redis.key2("#tag:", tag)
}

/// The lock one replica holds while it fetches `key` for every replica
/// (global request collapsing).
pub fn lock(redis: &Redis, key: &str) -> String {
    redis.key2("#lock:", key)
}

/// A client's allowance under a global rate limit.
pub fn rate_limit(redis: &Redis, id: &str) -> String {
    redis.key2("#rl:", id)
}

/// A rule's hot keys counted in one period (for warming a new replica).
pub fn hot(redis: &Redis, rule: &str, period: u64) -> String {
    redis.key2("#hot:", &format!("{rule}:{period}"))
}

/// The base of each master's mark (the purge-time floor and its run id);
/// on a cluster a `{mN}` tag follows, one per master.
pub fn mark(redis: &Redis) -> String {
    redis.key("#mark")
}

/// This region's log of purges, read by the other regions.
pub fn region_log(redis: &Redis) -> String {
    redis.key("#region:log")
}

/// The lease of the replica that relays `region`'s purges here.
pub fn region_lease(redis: &Redis, region: &str) -> String {
    redis.key2("#region:lease:", region)
}

/// How far `region` has applied this region's log (kept in this region's
/// Redis, written by `region`'s relayer).
pub fn region_applied(redis: &Redis, region: &str) -> String {
    redis.key2("#region:applied:", region)
}

/// The last entry of `region`'s log this region applied (kept here, to
/// notice when that log was lost or replaced).
pub fn region_seen(redis: &Redis, region: &str) -> String {
    redis.key2("#region:seen:", region)
}
