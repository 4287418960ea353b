//! Which keys are hot across replicas, for `memory.warm: { from: hot }`.
//!
//! Every replica counts the lookups of each key in memory, per rule (a
//! map lookup and an add: no Redis round trip on the request path). Every
//! [`MERGE_EVERY`], and once more on shutdown, it adds its counts into
//! Redis, into one sorted set per rule and [`PERIOD`]
//! (`<prefix>#hot:<rule>:<period number>`), which every replica's counts
//! share. A starting replica reads the last [`PERIODS`] sets, weighing
//! each period half as much as the one after it (hits fade with a half
//! life of one period), and fills its L1 from L2 with the hottest keys.
//!
//! Bounded on both sides: a replica counts at most [`LOCAL_KEYS`] distinct
//! keys of at most [`LOCAL_BYTES`] in all between two merges (keys first
//! seen after that wait for the next merge; a hot key is seen early); each
//! set is trimmed to its `max(4 × top, 10,000)` highest counts when it
//! holds twice that, and expires [`PERIODS`] periods after its last write.
//! Replicas sharing a Redis are expected to share `top` (they share the
//! config); the smallest one's bound applies.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::redis::{Redis, Script};

/// How often a replica adds its counts into Redis.
pub const MERGE_EVERY: Duration = Duration::from_secs(5);

/// One period of counts, and the half life of a count.
pub const PERIOD: Duration = Duration::from_secs(600);

/// Periods read by a starting replica (the current one and those before).
pub const PERIODS: u64 = 6;

/// Distinct keys one replica counts between two merges.
pub const LOCAL_KEYS: usize = 50_000;

/// Bytes of distinct keys one replica counts between two merges.
pub const LOCAL_BYTES: usize = 8 << 20;

/// Fewest keys a period's set keeps.
const MIN_KEEP: usize = 10_000;

/// Members sent to Redis in one script call.
const PER_CALL: usize = 1_000;

/// Adds counts to one period's set; once it holds more than twice
/// `ARGV[1]` keys, keeps its `ARGV[1]` highest (trimming only then gives a
/// key that turns hot late in the period room to catch up); keeps the set
/// for `ARGV[2]` ms. `ARGV[3..]`: key, count, key, count...
static MERGE: Script = Script::new(
    r"
for i = 3, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
end
local keep = tonumber(ARGV[1])
local card = redis.call('ZCARD', KEYS[1])
if card > 2 * keep then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, card - keep - 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
",
);

/// The local counts, and whether counting is on (`memory.warm.from: hot`
/// with Redis configured).
#[derive(Default)]
pub struct Hotness {
    on: AtomicBool,
    /// How many keys each period's set keeps.
    keep: AtomicUsize,
    /// Rule name, then key, then lookups since the last merge.
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    by_rule: HashMap<String, HashMap<String, u64>>,
    keys: usize,
    bytes: usize,
}

/// One key's hotness: its rule, its key and its weighed count.
#[derive(Debug, Clone, PartialEq)]
pub struct Hot {
    /// The rule it was counted under.
    pub rule: String,
    /// The cache key.
    pub key: String,
    /// Lookups, each period weighed half as much as the next.
    pub score: f64,
}

impl Hotness {
    /// Turns counting on for the hottest `top` keys, or off (`None`,
    /// which drops what was counted since the last merge).
    pub fn set(&self, top: Option<usize>) {
        let keep = top.map_or(MIN_KEEP, keep_for);
        self.keep.store(keep, Ordering::Relaxed);
        self.on.store(top.is_some(), Ordering::Relaxed);
        if top.is_none()
            && let Ok(mut c) = self.counts.lock()
        {
            *c = Counts::default();
        }
    }

    /// Counts one lookup of `key` under `rule`, and of `variant` too when
    /// the key held a Vary marker that led to another key.
    pub fn count(&self, rule: &str, key: &str, variant: &str) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut c) = self.counts.lock() else {
            return;
        };
        c.add(rule, key);
        if variant != key {
            c.add(rule, variant);
        }
    }
}

impl Counts {
    /// One more lookup of `key` under `rule`, within the bounds.
    fn add(&mut self, rule: &str, key: &str) {
        let full = self.keys >= LOCAL_KEYS || self.bytes + key.len() > LOCAL_BYTES;
        if let Some(keys) = self.by_rule.get_mut(rule) {
            if let Some(n) = keys.get_mut(key) {
                *n += 1;
                return;
            }
            if full {
                return;
            }
            keys.insert(key.to_owned(), 1);
        } else if full {
            return;
        } else {
            let keys = HashMap::from([(key.to_owned(), 1)]);
            self.by_rule.insert(rule.to_owned(), keys);
        }
        self.keys += 1;
        self.bytes += key.len();
    }
}

