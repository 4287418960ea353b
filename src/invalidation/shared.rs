//! The Redis side of purges: each purge recorded at Redis's own time, in
//! one script, in the keys the entry store checks (see `cache::redis` for
//! their layout), and the heartbeat's mark that tells a flushed Redis.

use std::time::Duration;

use super::clock::TRUST_MS;
use crate::cache::redis::{TOMBSTONE, entry_key, tag_key, tombstone_key};
use crate::redis::{Error, LUA_NOW, Redis, Script, millis};

/// Records a purge of `tag` at Redis's time (later than any earlier purge
/// of it, so it only grows, across a flush too: it is a time, not a
/// counter), kept for `keep`; answers the time. An earlier time more than
/// [`TRUST_MS`] past Redis's clock (planted, or left by a clock that
/// jumped ahead) is not built on: the purge takes Redis's time.
pub async fn purge_tag(redis: &Redis, tag: &str, keep: Duration) -> Result<u64, Error> {
    static PURGE_TAG: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
        Script::owned(format!(
            "{LUA_NOW} \
            local last = tonumber(redis.call('GET', KEYS[1]) or '0') or 0 \
            if last >= now and last <= now + tonumber(ARGV[2]) then now = last + 1 end \
            redis.call('SET', KEYS[1], string.format('%.0f', now), 'PX', ARGV[1]) \
            return now"
        ))
    });
    redis
        .for_purges()
        .run_script::<u64>(
            &PURGE_TAG,
            &[tag_key(redis, tag)],
            &[millis(keep), TRUST_MS],
        )
        .await
}

/// Deletes `key`'s entry and records the purge's time in its tombstone
/// (kept [`TOMBSTONE`]), so a late store of an older answer is refused; if
/// the key has Vary variants, raises their internal tag (kept `keep`) too.
/// Answers whether an entry went, and the purge's time.
pub async fn purge_key(
    redis: &Redis,
    key: &str,
    variants_tag: &str,
    keep: Duration,
) -> Result<(bool, u64), Error> {
    static PURGE_KEY: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
        Script::owned(format!(
            "{LUA_NOW} \
            local bound = now + tonumber(ARGV[3]) \
            local last = tonumber(redis.call('GET', KEYS[2]) or '0') or 0 \
            if last >= now and last <= bound then now = last + 1 end \
            redis.call('SET', KEYS[2], string.format('%.0f', now), 'PX', ARGV[1]) \
            local g = redis.call('GET', KEYS[3]) \
            if g then \
              local t = (tonumber(g) or 0) + 1 \
              if t < now or t > bound then t = now end \
              redis.call('SET', KEYS[3], string.format('%.0f', t), 'PX', ARGV[2]) \
            end \
            return {{redis.call('DEL', KEYS[1]), now}}"
        ))
    });
    // One slot: see `cache::redis`.
    let keys = [
        entry_key(redis, key),
        tombstone_key(redis, key),
        tag_key(redis, variants_tag),
    ];
    let args = [millis(TOMBSTONE), millis(keep), TRUST_MS];
    let (deleted, time): (u64, u64) = redis
        .for_purges()
        .run_script(&PURGE_KEY, &keys, &args)
        .await?;
    Ok((deleted > 0, time))
}

/// The latest purge times of `tags` (0 for a tag not purged within its
/// keep). A value that is not a time counts as a purge just now, so the
/// entries carrying it are refused, not the whole of L2.
pub async fn tag_times(redis: &Redis, tags: &[&str]) -> Result<Vec<u64>, Error> {
    if tags.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = redis::cmd("MGET");
    for t in tags {
        cmd.arg(tag_key(redis, t));
    }
    let values = redis.run::<Vec<Option<Vec<u8>>>>("MGET", cmd).await?;
    Ok(values
        .into_iter()
        .map(|v| match v {
            None => 0,
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX),
        })
        .collect())
}

/// Marks this Redis with `id` if unmarked (kept `keep`, renewed), and
/// reads its clock. Answers the mark found and Redis's time in ms: a mark
/// other than the one seen before means Redis was flushed, replaced or
/// evicted everything.
pub async fn mark_and_time(
    redis: &Redis,
    id: &str,
    keep: Duration,
) -> Result<(String, u64), Error> {
    static MARK: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
        Script::owned(format!(
            "local v = redis.call('GET', KEYS[1]) \
            if not v then v = ARGV[1] redis.call('SET', KEYS[1], v, 'PX', ARGV[2]) \
            else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end \
            {LUA_NOW} \
            return {{v, now}}"
        ))
    });
    let args = [id.to_owned(), millis(keep).to_string()];
    redis.run_script(&MARK, &[redis.key("#mark")], &args).await
}

/// The earliest of the masters' clocks, in ms, and how far the latest runs
/// ahead of it: every master's `TIME`, read at once. On a cluster each
/// master stamps the purges of its own keys with its own clock; a fetch
/// placed on the slowest of them is placed at or before its start on every
/// one, so a purge on any master during the fetch is never taken for an
/// earlier one. (On one server: its time, and 0.) A master that does not
/// answer fails the reading: it might be the slowest.
pub async fn slowest_time(redis: &Redis) -> Result<(u64, u64), Error> {
    let answers = redis.on_masters("TIME", redis::cmd("TIME")).await?;
    let mut times = Vec::with_capacity(answers.len());
    for (_, v) in answers {
        let (secs, micros): (u64, u64) =
            redis::FromRedisValue::from_redis_value(v).map_err(|e| Error::Command(e.into()))?;
        times.push(secs * 1000 + micros / 1000);
    }
    match (times.iter().min(), times.iter().max()) {
        (Some(min), Some(max)) => Ok((*min, max - min)),
        _ => Err(Error::Disconnected),
    }
}

/// Each master's address and `run_id` (new whenever the process
/// restarts). A master that comes back at its address with a new run id
/// and without persistence has lost the purge times it held, which the
/// heartbeat's mark cannot tell unless it lived there.
pub async fn master_runs(redis: &Redis) -> Result<Vec<(String, String)>, Error> {
    let mut info = redis::cmd("INFO");
    info.arg("server");
    let answers = redis.on_masters("INFO", info).await?;
    Ok(answers
        .into_iter()
        .filter_map(|(addr, v)| {
            let text: String = redis::FromRedisValue::from_redis_value(v).ok()?;
            let run = text
                .lines()
                .find_map(|l| l.strip_prefix("run_id:"))?
                .trim()
                .to_owned();
            Some((addr, run))
        })
        .collect())
}

/// Waits (at most half the command timeout) until the purges sent before
/// on the purge connection ([`Redis::for_purges`]) are copied to a replica
/// of their master; answers whether they are, on every master. (A master
/// without a replica makes every purge wait the whole half timeout, and
/// count as not copied, which it is not.)
///
/// Why: a failover loses what a master acknowledged but had not yet
/// copied. A purge's time that went that way would leave the older time
/// behind (times only grow, so a later purge still works, but an entry
/// fetched between the two would be valid again on a replica that did not
/// hear the announcement), and a key purge's delete would be undone. Once a
/// replica has it, the promoted replica keeps it.
pub async fn copied(redis: &Redis) -> Result<bool, Error> {
    let mut wait = redis::cmd("WAIT");
    wait.arg(1).arg(millis(redis.timeout() / 2).max(1));
    redis
        .for_purges()
        .run::<u64>("WAIT", wait)
        .await
        .map(|n| n >= 1)
}
