//! Invalidation: purges by key, tag and prefix, applied to L1 and L2 and
//! announced to every replica over Redis pub/sub.
//!
//! - Keys and prefixes are deleted in both layers; the announcement makes
//!   every other replica delete them from its L1.
//! - Tags are purged by raising their generation ([`generations`]): one
//!   `INCR` and one `PUBLISH`, whatever the number of entries.
//! - A replica cut off from Redis may miss announcements. While cut off,
//!   an L1 entry is served for at most `redis.disconnect_grace` after the
//!   later of the cut and its arrival in L1, and the whole L1 is dropped on
//!   reconnect ([`bus`]). So a missed purge is honoured within the grace plus
//!   the time to notice the cut (the bus's 1 s heartbeat plus its timeout,
//!   5 × `redis.timeout`).

pub mod bus;
pub mod generations;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::generations::Generations;
use crate::cache::tiered::{Found, Tiered};
use crate::cache::{Layer, Payload, Store, Tag, now_ms};
use crate::metrics::PurgeSource;

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
}

/// How much a purge removed, as the admin API answers it.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Keys that held an entry here or in Redis.
    pub keys: usize,
    /// Tags whose generation was raised (every entry carrying them is gone).
    pub tags: usize,
    /// Entries removed by prefix, here and in Redis.
    pub prefixed: usize,
    /// Redis operations of this purge that failed: other replicas may not
    /// have seen all of it (they catch up within their disconnect grace
    /// only if they lost their connection too). Retry the purge.
    pub redis_errors: usize,
}

/// What travels over pub/sub.
#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    /// The sending replica, which has already applied it.
    from: u64,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
    /// Tag -> its new generation.
    #[serde(default)]
    tags: Vec<(String, u64)>,
}

/// The purge engine of one replica.
pub struct Invalidator {
    cache: Tiered,
    generations: Generations,
    /// Unique per process, so a replica skips its own announcements.
    instance: u64,
    /// 0 while the announcement channel is connected; otherwise the time
    /// (ms since the epoch) it was lost.
    cut_off_since: AtomicU64,
    /// How long L1 is trusted after the channel is lost.
    grace: Duration,
    /// Raised by every purge, here or announced; a fetch that saw another
    /// value when it started does not store its answer.
    epoch: AtomicU64,
    /// The last [`RECENT`] purges, newest last, for the dashboard. A plain
    /// mutex: held only to push or copy, never across an await.
    recent: Mutex<VecDeque<Recorded>>,
}

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

/// The internal tag every Vary variant of `key` carries, so a purge of the
/// key reaches variants it cannot name.
pub fn variant_tag(key: &str) -> String {
    format!("#vary:{key}")
}

impl Invalidator {
    /// An invalidator over `cache`; `grace` bounds L1 trust while cut off.
    pub fn new(cache: Tiered, grace: Duration) -> Self {
        // RandomState is seeded randomly per process and per call.
        let instance = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            now_ms(),
        );
        Self {
            // At start L1 is empty, so nothing can have been missed yet; the
            // bus marks the cut if its first connection fails.
            cut_off_since: AtomicU64::new(0),
            cache,
            generations: Generations::default(),
            instance,
            grace,
            epoch: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
        }
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

    /// The purge epoch (see [`Invalidator::purge`]).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The pub/sub channel of purge announcements.
    pub fn channel(&self) -> Option<String> {
        self.cache
            .redis
            .as_ref()
            .map(|r| format!("{}purge", r.prefix()))
    }

