//! Writes (every method but GET and HEAD) and `PURGE`.
//!
//! A write is forwarded first. Only when the backend answers 2xx does it
//! purge: the key and tags of every rule whose `invalidate_on` matches it
//! (rendered with the write's path parameters and JSON bodies), and the
//! entries of its own URL and of its `Location` / `Content-Location` on the
//! same host (RFC 9111 section 4.4). A rule with `write_through` then holds
//! the new representation and announces it on its channel. The purge is
//! done before the client gets its answer, so a client that reads after its
//! own write never sees the old value, on any replica.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header, request};
use http_body_util::BodyExt;

use super::headers::{CacheStatus, Fwd, UPSTREAM_ERROR, add_forwarding, strip_hop_by_hop};
use super::store::Snapshot;
use super::{BoxError, Proxy, ProxyBody, empty, request_host, respond, storable};
use crate::cache::{CachedResponse, Entry, Payload, StoredHeaders};
use crate::config::Config;
use crate::invalidation::Purge;
use crate::metrics::PurgeSource;
use crate::rules::{Bodies, RequestView, Rule, RuleSet, Template};

/// Largest request or response body read to render `{request.x}` /
/// `{response.x}` or to write through; larger ones are refused (request) or
/// not read (response).
const MAX_JSON_BODY: usize = 1024 * 1024;

/// A write's rendering context, owned so it outlives the forwarded request.
struct WriteCtx {
    snapshot: Snapshot,
    matched: Vec<(Arc<Rule>, Snapshot)>,
    through: Option<(Arc<Rule>, Snapshot)>,
}

