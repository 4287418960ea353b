//! The hit path: one lookup in the tiers ([`Tiered::lookup`]), then a fresh
//! entry is answered (the whole of it, a range of it, or a 304), an expired
//! one inside its stale-while-revalidate window is answered while one
//! background request refreshes it, and anything else goes down the miss
//! path, taking a stale entry along to revalidate or to serve on error.
//!
//! [`Tiered::lookup`]: crate::cache::tiered::Tiered::lookup

use std::sync::Arc;
use std::time::SystemTime;

use http::header;
use http_body_util::BodyExt;

use super::body::empty;
use super::collapse::{Claim, GlobalLock, Join};
use super::keyed::Keyed;
use super::outcome::{Fwd, Outcome, Pass, Stale};
use super::plan::Ctx;
use super::range::{self, Ranged};
use super::respond::{self, ttl_left};
use super::revalidate::Prior;
use super::{Answer, Proxy};
use crate::cache::tiered::{Found, State};
use crate::cache::{Entry, encoding};

impl Proxy {
    /// A cacheable request: answered from the cache when it can be,
    /// otherwise fetched under its key.
    pub(super) async fn cached(self: &Arc<Self>, ctx: Ctx, keyed: Keyed) -> Answer {
        let rule = keyed.rule.clone();
        let (mut res, outcome) = self.hit_or_miss(ctx, keyed).await;
        if !matches!(outcome, Outcome::Pass { .. } | Outcome::Error { .. }) {
            respond::for_clients(&mut res, &rule);
        }
        (res, outcome)
    }

    /// The hit path, and the miss path when nothing fresh answers.
    async fn hit_or_miss(self: &Arc<Self>, mut ctx: Ctx, keyed: Keyed) -> Answer {
        let now = SystemTime::now();
        // Range requests are answered from fresh entries only, else
        // forwarded; an ESI page is answered whole (its fragments differ
        // per client, so no range of it is stable).
        let ranged = !keyed.rule.esi && ctx.parts.headers.contains_key(header::RANGE);
        let found = self
            .cache
            .lookup(
                &keyed.key,
                (&ctx.parts.headers, &ctx.others),
                keyed.rule.tier,
                &*self.invalidator,
                now,
            )
            .await;
        // The headers the backend varies on join the request it gets (and
        // the entry's variant is keyed on them).
        if let Some(varied) = found.varied {
            for (name, value) in &varied {
                if !ctx.parts.headers.contains_key(name) {
                    ctx.parts.headers.append(name.clone(), value.clone());
                }
            }
        }
        let key = found.key;
        if keyed.rule.tier == crate::cache::Tier::Both {
            self.hot.count(&keyed.rule.name, &keyed.key, &key);
        }
        let (fwd, prior) = match found.state {
            State::Fresh(f) => return self.fresh(ctx, keyed, key, f, ranged, now).await,
            State::Stale(f) => {
                let overdue = f.entry.overdue(now);
                if !ranged && overdue <= f.entry.stale_while_revalidate {
                    return self.revalidate_behind(ctx, keyed, key, f, now);
                }
                let prior = Prior {
                    serve_on_error: overdue <= f.entry.stale_if_error,
                    entry: f.entry,
                };
                (Fwd::Stale, Some(prior))
            }
            State::Absent => (Fwd::UriMiss, None),
            State::VaryMiss => (Fwd::VaryMiss, None),
        };
        if ranged {
            // Nothing fresh to cut it from: the backend answers it, as asked.
            return Box::pin(self.pass(ctx, empty(), Pass::Range(fwd))).await;
        }
        // Boxed: the miss path's future is large, and a hit needs none of it.
        Box::pin(self.miss(ctx, keyed, key, fwd, prior)).await
    }

