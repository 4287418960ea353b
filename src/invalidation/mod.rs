//! Invalidation: purges by key, tag and prefix, applied to L1 and L2 and
//! announced to every replica over Redis pub/sub.
//!
//! A purge is a time on the purge clock ([`clock`]): Redis's own time when
//! it is configured. An entry remembers when its fetch went to the backend
//! ([`Entry::fetched_ms`]) and is refused once its key, one of its tags or a
//! prefix of its key has been purged at or after that time ([`times`]). So
//! a purge refuses exactly the entries it concerns, including answers that
//! were on their way when it happened, and never any other.
//!
//! - Keys and prefixes are deleted in both layers; the announcement makes
//!   every other replica delete them from its L1. A key purge leaves a
//!   tombstone in Redis that refuses a late store of an older answer.
//! - Tags are purged by recording their purge time in Redis: one script
//!   and one `PUBLISH`, whatever the number of entries. An L2 hit reads its
//!   tags' times (one `MGET`); L1 knows them from the announcements.
//! - A replica cut off from Redis may miss announcements. While cut off,
//!   an L1 entry is served for at most `redis.disconnect_grace` after the
//!   later of the cut and its arrival in L1, and the whole L1 is dropped on
//!   reconnect ([`bus`]). So a missed purge is honoured within the grace plus
//!   the time to notice the cut (the bus's 1 s heartbeat plus its timeout,
//!   5 × `redis.timeout`).
//! - Purge times Redis may have lost (a mark, one on each master, gone or
//!   made again; a master restarted; any eviction) raise a floor kept in
//!   every mark: no replica serves an L2 entry fetched before it
//!   ([`Invalidator::heartbeat`]).
//! - A purge whose Redis part fails waits in the [`outbox`] until Redis
//!   has it; times beyond Redis's clock are not believed ([`clock`]).
//!
//! [`Entry::fetched_ms`]: crate::cache::Entry::fetched_ms
//!
//! Longer than most files because applying a purge, admitting an entry
//! and the bus's reconnect and heartbeat all read the same purge times;
//! the times, the clock, the Redis scripts and the triggers are in their
//! own files.

pub mod bus;
pub mod clock;
pub mod outbox;
pub mod regions;
pub mod shared;
pub mod times;
pub mod triggers;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::clock::Clock;
use self::times::{Kind, PurgeTimes};
use crate::cache::redis::TOMBSTONE;
use crate::cache::tiered::{Found, Tiered};
use crate::cache::vary::{primary_key, variant_tag};
use crate::cache::{Admission, Entry, Layer, Payload, now_ms};
use crate::metrics::PurgeSource;
use crate::redis::Redis;

/// The bytes of `memory.max_size` set aside for remembering purges
/// ([`times`]); L1 gets the rest. A sixteenth, at least 1 MiB (but never
/// more than half).
pub fn budget(max_size: u64) -> u64 {
    (max_size / 16).max(1 << 20).min(max_size / 2)
}

/// What to purge. The admin API's `POST /purge` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Purge {
    /// Cache keys (`product:42`).
    #[serde(default)]
    pub keys: Vec<String>,
    /// Tags (`category:12`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Key prefixes (`product:`).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Must be `true` for the empty prefix, which purges every entry.
    #[serde(default)]
    pub all: bool,
}

impl Purge {
    /// Refuses what a purge request may not name: sidecache's internal keys
    /// (`#...`: tag times, tombstones, locks, which no rendered key or tag
    /// holds), and the empty prefix without `"all": true`.
    pub fn check(&self) -> Result<(), String> {
        if let Some(k) = self
            .keys
            .iter()
            .chain(&self.prefixes)
            .find(|k| k.contains('#'))
        {
            return Err(format!(
                "`{k}` names an internal key; keys and prefixes never hold `#`"
            ));
        }
        if let Some(t) = self.tags.iter().find(|t| t.starts_with('#')) {
            return Err(format!("`{t}` is an internal tag"));
        }
        if self.prefixes.iter().any(String::is_empty) && !self.all {
            return Err("the empty prefix purges every entry: add \"all\": true to mean it".into());
        }
        Ok(())
    }
}

/// How much a purge removed, as the admin API answers it.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Keys that held an entry here or in Redis.
    pub keys: usize,
    /// Tags purged (every entry carrying them is gone).
    pub tags: usize,
    /// Entries removed by prefix, here and in Redis.
    pub prefixed: usize,
    /// Redis operations of this purge that failed: other replicas have not
    /// seen all of it yet. It waits in this replica's outbox
    /// ([`outbox`]) and is applied again until Redis has it.
    pub redis_errors: usize,
    /// The latest purge time this purge applied, on the purge clock.
    #[serde(skip)]
    pub at_ms: u64,
}

