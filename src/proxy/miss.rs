//! The miss path: one backend request per key (concurrent misses follow
//! the first, in this replica and with `collapse: global` across
//! replicas), a conditional request when a stale entry has validators,
//! the answer checked for storability, and streamed to the client while
//! the tee keeps a copy for the [`Fill`] job. A 304 refreshes the stale
//! entry; a failure inside its stale-if-error window serves it.
//!
//! Longer than most files because the fetch, the 304 that refreshes a
//! stale entry and the stale-if-error answer share the fetch's state; each
//! step is its own short function.

use std::time::{Duration, SystemTime};

use http::{Method, Request, header};
use http_body_util::BodyExt;

use super::body::empty;
use super::collapse::{self, Claim, Global, Join, Landing};
use super::esi;
use super::fill::Fill;
use super::forward;
use super::headers::{append_via, strip_hop_by_hop};
use super::keyed::Keyed;
use super::outcome::{Fwd, Outcome, Stale, Stored};
use super::plan::Ctx;
use super::respond::{self, ttl_left};
use super::revalidate::{self, Prior};
use super::storable::{self, NoStore, SIDECACHE_CACHE_CONTROL};
use super::{Answer, Proxy, tee};
use crate::cache::tiered::Found;
use crate::cache::{CachedResponse, Entry, Layer, Payload, StoredHeaders};
use crate::rules::Snapshot;

impl Proxy {
    /// Joins or leads the key's flight, then fetches (see the module's
    /// comment). `key` is the key the lookup resolved (a Vary variant's,
    /// possibly), on which requests collapse.
    pub(super) async fn miss(
        &self,
        ctx: Ctx,
        keyed: Keyed,
        key: String,
        fwd: Fwd,
        prior: Option<Prior>,
    ) -> Answer {
        let guard = match self.flights.join(&key) {
            Join::Leader(guard) => Some(guard),
            Join::Follower(rx) => {
                let wait = self.upstream.timeout();
                if let Landing::Stored { key, entry } = collapse::wait(rx, wait).await
                    && let Payload::Response(r) = &entry.payload
                    && keyed.own_key(r, &ctx.parts) == key
                {
                    return collapsed(&ctx, &entry, r, fwd);
                }
                None
            }
        };
        // Across replicas: one backend request per key, through a Redis lock.
        // (A memory-only rule never fills Redis, so there is nothing to wait for.)
        let mut lock = None;
        if guard.is_some()
            && keyed.rule.collapse_global
            && keyed.rule.tier.uses_redis()
            && let Some(redis) = &self.redis
        {
            let ttl = self.upstream.timeout() + Duration::from_secs(1);
            let headers = &ctx.parts.headers;
            match collapse::globally(redis, &self.cache, &*self.invalidator, &key, headers, ttl)
                .await
            {
                Global::Lead(l) => lock = Some(l),
                Global::Filled(stored_key, entry) => {
                    if let Payload::Response(r) = &entry.payload {
                        let found = Found {
                            entry: entry.clone(),
                            layer: Layer::Redis,
                            l1_since_ms: 0,
                        };
                        self.cache
                            .fill_l1(&stored_key, &found, keyed.rule.tier)
                            .await;
                        let answer = collapsed(&ctx, &entry, r, fwd);
                        if let Some(g) = guard {
                            g.land(Landing::Stored {
                                key: stored_key,
                                entry,
                            });
                        }
                        return answer;
                    }
                }
                Global::Alone => {}
            }
        }
        self.fetch(ctx, keyed, fwd, Claim { guard, lock }, prior)
            .await
    }

