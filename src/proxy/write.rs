//! Writes (every method but GET and HEAD) and `PURGE`.
//!
//! A write is forwarded first. Only when the backend answers 2xx or 3xx
//! (the redirect after a form's post) does it purge what it made stale (rendered by [`Triggered`]), and a rule with
//! `write_through` then stores the new representation through the same
//! [`Fill`] job as a miss and announces it on its channel. The purge is
//! done before the client gets its answer, so a client that reads after
//! its own write never sees the old value, on any replica.
//!
//! Longer than most files because a write, its write-through (from the
//! write's own answer or by fetching again) and `PURGE` share the write's
//! reading of bodies; each step is its own short function.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt;

use super::body::{ReadAhead, read_ahead};
use super::collapse::Claim;
use super::fill::Fill;
use super::forward;
use super::headers::{VIA, add_forwarding, strip_hop_by_hop};
use super::keyed::Keyed;
use super::outcome::{Fwd, Outcome, Pass, Rejected};
use super::plan::{Action, Ctx, Plan};
use super::storable::{self, Freshness};
use super::warm::Warms;
use super::{Answer, BoxError, Proxy, ProxyBody, empty, full, respond};
use crate::config::Config;
use crate::invalidation::Purge;
use crate::invalidation::triggers::{Previous, Triggered, get_key, key_for_get};
use crate::metrics::PurgeSource;
use crate::rules::{Bodies, RequestView, Rule, Snapshot, Ttl};

/// Largest request or response body read to render `{request.x}` /
/// `{response.x}` or to write through; larger ones are refused (request) or
/// not read (response).
const MAX_JSON_BODY: usize = 1024 * 1024;

/// What the backend answered to a write.
struct Written<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
    body: Option<Bytes>,
    request_json: Option<serde_json::Value>,
    /// `body` read as JSON, once for the purge and the write-through.
    response_json: Option<serde_json::Value>,
}

impl Written<'_> {
    /// The bodies templates render from.
    fn bodies(&self) -> Bodies<'_> {
        Bodies {
            request: self.request_json.as_ref(),
            response: self.response_json.as_ref(),
            previous: None,
        }
    }
}

impl Proxy {
    /// Forwards a write; on 2xx or 3xx purges what it made stale, and on
    /// 2xx writes through.
    pub(super) async fn write(self: &Arc<Self>, ctx: Ctx, body: ProxyBody) -> Answer {
        let Ctx {
            mut parts,
            client,
            host,
            config,
            ..
        } = ctx;
        let Some(body) = limited(body, &parts.headers, config.limits.max_body) else {
            return too_large("request body over limits.max_body");
        };
        let view = RequestView::of(&parts, &host, client);
        let triggered = Triggered::of(&config.rules, &view);
        let through = config
            .rules
            .write_through(&parts.method, &host, parts.uri.path())
            .map(|m| (m.rule.clone(), Snapshot::of(&view, &m.params)));
        let warms = Warms::of(&config.rules, &view);
        let wants_response = through.is_some() || triggered.reads_body() || warms.reads_body();

        // The request body is read whole only when a template needs its JSON.
        let (body, request_json) = if triggered.reads_request() || warms.reads_request() {
            let Ok(bytes) = read_limited(body, MAX_JSON_BODY).await else {
                return too_large("request body too large to read for invalidation");
            };
            (full(bytes.clone()), serde_json::from_slice(&bytes).ok())
        } else {
            (body, None)
        };

        // What the written resources were, read before the backend changes
        // them: a fetch racing the write could otherwise store the new one
        // first, and the write would see no change.
        let previous = self.previous(&triggered).await;

        strip_hop_by_hop(&mut parts.headers);
        add_forwarding(&mut parts.headers, client);
        let res = match self.upstream.send(Request::from_parts(parts, body)).await {
            Ok(res) => super::forwarded(res),
            Err(e) => {
                tracing::debug!(error = %e, "backend write failed");
                return (
                    respond::upstream_error(&e),
                    Outcome::no_answer(&e, Fwd::Method),
                );
            }
        };
        let (res_parts, res_body) = res.into_parts();
        let status = res_parts.status.as_u16();
        let mut outcome = Outcome::Pass {
            why: Pass::Write {
                purge_pending: false,
            },
            status,
        };
        // A write that went through purges: 2xx, and 3xx too (a form's
        // post-redirect-get, RFC 9111 4.4: any non-error status).
        if !(res_parts.status.is_success() || res_parts.status.is_redirection()) {
            return (Response::from_parts(res_parts, res_body), outcome);
        }

        // Read the answer only if a template or write-through needs it,
        // and only as far as MAX_JSON_BODY: a longer one streams on to the
        // client, and what it names is purged all the same.
        let (res_body, response_bytes, broken) = if wants_response {
            match read_answer(res_body, &res_parts.headers).await {
                Ok((body, bytes)) => (body, bytes, None),
                Err(e) => (empty(), None, Some(e)),
            }
        } else {
            (res_body, None, None)
        };
        let response_json = response_bytes
            .as_ref()
            .and_then(|b| serde_json::from_slice(b).ok());
        let written = Written {
            status: res_parts.status,
            headers: &res_parts.headers,
            body: response_bytes,
            request_json,
            response_json,
        };
        // The write happened whatever became of its answer: purge first.
        let purge_pending = self
            .after_write(
                &config,
                (&triggered, &previous),
                through,
                written,
                (&warms, client),
            )
            .await;
        outcome = Outcome::Pass {
            why: Pass::Write { purge_pending },
            status,
        };
        if let Some(e) = broken {
            tracing::warn!(error = %e, "backend answer to a write could not be read");
            let res = respond::error(StatusCode::BAD_GATEWAY, "the backend's answer was broken");
            let status = Some(status);
            return (
                res,
                Outcome::Error {
                    fwd: Fwd::Method,
                    status,
                },
            );
        }
        (Response::from_parts(res_parts, res_body), outcome)
    }