/// What travels over pub/sub: each name with its purge time.
#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    /// The sending replica, which has already applied it.
    from: u64,
    #[serde(default)]
    keys: Vec<(String, u64)>,
    #[serde(default)]
    prefixes: Vec<(String, u64)>,
    #[serde(default)]
    tags: Vec<(String, u64)>,
    /// Whether the key and tag times were read off the purge clock (made
    /// in Redis), so every fetch that starts after they arrive started
    /// after them. (A time made up while Redis failed is placed late, and
    /// prefix times are made up.)
    #[serde(default)]
    exact: bool,
}

/// The purge engine of one replica.
pub struct Invalidator {
    cache: Tiered,
    redis: Option<Redis>,
    times: PurgeTimes,
    clock: Clock,
    /// The longest an entry can live (ms): how long a purge can matter.
    horizon_ms: AtomicU64,
    /// Unique per process, so a replica skips its own announcements.
    instance: u64,
    /// 0 while the announcement channel is connected; otherwise the time
    /// (ms since the epoch) it was lost.
    cut_off_since: AtomicU64,
    /// How long L1 is trusted after the channel is lost.
    grace: Duration,
    /// The marks found on Redis at the last heartbeat, by key, with who
    /// made each (see [`Invalidator::heartbeat`]). A plain mutex: held to
    /// compare and swap.
    marks: Mutex<Option<std::collections::HashMap<String, String>>>,
    /// Whether `marks` was read once: the floor is known (read on every L2
    /// hit, so not behind the mutex).
    marks_read: AtomicBool,
    /// Entries fetched before this time (ms, purge clock) are not served:
    /// purge times may have been lost then (a flush, an eviction).
    floor: AtomicU64,
    /// Each master's `evicted_keys` at the last heartbeat, by address.
    evicted: Mutex<std::collections::HashMap<String, u64>>,
    /// On a cluster, each master's `run_id` at the last heartbeat, by
    /// address: a master that restarted without its data took the purge
    /// times of its keys with it, wherever the mark lives.
    runs: Mutex<std::collections::HashMap<String, String>>,
    /// The last [`RECENT`] purges, newest last, for the dashboard. A plain
    /// mutex: held only to push or copy, never across an await.
    recent: Mutex<VecDeque<Recorded>>,
    /// The other regions, when configured ([`regions`]).
    regions: Option<regions::Regions>,
    /// `invalidation.repeat_after`, and the queue of purges to repeat.
    repeat: Option<Repeat>,
    /// Purges Redis does not have yet.
    outbox: outbox::Outbox,
}

/// Purges waiting to be applied a second time, bounded in bytes.
struct Repeat {
    after: Duration,
    /// Bytes of names waiting ([`outbox::weight`]).
    bytes: AtomicU64,
    /// The most they may take: the purge memory budget.
    limit: u64,
    queue: tokio::sync::mpsc::Sender<(tokio::time::Instant, Purge)>,
    /// Taken by [`repeats`] when it starts.
    waiting: Mutex<Option<tokio::sync::mpsc::Receiver<(tokio::time::Instant, Purge)>>>,
}

/// Most names of one purge sent to Redis at once.
const IN_FLIGHT: usize = 64;

/// Most purges waiting for their repeat (each bounded in bytes too);
/// beyond, a purge is applied once.
const REPEAT_QUEUE: usize = 10_000;

/// How many purges [`Invalidator::recent`] remembers.
pub const RECENT: usize = 20;

/// A purge as `GET /purges` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Recorded {
    /// When it was applied here, in ms since the epoch.
    pub at_ms: u64,
    /// Who asked for it.
    pub source: PurgeSource,
    /// Keys purged.
    pub keys: Vec<String>,
    /// Tags purged (internal Vary tags left out).
    pub tags: Vec<String>,
    /// Prefixes purged.
    pub prefixes: Vec<String>,
    /// Keys, tags and prefixes left out of the lists above (each keeps
    /// its first [`RECENT_ITEMS`]).
    pub more: usize,
}

/// How many keys, tags and prefixes of one purge [`Recorded`] lists.
pub const RECENT_ITEMS: usize = 10;