    /// Answers from a fresh entry; on a `sliding` rule the entry is stored
    /// again fresh for the TTL from now, so its expiry moves out, while its
    /// `Age` keeps counting from the backend's answer. On a `refresh_ahead`
    /// rule an entry near its end is refreshed behind the answer.
    async fn fresh(
        self: &Arc<Self>,
        ctx: Ctx,
        keyed: Keyed,
        key: String,
        found: Found,
        ranged: bool,
        now: SystemTime,
    ) -> Answer {
        let entry = &found.entry;
        let Some(stored) = found.response() else {
            return no_entry(); // The lookup answers only entries that hold a response.
        };
        if keyed.rule.sliding
            && let crate::rules::Ttl::Fixed(window) = keyed.rule.ttl
        {
            // Fresh for the rule's TTL from now; `Age` still counts from
            // when the backend produced the answer.
            let renewed = Arc::new(crate::cache::Entry {
                ttl: entry.age(now) + window,
                ..(**entry).clone()
            });
            Box::pin(self.cache.put(&key, renewed, keyed.rule.tier)).await;
        }
        let outcome = Outcome::Hit {
            layer: found.layer,
            ttl: ttl_left(entry, now),
        };
        let parts = &ctx.parts;
        // A range applies to the representation the client gets (one too
        // large to make whole for it is sent whole: a range may be ignored).
        let shown = ranged.then(|| encoding::shown(&parts.headers, stored));
        let (stored, plan) = match &shown {
            Some(encoding::Shown::Ready(r)) => (&**r, Some(range::plan(&parts.headers, r))),
            _ => (stored, None),
        };
        let res = match plan {
            None | Some(Ranged::Whole) => respond::from_entry(parts, entry, stored, now),
            Some(Ranged::Part { start, end }) => {
                respond::from_entry_part(parts, entry, stored, now, Some((start, end)))
            }
            Some(Ranged::Unsatisfiable) => {
                respond::from_entry_part(parts, entry, stored, now, None)
            }
            Some(Ranged::Forward) => {
                return Box::pin(self.pass(ctx, empty(), Pass::Range(Fwd::Request))).await;
            }
        };
        if !ranged {
            self.verify(&ctx, &keyed, entry);
        }
        if let Some(share) = keyed.rule.refresh_ahead
            && near_end(entry, share, now)
            && !self.refresh_failures.holds(&key)
        {
            let entry = found.entry.clone();
            self.refresh_ahead(ctx, keyed, key, entry);
        }
        (res, outcome)
    }

    /// Refreshes a fresh entry near its end in the background: one refresh
    /// of a key at a time on this replica, and with `collapse: global` one
    /// across replicas (a replica that finds another's refresh in Redis
    /// takes it instead). A refresh that fails leaves the entry to expire
    /// as it would have, and the key is not refreshed again on this
    /// replica for [`RefreshFailures`]' hold.
    fn refresh_ahead(self: &Arc<Self>, ctx: Ctx, keyed: Keyed, key: String, entry: Arc<Entry>) {
        let Join::Leader(guard) = self.flights.join(&key) else {
            return;
        };
        let this = self.clone();
        crate::metrics::spawn(async move {
            let mut lock = None;
            if keyed.rule.collapse_global
                && let Some(redis) = this.redis.clone()
            {
                let now = SystemTime::now();
                let newer = this
                    .cache
                    .shared_fresh(&key, &ctx.parts.headers, &*this.invalidator, now)
                    .await
                    .filter(|(_, e)| e.fetched_ms > entry.fetched_ms);
                if let Some((stored_key, newer)) = newer {
                    let found = Found {
                        entry: newer,
                        layer: crate::cache::Layer::Redis,
                        l1_since_ms: 0,
                    };
                    this.cache
                        .fill_l1(&stored_key, &found, keyed.rule.tier)
                        .await;
                    return;
                }
                let ttl = this.upstream.timeout() + std::time::Duration::from_secs(1);
                match GlobalLock::take(&redis, &key, ttl).await {
                    Ok(Some(l)) => lock = Some(Box::new(l)),
                    // Another replica is refreshing it.
                    Ok(None) => return,
                    Err(()) => {}
                }
            }
            let claim = Claim {
                guard: Some(guard),
                lock,
            };
            let prior = Prior {
                entry,
                serve_on_error: false,
            };
            let (res, outcome) = this.fetch(ctx, keyed, Fwd::Stale, claim, Some(prior)).await;
            let failed = match outcome {
                Outcome::Miss { status, .. } => status >= 500,
                Outcome::Revalidated { .. } | Outcome::Collapsed { .. } => false,
                _ => true,
            };
            if failed {
                this.refresh_failures.hold(&key);
            }
            // Reading the body to its end is what stores it.
            let _ = res.into_body().collect().await;
        });
    }