    /// After a 2xx or 3xx answer to a write: purges what it made stale, then
    /// writes through. Answers whether the purge waits for Redis.
    async fn after_write(
        self: &Arc<Self>,
        config: &Config,
        (triggered, previous): (&Triggered, &Previous),
        through: Option<(Arc<Rule>, Snapshot)>,
        written: Written<'_>,
        (warms, client): (&Warms, std::net::IpAddr),
    ) -> bool {
        let bodies = written.bodies();
        // In the background: the write's answer never waits for them.
        self.warm(warms, bodies, client);
        // A 201's `Location` and a 2xx's `Content-Location` name what the
        // write made; a redirect's `Location` is only where the browser
        // goes next (a login's catalogue, an edit's dashboard), which did
        // not change.
        let named: &[header::HeaderName] = if written.status.is_redirection() {
            &[header::CONTENT_LOCATION]
        } else {
            &[header::LOCATION, header::CONTENT_LOCATION]
        };
        let locations: Vec<Uri> = named
            .iter()
            .filter_map(|name| written.headers.get(name))
            .filter_map(|v| v.to_str().ok()?.parse().ok())
            .collect();
        let mut purge = triggered.purge(&config.rules, bodies, previous, &locations);
        // The key written through is purged too: every other replica and
        // region drops what it holds, and this one stores the new answer
        // right after.
        if let Some((rule, snap)) = &through
            && let Some(key) = write_through_key(rule, snap)
            && !purge.keys.contains(&key)
        {
            purge.keys.push(key);
        }
        // What is written through was answered before this purge and
        // reflects it: it counts as fetched after the write's own purge.
        let mut fetched = self.invalidator.fetch_started();
        let mut pending = false;
        if purge != Purge::default() {
            let counts = self.invalidator.purge(&purge, PurgeSource::Write).await;
            tracing::debug!(?counts, "write purged");
            pending = counts.redis_errors > 0;
            fetched = self.invalidator.fetch_started().max(counts.at_ms + 1);
        }
        // Only a 2xx answer carries the written resource.
        if let Some((rule, snap)) = through
            && written.status.is_success()
        {
            self.write_through(config, &rule, snap, written, fetched)
                .await;
        }
        pending
    }

    /// The cached answers, as JSON, of the keys the triggers read from
    /// before the write (L1, else Redis; all at once, so L2 reads of one
    /// moment go out as one MGET). An entry absent, varying or not JSON is
    /// left out: the trigger then takes it as changed.
    async fn previous(&self, triggered: &Triggered) -> Previous {
        let keys = triggered.previous_keys();
        if keys.is_empty() {
            return Previous::new();
        }
        let bodies =
            futures_util::future::join_all(keys.iter().map(|k| self.cache.body_of(k))).await;
        keys.into_iter()
            .zip(bodies)
            .filter_map(|(k, body)| Some((k, serde_json::from_slice(&body?).ok()?)))
            .collect()
    }