impl Proxy {
    /// Forwards a write; on 2xx purges what it made stale and writes through.
    pub(super) async fn write(
        &self,
        mut parts: request::Parts,
        body: ProxyBody,
        client: IpAddr,
        host: &str,
        config: &Config,
    ) -> Response<ProxyBody> {
        let view = RequestView::of(&parts, host, client);
        let max_body = config.limits.max_body;
        let declared = declared_len(&parts.headers).and_then(|n| u64::try_from(n).ok());
        if declared.is_some_and(|n| n > max_body) {
            return too_large("request body over limits.max_body");
        }
        // A body without a declared length is cut off at the limit.
        let body =
            http_body_util::Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX))
                .boxed_unsync();
        let rules = &config.rules;
        let ctx = WriteCtx {
            snapshot: Snapshot::of(&view, &[]),
            matched: rules
                .triggered(&parts.method, parts.uri.path())
                .into_iter()
                .map(|m| (m.rule.clone(), Snapshot::of(&view, &m.params)))
                .collect(),
            through: rules
                .write_through(&parts.method, host, parts.uri.path())
                .map(|m| (m.rule.clone(), Snapshot::of(&view, &m.params))),
        };
        let templates = || {
            ctx.matched
                .iter()
                .flat_map(|(r, _)| std::iter::once(&r.key).chain(&r.tags))
        };
        let wants_request = templates().any(Template::reads_request);
        let wants_response = ctx.through.is_some() || templates().any(Template::reads_body);

        // The request body is read whole only when a template needs its JSON.
        let (body, request_json) = if wants_request {
            match read_limited(body, MAX_JSON_BODY).await {
                Ok(bytes) => {
                    let json = serde_json::from_slice(&bytes).ok();
                    (super::full(bytes), json)
                }
                Err(_) => return too_large("request body too large to read for invalidation"),
            }
        } else {
            (body, None)
        };

        strip_hop_by_hop(&mut parts.headers);
        add_forwarding(&mut parts.headers, client);
        let mut status = write_status();
        let res = match self.upstream.send(Request::from_parts(parts, body)).await {
            Ok(res) => res,
            Err(e) => {
                tracing::warn!(error = %e, "backend write failed");
                return respond::upstream_error(&e, status);
            }
        };
        let (res_parts, res_body) = super::forwarded(res, &mut status);
        if !res_parts.status.is_success() {
            return Response::from_parts(res_parts, res_body);
        }

        // Read the answer only if a template or write-through needs it.
        let (res_body, response_bytes) = if wants_response
            && declared_len(&res_parts.headers).is_none_or(|n| n <= MAX_JSON_BODY)
        {
            match read_limited(res_body, MAX_JSON_BODY).await {
                Ok(bytes) => (super::full(bytes.clone()), Some(bytes)),
                Err(e) => {
                    tracing::warn!(error = %e, "backend answer to a write could not be read");
                    status.detail = Some(UPSTREAM_ERROR);
                    return respond::error(
                        StatusCode::BAD_GATEWAY,
                        "the backend's answer was broken",
                        &status,
                    );
                }
            }
        } else {
            (res_body, None)
        };
        let response_json: Option<serde_json::Value> = response_bytes
            .as_ref()
            .and_then(|b| serde_json::from_slice(b).ok());
        let bodies = Bodies {
            request: request_json.as_ref(),
            response: response_json.as_ref(),
        };

        let mut purge = Purge::default();
        for (rule, snap) in &ctx.matched {
            purge.keys.extend(snap.render(&[&rule.key], bodies));
            let tags: Vec<&Template> = rule.tags.iter().collect();
            purge.tags.extend(snap.render(&tags, bodies));
        }
        purge
            .keys
            .extend(key_for_get(&config.rules, &ctx.snapshot, None));
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(uri) = res_parts
                .headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Uri>().ok())
            {
                let same_host = uri
                    .host()
                    .is_none_or(|h| h.eq_ignore_ascii_case(ctx.snapshot.host()));
                if same_host {
                    purge
                        .keys
                        .extend(key_for_get(&config.rules, &ctx.snapshot, Some(&uri)));
                }
            }
        }
        purge.keys.sort_unstable();
        purge.keys.dedup();
        purge.tags.sort_unstable();
        purge.tags.dedup();
        // What is written through was answered before this purge and
        // reflects it: it counts as fetched after the write's own purge.
        let mut fetched = self.invalidator.fetch_started();
        if purge != Purge::default() {
            let counts = self.invalidator.purge(&purge, PurgeSource::Write).await;
            tracing::debug!(?counts, "write purged");
            fetched = self.invalidator.fetch_started().max(counts.at_ms + 1);
        }
        if let Some((rule, snap)) = &ctx.through {
            let written = WrittenThrough {
                status: res_parts.status,
                headers: &res_parts.headers,
                body: response_bytes.clone(),
            };
            self.write_through(rule, snap, &written, bodies, fetched)
                .await;
        }
        Response::from_parts(res_parts, res_body)
    }

    /// Stores the written representation under the rule's key and
    /// publishes the event. Uses the write's answer when it carries the
    /// resource, otherwise fetches it again.
    async fn write_through(
        &self,
        rule: &Arc<Rule>,
        snap: &Snapshot,
        written: &WrittenThrough<'_>,
        bodies: Bodies<'_>,
        fetched: u64,
    ) {
        let Some(key) = snap.render(&[&rule.key], Bodies::default()).pop() else {
            return;
        };
        let method = snap.method().clone();
        // The write's own answer is kept only when it is the plain resource:
        // not encoded, not varying, and storable by the rule's own checks.
        let plain = {
            let mut res = http::Response::new(());
            *res.status_mut() = StatusCode::OK;
            *res.headers_mut() = written.headers.clone();
            let (res, ()) = res.into_parts();
            !written.headers.contains_key(header::CONTENT_ENCODING)
                && !written.headers.contains_key(header::VARY)
                && storable::decide(rule, &snap.get_parts(), &res, SystemTime::now()).is_ok()
        };
        let carries_resource = method != Method::DELETE
            && plain
            && matches!(written.status, StatusCode::OK | StatusCode::CREATED)
            && written.body.as_ref().is_some_and(|b| !b.is_empty());
        let stored = if carries_resource {
            let mut headers = HeaderMap::new();
            for name in [header::CONTENT_TYPE, header::ETAG, header::LAST_MODIFIED] {
                if let Some(v) = written.headers.get(&name) {
                    headers.insert(name, v.clone());
                }
            }
            let ttl = match rule.ttl {
                crate::rules::Ttl::Fixed(d) => Some(d),
                crate::rules::Ttl::Origin => None,
            };
            match (ttl, &written.body) {
                (Some(ttl), Some(body)) => {
                    self.store_now(
                        rule,
                        snap,
                        &key,
                        StatusCode::OK,
                        headers,
                        body.clone(),
                        ttl,
                        bodies,
                        fetched,
                    )
                    .await
                }
                _ => self.refetch(rule, snap, &key, fetched).await,
            }
        } else {
            self.refetch(rule, snap, &key, fetched).await
        };
        if let (Some(channel), Some(redis)) = (
            &rule.write_through.as_ref().and_then(|w| w.publish.as_ref()),
            &self.cache.redis,
        ) && let Some(channel) = snap.render(&[channel], bodies).pop()
        {
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let event = serde_json::json!({
                "key": key, "rule": rule.name, "method": method.as_str(),
                "status": written.status.as_u16(), "at": at, "stored": stored,
            });
            if let Err(e) = redis.publish(&channel, &event.to_string()).await {
                tracing::warn!(error = %e, "write-through event not published");
            }
        }
    }

    /// Fetches the rule's URL again after a write and stores the answer.
    async fn refetch(&self, rule: &Arc<Rule>, snap: &Snapshot, key: &str, fetched: u64) -> bool {
        let mut req = Request::new(empty());
        *req.uri_mut() = match snap.path_and_query().parse() {
            Ok(u) => u,
            Err(_) => return false,
        };
        let mut headers = snap.headers().clone();
        for name in [
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
        ] {
            headers.remove(name);
        }
        strip_hop_by_hop(&mut headers);
        add_forwarding(&mut headers, snap.client_ip());
        *req.headers_mut() = headers;
        let Ok(res) = self.upstream.send(req).await else {
            return false;
        };
        let (res_parts, body) = res.into_parts();
        let now = SystemTime::now();
        let get = snap.get_parts();
        let Ok(fresh) = storable::decide(rule, &get, &res_parts, now) else {
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
        let json = serde_json::from_slice::<serde_json::Value>(&body).ok();
        let bodies = Bodies {
            request: None,
            response: json.as_ref(),
        };
        let ttl = fresh
            .ttl
            .saturating_sub(now.duration_since(fresh.stored_at).unwrap_or_default());
        self.store_now(
            rule,
            snap,
            key,
            res_parts.status,
            headers,
            body,
            ttl,
            bodies,
            fetched,
        )
        .await
    }

    /// Stores an entry in every tier of the rule, waiting for Redis.
    #[allow(clippy::too_many_arguments)]
    async fn store_now(
        &self,
        rule: &Arc<Rule>,
        snap: &Snapshot,
        key: &str,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        ttl: Duration,
        bodies: Bodies<'_>,
        fetched: u64,
    ) -> bool {
        let tags: Vec<&Template> = rule.tags.iter().collect();
        let tags = snap.render(&tags, bodies);
        if !self.invalidator.may_store(key, &tags, fetched) {
            return false;
        }
        let entry = Arc::new(Entry {
            stored_at: SystemTime::now(),
            ttl,
            grace: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            fetched_ms: fetched,
            payload: Payload::Response(CachedResponse {
                status,
                headers: StoredHeaders::from_map(&headers),
                body,
                tags,
            }),
        });
        self.cache.put_now(key, entry, rule.tier).await
    }

    /// `PURGE /url` with the admin token: purges that URL's entry.
    pub(super) async fn purge_request(
        &self,
        parts: &request::Parts,
        client: IpAddr,
    ) -> Response<ProxyBody> {
        let status = CacheStatus::default();
        let config = self.config();
        if !crate::admin::authorized(&parts.headers, config.admin.token.as_deref()) {
            return respond::error(
                StatusCode::UNAUTHORIZED,
                "PURGE needs the admin token as a bearer token",
                &status,
            );
        }
        let host = request_host(parts);
        let view = RequestView {
            method: &Method::GET,
            ..RequestView::of(parts, &host, client)
        };
        let Some(key) = key_for_get(&config.rules, &Snapshot::of(&view, &[]), None) else {
            return respond::error(
                StatusCode::NOT_FOUND,
                "no caching rule covers this URL",
                &status,
            );
        };
        let counts = self
            .invalidator
            .purge(
                &Purge {
                    keys: vec![key.clone()],
                    ..Purge::default()
                },
                PurgeSource::Proxy,
            )
            .await;
        let body = serde_json::json!({ "key": key, "purged": counts.keys }).to_string();
        let mut res = Response::new(super::full(Bytes::from(body)));
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res
    }
}