    /// Forwards a cacheable request (conditional when a stale entry has
    /// validators), decides storability, and streams the answer back
    /// while a copy goes to the fill job.
    pub(super) async fn fetch(
        &self,
        ctx: Ctx,
        keyed: Keyed,
        fwd: Fwd,
        claim: Claim,
        prior: Option<Prior>,
    ) -> Answer {
        let (up, conditional) = upstream_head(&ctx, &keyed.rule, prior.as_ref());
        // A purge of this entry from now on may concern what the backend is
        // about to send; such an answer is passed on but not stored.
        let fetched = self.invalidator.fetch_started();
        let on_error = prior.as_ref().filter(|p| p.serve_on_error);
        let res = match self.upstream.send(Request::from_parts(up, empty())).await {
            Ok(res) => res,
            Err(e) => {
                tracing::debug!(rule = %keyed.rule.name, error = %e, "backend fetch failed");
                if let Some(stale) = on_error {
                    return serve_stale(&ctx, &stale.entry, None);
                }
                return (respond::upstream_error(&e), Outcome::no_answer(&e, fwd));
            }
        };
        let (mut res_parts, body) = res.into_parts();
        let framed = framed(&res_parts);
        strip_hop_by_hop(&mut res_parts.headers);
        let status = res_parts.status.as_u16();
        if res_parts.status.is_server_error()
            && let Some(stale) = on_error
        {
            return serve_stale(&ctx, &stale.entry, Some(status));
        }
        if conditional
            && res_parts.status == http::StatusCode::NOT_MODIFIED
            && let Some(prior) = prior
        {
            return self.revalidated(ctx, keyed, &prior, &res_parts, claim, fetched);
        }
        let body = if keyed.rule.esi {
            let limit = usize::try_from(keyed.rule.max_object_size).unwrap_or(usize::MAX);
            match esi::prepare_fetched(&mut res_parts, body, limit, &keyed.rule.name).await {
                Ok(body) => body,
                Err(e) => {
                    tracing::warn!(rule = %keyed.rule.name, error = %e, "backend body failed");
                    let res = respond::error(
                        http::StatusCode::BAD_GATEWAY,
                        "the backend's answer was cut short",
                    );
                    let status = Some(status);
                    return (res, Outcome::Error { fwd, status });
                }
            }
        } else {
            body
        };
        let framed = framed || res_parts.headers.contains_key(header::CONTENT_LENGTH);
        let now = SystemTime::now();
        let storable = storable::decide(&keyed.rule, &ctx.parts, &res_parts, now)
            .and_then(|f| {
                if framed {
                    Ok(f)
                } else {
                    Err(NoStore::Unframed)
                }
            })
            .and_then(|f| self.admitted(&keyed, fetched).map(|()| f));
        let (stored, body) = match storable {
            Err(reason) => {
                drop(claim);
                (Stored::No(reason), body)
            }
            Ok(fresh) => {
                let fill = self.fill_job(&ctx, keyed, &res_parts, fresh, claim, fetched);
                kept(fill, body, now)
            }
        };
        let body = if ctx.parts.method == Method::HEAD {
            drained(body, stored)
        } else {
            body
        };
        res_parts.headers.remove(SIDECACHE_CACHE_CONTROL);
        forward::drop_withheld_set_cookies(
            &mut res_parts.headers,
            ctx.client_cookie.as_ref(),
            &ctx.parts.headers,
        );
        append_via(&mut res_parts.headers);
        let outcome = Outcome::Miss {
            fwd,
            status,
            stored,
        };
        (http::Response::from_parts(res_parts, body), outcome)
    }

    /// Whether an answer may still be kept when its head goes out: no
    /// purge of its key since the fetch began, and a tier that can take it
    /// (a rule kept in Redis alone has nowhere to go while Redis does not
    /// answer). `Cache-Status` says `stored` only for an admitted answer.
    fn admitted(&self, keyed: &Keyed, fetched: u64) -> Result<(), NoStore> {
        if !self.invalidator.may_store(&keyed.key, &[], fetched) {
            return Err(NoStore::Purged);
        }
        let redis_down = self.redis.as_ref().is_none_or(|r| !r.is_up());
        if keyed.rule.tier == crate::cache::Tier::Redis && redis_down {
            return Err(NoStore::TierDown);
        }
        Ok(())
    }

    /// The fill job of an answer to `ctx`'s request.
    fn fill_job(
        &self,
        ctx: &Ctx,
        keyed: Keyed,
        res: &http::response::Parts,
        fresh: storable::Freshness,
        claim: Claim,
        fetched: u64,
    ) -> Fill {
        let mut headers = res.headers.clone();
        headers.remove(header::AGE);
        Fill {
            cache: self.cache.clone(),
            invalidator: self.invalidator.clone(),
            keyed,
            request: Snapshot::of(&ctx.view(), &[]),
            request_json: None,
            status: res.status,
            headers,
            fresh,
            fetched,
            claim,
        }
    }