    /// Stores the written representation under the rule's key and
    /// publishes the event. Uses the write's answer when it carries the
    /// resource, otherwise fetches it again.
    async fn write_through(
        &self,
        config: &Config,
        rule: &Arc<Rule>,
        snap: Snapshot,
        written: Written<'_>,
        at: u64,
    ) {
        let bodies = written.bodies();
        let channel = rule
            .write_through
            .as_ref()
            .and_then(|w| w.publish.as_ref())
            .and_then(|c| snap.render(&[c], bodies).pop());
        let Some(key) = write_through_key(rule, &snap) else {
            return;
        };
        let (method, status) = (snap.method().clone(), written.status);
        let stored = match carried(rule, &snap, &written) {
            Some((headers, body, ttl)) => {
                let fresh = Freshness {
                    stored_at: SystemTime::now(),
                    ttl,
                    stale_while_revalidate: Duration::ZERO,
                    stale_if_error: Duration::ZERO,
                    keep: Duration::ZERO,
                };
                let fill = self.write_fill(rule, &key, snap, written, StatusCode::OK, headers);
                fill(fresh, at).store(body).await
            }
            None => self.refetch(config, rule, &key, snap, written, at).await,
        };
        if let (Some(channel), Some(redis)) = (channel, &self.redis) {
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let event = serde_json::json!({
                "key": key, "rule": rule.name, "method": method.as_str(),
                "status": status.as_u16(), "at": at, "stored": stored,
            });
            if let Err(e) = redis.publish(&channel, &event.to_string()).await {
                tracing::warn!(error = %e, "write-through event not published");
            }
        }
    }

    /// The fill job for a written-through answer, once its lifetime is known.
    fn write_fill(
        &self,
        rule: &Arc<Rule>,
        key: &str,
        snap: Snapshot,
        written: Written<'_>,
        status: StatusCode,
        headers: HeaderMap,
    ) -> impl FnOnce(Freshness, u64) -> Fill {
        let keyed = Keyed {
            rule: rule.clone(),
            key: key.to_owned(),
            params: snap.params().to_vec(),
        };
        let (cache, invalidator) = (self.cache.clone(), self.invalidator.clone());
        move |fresh, fetched| Fill {
            cache,
            invalidator,
            keyed,
            request: snap,
            request_json: written.request_json,
            status,
            headers,
            fresh,
            fetched,
            claim: Claim {
                guard: None,
                lock: None,
            },
        }
    }

    /// Fetches the rule's URL again after a write and stores the answer.
    async fn refetch(
        &self,
        config: &Config,
        rule: &Arc<Rule>,
        key: &str,
        snap: Snapshot,
        written: Written<'_>,
        fetched: u64,
    ) -> bool {
        // The GET a miss of this URL would send: what the key says, and
        // nothing else of the write's request.
        let get = snap.get_parts();
        let plan = Plan::of(config, &get, snap.host(), snap.client_ip());
        let Action::Cache { head, .. } = plan.action else {
            return false;
        };
        let up = forward::fetch_head(&head, snap.client_ip(), rule);
        let req = Request::from_parts(up, empty());
        let Ok(res) = self.upstream.send(req).await else {
            return false;
        };
        let (res_parts, body) = res.into_parts();
        let Ok(fresh) = storable::decide(rule, &snap.get_parts(), &res_parts, SystemTime::now())
        else {
            return false;
        };
        if storable::vary_names(&res_parts.headers).is_none_or(|v| !v.is_empty()) {
            // A varying answer belongs to one variant, not to the key.
            return false;
        }
        let limit = usize::try_from(rule.max_object_size).unwrap_or(usize::MAX);
        let Ok(body) = read_limited(body, limit).await else {
            return false;
        };
        let mut headers = res_parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(header::AGE);
        // Tags read the answer fetched now, not the write's.
        let written = Written {
            body: None,
            request_json: None,
            response_json: None,
            ..written
        };
        let fill = self.write_fill(rule, key, snap, written, res_parts.status, headers);
        fill(fresh, fetched).store(body).await
    }

    /// `PURGE /url` with the admin token: purges that URL's entry.
    pub(super) async fn purge_request(&self, ctx: &Ctx) -> Answer {
        let answer = |code, message| (respond::error(code, message), Outcome::Purge);
        if !ctx.config.admin.purge_on_proxy_port {
            let message = "PURGE is turned off on this port; purge on the admin listener";
            return answer(StatusCode::METHOD_NOT_ALLOWED, message);
        }
        if !ctx.config.admin.authorizes(&ctx.parts.headers) {
            let message = "PURGE needs the admin token as a bearer token";
            return answer(StatusCode::UNAUTHORIZED, message);
        }
        let view = RequestView {
            method: &Method::GET,
            ..ctx.view()
        };
        let snap = Snapshot::of(&view, &[]);
        let Some(key) = key_for_get(&ctx.config.rules, &snap, None) else {
            return answer(StatusCode::NOT_FOUND, "no caching rule covers this URL");
        };
        let purge = Purge {
            keys: vec![key.clone()],
            ..Purge::default()
        };
        let counts = self.invalidator.purge(&purge, PurgeSource::Proxy).await;
        let body = serde_json::json!({ "key": key, "purged": counts.keys }).to_string();
        let mut res = Response::new(full(Bytes::from(body)));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        (res, Outcome::Purge)
    }
}