impl Hotness {
    /// Adds the counts made since the last merge into this period's sets
    /// in Redis. Counts that fail to reach Redis are dropped: hotness is a
    /// hint, and the next merge carries new counts.
    pub async fn merge(&self, redis: &Redis) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let taken = match self.counts.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => return,
        };
        let keep = self.keep.load(Ordering::Relaxed);
        let ttl = crate::redis::millis(PERIOD * u32::try_from(PERIODS + 1).unwrap_or(7));
        let period = period_now();
        for (rule, keys) in taken.by_rule {
            let set = set_key(redis, &rule, period);
            let keys: Vec<_> = keys.into_iter().collect();
            for chunk in keys.chunks(PER_CALL) {
                let mut args: Vec<String> = Vec::with_capacity(2 + chunk.len() * 2);
                args.push(keep.to_string());
                args.push(ttl.to_string());
                for (k, n) in chunk {
                    args.push(k.clone());
                    args.push(n.to_string());
                }
                if let Err(e) = redis.run_script::<i64>(&MERGE, &[&set], &args).await {
                    tracing::debug!(error = %e, rule, "hot keys not merged into redis");
                    break;
                }
            }
        }
    }

    /// The `top` hottest keys of `rules` across replicas, hottest first.
    pub async fn read(
        redis: &Redis,
        rules: &[String],
        top: usize,
    ) -> Result<Vec<Hot>, crate::redis::Error> {
        let now = period_now();
        let mut scores: HashMap<(String, String), f64> = HashMap::new();
        let mut weight = 1.0;
        for back in 0..PERIODS {
            let period = now.saturating_sub(back);
            for rule in rules {
                let mut cmd = redis::cmd("ZREVRANGE");
                cmd.arg(set_key(redis, rule, period))
                    .arg(0)
                    .arg(keep_for(top) - 1)
                    .arg("WITHSCORES");
                let got: Vec<(String, f64)> = redis.run("ZREVRANGE", cmd).await?;
                for (key, n) in got {
                    *scores.entry((rule.clone(), key)).or_default() += n * weight;
                }
            }
            weight /= 2.0;
        }
        let mut hot: Vec<Hot> = scores
            .into_iter()
            .map(|((rule, key), score)| Hot { rule, key, score })
            .collect();
        hot.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.key.cmp(&b.key)));
        hot.truncate(top);
        Ok(hot)
    }
}

/// How many keys a period's set keeps for a warm-up of the `top` hottest.
fn keep_for(top: usize) -> usize {
    top.saturating_mul(4).max(MIN_KEEP)
}

/// The number of the period now, from this replica's clock.
fn period_now() -> u64 {
    crate::cache::now_ms() / crate::redis::millis(PERIOD).max(1)
}

/// The Redis key of `rule`'s counts in `period`.
fn set_key(redis: &Redis, rule: &str, period: u64) -> String {
    crate::keyspace::hot(redis, rule, period)
}

/// Adds this replica's counts into Redis every [`MERGE_EVERY`] and once
/// more when `shutdown` fires, so a replica being replaced hands on what
/// it saw (the app merges the requests drained after that once they are
/// done).
pub async fn run(
    hot: std::sync::Arc<Hotness>,
    redis: Option<Redis>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let Some(redis) = redis else {
        return;
    };
    let mut tick = tokio::time::interval(MERGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => hot.merge(&redis).await,
            () = shutdown.cancelled() => {
                hot.merge(&redis).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_rule_and_key_up_to_the_bound() {
        let h = Hotness::default();
        h.count("products", "product:1", "product:1");
        assert!(
            h.counts.lock().unwrap().by_rule.is_empty(),
            "off by default"
        );
        h.set(Some(10));
        for _ in 0..3 {
            h.count("products", "product:1", "product:1");
        }
        h.count("carts", "product:1", "product:1");
        let c = h.counts.lock().unwrap();
        assert_eq!(c.by_rule["products"]["product:1"], 3);
        assert_eq!(c.by_rule["carts"]["product:1"], 1);
        assert_eq!(c.keys, 2);
        drop(c);
        for i in 0..LOCAL_KEYS + 10 {
            let key = format!("p:{i}");
            h.count("products", &key, &key);
        }
        let c = h.counts.lock().unwrap();
        assert_eq!(c.keys, LOCAL_KEYS, "distinct keys are bounded");
        assert_eq!(c.by_rule["products"]["product:1"], 3);
        drop(c);
        h.set(None);
        assert!(
            h.counts.lock().unwrap().by_rule.is_empty(),
            "off drops the counts"
        );
        // Long keys stop at the byte bound.
        h.set(Some(10));
        let long = "k".repeat(1 << 20);
        for i in 0..20 {
            let key = format!("{i}{long}");
            h.count("products", &key, &key);
        }
        let c = h.counts.lock().unwrap();
        assert!(c.bytes <= LOCAL_BYTES && c.keys < 20, "{} keys", c.keys);
    }
}
