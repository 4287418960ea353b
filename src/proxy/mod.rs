//! The proxy pipeline: one function per step, in the order a request takes
//! them — match a rule, render the key, look in L1 then L2, collapse
//! concurrent misses, forward, decide storability, stream back while storing.

pub mod collapse;
pub mod headers;
pub mod respond;
pub mod storable;
pub mod tee;
pub mod upstream;
pub mod vary;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, Method, Request, Response, StatusCode, header, request};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};

use self::collapse::{FlightGuard, Flights, Join, Landing};
use self::headers::{
    CacheStatus, Fwd, add_forwarding, append_via, cache_status_name, strip_hop_by_hop,
};
use self::upstream::Upstream;
use crate::cache::tiered::Tiered;
use crate::cache::{CachedResponse, Entry, Layer, Payload};
use crate::config::Config;
use crate::rules::{Bodies, RequestView, Rule, Template};

/// Error type of bodies crossing the proxy.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type in both directions.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Request headers that would make the backend answer with less than the
/// full representation; dropped on cacheable fetches, since the cache
/// answers the client's conditionals itself.
const CONDITIONAL: [HeaderName; 6] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
    header::RANGE,
];

/// An empty body.
pub fn empty() -> ProxyBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// Everything a request needs; shared by all connections.
pub struct Proxy {
    config: Arc<Config>,
    cache: Tiered,
    upstream: Upstream,
    flights: Arc<Flights>,
}

/// What a cacheable request carries through the miss path.
struct Lookup {
    rule: Arc<Rule>,
    /// The rule's key.
    key: String,
    /// Tags rendered from the request alone.
    tags: Vec<String>,
    /// Tag templates that read the JSON response body, rendered once it
    /// has streamed, with an owned copy of the request they also read.
    body_tags: Option<(Vec<Template>, Snapshot)>,
}

/// An owned copy of the request data templates read.
struct Snapshot {
    method: Method,
    host: String,
    path: String,
    query: Option<String>,
    headers: http::HeaderMap,
    client_ip: IpAddr,
    params: Vec<(String, String)>,
}

impl Snapshot {
    fn render(&self, templates: &[Template], json: &serde_json::Value) -> Vec<String> {
        let view = RequestView {
            method: &self.method,
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            client_ip: self.client_ip,
        };
        let params: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let bodies = Bodies {
            request: None,
            response: Some(json),
        };
        templates
            .iter()
            .filter_map(|t| t.render(&view, &params, bodies))
            .collect()
    }
}

impl Proxy {
    /// A proxy over `config`'s rules and stores.
    pub fn new(config: Arc<Config>, cache: Tiered) -> Self {
        let upstream = Upstream::new(&config.upstream);
        Self {
            config,
            cache,
            upstream,
            flights: Arc::new(Flights::default()),
        }
    }

    /// The stores.
    pub fn cache(&self) -> &Tiered {
        &self.cache
    }

    /// The config in effect.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Handles one request. Never fails: every problem becomes a response.
    pub async fn handle<B>(&self, req: Request<B>, client: IpAddr) -> Response<ProxyBody>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = req.into_parts();
        let body = body.map_err(Into::into).boxed_unsync();

