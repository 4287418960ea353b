//! Per-rule rate limits (`rate_limit:`), checked right after a request
//! matches its rule, before any cache or backend work. The rule holds the
//! limit as plain data; [`RateLimits`] holds the state.
//!
//! Both scopes use GCRA (the generic cell rate algorithm): `rate` requests
//! per period on average, with up to `burst` at once. `scope: local` counts
//! in this replica's memory (governor); `scope: global` keeps each key's
//! state in Redis, shared by every replica, in one atomic script. When Redis
//! cannot be asked, a global limit falls back to the local count, so a Redis
//! outage neither blocks traffic nor lifts the limit.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::metrics;
use crate::redis::{Redis, Script};
use crate::rules::{RateLimit, Rule, RuleSet, Scope};

/// The rate-limit state of every rule, by rule name. It outlives a reload:
/// a rule whose limit is unchanged keeps its clients' state (a client over
/// its limit stays over it), a rule whose limit changed starts afresh, and
/// a rule that is gone is forgotten.
pub struct RateLimits {
    local: RwLock<HashMap<String, Arc<Local>>>,
    redis: Option<Redis>,
}

/// One rule's local state, with the limit it was made for.
struct Local {
    limit: RateLimit,
    state: DefaultKeyedRateLimiter<String>,
}

impl RateLimits {
    /// The state of `rules`' limits; global limits count on `redis`.
    pub fn new(rules: &RuleSet, redis: Option<Redis>) -> Self {
        let limits = Self {
            local: RwLock::default(),
            redis,
        };
        limits.update(rules);
        limits
    }

    /// Puts `rules` in effect: keeps the state of limits that did not
    /// change, makes it for new or changed ones, forgets the rest.
    pub fn update(&self, rules: &RuleSet) {
        let mut local = self.local.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = HashMap::new();
        for rule in rules.rules() {
            let Some(limit) = &rule.rate_limit else {
                continue;
            };
            let kept = local
                .remove(&rule.name)
                .filter(|l| l.limit == *limit)
                .or_else(|| Local::new(limit).map(Arc::new));
            if let Some(l) = kept {
                next.insert(rule.name.clone(), l);
            }
        }
        *local = next;
    }

    /// Counts one request of client `key` against `rule`'s limit: `None`
    /// if it may pass, otherwise how long until it could. A global limit
    /// that cannot reach Redis counts here.
    pub async fn check(&self, rule: &Rule, key: &str) -> Option<Duration> {
        let limit = rule.rate_limit.as_ref()?;
        let wait = match (limit.scope, &self.redis) {
            (Scope::Global, Some(redis)) => {
                let id = format!("{}:{key}", rule.name);
                match global(redis, &id, limit.interval, limit.burst.get()).await {
                    Ok(wait) => wait,
                    Err(_) => self.check_local(rule, key),
                }
            }
            _ => self.check_local(rule, key),
        };
        if wait.is_some() {
            ::metrics::counter!(
                metrics::RATE_LIMITED,
                "rule" => rule.name.clone(),
                "scope" => limit.scope.as_str()
            )
            .increment(1);
        }
        wait
    }

    fn check_local(&self, rule: &Rule, key: &str) -> Option<Duration> {
        let local = self.local.read().unwrap_or_else(PoisonError::into_inner);
        local.get(&rule.name)?.check(key)
    }

    /// Drops the state of clients idle long enough to be back at full
    /// burst, so the maps do not grow with every client ever seen.
    pub fn forget_idle(&self) {
        let local = self.local.read().unwrap_or_else(PoisonError::into_inner);
        for l in local.values() {
            l.state.retain_recent();
            l.state.shrink_to_fit();
        }
    }
}

impl Local {
    fn new(limit: &RateLimit) -> Option<Self> {
        let quota = Quota::with_period(limit.interval)?.allow_burst(limit.burst);
        Some(Self {
            limit: limit.clone(),
            state: DefaultKeyedRateLimiter::keyed(quota),
        })
    }