    /// Answers from an entry inside its stale-while-revalidate window; the
    /// first such request of the key starts one background refresh.
    fn revalidate_behind(
        self: &Arc<Self>,
        ctx: Ctx,
        keyed: Keyed,
        key: String,
        found: Found,
        now: SystemTime,
    ) -> Answer {
        let Some(stored) = found.response() else {
            return no_entry(); // The lookup answers only entries that hold a response.
        };
        let outcome = Outcome::Stale {
            why: Stale::Revalidating,
            ttl: ttl_left(&found.entry, now),
        };
        let res = respond::from_entry(&ctx.parts, &found.entry, stored, now);
        if let Join::Leader(guard) = self.flights.join(&key) {
            let this = self.clone();
            let prior = Prior {
                entry: found.entry,
                serve_on_error: false,
            };
            crate::metrics::spawn(async move {
                let claim = Claim {
                    guard: Some(guard),
                    lock: None,
                };
                let (res, _) = this.fetch(ctx, keyed, Fwd::Stale, claim, Some(prior)).await;
                // Reading the body to its end is what stores it.
                let _ = res.into_body().collect().await;
            });
        }
        (res, outcome)
    }
}

/// Keys whose refresh ahead failed lately, so a failing backend gets one
/// refresh per key and replica per [`RETRY_AFTER`], not one per hit.
#[derive(Default)]
pub(super) struct RefreshFailures {
    /// Key, then until when (ms since the epoch) it is not refreshed.
    until: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// How long a key whose refresh failed waits for the next one.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Keys held at most; past that, a failure is not held (the next hit
/// retries, as without the hold).
const MAX_HELD: usize = 10_000;

impl RefreshFailures {
    /// Holds `key` back from refreshes for [`RETRY_AFTER`].
    fn hold(&self, key: &str) {
        let now = crate::cache::now_ms();
        let Ok(mut until) = self.until.lock() else {
            return;
        };
        if until.len() >= MAX_HELD {
            until.retain(|_, t| *t > now);
        }
        if until.len() < MAX_HELD {
            until.insert(key.to_owned(), now + crate::redis::millis(RETRY_AFTER));
        }
    }

    /// Whether `key` is held back now.
    fn holds(&self, key: &str) -> bool {
        let Ok(mut until) = self.until.lock() else {
            return false;
        };
        match until.get(key) {
            Some(&t) if t > crate::cache::now_ms() => true,
            Some(_) => {
                until.remove(key);
                false
            }
            None => false,
        }
    }
}

/// Whether `entry` is in the last `share` of its fresh life.
fn near_end(entry: &Entry, share: f64, now: SystemTime) -> bool {
    let left = entry.ttl.saturating_sub(entry.age(now));
    left <= entry.ttl.mul_f64(share)
}

/// The answer for an entry that holds no response, which the lookup never
/// gives: a 502, counted as an error.
fn no_entry() -> Answer {
    (
        respond::error(http::StatusCode::BAD_GATEWAY, "no entry"),
        Outcome::Error {
            fwd: Fwd::UriMiss,
            status: None,
        },
    )
}
