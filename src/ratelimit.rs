//! Per-rule rate limits (`rate_limit:`), checked right after a request
//! matches its rule, before any cache or backend work.
//!
//! Both scopes use GCRA (the generic cell rate algorithm): `rate` requests
//! per period on average, with up to `burst` at once. `scope: local` counts
//! in this replica's memory (governor); `scope: global` keeps each key's
//! state in Redis, shared by every replica, in one atomic script. When Redis
//! cannot be asked, a global limit falls back to the local count, so a Redis
//! outage neither blocks traffic nor lifts the limit.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::rules::Template;

/// Where a limit is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// In this replica only.
    Local,
    /// Across replicas, in Redis.
    Global,
}

impl Scope {
    /// The `scope` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Global => "global",
        }
    }
}

/// One rule's limit and its local state.
pub struct RateLimit {
    /// What a client is counted by (`{client_ip}`, `{header.x-api-key}`).
    pub key: Template,
    /// Time between two requests at the average rate.
    pub interval: Duration,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
    /// Where it is counted.
    pub scope: Scope,
    local: DefaultKeyedRateLimiter<String>,
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("key", &self.key.source())
            .field("interval", &self.interval)
            .field("burst", &self.burst)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl RateLimit {
    /// `rate` requests per `per` on average, `burst` at once (`rate` when
    /// not given). `None` when the interval would be zero.
    pub fn new(
        key: Template,
        rate: NonZeroU32,
        per: Duration,
        burst: Option<NonZeroU32>,
        scope: Scope,
    ) -> Option<Self> {
        let interval = per / rate.get();
        let burst = burst.unwrap_or(rate);
        let quota = Quota::with_period(interval)?.allow_burst(burst);
        Some(Self {
            key,
            interval,
            burst,
            scope,
            local: DefaultKeyedRateLimiter::keyed(quota),
        })
    }

    /// Counts one request of `key` here: `None` if it may pass, otherwise
    /// how long until it could.
    pub fn check_local(&self, key: &str) -> Option<Duration> {
        // governor's keyed map wants an owned key; a hit on an existing key
        // pays one small allocation.
        match self.local.check_key(&key.to_owned()) {
            Ok(()) => None,
            Err(not_until) => Some(not_until.wait_time_from(DefaultClock::default().now())),
        }
    }

    /// Drops the state of keys idle long enough to be back at full burst,
    /// so the map does not grow with every client ever seen.
    pub fn forget_idle(&self) {
        self.local.retain_recent();
        self.local.shrink_to_fit();
    }
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
    use crate::rules::template::Use;

    fn limit(rate: &str, burst: u32) -> RateLimit {
        let (n, per) = parse_rate(rate).unwrap();
        let key = Template::parse("{client_ip}", Use::Key, &[]).unwrap();
        RateLimit::new(key, n, per, NonZeroU32::new(burst), Scope::Local).unwrap()
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
        let l = limit("10/s", 3);
        for _ in 0..3 {
            assert_eq!(l.check_local("a"), None);
        }
        let wait = l.check_local("a").expect("fourth request refused");
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert_eq!(l.check_local("b"), None);
    }
}