        // Step 1: match a rule. No rule, `cache: false` and writes are
        // forwarded untouched.
        let host = request_host(&parts);
        let cacheable_method = matches!(parts.method, Method::GET | Method::HEAD);
        let lookup = match self
            .config
            .rules
            .find(&parts.method, &host, parts.uri.path())
        {
            _ if !cacheable_method => Err(pass_status(Fwd::Method, "method")),
            None => Err(pass_status(Fwd::Bypass, "no-rule")),
            Some(m) if !m.rule.cache => Err(pass_status(Fwd::Bypass, "rule")),
            Some(m)
                if !m.rule.allow_authorized
                    && parts.headers.contains_key(header::AUTHORIZATION) =>
            {
                Err(pass_status(Fwd::Request, "authorization"))
            }
            // Step 2: render the key and the request-only tags.
            Some(m) => {
                let view = RequestView {
                    method: &parts.method,
                    host: &host,
                    path: parts.uri.path(),
                    query: parts.uri.query(),
                    headers: &parts.headers,
                    client_ip: client,
                };
                Ok(prepare(m.rule, &view, &m.params))
            }
        };
        match lookup {
            Err(status) => self.pass(parts, body, client, status).await,
            Ok(lookup) => self.cached(parts, client, lookup).await,
        }
    }

    /// Steps 3 to 5: L1, L2, then one upstream request per key.
    async fn cached(
        &self,
        parts: request::Parts,
        client: IpAddr,
        lookup: Lookup,
    ) -> Response<ProxyBody> {
        let now = SystemTime::now();
        let tier = lookup.rule.tier;
        let mut fwd = Fwd::UriMiss;
        let mut flight_key = lookup.key.clone();
        if let Some((entry, layer)) = self.cache.get(&lookup.key, tier).await {
            let found = match &entry.payload {
                Payload::Vary(names) => {
                    flight_key = vary::variant_key(&lookup.key, names, &parts.headers);
                    self.cache.get(&flight_key, tier).await
                }
                Payload::Response(_) => Some((entry, layer)),
            };
            match found {
                Some((e, layer)) if e.is_fresh(now) => {
                    if let Payload::Response(r) = &e.payload {
                        return respond::from_entry(&parts, &e, r, hit_status(layer), now);
                    }
                }
                Some(_) => fwd = Fwd::Stale,
                None => fwd = Fwd::VaryMiss,
            }
        }
        let guard = match self.flights.join(&flight_key) {
            Join::Leader(guard) => Some(guard),
            Join::Follower(rx) => {
                let wait = self.config.upstream.timeout;
                if let Landing::Stored { key, entry } = collapse::wait(rx, wait).await
                    && let Payload::Response(r) = &entry.payload
                    && own_key(&lookup.key, r, &parts) == key
                {
                    let status = CacheStatus {
                        fwd: Some(fwd),
                        collapsed: true,
                        ..Default::default()
                    };
                    return respond::from_entry(&parts, &entry, r, status, SystemTime::now());
                }
                None
            }
        };
        self.fetch(parts, client, lookup, fwd, guard).await
    }

    /// Step 6: forward a cacheable request, decide storability, and stream
    /// the answer back while a copy goes to the cache.
    async fn fetch(
        &self,
        parts: request::Parts,
        client: IpAddr,
        lookup: Lookup,
        fwd: Fwd,
        guard: Option<FlightGuard>,
    ) -> Response<ProxyBody> {
        let mut up = parts.clone();
        // HEAD is fetched as GET so the entry can serve both.
        up.method = Method::GET;
        for name in &CONDITIONAL {
            up.headers.remove(name);
        }
        up.headers.remove(header::CONTENT_LENGTH);
        strip_hop_by_hop(&mut up.headers);
        add_forwarding(&mut up.headers, client);
        let mut status = CacheStatus {
            fwd: Some(fwd),
            ..Default::default()
        };
        let res = match self.upstream.send(Request::from_parts(up, empty())).await {
            Ok(res) => res,
            Err(e) => {
                tracing::warn!(rule = %lookup.rule.name, key = %lookup.key, error = %e, "backend fetch failed");
                status.detail = Some("upstream-error");
                return respond::error(e.status(), &e.to_string(), &status);
            }
        };
        let (mut res_parts, body) = res.into_parts();
        strip_hop_by_hop(&mut res_parts.headers);
        status.fwd_status = Some(res_parts.status.as_u16());
        let now = SystemTime::now();
        let body = body.map_err(BoxError::from).boxed_unsync();
        let body = match storable::decide(&lookup.rule, &parts, &res_parts, now) {
            Err(reason) => {
                status.detail = Some(reason.as_str());
                drop(guard);
                body
            }
            Ok(fresh) => {
                status.stored = true;
                status.ttl = Some(
                    fresh
                        .ttl
                        .saturating_sub(now.duration_since(fresh.stored_at).unwrap_or_default())
                        .as_secs(),
                );
                let mut stored_headers = res_parts.headers.clone();
                stored_headers.remove(header::AGE);
                let limit = usize::try_from(lookup.rule.max_object_size).unwrap_or(usize::MAX);
                let store = Store {
                    cache: self.cache.clone(),
                    lookup,
                    request_headers: parts.headers.clone(),
                    status: res_parts.status,
                    headers: stored_headers,
                    fresh,
                    guard,
                };
                tee::TeeBody::new(body, limit, Box::new(move |copy| store.finish(copy)))
                    .boxed_unsync()
            }
        };
        let body = if parts.method == Method::HEAD {
            // The entry still needs the whole body: read it in the background.
            tokio::spawn(async move {
                let _ = body.collect().await;
            });
            empty()
        } else {
            body
        };
        append_via(&mut res_parts.headers);
        res_parts
            .headers
            .insert(cache_status_name(), status.to_header());
        Response::from_parts(res_parts, body)
    }

    /// Forwards a request that is not answered from cache, streaming both ways.
    async fn pass(
        &self,
        mut parts: request::Parts,
        body: ProxyBody,
        client: IpAddr,
        mut status: CacheStatus,
    ) -> Response<ProxyBody> {
        strip_hop_by_hop(&mut parts.headers);
        add_forwarding(&mut parts.headers, client);
        match self.upstream.send(Request::from_parts(parts, body)).await {
            Ok(res) => {
                let (mut res_parts, body) = res.into_parts();
                strip_hop_by_hop(&mut res_parts.headers);
                append_via(&mut res_parts.headers);
                status.fwd_status = Some(res_parts.status.as_u16());
                res_parts
                    .headers
                    .insert(cache_status_name(), status.to_header());
                Response::from_parts(res_parts, body.map_err(BoxError::from).boxed_unsync())
            }
            Err(e) => {
                tracing::warn!(error = %e, "backend request failed");
                status.detail = Some("upstream-error");
                respond::error(e.status(), &e.to_string(), &status)
            }
        }
    }
}