    /// Whether a found entry may be served: its tags are current and, for
    /// L1 while cut off from purges, it has not been trusted for longer than
    /// the grace since the later of its arrival in L1 and the cut (so L1
    /// keeps working during a Redis outage, re-fetching every grace period).
    /// An L2 entry with tags refreshes their generations from Redis first.
    pub async fn admits(&self, found: &Found) -> bool {
        let Payload::Response(r) = &found.entry.payload else {
            return true;
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
                if !r.tags.is_empty()
                    && let Some(redis) = &self.cache.redis
                {
                    let names: Vec<&str> = r.tags.iter().map(|t| t.name.as_str()).collect();
                    match redis.tag_generations(&names).await {
                        Ok(gens) => names
                            .iter()
                            .zip(gens)
                            .for_each(|(n, g)| self.generations.observe(n, g)),
                        // Cannot tell whether a tag was purged: do not serve it.
                        Err(_) => return false,
                    }
                }
            }
        }
        self.generations.is_current(&r.tags)
    }

    /// Generations for tags of a new entry: the known ones, and Redis's for
    /// tags this replica has not seen (0 when Redis cannot say: safe, since
    /// a low generation only makes the entry easier to purge).
    pub async fn stamp(&self, names: Vec<String>) -> Vec<Tag> {
        let unknown: Vec<&str> = names
            .iter()
            .filter(|n| self.generations.get(n).is_none())
            .map(String::as_str)
            .collect();
        if let (false, Some(redis)) = (unknown.is_empty(), &self.cache.redis)
            && let Ok(gens) = redis.tag_generations(&unknown).await
        {
            unknown
                .iter()
                .zip(gens)
                .for_each(|(n, g)| self.generations.observe(n, g));
        }
        names
            .into_iter()
            .map(|name| Tag {
                generation: self.generations.get(&name).unwrap_or(0),
                name,
            })
            .collect()
    }

    /// Purges here and in Redis, and announces it to every replica.
    pub async fn purge(&self, purge: &Purge, source: PurgeSource) -> Counts {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.record(source, &purge.keys, &purge.tags, &purge.prefixes);
        let mut counts = Counts::default();
        let mut tags = Vec::with_capacity(purge.tags.len() + purge.keys.len());
        let all_tags = purge
            .tags
            .iter()
            .cloned()
            .chain(purge.keys.iter().map(|k| variant_tag(k)));
        for (i, tag) in all_tags.enumerate() {
            let generation = match &self.cache.redis {
                Some(r) => match r.bump_tag(&tag).await {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::warn!(error = %e, "tag purge could not reach Redis; applied here only");
                        counts.redis_errors += 1;
                        self.generations.bump_local(&tag)
                    }
                },
                None => self.generations.bump_local(&tag),
            };
            self.generations.observe(&tag, generation);
            counts.tags += usize::from(i < purge.tags.len());
            tags.push((tag, generation));
        }
        for key in &purge.keys {
            let here = self.cache.memory.delete(key).await.unwrap_or(false);
            let there = match &self.cache.redis {
                Some(r) => r.delete(key).await.unwrap_or_else(|_| {
                    counts.redis_errors += 1;
                    false
                }),
                None => false,
            };
            counts.keys += usize::from(here || there);
        }
        for prefix in &purge.prefixes {
            counts.prefixed += self.cache.memory.remove_prefix(prefix).await;
            if let Some(r) = &self.cache.redis {
                match r.delete_prefix(prefix).await {
                    Ok(n) => counts.prefixed += n,
                    Err(_) => counts.redis_errors += 1,
                }
            }
        }
        if let (Some(r), Some(channel)) = (&self.cache.redis, self.channel()) {
            let msg = Announcement {
                from: self.instance,
                keys: purge.keys.clone(),
                prefixes: purge.prefixes.clone(),
                tags,
            };
            if let Ok(text) = serde_json::to_string(&msg)
                && let Err(e) = r.publish(&channel, &text).await
            {
                counts.redis_errors += 1;
                tracing::warn!(error = %e, "purge announcement not sent; other replicas were not told");
            }
        }
        counts
    }

    /// Applies another replica's announcement to this replica's L1.
    async fn apply(&self, text: &str) {
        let Ok(msg) = serde_json::from_str::<Announcement>(text) else {
            tracing::warn!("ignored a purge announcement that does not parse");
            return;
        };
        if msg.from == self.instance {
            return;
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let tags: Vec<String> = msg.tags.iter().map(|(t, _)| t.clone()).collect();
        self.record(PurgeSource::Remote, &msg.keys, &tags, &msg.prefixes);
        for (tag, generation) in &msg.tags {
            self.generations.observe(tag, *generation);
        }
        for key in &msg.keys {
            let _ = self.cache.memory.delete(key).await;
        }
        for prefix in &msg.prefixes {
            self.cache.memory.remove_prefix(prefix).await;
        }
    }

    /// State of the announcement channel, as `/readyz` reports it.
    pub fn channel_state(&self) -> &'static str {
        match (
            &self.cache.redis,
            self.cut_off_since.load(Ordering::Relaxed),
        ) {
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
            self.cache.memory.clear();
            // Generations may have moved without us; L2 hits read them again.
            self.generations.clear();
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }
}
