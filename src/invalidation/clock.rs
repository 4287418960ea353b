//! The purge clock: one time line, in ms, on which purges and fetches are
//! compared across replicas.
//!
//! With Redis, purge times are Redis's own `TIME`, taken inside the script
//! that applies the purge, so every replica's purges sit on one clock
//! whatever the replicas' own clocks say. A fetch notes when it went to the
//! backend on the same clock: this replica's time plus the offset to Redis
//! measured every second ([`Clock::sync`]), less a slack for what that
//! measurement cannot know (half the round trip, plus drift), so a fetch
//! is always placed at or before its true start. That errs on the safe
//! side: a purge just before a fetch may refuse its answer, a purge during
//! it always does.
//!
//! Without Redis the clock is this process's own, and purges are numbered
//! on it strictly increasing.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::cache::now_ms;

/// Added to the measured uncertainty: drift between two syncs and timer
/// granularity.
const MARGIN_MS: u64 = 5;
/// Slack before the first sync with Redis: a generous bound on the skew
/// between a replica's clock and Redis's among hosts kept by NTP.
const UNSYNCED_SLACK_MS: u64 = 1_000;
/// How far past the clock's value a purge or fetch time read from Redis
/// or an announcement may lie (a master's clock ahead of the slowest, a
/// reading in flight); a later one is not trusted ([`Clock::trusted`]).
pub const TRUST_MS: u64 = 2_000;

/// This replica's view of the purge clock.
pub struct Clock {
    /// Redis's time minus ours, in ms.
    offset: AtomicI64,
    /// How far before its true value a fetch start is placed.
    slack: AtomicU64,
    /// The latest purge time seen (made here or announced): a lower bound
    /// of the clock's value from then on, exact because it was read off it.
    seen: AtomicU64,
    /// The latest purge time made up here by [`Clock::purge_time`]; kept
    /// apart from `seen`, since it is an estimate placed late.
    made: AtomicU64,
    /// How far the fastest of a Redis Cluster's masters ran ahead of the
    /// slowest at the last sync (0 on one server). A purge time seen was
    /// stamped by some master; the fetches placed after it must still sit
    /// at or before their start on the slowest master's clock, so a seen
    /// time counts this much earlier.
    spread: AtomicU64,
}

impl Clock {
    /// A clock for a replica that shares Redis with others: unsynced until
    /// the first [`Clock::sync`].
    pub fn shared() -> Self {
        Self {
            offset: AtomicI64::new(0),
            slack: AtomicU64::new(UNSYNCED_SLACK_MS),
            seen: AtomicU64::new(0),
            made: AtomicU64::new(0),
            spread: AtomicU64::new(UNSYNCED_SLACK_MS),
        }
    }

    /// A clock for a replica on its own (no Redis): its own time, exact.
    pub fn local() -> Self {
        Self {
            offset: AtomicI64::new(0),
            slack: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            made: AtomicU64::new(0),
            spread: AtomicU64::new(0),
        }
    }

    /// The clock's value as best known now.
    pub fn now(&self) -> u64 {
        now_ms().saturating_add_signed(self.offset.load(Ordering::Relaxed))
    }

    /// When a fetch starting now started, placed safely early; but never
    /// at or before a purge this replica already knows of, since that
    /// purge happened before the fetch began.
    pub fn fetch_start(&self) -> u64 {
        let estimate = self
            .now()
            .saturating_sub(self.slack.load(Ordering::Relaxed));
        estimate.max(self.seen.load(Ordering::Relaxed).saturating_add(1))
    }

    /// A time for a purge applied without Redis's clock: placed safely
    /// late, and never before a purge seen or made so far (purges in the
    /// same millisecond share it: a fetch starting then is refused, which
    /// is the safe side, and a burst of purges never runs ahead of time).
    pub fn purge_time(&self) -> u64 {
        let estimate = (self.now() + self.slack.load(Ordering::Relaxed))
            .max(self.seen.load(Ordering::Relaxed) + 1);
        self.made
            .fetch_max(estimate, Ordering::Relaxed)
            .max(estimate)
    }

    /// Notes a purge time read off the clock (from Redis or an
    /// announcement), less the spread between masters' clocks. A time not
    /// [`trusted`](Clock::trusted) is taken as now: the clock never jumps
    /// forward on a value it has not checked.
    pub fn observe(&self, time: u64) {
        let time = self
            .trusted(time, "observed")
            .saturating_sub(self.spread.load(Ordering::Relaxed));
        self.seen.fetch_max(time, Ordering::Relaxed);
    }

    /// Whether `time` (ms) lies no later than [`TRUST_MS`] past the
    /// clock's value: a time from Redis's `TIME` or an announcement of it.
    /// A later one (a planted far-future value, a clock that jumped ahead
    /// and came back) cannot be a purge of the past or a fetch begun.
    pub fn believable(&self, time: u64) -> bool {
        time <= self
            .now()
            .saturating_add(TRUST_MS + self.slack.load(Ordering::Relaxed))
    }