impl Invalidator {
    /// An invalidator over `cache`, recording purges on `redis` when there
    /// is one; `grace` bounds L1 trust while cut off; `budget` bytes bound
    /// what it remembers of purges.
    pub fn new(cache: Tiered, redis: Option<Redis>, grace: Duration, budget: usize) -> Self {
        // RandomState is seeded randomly per process and per call.
        let instance = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            now_ms(),
        );
        let clock = if redis.is_some() {
            Clock::shared()
        } else {
            Clock::local()
        };
        Self {
            // At start L1 is empty, so nothing can have been missed yet; the
            // bus marks the cut if its first connection fails.
            cut_off_since: AtomicU64::new(0),
            cache,
            redis,
            times: PurgeTimes::new(budget),
            clock,
            horizon_ms: AtomicU64::new(u64::MAX),
            instance,
            grace,
            marks: Mutex::new(None),
            marks_read: AtomicBool::new(false),
            floor: AtomicU64::new(0),
            evicted: Mutex::default(),
            runs: Mutex::default(),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            regions: None,
            repeat: None,
            outbox: outbox::Outbox::default(),
        }
    }

    /// Relays purges to and from the other `regions` (see [`regions`]), and
    /// applies every purge again `repeat_after` it was first applied.
    #[must_use]
    pub fn with(
        mut self,
        regions: Option<regions::Regions>,
        repeat_after: Option<Duration>,
    ) -> Self {
        self.regions = regions;
        let limit = self.times.budget() as u64;
        self.repeat = repeat_after.map(|after| {
            let (queue, waiting) = tokio::sync::mpsc::channel(REPEAT_QUEUE);
            Repeat {
                after,
                bytes: AtomicU64::new(0),
                limit,
                queue,
                waiting: Mutex::new(Some(waiting)),
            }
        });
        self
    }

    /// The other regions, when configured.
    pub fn regions(&self) -> Option<&regions::Regions> {
        self.regions.as_ref()
    }

    /// Sets the longest lifetime an entry can have under the rules in
    /// effect: purges older than that are forgotten, and tag times in Redis
    /// are kept that long.
    pub fn set_horizon(&self, horizon: Duration) {
        let ms = u64::try_from(horizon.as_millis())
            .unwrap_or(u64::MAX)
            .max(1_000);
        self.horizon_ms.store(ms, Ordering::Relaxed);
    }

    fn horizon(&self) -> Duration {
        Duration::from_millis(self.horizon_ms.load(Ordering::Relaxed))
    }

    /// What is remembered of purges: names and bytes.
    pub fn usage(&self) -> (usize, usize) {
        self.times.usage()
    }

    /// Bytes of purges waiting for their repeat, and the most they may take.
    pub fn repeat_usage(&self) -> Option<(u64, u64)> {
        self.repeat
            .as_ref()
            .map(|r| (r.bytes.load(Ordering::Relaxed), r.limit))
    }

    /// The last purges applied here, newest first.
    pub fn recent(&self) -> Vec<Recorded> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.iter().rev().cloned().collect()
    }

    /// Counts a purge by kind and source and remembers it.
    fn record(&self, source: PurgeSource, keys: &[String], tags: &[String], prefixes: &[String]) {
        // Internal tags (`#vary:...`) are not the caller's; they are left out.
        let visible = || tags.iter().filter(|t| !t.starts_with('#'));
        let tag_count = visible().count();
        for (kind, n) in [
            ("key", keys.len()),
            ("tag", tag_count),
            ("prefix", prefixes.len()),
        ] {
            if n > 0 {
                metrics::counter!(crate::metrics::PURGES, "kind" => kind, "source" => source.as_str())
                    .increment(n as u64);
            }
        }
        // Only the first few of each list: a purge may name thousands.
        let first = |items: &[String]| items.iter().take(RECENT_ITEMS).cloned().collect();
        let more = [keys.len(), tag_count, prefixes.len()]
            .iter()
            .map(|n| n.saturating_sub(RECENT_ITEMS))
            .sum();
        let recorded = Recorded {
            at_ms: now_ms(),
            source,
            keys: first(keys),
            tags: visible().take(RECENT_ITEMS).cloned().collect(),
            prefixes: first(prefixes),
            more,
        };
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(recorded);
    }

    /// When a fetch starting now starts, on the purge clock: its answer
    /// is stored only if nothing it concerns is purged from then on.
    pub fn fetch_started(&self) -> u64 {
        self.clock.fetch_start()
    }

    /// The pub/sub channel of purge announcements.
    pub fn channel(&self) -> Option<String> {
        self.redis.as_ref().map(|r| format!("{}purge", r.prefix()))
    }

    /// Whether an answer fetched at `fetched` for `key` with `tags` may
    /// still be stored: nothing it concerns was purged since, as far as this
    /// replica knows (Redis checks key purges again when it takes the
    /// entry, and tag purges are checked again at every L2 hit).
    pub fn may_store(&self, key: &str, tags: &[String], fetched: u64) -> bool {
        let too_old = self.clock.now().saturating_sub(fetched)
            >= u64::try_from(TOMBSTONE.as_millis()).unwrap_or(u64::MAX);
        !too_old && self.concerns(key, tags) < fetched
    }

    /// Whether this replica knows of a purge of `key` or `tags` made at or
    /// after `fetched` (ms): the entry fetched then is no longer current.
    pub fn purged_since(&self, key: &str, tags: &[String], fetched: u64) -> bool {
        self.concerns(key, tags) >= fetched
    }

    /// The latest purge this replica knows of that concerns an entry under
    /// `key` (a variant answers for its primary key) with `tags`.
    fn concerns(&self, key: &str, tags: &[String]) -> u64 {
        self.times
            .latest(primary_key(key), tags.iter().map(String::as_str))
    }

    /// Whether a found entry may be served under `key`: nothing it concerns
    /// was purged since its fetch started and, for L1 while cut off from
    /// purges, it has not been trusted for longer than the grace since the
    /// later of its arrival in L1 and the cut (so L1 keeps working during a
    /// Redis outage, re-fetching every grace period). An L2 entry with tags
    /// reads their purge times from Redis first.
    async fn admit(&self, found: &Found, key: &str) -> bool {
        let entry: &Entry = &found.entry;
        let tags: &[String] = match &entry.payload {
            Payload::Response(r) => &r.tags,
            Payload::Vary(_) => &[],
        };
        match found.layer {
            Layer::Memory => {
                let since = self.cut_off_since.load(Ordering::Relaxed);
                let trusted_from = since.max(found.l1_since_ms);
                if since != 0
                    && now_ms().saturating_sub(trusted_from)
                        > u64::try_from(self.grace.as_millis()).unwrap_or(u64::MAX)
                {
                    return false;
                }
            }
            Layer::Redis => {
                // Until the marks are read, the floor is not known; below
                // it, the entry's purges may have been lost.
                if (self.redis.is_some() && !self.knows_mark()) || entry.fetched_ms < self.floor() {
                    return false;
                }
                // An entry said to be fetched later than Redis's clock
                // allows (planted) would outlive every purge: refused.
                if !self.clock.believable(entry.fetched_ms) {
                    self.clock.trusted(entry.fetched_ms, "entry");
                    return false;
                }
                if !tags.is_empty()
                    && let Some(redis) = &self.redis
                {
                    let names: Vec<&str> = tags.iter().map(String::as_str).collect();
                    let Ok(times) = Box::pin(shared::tag_times(redis, &names)).await else {
                        // Cannot tell whether a tag was purged: do not serve it.
                        return false;
                    };
                    let (now, horizon) = (self.clock.now(), self.horizon_ms());
                    for (name, time) in names.iter().zip(times) {
                        let time = self.clock.trusted(time, "redis");
                        if time >= entry.fetched_ms {
                            return false;
                        }
                        if time > 0 {
                            self.times.record(Kind::Tag, name, time, now, horizon);
                        }
                    }
                }
            }
        }
        self.concerns(key, tags) < entry.fetched_ms
    }

    fn horizon_ms(&self) -> u64 {
        self.horizon_ms.load(Ordering::Relaxed)
    }

    /// Purges here and in Redis, and announces it to every replica; a
    /// purge made in this region is first logged for the other regions.
    pub async fn purge(&self, purge: &Purge, source: PurgeSource) -> Counts {
        self.record(source, &purge.keys, &purge.tags, &purge.prefixes);
        let mut counts = Counts::default();
        let mut unrelayed = false;
        if source.is_origin()
            && let (Some(regions), Some(redis)) = (&self.regions, &self.redis)
            && let Err(e) = regions.record(redis, purge, regions::keep(self)).await
        {
            counts.redis_errors += 1;
            unrelayed = true;
            tracing::warn!(error = %e, "purge not logged for the other regions yet; it is pending");
        }
        self.apply_and_repeat(purge, source, &mut counts).await;
        if counts.redis_errors > 0 {
            self.outbox.push(purge, unrelayed, counts.at_ms);
        }
        counts
    }

    /// How many purges wait for Redis in this replica's outbox.
    pub fn purges_pending(&self) -> usize {
        self.outbox.len()
    }

    /// Applies a pending purge again: answers whether the other regions'
    /// log has it now (logged first, as [`Invalidator::purge`] does), and
    /// whether Redis has all of it.
    async fn retry(&self, pending: &outbox::Pending) -> (bool, bool) {
        if pending.relay
            && let (Some(regions), Some(redis)) = (&self.regions, &self.redis)
            && regions
                .record(redis, &pending.purge, regions::keep(self))
                .await
                .is_err()
        {
            return (false, false);
        }
        let mut counts = Counts::default();
        self.apply_purge(&pending.purge, &mut counts, Some(pending.at))
            .await;
        (true, counts.redis_errors == 0)
    }

    /// Several purges made elsewhere (another region), in order: each is
    /// listed on its own, and all are applied at once, as one purge of
    /// everything they name (as if applied one after the other at once).
    pub async fn purge_all(&self, purges: &[Purge], source: PurgeSource) -> Counts {
        let mut all = Purge::default();
        for p in purges {
            self.record(source, &p.keys, &p.tags, &p.prefixes);
            all.keys.extend_from_slice(&p.keys);
            all.tags.extend_from_slice(&p.tags);
            all.prefixes.extend_from_slice(&p.prefixes);
            all.all |= p.all;
        }
        for names in [&mut all.keys, &mut all.tags, &mut all.prefixes] {
            names.sort_unstable();
            names.dedup();
        }
        let mut counts = Counts::default();
        self.apply_and_repeat(&all, source, &mut counts).await;
        if counts.redis_errors > 0 {
            self.outbox.push(&all, false, counts.at_ms);
        }
        counts
    }

    /// Applies `purge`, and queues it to be applied again after
    /// `repeat_after` (unless this is the repeat).
    async fn apply_and_repeat(&self, purge: &Purge, source: PurgeSource, counts: &mut Counts) {
        self.apply_purge(purge, counts, None).await;
        if source != PurgeSource::Repeat
            && let Some(repeat) = &self.repeat
        {
            let bytes = outbox::weight(purge) as u64;
            let held = repeat.bytes.fetch_add(bytes, Ordering::Relaxed);
            let queued = held + bytes <= repeat.limit
                && repeat
                    .queue
                    .try_send((tokio::time::Instant::now() + repeat.after, purge.clone()))
                    .is_ok();
            if !queued {
                repeat.bytes.fetch_sub(bytes, Ordering::Relaxed);
                metrics::counter!(crate::metrics::REPEATS_SKIPPED).increment(1);
                tracing::warn!(
                    "too many purges waiting for their repeat; this one is applied once"
                );
            }
        }
    }

    /// Applies `purge` here, in Redis and on the bus.
    ///
    /// `retry` is the time of a purge applied here earlier, retried from
    /// the outbox: Redis records it at that time (so what was fetched since
    /// is not refused), and this replica, which applied it then, evicts
    /// nothing again.
    async fn apply_purge(&self, purge: &Purge, counts: &mut Counts, retry: Option<u64>) {
        let mut msg = Announcement {
            from: self.instance,
            keys: Vec::with_capacity(purge.keys.len()),
            prefixes: Vec::with_capacity(purge.prefixes.len()),
            tags: Vec::with_capacity(purge.tags.len()),
            exact: false,
        };
        // Each time is recorded here before anything is deleted, so a store
        // racing the purge is refused whichever comes first. Names are
        // independent: up to [`IN_FLIGHT`] go to Redis at once.
        let mut tags = Vec::with_capacity(purge.tags.len());
        for chunk in purge.tags.chunks(IN_FLIGHT) {
            let each: Vec<_> = chunk.iter().map(|tag| self.purge_tag(tag, retry)).collect();
            tags.extend(futures_util::future::join_all(each).await);
        }
        for (tag, (time, failed)) in purge.tags.iter().zip(tags) {
            counts.tags += 1;
            counts.redis_errors += usize::from(failed);
            counts.at_ms = counts.at_ms.max(time);
            msg.tags.push((tag.clone(), time));
        }
        let mut keys = Vec::with_capacity(purge.keys.len());
        for chunk in purge.keys.chunks(IN_FLIGHT) {
            let each: Vec<_> = chunk.iter().map(|key| self.purge_key(key, retry)).collect();
            keys.extend(futures_util::future::join_all(each).await);
        }
        for (key, (gone, time, failed)) in purge.keys.iter().zip(keys) {
            counts.keys += usize::from(gone);
            counts.redis_errors += usize::from(failed);
            counts.at_ms = counts.at_ms.max(time);
            msg.keys.push((key.clone(), time));
        }
        msg.exact = self.redis.is_some() && counts.redis_errors == 0;
        for prefix in &purge.prefixes {
            let time = retry.unwrap_or_else(|| self.clock.purge_time());
            self.times.record_prefix(prefix, time);
            if retry.is_none() {
                counts.prefixed += self.cache.evict_prefix(prefix).await;
            }
            match self.cache.delete_shared_prefix(prefix).await {
                Ok(n) => counts.prefixed += n,
                Err(_) => counts.redis_errors += 1,
            }
            counts.at_ms = counts.at_ms.max(time);
            msg.prefixes.push((prefix.clone(), time));
        }
        if let Some(r) = &self.redis
            && r.is_cluster()
            && !matches!(shared::copied(r).await, Ok(true))
        {
            metrics::counter!(crate::metrics::PURGES_UNCOPIED).increment(1);
            tracing::debug!(
                "a purge was not copied to a replica in time; a failover now could lose it"
            );
        }
        if let (Some(r), Some(channel)) = (&self.redis, self.channel())
            && let Ok(text) = serde_json::to_string(&msg)
            && let Err(e) = r.publish(&channel, &text).await
        {
            counts.redis_errors += 1;
            tracing::warn!(error = %e, "purge announcement not sent; other replicas were not told");
        }
    }

    /// Purges one tag: its time recorded in Redis (Redis's time) and here.
    /// Answers the time, and whether Redis failed.
    async fn purge_tag(&self, tag: &str, retry: Option<u64>) -> (u64, bool) {
        let (time, failed) = match &self.redis {
            Some(r) => match shared::purge_tag(r, tag, self.horizon(), retry.unwrap_or(0)).await {
                Ok(time) => {
                    let time = self.clock.trusted(time, "redis");
                    self.clock.observe(time);
                    (time, false)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tag purge could not reach Redis; applied here only");
                    (retry.unwrap_or_else(|| self.clock.purge_time()), true)
                }
            },
            None => (self.clock.purge_time(), false),
        };
        let (now, horizon) = (self.clock.now(), self.horizon_ms());
        self.times.record(Kind::Tag, tag, time, now, horizon);
        (time, failed)
    }

    /// Purges one key: deleted with a tombstone in Redis, and here.
    /// Answers whether an entry went, the time, and whether Redis failed.
    async fn purge_key(&self, key: &str, retry: Option<u64>) -> (bool, u64, bool) {
        let (there, time, failed) = match &self.redis {
            Some(r) => match shared::purge_key(
                r,
                key,
                &variant_tag(key),
                self.horizon(),
                retry.unwrap_or(0),
            )
            .await
            {
                Ok((there, time)) => {
                    let time = self.clock.trusted(time, "redis");
                    self.clock.observe(time);
                    (there, time, false)
                }
                Err(_) => (
                    false,
                    retry.unwrap_or_else(|| self.clock.purge_time()),
                    true,
                ),
            },
            None => (false, self.clock.purge_time(), false),
        };
        let (now, horizon) = (self.clock.now(), self.horizon_ms());
        self.times.record(Kind::Key, key, time, now, horizon);
        let here = retry.is_none() && self.cache.evict(key).await;
        (here || there, time, failed)
    }

    /// Applies another replica's announcement to this replica's L1.
    async fn apply(&self, text: &str) {
        let Ok(mut msg) = serde_json::from_str::<Announcement>(text) else {
            tracing::warn!("ignored a purge announcement that does not parse");
            return;
        };
        if msg.from == self.instance {
            return;
        }
        let names =
            |list: &[(String, u64)]| list.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        self.record(
            PurgeSource::Remote,
            &names(&msg.keys),
            &names(&msg.tags),
            &names(&msg.prefixes),
        );
        // An announced time is believed only as far as Redis's clock
        // allows: past it, it is a purge just now.
        for (_, time) in msg
            .tags
            .iter_mut()
            .chain(&mut msg.keys)
            .chain(&mut msg.prefixes)
        {
            *time = self.clock.trusted(*time, "announcement");
        }
        if msg.exact {
            for (_, time) in msg.tags.iter().chain(&msg.keys) {
                self.clock.observe(*time);
            }
        }
        let (now, horizon) = (self.clock.now(), self.horizon_ms());
        for (tag, time) in &msg.tags {
            self.times.record(Kind::Tag, tag, *time, now, horizon);
        }
        for (key, time) in &msg.keys {
            self.times.record(Kind::Key, key, *time, now, horizon);
            self.cache.evict(key).await;
        }
        for (prefix, time) in &msg.prefixes {
            self.times.record_prefix(prefix, *time);
            self.cache.evict_prefix(prefix).await;
        }
    }

    /// Whether a heartbeat has read Redis's mark yet: from then on a flush
    /// of Redis is noticed (see [`Invalidator::heartbeat`]).
    pub fn knows_mark(&self) -> bool {
        self.marks_read.load(Ordering::Acquire)
    }

    /// Entries fetched before this (ms, purge clock) are not served.
    pub fn floor(&self) -> u64 {
        self.floor.load(Ordering::Relaxed)
    }

    /// Whether this replica has read Redis's clock (on a cluster, every
    /// master's), so fetches are placed by it rather than a second early.
    pub fn clock_synced(&self) -> bool {
        self.clock.is_synced()
    }

    /// State of the announcement channel, as `/readyz` reports it.
    pub fn channel_state(&self) -> &'static str {
        match (&self.redis, self.cut_off_since.load(Ordering::Relaxed)) {
            (None, _) => "local",
            (Some(_), 0) => "subscribed",
            (Some(_), _) => "cut-off",
        }
    }

    /// Called by the bus when the channel is lost.
    fn cut_off(&self) {
        let _ =
            self.cut_off_since
                .compare_exchange(0, now_ms(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Called by the bus once subscribed again: anything may have been
    /// purged meanwhile, so L1 starts over.
    fn reconnected(&self) {
        if self.cut_off_since.swap(0, Ordering::Relaxed) != 0 {
            self.start_over();
        }
    }

    /// Drops L1 and what is known of purges; answers fetched until now are
    /// not stored (their purges may be among those missed).
    fn start_over(&self) {
        self.cache.clear_l1();
        self.times
            .forget_all(self.clock.now() + self.clock.slack_ms());
    }

    /// Every bus heartbeat: reads Redis's clock (see [`clock`]), and
    /// notices purge times Redis may have lost since the last beat: a mark
    /// (one on each master) missing or made again (a flush, a replaced or
    /// restarted node, an eviction), or a master that evicted keys. Then
    /// the floor rises to now on every mark: no replica, this one, the
    /// others or one started later, serves an entry fetched before it.
    /// A floor raised by another replica is taken up the same way.
    async fn heartbeat(&self) {
        let Some(redis) = &self.redis else {
            return;
        };
        // A new value each beat, so a mark made again after a flush never
        // equals the one seen before, even when this replica made both.
        // Until the first answer the clock is unsynced (fetches placed a
        // whole second early), so a first beat that fails (a cluster
        // connection still finding its nodes) tries again soon.
        let mut tries = 0;
        let (sent, marks, redis_ms) = loop {
            let sent = now_ms();
            let id = format!("{:016x}-{sent}", self.instance);
            match self.read_marks(redis, &id).await {
                Ok((marks, redis_ms)) => break (sent, marks, redis_ms),
                Err(_) if tries < 5 && !self.knows_mark() => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_) => return,
            }
        };
        let restarted = if redis.is_cluster() {
            self.cluster_heartbeat(redis).await
        } else {
            self.clock.sync(redis_ms, None, sent, now_ms());
            false
        };
        let evicted = self.evicted_since_last(redis).await;
        let (first, changed) = {
            let mut seen = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
            let first = seen.is_none();
            let changed = seen.as_ref().is_some_and(|known| {
                marks
                    .iter()
                    .any(|(key, m)| known.get(key).is_some_and(|id| *id != m.id))
            });
            *seen = Some(
                marks
                    .iter()
                    .map(|(k, m)| (k.clone(), m.id.clone()))
                    .collect(),
            );
            (first, changed)
        };
        let made = marks.iter().any(|(_, m)| m.made);
        let floor = marks.iter().map(|(_, m)| m.floor).max().unwrap_or(0);
        if changed || restarted || evicted || made {
            tracing::warn!(
                changed,
                restarted,
                evicted,
                made,
                "Redis may have lost purge times; entries fetched until now are not served"
            );
            let floor = redis_ms.max(floor);
            let id = format!("{:016x}-{sent}", self.instance);
            for (key, _) in &marks {
                if let Err(e) = shared::raise_floor(redis, key, &id, floor, MARK_KEEP).await {
                    tracing::warn!(error = %e, "the floor could not be raised on every mark");
                }
            }
            self.raise_floor(floor, !first);
        } else if floor > self.floor() {
            self.raise_floor(floor, !first);
        }
        // From now on L2 entries are served, checked against the floor.
        self.marks_read.store(true, Ordering::Release);
    }

    /// Reads (making any missing) the heartbeat's marks.
    async fn read_marks(
        &self,
        redis: &Redis,
        id: &str,
    ) -> Result<(Vec<(String, shared::Mark)>, u64), crate::redis::Error> {
        let keys = shared::mark_keys(redis).await?;
        let mut marks = Vec::with_capacity(keys.len());
        let mut time = 0;
        for key in keys {
            let (mark, now) = shared::mark_and_time(redis, &key, id, MARK_KEEP).await?;
            time = time.max(now);
            marks.push((key, mark));
        }
        Ok((marks, time))
    }

    /// Whether a master evicted keys since the last beat (a purge time may
    /// have gone with them).
    async fn evicted_since_last(&self, redis: &Redis) -> bool {
        let Ok(counts) = shared::evictions(redis).await else {
            return false;
        };
        let mut known = self.evicted.lock().unwrap_or_else(PoisonError::into_inner);
        let more = counts
            .iter()
            .any(|(addr, n)| known.get(addr).is_some_and(|k| n > k));
        *known = counts.into_iter().collect();
        more
    }

    /// Entries fetched before `floor` are not served from now on; L1 starts
    /// over (`drop_l1`), unless this is the first beat: L1 then holds only
    /// what this replica fetched since it started, while it heard every
    /// purge.
    fn raise_floor(&self, floor: u64, drop_l1: bool) {
        if self.floor.fetch_max(floor, Ordering::Relaxed) < floor && drop_l1 {
            self.start_over();
        }
    }
}

impl Invalidator {
    /// The heartbeat's part on a cluster: each master has its own clock,
    /// so the clock follows the slowest (and stays where it was without a
    /// reading of all of them). Answers whether a master came back at its
    /// address with a new `run_id` (it lost the purge times it held).
    async fn cluster_heartbeat(&self, redis: &Redis) -> bool {
        let sent = now_ms();
        if let Ok((slowest, spread)) = shared::slowest_time(redis).await {
            self.clock.sync(slowest, Some(spread), sent, now_ms());
        }
        let Ok(runs) = shared::master_runs(redis).await else {
            return false;
        };
        let mut known = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        let restarted = runs
            .iter()
            .any(|(addr, run)| known.get(addr).is_some_and(|r| r != run));
        *known = runs.into_iter().collect();
        restarted
    }
}

impl Admission for Invalidator {
    fn admits(&self, found: &Found, key: &str) -> impl std::future::Future<Output = bool> + Send {
        self.admit(found, key)
    }
}

/// Applies each purge again once its `repeat_after` is over, in the
/// order they were made, until `shutdown`.
pub async fn repeats(inv: Arc<Invalidator>, shutdown: tokio_util::sync::CancellationToken) {
    let Some(mut waiting) = inv.repeat.as_ref().and_then(|r| {
        r.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }) else {
        return;
    };
    loop {
        let (due, purge) = tokio::select! {
            () = shutdown.cancelled() => return,
            next = waiting.recv() => match next { Some(n) => n, None => return },
        };
        if let Some(r) = &inv.repeat {
            r.bytes
                .fetch_sub(outbox::weight(&purge) as u64, Ordering::Relaxed);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep_until(due) => {}
        }
        inv.purge(&purge, PurgeSource::Repeat).await;
    }
}

/// How long the mark a heartbeat leaves on Redis is kept after the last
/// beat (renewed every beat by every replica).
const MARK_KEEP: Duration = Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::memory::MemoryStore;

    /// Purges waiting for their repeat are held within the purge memory
    /// budget, whatever their number of names; past it, a purge is applied
    /// once (and the repeat of those held still comes).
    #[tokio::test]
    async fn the_repeat_queue_is_bounded_in_bytes() {
        let cache = Tiered::new(MemoryStore::new(1 << 20), None);
        let inv = Invalidator::new(cache, None, Duration::from_secs(5), 1 << 20)
            .with(None, Some(Duration::from_secs(3600)));
        let big = Purge {
            tags: (0..10_000).map(|i| format!("category:{i}")).collect(),
            ..Purge::default()
        };
        for _ in 0..8 {
            inv.purge(&big, PurgeSource::Api).await;
        }
        let (held, limit) = inv.repeat_usage().unwrap();
        assert_eq!(limit, 1 << 20);
        assert!(held <= limit, "{held} > {limit}");
        // A small purge still fits: the bound is in bytes, not count.
        let small = Purge {
            keys: vec!["product:1".to_owned()],
            ..Purge::default()
        };
        inv.purge(&small, PurgeSource::Api).await;
        assert!(inv.repeat_usage().unwrap().0 > 0);
    }
}