    /// The backend answered a conditional fetch with 304: the stale entry
    /// is current. Its headers are updated from the 304, its freshness
    /// worked out again, and it is stored again and answered (a 304 to a
    /// client whose own validators match).
    fn revalidated(
        &self,
        ctx: Ctx,
        keyed: Keyed,
        prior: &Prior,
        not_modified: &http::response::Parts,
        claim: Claim,
        fetched: u64,
    ) -> Answer {
        let Some(old) = prior.response() else {
            let e = http::StatusCode::BAD_GATEWAY;
            let res = respond::error(e, "the backend answered 304 to an unconditional request");
            let status = Some(304);
            return (
                res,
                Outcome::Error {
                    fwd: Fwd::Stale,
                    status,
                },
            );
        };
        // An entry sidecache compressed is renewed as the backend sent it:
        // stored again, it is compressed again and its tags read again.
        let plain = crate::cache::encoding::identity_of(old);
        let old = plain.as_ref().unwrap_or(old);
        let head = revalidate::updated_head(old, &not_modified.headers);
        let now = SystemTime::now();
        // The stored answer with the 304's headers: what is kept and served.
        let updated = CachedResponse {
            headers: StoredHeaders::from_map(&head.headers),
            ..old.clone()
        };
        let payload = Payload::Response(updated.clone());
        let (entry, stored) = match storable::decide(&keyed.rule, &ctx.parts, &head, now) {
            Ok(fresh) => {
                let entry = fresh.entry(fetched, payload);
                let ttl = ttl_left(&entry, now);
                let fill = self.fill_job(&ctx, keyed, &head, fresh, claim, fetched);
                fill.finish(Ok(old.body.clone()));
                (entry, Stored::Yes { ttl })
            }
            Err(reason) => {
                drop(claim);
                // Answered once, as stale as the backend says; not kept.
                let entry = Entry {
                    stored_at: now,
                    ttl: Duration::ZERO,
                    grace: prior.entry.grace,
                    stale_while_revalidate: prior.entry.stale_while_revalidate,
                    stale_if_error: prior.entry.stale_if_error,
                    fetched_ms: prior.entry.fetched_ms,
                    payload,
                };
                (entry, Stored::No(reason))
            }
        };
        let outcome = Outcome::Revalidated {
            ttl: ttl_left(&entry, now),
            stored,
        };
        (
            respond::from_entry(&ctx.parts, &entry, &updated, now),
            outcome,
        )
    }
}

/// The head of the backend request for a cacheable one: always a GET
/// (the entry serves HEAD too), from the keyed head (which holds only what
/// the key says, `forward`) without the client's conditionals, conditional
/// on the stale entry's validators when there is one (answers whether it
/// is). An `esi` rule's page is asked for unencoded.
pub(super) fn upstream_head(
    ctx: &Ctx,
    rule: &crate::rules::Rule,
    prior: Option<&Prior>,
) -> (http::request::Parts, bool) {
    let mut up = forward::fetch_head(&ctx.parts, ctx.client, rule);
    let conditional = prior.is_some_and(|p| p.make_conditional(&mut up.headers));
    (up, conditional)
}

/// The body as the client gets it while the tee keeps a copy for `fill`,
/// with how long the entry stays fresh.
fn kept(fill: Fill, body: super::ProxyBody, now: SystemTime) -> (Stored, super::ProxyBody) {
    let fresh = fill.fresh;
    let left = fresh
        .ttl
        .saturating_sub(now.duration_since(fresh.stored_at).unwrap_or_default());
    let ttl = i64::try_from(left.as_secs()).unwrap_or(i64::MAX);
    let limit = usize::try_from(fill.keyed.rule.max_object_size).unwrap_or(usize::MAX);
    // A body still coming when a store could no longer be trusted (see
    // TOMBSTONE) is passed on but not kept.
    let deadline = std::time::Instant::now() + crate::cache::redis::TOMBSTONE;
    let body = tee::TeeBody::new(body, limit, Box::new(move |copy| fill.finish(copy)))
        .until(deadline)
        .boxed_unsync();
    (Stored::Yes { ttl }, body)
}

/// The empty body of an answer to HEAD. A body being kept still needs
/// reading to its end: the tee keeps its copy (up to the size cap) while a
/// task drains the frames.
fn drained(body: super::ProxyBody, stored: Stored) -> super::ProxyBody {
    if matches!(stored, Stored::Yes { .. }) {
        let mut body = body;
        crate::metrics::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
    }
    empty()
}

/// Answers with the entry the flight's leader (or another replica) stored.
fn collapsed(ctx: &Ctx, entry: &Entry, stored: &CachedResponse, fwd: Fwd) -> Answer {
    let now = SystemTime::now();
    let outcome = Outcome::Collapsed {
        fwd,
        ttl: ttl_left(entry, now),
    };
    (respond::from_entry(&ctx.parts, entry, stored, now), outcome)
}

/// Answers from an expired entry because the backend failed
/// (stale-if-error), with the backend's status if it sent one.
fn serve_stale(ctx: &Ctx, stale: &Entry, status: Option<u16>) -> Answer {
    let now = SystemTime::now();
    match &stale.payload {
        Payload::Response(r) => {
            let outcome = Outcome::Stale {
                why: Stale::IfError(status),
                ttl: ttl_left(stale, now),
            };
            (respond::from_entry(&ctx.parts, stale, r, now), outcome)
        }
        Payload::Vary(_) => (
            respond::error(http::StatusCode::BAD_GATEWAY, "the backend failed"),
            Outcome::Error {
                fwd: Fwd::Stale,
                status,
            },
        ),
    }
}

/// Whether the backend said where its body ends (a length, chunked, or a
/// status without a body); if not, the body ends when the connection
/// closes, and a cut-short one looks whole, so it is never stored.
fn framed(res: &http::response::Parts) -> bool {
    let chunked = res
        .headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("chunked"))
        });
    matches!(res.status.as_u16(), 204 | 304)
        || chunked
        || res.headers.contains_key(header::CONTENT_LENGTH)
}