    /// `time` if [`believable`](Clock::believable); else, counted by
    /// `source`, the clock's value now: a purge said to happen later than
    /// Redis's time can is taken as a purge just now, which refuses what it
    /// names fetched until now and no later fetch.
    pub fn trusted(&self, time: u64, source: &'static str) -> u64 {
        if self.believable(time) {
            return time;
        }
        metrics::counter!(crate::metrics::UNTRUSTED_TIMES, "source" => source).increment(1);
        tracing::warn!(source, time, "a time beyond Redis's clock was not trusted");
        self.now()
    }

    /// Takes a reading of Redis's clock: `redis_ms` (on a cluster the
    /// slowest master's, its masters' clocks read `spread` ms apart) was
    /// read between `sent_ms` and `received_ms` of this replica's clock.
    pub fn sync(&self, redis_ms: u64, spread: Option<u64>, sent_ms: u64, received_ms: u64) {
        let rtt = received_ms.saturating_sub(sent_ms);
        // The masters answered at different moments within the round
        // trip, so their clocks may be up to that much further apart.
        let spread = spread.map_or(0, |s| s + rtt);
        self.spread.store(spread, Ordering::Relaxed);
        let mid = sent_ms + rtt / 2;
        let offset = i64::try_from(redis_ms)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(mid).unwrap_or(i64::MAX));
        self.offset.store(offset, Ordering::Relaxed);
        self.slack.store(rtt / 2 + MARGIN_MS, Ordering::Relaxed);
        // Redis's clock came back from a jump ahead: the purges seen then
        // are behind us, and fetches follow the clock again.
        let ceiling = redis_ms.saturating_add(TRUST_MS);
        self.seen.fetch_min(ceiling, Ordering::Relaxed);
        self.made.fetch_min(ceiling, Ordering::Relaxed);
        self.observe(redis_ms);
    }

    /// Whether a reading of Redis's clock has been taken (always, without
    /// Redis).
    pub fn is_synced(&self) -> bool {
        self.slack.load(Ordering::Relaxed) < UNSYNCED_SLACK_MS
    }

    /// The current slack, for tests and logs.
    pub fn slack(&self) -> Duration {
        Duration::from_millis(self.slack_ms())
    }

    /// The current slack in ms.
    pub fn slack_ms(&self) -> u64 {
        self.slack.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fetch never starts at or before a purge already seen, and purges
    /// made here never go back.
    #[test]
    fn fetches_follow_seen_purges() {
        let c = Clock::local();
        let far = now_ms() + 1_500;
        c.observe(far);
        assert_eq!(c.fetch_start(), far + 1);
        let a = c.purge_time();
        let b = c.purge_time();
        assert!(a > far && b >= a);
    }

    /// After a sync, this replica's time is moved onto Redis's, and a fetch
    /// is placed before its true start by at least the half round trip.
    #[test]
    fn sync_moves_onto_redis_time() {
        let c = Clock::shared();
        let here = now_ms();
        // Redis runs 10 s ahead; the reading took 20 ms.
        c.sync(here + 10_000, None, here - 10, here + 10);
        let start = c.fetch_start();
        assert!(start <= here + 10_000 + 50, "{start}");
        assert!(start >= here + 10_000 - 10 - MARGIN_MS - 50, "{start}");
        assert_eq!(c.slack(), Duration::from_millis(10 + MARGIN_MS));
    }

    /// A far-future time (planted in Redis, or announced) never moves the
    /// clock; a clock that jumped ahead and came back is followed back.
    #[test]
    fn untrusted_times_never_move_the_clock() {
        let c = Clock::shared();
        let here = now_ms();
        c.sync(here, None, here, here);
        c.observe(4_102_444_800_000);
        assert!(c.fetch_start() <= here + 1_000, "{}", c.fetch_start());
        assert!(c.trusted(4_102_444_800_000, "test") <= now_ms() + 10);
        assert_eq!(c.trusted(here + 100, "test"), here + 100);
        // Redis an hour ahead, then back.
        c.sync(here + 3_600_000, None, here, here);
        assert!(c.fetch_start() > here + 3_500_000);
        c.sync(here, None, here, here);
        assert!(
            c.fetch_start() <= here + TRUST_MS + 1,
            "{}",
            c.fetch_start()
        );
    }

    /// On a cluster whose masters' clocks are 200 ms apart, a purge time
    /// seen (stamped by the fastest) moves fetch starts only as far as the
    /// slowest master's clock allows.
    #[test]
    fn seen_times_count_the_spread() {
        let c = Clock::shared();
        let here = now_ms();
        c.sync(here, Some(200), here, here);
        // A purge stamped by a master 200 ms ahead, just now.
        c.observe(here + 200);
        assert!(c.fetch_start() <= here + 1, "{}", c.fetch_start());
        // Before any sync the spread is unknown: counted as the unsynced slack.
        let fresh = Clock::shared();
        fresh.observe(here + 200);
        assert!(fresh.fetch_start() <= here + 200 - UNSYNCED_SLACK_MS + 1);
    }
}