/// Renders the key and tags of a matched request.
fn prepare(rule: &Arc<Rule>, view: &RequestView<'_>, params: &[(&str, &str)]) -> Lookup {
    let key = rule
        .key
        .render(view, params, Bodies::default())
        .unwrap_or_default();
    let tags = rule
        .tags
        .iter()
        .filter(|t| !t.reads_body())
        .filter_map(|t| t.render(view, params, Bodies::default()))
        .collect();
    let from_body: Vec<Template> = rule
        .tags
        .iter()
        .filter(|t| t.reads_body())
        .cloned()
        .collect();
    let body_tags = (!from_body.is_empty()).then(|| {
        let snapshot = Snapshot {
            method: view.method.clone(),
            host: view.host.to_owned(),
            path: view.path.to_owned(),
            query: view.query.map(str::to_owned),
            headers: view.headers.clone(),
            client_ip: view.client_ip,
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        (from_body, snapshot)
    });
    Lookup {
        rule: rule.clone(),
        key,
        tags,
        body_tags,
    }
}

/// The key the entry for this request is stored under.
fn own_key(primary: &str, res: &CachedResponse, req: &request::Parts) -> String {
    match storable::vary_names(&res.headers) {
        Some(names) if !names.is_empty() => vary::variant_key(primary, &names, &req.headers),
        _ => primary.to_owned(),
    }
}

/// Everything needed to store a response once its body has streamed.
struct Store {
    cache: Tiered,
    lookup: Lookup,
    request_headers: http::HeaderMap,
    status: StatusCode,
    headers: http::HeaderMap,
    fresh: storable::Freshness,
    guard: Option<FlightGuard>,
}

impl Store {
    /// Called by the tee with the body copy (`None`: nothing to store).
    fn finish(self, copy: Option<Bytes>) {
        let Some(body) = copy else {
            return; // Dropping the guard releases followers.
        };
        tokio::spawn(async move {
            let Store {
                cache,
                lookup,
                request_headers,
                status,
                headers,
                fresh,
                guard,
            } = self;
            let mut tags = lookup.tags;
            if let Some((templates, snapshot)) = &lookup.body_tags {
                // A body that is not JSON, or lacks the field, yields no tag.
                if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) {
                    tags.extend(snapshot.render(templates, &json));
                }
            }
            let vary = storable::vary_names(&headers).unwrap_or_default();
            let entry = |payload| {
                Arc::new(Entry {
                    stored_at: fresh.stored_at,
                    ttl: fresh.ttl,
                    grace: Duration::ZERO,
                    payload,
                })
            };
            let response = entry(Payload::Response(CachedResponse {
                status,
                headers,
                body,
                tags,
            }));
            let tier = lookup.rule.tier;
            let key = if vary.is_empty() {
                lookup.key.clone()
            } else {
                let variant = vary::variant_key(&lookup.key, &vary, &request_headers);
                cache
                    .put(&lookup.key, entry(Payload::Vary(vary)), tier)
                    .await;
                variant
            };
            cache.put(&key, response.clone(), tier).await;
            if let Some(guard) = guard {
                guard.land(Landing::Stored {
                    key,
                    entry: response,
                });
            }
        });
    }
}

fn hit_status(layer: Layer) -> CacheStatus {
    CacheStatus {
        hit: true,
        detail: Some(layer.as_str()),
        ..Default::default()
    }
}

fn pass_status(fwd: Fwd, detail: &'static str) -> CacheStatus {
    CacheStatus {
        fwd: Some(fwd),
        detail: Some(detail),
        ..Default::default()
    }
}

/// The request's host, lower-cased, without port: the Host header (HTTP/1)
/// or the URI authority (HTTP/2).
pub fn request_host(parts: &request::Parts) -> String {
    let raw = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let no_port = match raw.rfind(':') {
        Some(i)
            if !raw[i + 1..].is_empty()
                && raw[i + 1..].bytes().all(|b| b.is_ascii_digit())
                && !raw.ends_with(']') =>
        {
            &raw[..i]
        }
        _ => raw,
    };
    no_port.to_ascii_lowercase()
}
