//! Purges across regions. Each region has its own Redis; a purge made in
//! one is applied in every other.
//!
//! - **Recorded first.** A purge made here (API, `PURGE`, a write) is
//!   appended to this region's purge log, a Redis Stream of at most
//!   `invalidation.region_log` entries, before it is applied
//!   ([`Regions::record`]). Purges that came from another region, and
//!   repeats, are not logged again, so nothing travels back to where it came
//!   from and each region hears each purge once, from its origin.
//! - **Pulled, in order.** In every region one replica per other region
//!   holds a lease in its own Redis ([`LEASE`], renewed every second) and
//!   reads that region's log with a blocking `XREAD`: a purge arrives one
//!   link delay after it was logged. It applies each entry in order
//!   through the ordinary purge path (its own Redis, its bus, so every
//!   replica of the region), then writes how far it got into the origin's
//!   Redis. A relayer that dies before writing it leaves the next one to
//!   apply the same entries again, which only refuses a few more stores.
//! - **Never lost.** A broken link only delays the reads. A region that
//!   comes back after its place in the log was trimmed (or without one)
//!   cannot know what it missed, so it purges everything it holds, L2 and
//!   every replica's L1. The same goes when the origin's log was lost or
//!   replaced (its Redis flushed, or a new one): each region also keeps,
//!   in its own Redis, the last entry it applied; a log that no longer
//!   holds it (gone, or begun again) lost purges this region never saw.
//! - **Visible.** The origin knows how far each region got: the age of the
//!   oldest purge a region has not applied is its lag
//!   (`sidecache_region_purge_lag_seconds`); each replica checks its link
//!   to every region every second (`sidecache_region_link`).
//!
//! The log and the positions are kept for the longest lifetime of an entry
//! (at least [`MIN_KEEP`]): a purge older than that can no longer concern
//! an entry anywhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Invalidator, Purge};
use crate::config::Regions as RegionsConfig;
use crate::metrics::{self, PurgeSource};
use crate::redis::{Error, Redis, Script, Target, millis};

/// How long a relayer's lease lasts without renewal: another replica takes
/// over within this (plus a second) after its holder dies.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often the lease is renewed, links checked and lags measured.
const BEAT: Duration = Duration::from_secs(1);
/// How long one `XREAD` waits for a purge before asking again.
const BLOCK: Duration = Duration::from_secs(1);
/// Most log entries read and applied at once.
const BATCH: usize = 256;
/// The shortest time the log and positions are kept.
pub const MIN_KEEP: Duration = Duration::from_secs(600);

/// This region and its links to the others.
pub struct Regions {
    here: String,
    log_len: u64,
    others: Vec<Remote>,
}

/// Another region, as this replica sees it.
struct Remote {
    name: String,
    /// Commands to its Redis.
    redis: Redis,
    /// Blocking reads of its log: a connection of their own, whose timeout
    /// covers the block.
    reader: Redis,
    /// 0 not known yet, 1 up, 2 down.
    link: AtomicU8,
    /// Whether this replica holds the lease for it.
    relaying: AtomicBool,
    /// Age (ms) of the oldest purge made here that it has not applied.
    lag_ms: AtomicU64,
}

/// A region as `/readyz` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct RegionState {
    /// Its name.
    pub name: String,
    /// `up`, `down` or `unknown` (not checked yet).
    pub link: &'static str,
    /// Age of the oldest purge made here that it has not applied yet.
    pub lag_seconds: f64,
    /// Whether this replica brings its purges here.
    pub relaying: bool,
}

impl Regions {
    /// Connections (made lazily) to every other region's Redis.
    pub fn new(config: &RegionsConfig, log_len: u64) -> Result<Self, Error> {
        let mut others = Vec::with_capacity(config.others.len());
        for region in &config.others {
            let r = &region.redis;
            let target = || match &r.servers {
                crate::config::RedisServers::Url(url) => Target::Server(url),
                crate::config::RedisServers::Cluster(seeds) => Target::Cluster(seeds),
            };
            others.push(Remote {
                name: region.name.clone(),
                redis: Redis::new(target(), &r.key_prefix, r.timeout, r.ca.as_deref())?
                    .of_region(&region.name),
                reader: Redis::new(target(), &r.key_prefix, BLOCK + r.timeout, r.ca.as_deref())?
                    .of_region(&region.name),
                link: AtomicU8::new(0),
                relaying: AtomicBool::new(false),
                lag_ms: AtomicU64::new(0),
            });
        }
        Ok(Self {
            here: config.here.clone(),
            log_len,
            others,
        })
    }

    /// This region's name.
    pub fn here(&self) -> &str {
        &self.here
    }

