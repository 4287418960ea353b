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
///
/// `at` (when not 0) is the time a purge applied earlier here took, for one
/// retried from the outbox: it is recorded at that time (or just after a
/// later purge of the tag), so answers fetched since are not refused.
pub async fn purge_tag(redis: &Redis, tag: &str, keep: Duration, at: u64) -> Result<u64, Error> {
    static PURGE_TAG: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
        Script::owned(format!(
            "{LUA_NOW} \
            local bound = now + tonumber(ARGV[2]) \
            local at = tonumber(ARGV[3]) \
            if at > 0 and at < now then now = at end \
            local last = tonumber(redis.call('GET', KEYS[1]) or '0') or 0 \
            if last >= now and last <= bound then now = last + 1 end \
            redis.call('SET', KEYS[1], string.format('%.0f', now), 'PX', ARGV[1]) \
            return now"
        ))
    });
    redis
        .for_purges()
        .run_script::<u64>(
            &PURGE_TAG,
            &[tag_key(redis, tag)],
            &[millis(keep), TRUST_MS, at],
        )
        .await
}

/// Deletes `key`'s entry and records the purge's time in its tombstone
/// (kept [`TOMBSTONE`]), so a late store of an older answer is refused; if
/// the key has Vary variants, raises their internal tag (kept `keep`) too.
/// Answers whether an entry went, and the purge's time. `at` as for
/// [`purge_tag`].
pub async fn purge_key(
    redis: &Redis,
    key: &str,
    variants_tag: &str,
    keep: Duration,
    at: u64,
) -> Result<(bool, u64), Error> {
    static PURGE_KEY: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
        Script::owned(format!(
            "{LUA_NOW} \
            local bound = now + tonumber(ARGV[3]) \
            local at = tonumber(ARGV[4]) \
            if at > 0 and at < now then now = at end \
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
    let args = [millis(TOMBSTONE), millis(keep), TRUST_MS, at];
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

/// A heartbeat mark as read: who made it, and the floor it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Whoever made it (a replica's id and time): another value than the
    /// one seen before means the mark was lost and made again.
    pub id: String,
    /// Entries fetched before this time (ms, Redis's clock) are not to be
    /// served: purge times may have been lost then.
    pub floor: u64,
    /// This reading made it: it was missing.
    pub made: bool,
}

/// Reads (or makes, with `id` and a floor of Redis's time now) the mark
/// at `key`, kept `keep` and renewed, and Redis's clock. Answers the mark
/// and Redis's time in ms.
pub async fn mark_and_time(
    redis: &Redis,
    key: &str,
    id: &str,
    keep: Duration,
) -> Result<(Mark, u64), Error> {
    static MARK: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
        Script::owned(format!(
            "{LUA_NOW} \
            local v = redis.call('GET', KEYS[1]) \
            local made = 0 \
            if not v then \
              v = ARGV[1] .. '|' .. string.format('%.0f', now) made = 1 \
              redis.call('SET', KEYS[1], v, 'PX', ARGV[2]) \
            else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end \
            return {{v, now, made}}"
        ))
    });
    let args = [id.to_owned(), millis(keep).to_string()];
    let (value, now, made): (String, u64, u64) = redis.run_script(&MARK, &[key], &args).await?;
    let (id, floor) = match value.rsplit_once('|') {
        Some((id, floor)) => (id.to_owned(), floor.parse().unwrap_or(u64::MAX)),
        None => (value, 0),
    };
    let mark = Mark {
        id,
        floor,
        made: made == 1,
    };
    Ok((mark, now))
}