/// What the backend answered to a write-through.
struct WrittenThrough<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
    body: Option<Bytes>,
}

/// The key a GET of the write's URL (or of `other`) renders, if a caching
/// rule covers it.
fn key_for_get(rules: &RuleSet, snap: &Snapshot, other: Option<&Uri>) -> Option<String> {
    let (path, query) = match other {
        Some(u) => (u.path(), u.query()),
        None => (snap.path(), snap.query()),
    };
    let m = rules.find(&Method::GET, snap.host(), path)?;
    if !m.rule.cache {
        return None;
    }
    let view = RequestView {
        method: &Method::GET,
        path,
        query,
        ..snap.view()
    };
    m.rule.key.render(&view, &m.params, Bodies::default())
}

/// `Cache-Status` of a write: forwarded because of its method.
fn write_status() -> CacheStatus {
    CacheStatus {
        fwd: Some(Fwd::Method),
        ..Default::default()
    }
}

/// 413 for a write whose body is over a limit, counted as rejected.
fn too_large(message: &str) -> Response<ProxyBody> {
    crate::metrics::rejected("body-too-large");
    respond::error(StatusCode::PAYLOAD_TOO_LARGE, message, &write_status())
}

/// Reads a whole body of at most `limit` bytes.
async fn read_limited(mut body: ProxyBody, limit: usize) -> Result<Bytes, BoxError> {
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