/// The write's own answer as the entry, when it is the plain resource (not
/// encoded, not varying, storable by the rule's own checks, with a body)
/// and the rule's TTL is fixed: its headers, body and TTL.
fn carried(
    rule: &Rule,
    snap: &Snapshot,
    written: &Written<'_>,
) -> Option<(HeaderMap, Bytes, Duration)> {
    let Ttl::Fixed(ttl) = rule.ttl else {
        return None;
    };
    let body = written.body.as_ref().filter(|b| !b.is_empty())?;
    let plain = {
        let mut res = http::Response::new(());
        *res.status_mut() = StatusCode::OK;
        *res.headers_mut() = written.headers.clone();
        let (res, ()) = res.into_parts();
        !written.headers.contains_key(header::CONTENT_ENCODING)
            && !written.headers.contains_key(header::VARY)
            && storable::decide(rule, &snap.get_parts(), &res, SystemTime::now()).is_ok()
    };
    if *snap.method() == Method::DELETE
        || !plain
        || !matches!(written.status, StatusCode::OK | StatusCode::CREATED)
    {
        return None;
    }
    Some((stored_headers(written.headers), body.clone(), ttl))
}

/// The write's body, cut off at `max` bytes when it declares no length;
/// `None` when it declares more.
fn limited(body: ProxyBody, headers: &HeaderMap, max: u64) -> Option<ProxyBody> {
    let declared = declared_len(headers).and_then(|n| u64::try_from(n).ok());
    if declared.is_some_and(|n| n > max) {
        return None;
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    Some(http_body_util::Limited::new(body, limit).boxed_unsync())
}

/// The headers an entry keeps from a write's answer: those a GET's answer
/// keeps (end to end, without `Age` and our own `Via`), less those that
/// describe the write rather than the resource (its length, `Location`,
/// `Content-Location`).
fn stored_headers(written: &HeaderMap) -> HeaderMap {
    let mut headers = written.clone();
    strip_hop_by_hop(&mut headers);
    for name in [
        header::AGE,
        header::CONTENT_LENGTH,
        header::LOCATION,
        header::CONTENT_LOCATION,
    ] {
        headers.remove(name);
    }
    let others: Vec<HeaderValue> = headers
        .get_all(header::VIA)
        .iter()
        .filter(|v| v.as_bytes() != VIA.as_bytes())
        .cloned()
        .collect();
    headers.remove(header::VIA);
    for v in others {
        headers.append(header::VIA, v);
    }
    headers
}

/// 413 for a write whose body is over a limit, counted as rejected.
fn too_large(message: &str) -> Answer {
    crate::metrics::rejected(Rejected::BodyTooLarge.as_str());
    (
        respond::error(StatusCode::PAYLOAD_TOO_LARGE, message),
        Outcome::Rejected(Rejected::BodyTooLarge),
    )
}

/// The backend's answer to a write, read whole when it says it is at most
/// [`MAX_JSON_BODY`] (or says nothing): the body to pass on, and its bytes.
async fn read_answer(
    body: ProxyBody,
    headers: &HeaderMap,
) -> Result<(ProxyBody, Option<Bytes>), BoxError> {
    if declared_len(headers).is_some_and(|n| n > MAX_JSON_BODY) {
        return Ok((body, None));
    }
    Ok(match read_ahead(body, MAX_JSON_BODY).await? {
        ReadAhead::Whole(bytes) => (full(bytes.clone()), Some(bytes)),
        ReadAhead::Longer(body) => (body, None),
    })
}

/// The key a write through `rule` stores under: the one a GET of the
/// written URL with the write's headers has (none when such a GET would
/// pass for want of a value the key names, a cookie say).
fn write_through_key(rule: &Rule, snap: &Snapshot) -> Option<String> {
    let params: Vec<(&str, &str)> = snap
        .params()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    get_key(rule, snap, snap.path(), snap.query(), &params)
}

/// Reads a whole body of at most `limit` bytes.
pub(super) async fn read_limited(mut body: ProxyBody, limit: usize) -> Result<Bytes, BoxError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > limit {
                return Err(format!("body larger than {limit} bytes").into());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

fn declared_len(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