/// Raises the floor of the mark at `key` to `floor` (made with `id` if
/// missing), kept `keep`.
pub async fn raise_floor(
    redis: &Redis,
    key: &str,
    id: &str,
    floor: u64,
    keep: Duration,
) -> Result<(), Error> {
    static RAISE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
        Script::new(
            "local v = redis.call('GET', KEYS[1]) \
            local id, f = ARGV[3], 0 \
            if v then \
              local i, g = string.match(v, '^(.*)|(%d+)$') \
              if i then id, f = i, tonumber(g) else id = v end \
            end \
            if tonumber(ARGV[1]) > f then \
              redis.call('SET', KEYS[1], id .. '|' .. ARGV[1], 'PX', ARGV[2]) \
            end \
            return 1",
        )
    });
    let args = [floor.to_string(), millis(keep).to_string(), id.to_owned()];
    redis.run_script::<u64>(&RAISE, &[key], &args).await?;
    Ok(())
}

/// The keys of the heartbeat's marks: `#mark` on one server; on a
/// cluster, one on each master (named with a hash tag in its slots), so a
/// flush of any master takes a mark with it.
pub async fn mark_keys(redis: &Redis) -> Result<Vec<String>, Error> {
    let base = crate::keyspace::mark(redis);
    if !redis.is_cluster() {
        return Ok(vec![base]);
    }
    let slots: redis::Value = redis.run("CLUSTER", cluster_slots()).await?;
    let mut keys = Vec::new();
    let mut masters: Vec<String> = Vec::new();
    let redis::Value::Array(ranges) = slots else {
        return Err(Error::Disconnected);
    };
    for range in ranges {
        let redis::Value::Array(parts) = range else {
            continue;
        };
        let (Some(start), Some(end), Some(master)) = (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            <u16 as redis::FromRedisValue>::from_redis_value(start.clone()),
            <u16 as redis::FromRedisValue>::from_redis_value(end.clone()),
        ) else {
            continue;
        };
        let who = format!("{master:?}");
        if masters.contains(&who) {
            continue;
        }
        masters.push(who);
        if let Some(key) = (0..65_536u32)
            .map(|i| format!("{base}{{m{i}}}"))
            .find(|k| (start..=end).contains(&slot(k)))
        {
            keys.push(key);
        }
    }
    Ok(keys)
}

fn cluster_slots() -> redis::Cmd {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SLOTS");
    cmd
}

/// The cluster slot of `key`: CRC16 of its hash tag (the first non-empty
/// `{...}`) or of the whole key, modulo 16384.
fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = key.find('{').and_then(|open| {
        let close = key[open + 1..].find('}')? + open + 1;
        (close > open + 1).then(|| &bytes[open + 1..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % 16_384
}

/// How many keys each master has evicted since it started (`INFO stats`),
/// by address: an eviction may have taken a purge time.
pub async fn evictions(redis: &Redis) -> Result<Vec<(String, u64)>, Error> {
    let found = info_field(redis, "stats", "evicted_keys").await?;
    Ok(found
        .into_iter()
        .filter_map(|(addr, n)| Some((addr, n.parse().ok()?)))
        .collect())
}

/// One field of an `INFO` section on every master, by address.
async fn info_field(
    redis: &Redis,
    section: &str,
    field: &str,
) -> Result<Vec<(String, String)>, Error> {
    let mut info = redis::cmd("INFO");
    info.arg(section);
    let answers = redis.on_masters("INFO", info).await?;
    let prefix = format!("{field}:");
    Ok(answers
        .into_iter()
        .filter_map(|(addr, v)| {
            let text: String = redis::FromRedisValue::from_redis_value(v).ok()?;
            let value = text.lines().find_map(|l| l.strip_prefix(prefix.as_str()))?;
            Some((addr, value.trim().to_owned()))
        })
        .collect())
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
    info_field(redis, "server", "run_id").await
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

#[cfg(test)]
mod tests {
    use super::slot;

    /// Slots as `CLUSTER KEYSLOT` gives them.
    #[test]
    fn slots_follow_redis() {
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("somekey"), 11058);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("a{}b"), slot("a{}b"));
        assert_ne!(slot("a{}b"), slot(""));
    }
}