    /// The other regions' names.
    pub fn names(&self) -> Vec<&str> {
        self.others.iter().map(|r| r.name.as_str()).collect()
    }

    /// Each other region's link and lag.
    pub fn states(&self) -> Vec<RegionState> {
        self.others
            .iter()
            .map(|r| RegionState {
                name: r.name.clone(),
                link: match r.link.load(Ordering::Relaxed) {
                    1 => "up",
                    2 => "down",
                    _ => "unknown",
                },
                lag_seconds: r.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
                relaying: r.relaying.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Appends `purge` to this region's log in `local`, kept `keep`.
    pub async fn record(&self, local: &Redis, purge: &Purge, keep: Duration) -> Result<(), Error> {
        static RECORD: Script = Script::new(
            "local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'r', ARGV[2], 'p', ARGV[3]) \
            redis.call('PEXPIRE', KEYS[1], ARGV[4]) \
            return id",
        );
        let text = serde_json::to_string(purge).unwrap_or_default();
        let args = [
            self.log_len.to_string(),
            self.here.clone(),
            text,
            millis(keep).to_string(),
        ];
        local
            .for_purges()
            .run_script::<String>(&RECORD, &[log_key(local)], &args)
            .await
            .map(|_| ())
    }
}

/// The purge log's key in `redis`.
fn log_key(redis: &Redis) -> String {
    crate::keyspace::region_log(redis)
}

/// A stream entry's id, `<ms>-<seq>`, in order.
fn id_of(text: &str) -> (u64, u64) {
    let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

impl Remote {
    fn set_link(&self, up: bool) {
        self.link.store(if up { 1 } else { 2 }, Ordering::Relaxed);
    }
}

/// Runs until `shutdown`: for every other region, relays its purges here
/// while this replica holds the lease, and every second checks the links
/// and measures how far behind each region is.
pub async fn run(inv: Arc<Invalidator>, shutdown: CancellationToken) {
    let (Some(regions), Some(_)) = (&inv.regions, &inv.redis) else {
        return;
    };
    let mut tasks = Vec::new();
    for i in 0..regions.others.len() {
        tasks.push(crate::metrics::spawn(relay_from(
            inv.clone(),
            i,
            shutdown.clone(),
        )));
    }
    tasks.push(crate::metrics::spawn(watch(inv.clone(), shutdown.clone())));
    for t in tasks {
        let _ = t.await;
    }
}

/// Takes, renews (answers 1) or fails to take (0) the lease at KEYS[1] for ARGV[1].
static TAKE: Script = Script::new(
    "local v = redis.call('GET', KEYS[1]) \
    if (not v) or v == ARGV[1] then \
      redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end \
    return 0",
);

/// Lets the lease at KEYS[1] go if ARGV[1] holds it.
static RELEASE: Script = Script::new(
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end \
    return 0",
);

/// The lease to relay from region `i`, then the relaying, again and again.
async fn relay_from(inv: Arc<Invalidator>, i: usize, shutdown: CancellationToken) {
    let (Some(regions), Some(local)) = (&inv.regions, &inv.redis) else {
        return;
    };
    let remote = &regions.others[i];
    let lease = crate::keyspace::region_lease(local, &remote.name);
    let me = format!("{:016x}", inv.instance);
    let take = || async {
        matches!(
            local
                .run_script::<u8>(&TAKE, &[&lease], &[me.clone(), millis(LEASE).to_string()])
                .await,
            Ok(1)
        )
    };
    loop {
        if take().await {
            relay(&inv, remote, &take, &shutdown).await;
            remote.relaying.store(false, Ordering::Relaxed);
        }
        if shutdown.is_cancelled() {
            // Handed over at once rather than when the lease runs out.
            let _ = local
                .run_script::<u8>(&RELEASE, &[&lease], std::slice::from_ref(&me))
                .await;
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(BEAT) => {}
        }
    }
}

/// Relays `remote`'s purges here while the lease is renewed; returns when
/// it is lost, the link fails, or on `shutdown`.
async fn relay<F, Fut>(inv: &Invalidator, remote: &Remote, renew: &F, shutdown: &CancellationToken)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let Ok(mut cursor) = start(inv, remote).await else {
        remote.set_link(false);
        return;
    };
    remote.set_link(true);
    if !remote.relaying.swap(true, Ordering::Relaxed) {
        tracing::info!(from = %remote.name, "relaying this region's purges here");
    }
    let mut renewed = tokio::time::Instant::now();
    // Where the last batch ended, written to the origin while the next read
    // waits (so it costs no round trip of its own).
    let mut unacked: Option<String> = None;
    loop {
        if renewed.elapsed() >= BEAT {
            if !renew().await {
                return;
            }
            renewed = tokio::time::Instant::now();
        }
        let acked = async {
            match &unacked {
                Some(c) => ack(inv, remote, c).await,
                None => Ok(()),
            }
        };
        let (acked, read) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = async { tokio::join!(acked, read(remote, &cursor)) } => r,
        };
        let (Ok(()), Ok(entries)) = (acked, read) else {
            remote.set_link(false);
            return;
        };
        unacked = None;
        remote.set_link(true);
        if entries.is_empty() {
            continue;
        }
        let full = entries.len() >= BATCH;
        tracing::debug!(from = %remote.name, purges = entries.len(), after = %cursor, "applying purges from another region");
        let mut purges = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            match fields.get("p").map(|p| serde_json::from_str::<Purge>(p)) {
                Some(Ok(purge)) if purge.check().is_ok() => purges.push(purge),
                _ => {
                    tracing::warn!(from = %remote.name, %id, "skipped a purge log entry that does not parse")
                }
            }
            cursor = id;
        }
        // A batch at once: what it names is purged as if one purge after
        // the other, in no time.
        if !purges.is_empty() {
            inv.purge_all(&purges, PurgeSource::Region).await;
        }
        ::metrics::counter!(metrics::REGION_PURGES, "region" => remote.name.clone())
            .increment(purges.len() as u64);
        // Behind by a whole batch: make sure the log was not trimmed past us.
        if full {
            if ack(inv, remote, &cursor).await.is_err() {
                remote.set_link(false);
                return;
            }
            match start(inv, remote).await {
                Ok(next) => cursor = next,
                Err(_) => {
                    remote.set_link(false);
                    return;
                }
            }
        } else {
            unacked = Some(cursor.clone());
        }
    }
}

/// Where to read `remote`'s log from: where this region got to (the start
/// the first time), unless the log was trimmed past that place, in which
/// case this region purges everything it holds and starts at the log's end.
async fn start(inv: &Invalidator, remote: &Remote) -> Result<String, Error> {
    let here = inv.regions.as_ref().map_or("", |r| r.here.as_str());
    let mut get = redis::cmd("GET");
    get.arg(crate::keyspace::region_applied(&remote.redis, here));
    let cursor: Option<String> = remote.redis.run("GET", get).await?;
    // The last entry applied here, as this region's own Redis remembers
    // it (kept as long as the origin keeps its log after its last purge).
    let seen: Option<String> = match &inv.redis {
        Some(local) => {
            let mut get = redis::cmd("GET");
            get.arg(crate::keyspace::region_seen(local, &remote.name));
            local.run("GET", get).await?
        }
        None => None,
    }
    .filter(|s| s != "0-0");
    // Whether the log was trimmed past `cursor`: trimming drops the
    // oldest entries, so nothing after `cursor` went if `cursor` itself is
    // still there, or if nothing was ever trimmed (then the log holds
    // everything since it was made, and what is older no longer concerns
    // any entry). A missing log is not an error: nothing was purged there
    // lately.
    static INFO: Script = Script::new(
        "if redis.call('EXISTS', KEYS[1]) == 0 then return false end \
        local info = redis.call('XINFO', 'STREAM', KEYS[1]) \
        local f = {} \
        for i = 1, #info, 2 do f[info[i]] = info[i + 1] end \
        local kept = 0 \
        if ARGV[1] ~= '0-0' and #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) > 0 then kept = 1 end \
        return {f['length'], f['entries-added'], f['last-generated-id'], kept}",
    );
    // No place yet: the log is read from its start.
    let cursor = cursor
        .or_else(|| seen.clone())
        .unwrap_or_else(|| "0-0".to_owned());
    // The log must still hold what this region applied last.
    let check = seen.as_deref().unwrap_or(cursor.as_str());
    let info: Option<(u64, u64, String, u8)> = remote
        .redis
        .run_script(&INFO, &[log_key(&remote.redis)], &[check])
        .await?;
    let (last, why) = match info {
        // A log that held an entry applied here cannot have expired before
        // this region's note of it did: it was lost.
        None if seen.is_some() => ("0-0".to_owned(), "its purge log is gone"),
        None => {
            // The place is recorded, so the lag is counted from it.
            ack(inv, remote, &cursor).await?;
            return Ok(cursor);
        }
        Some((_, _, last, 0)) if seen.is_some() => (last, "its purge log was replaced"),
        Some((length, added, last, kept)) => {
            if added <= length || kept == 1 {
                return Ok(cursor);
            }
            (last, "its log was trimmed past where this region got to")
        }
    };
    tracing::warn!(
        from = %remote.name,
        why,
        "purges from this region were missed; purging everything here"
    );
    let all = Purge {
        prefixes: vec![String::new()],
        all: true,
        ..Purge::default()
    };
    inv.purge(&all, PurgeSource::Region).await;
    ack(inv, remote, &last).await?;
    Ok(last)
}

/// The next entries of `remote`'s log after `cursor`, waiting up to
/// [`BLOCK`] for one: each id with its fields.
async fn read(
    remote: &Remote,
    cursor: &str,
) -> Result<Vec<(String, HashMap<String, String>)>, Error> {
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(BATCH)
        .arg("BLOCK")
        .arg(millis(BLOCK))
        .arg("STREAMS")
        .arg(log_key(&remote.reader))
        .arg(cursor);
    type Reply = Option<Vec<(String, Vec<(String, HashMap<String, String>)>)>>;
    let reply: Reply = remote.reader.run("XREAD", cmd).await?;
    Ok(reply
        .into_iter()
        .flatten()
        .flat_map(|(_, entries)| entries)
        .collect())
}

/// Records in `remote`'s Redis that this region applied its log up to
/// `cursor`: where the next relayer starts, and what the origin's lag
/// counts from; and in this region's Redis, so a log that lost it is told
/// from one that never had it.
async fn ack(inv: &Invalidator, remote: &Remote, cursor: &str) -> Result<(), Error> {
    let here = inv.regions.as_ref().map_or("", |r| r.here.as_str());
    let mut set = redis::cmd("SET");
    set.arg(crate::keyspace::region_applied(&remote.redis, here))
        .arg(cursor)
        .arg("PX")
        .arg(millis(keep(inv)));
    remote.redis.run::<()>("SET", set).await?;
    if let Some(local) = &inv.redis {
        let mut set = redis::cmd("SET");
        set.arg(crate::keyspace::region_seen(local, &remote.name))
            .arg(cursor)
            .arg("PX")
            .arg(millis(keep(inv)));
        local.run::<()>("SET", set).await?;
    }
    Ok(())
}

/// How long the log and positions are kept.
pub fn keep(inv: &Invalidator) -> Duration {
    inv.horizon().max(MIN_KEEP)
}

/// Every [`BEAT`]: checks the link to each region this replica does not
/// relay from (the relayer knows its own), and measures each region's lag
/// from where it says it got to in this region's log.
async fn watch(inv: Arc<Invalidator>, shutdown: CancellationToken) {
    let (Some(regions), Some(local)) = (&inv.regions, &inv.redis) else {
        return;
    };
    let mut beat = tokio::time::interval(BEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = beat.tick() => {}
        }
        for remote in &regions.others {
            if !remote.relaying.load(Ordering::Relaxed) {
                let up = remote
                    .redis
                    .run::<String>("PING", redis::cmd("PING"))
                    .await
                    .is_ok();
                remote.set_link(up);
            }
            if let Ok(lag) = lag(&inv, local, &remote.name).await {
                remote.lag_ms.store(lag, Ordering::Relaxed);
            }
            let link = remote.link.load(Ordering::Relaxed);
            for (state, on) in [("up", link == 1), ("down", link == 2)] {
                ::metrics::gauge!(metrics::REGION_LINK, "region" => remote.name.clone(), "state" => state)
                    .set(f64::from(u8::from(on)));
            }
            ::metrics::gauge!(metrics::REGION_LAG, "region" => remote.name.clone())
                .set(remote.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0);
            ::metrics::gauge!(metrics::REGION_RELAYING, "region" => remote.name.clone())
                .set(f64::from(u8::from(remote.relaying.load(Ordering::Relaxed))));
        }
    }
}

/// The age (ms, on the purge clock) of the oldest purge in this region's
/// log that region `name` has not applied; 0 when it is up to date.
async fn lag(inv: &Invalidator, local: &Redis, name: &str) -> Result<u64, Error> {
    let mut get = redis::cmd("GET");
    get.arg(crate::keyspace::region_applied(local, name));
    let applied: Option<String> = local.run("GET", get).await?;
    let mut range = redis::cmd("XRANGE");
    range
        .arg(log_key(local))
        .arg(applied.map_or_else(|| "-".to_owned(), |a| format!("({a}")))
        .arg("+")
        .arg("COUNT")
        .arg(1);
    let first: Vec<(String, HashMap<String, String>)> = local.run("XRANGE", range).await?;
    Ok(first
        .first()
        .map_or(0, |(id, _)| inv.clock.now().saturating_sub(id_of(id).0)))
}

#[cfg(test)]
mod tests {
    use super::id_of;

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        assert!(id_of("1700000000000-1") > id_of("1700000000000-0"));
        assert!(id_of("1700000000001-0") > id_of("1700000000000-9"));
        assert_eq!(id_of("0-0"), (0, 0));
        assert_eq!(id_of("garbage"), (0, 0));
    }
}