    fn check(&self, key: &str) -> Option<Duration> {
        // governor's keyed map wants an owned key; a hit on an existing key
        // pays one small allocation.
        match self.state.check_key(&key.to_owned()) {
            Ok(()) => None,
            Err(not_until) => Some(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }
}

/// Counts one request against a GCRA limit kept in Redis under
/// `#rl:<id>`. Redis's own clock decides, so replicas with skewed clocks
/// agree.
async fn global(
    redis: &Redis,
    id: &str,
    interval: Duration,
    burst: u32,
) -> Result<Option<Duration>, crate::redis::Error> {
    // tat: the theoretical arrival time of the next request, in µs.
    static GCRA: Script = Script::new(
        "local t = redis.call('TIME') \
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) \
        local interval = tonumber(ARGV[1]) \
        local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now) \
        local new = tat + interval \
        local allowed = now + interval * tonumber(ARGV[2]) \
        if new > allowed then return new - allowed end \
        redis.call('SET', KEYS[1], new, 'PX', math.ceil((new - now) / 1000)) \
        return 0",
    );
    let micros = u64::try_from(interval.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let args = [micros.to_string(), burst.to_string()];
    let wait = redis
        .run_script::<u64>(&GCRA, &[crate::keyspace::rate_limit(redis, id)], &args)
        .await?;
    Ok((wait > 0).then(|| Duration::from_micros(wait)))
}

/// A rate limit of `rate` requests per `per` on average, `burst` at once
/// (`rate` when not given). `None` when the interval would be zero.
pub fn limit(
    key: crate::rules::Template,
    rate: NonZeroU32,
    per: Duration,
    burst: Option<NonZeroU32>,
    scope: Scope,
) -> Option<RateLimit> {
    let interval = per / rate.get();
    Quota::with_period(interval)?;
    Some(RateLimit {
        key,
        interval,
        burst: burst.unwrap_or(rate),
        scope,
    })
}

/// Parses `100/s`, `20/m` or `1000/h` (also `/sec`, `/min`, `/hour`).
pub fn parse_rate(text: &str) -> Result<(NonZeroU32, Duration), String> {
    let bad =
        || format!("`{text}`: write a rate as requests per unit, e.g. `100/s`, `20/m`, `1000/h`");
    let (n, unit) = text.trim().split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let n = NonZeroU32::new(n).ok_or_else(|| format!("`{text}`: the rate must be above 0"))?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if per / n.get() < Duration::from_micros(1) {
        return Err(format!(
            "`{text}`: more than 1,000,000 per second cannot be limited"
        ));
    }
    Ok((n, per))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Template;
    use crate::rules::template::Use;

    fn local(rate: &str, burst: u32) -> Local {
        let (n, per) = parse_rate(rate).unwrap();
        let key = Template::parse("{client_ip}", Use::Key, &[]).unwrap();
        Local::new(&limit(key, n, per, NonZeroU32::new(burst), Scope::Local).unwrap()).unwrap()
    }

    /// Rates are requests per second, minute or hour; anything else is refused.
    #[test]
    fn rates_parse() {
        assert_eq!(
            parse_rate("100/s").unwrap(),
            (NonZeroU32::new(100).unwrap(), Duration::from_secs(1))
        );
        assert_eq!(parse_rate(" 20 / min ").unwrap().1, Duration::from_secs(60));
        assert_eq!(parse_rate("5/h").unwrap().1, Duration::from_secs(3600));
        for bad in ["100", "0/s", "x/s", "10/day", "2000000/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    /// A burst passes, the next request is refused with a wait of about
    /// one interval, and another key has its own allowance.
    #[test]
    fn burst_then_refused_per_key() {
        let l = local("10/s", 3);
        for _ in 0..3 {
            assert_eq!(l.check("a"), None);
        }
        let wait = l.check("a").expect("fourth request refused");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert_eq!(l.check("b"), None);
    }
}
