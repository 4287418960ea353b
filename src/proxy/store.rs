//! The miss path's bookkeeping: what a cacheable request carries (its key
//! and tags), and storing the backend's answer once its body has streamed.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, request};

use super::collapse::{FlightGuard, GlobalLock, Landing};
use super::{storable, vary};
use crate::cache::tiered::Tiered;
use crate::cache::{CachedResponse, Payload, StoredHeaders};
use crate::invalidation::{Invalidator, variant_tag};
use crate::rules::{Bodies, KeyRefusal, RequestView, Rule, Template};

/// What a cacheable request carries: its rule and key, and for a rule
/// with tags the path parameters they read. Built on every request, so it
/// holds nothing a hit does not need; tags are rendered only when an answer
/// is stored.
#[derive(Clone)]
pub(super) struct Lookup {
    pub rule: Arc<Rule>,
    /// The rule's key.
    pub key: String,
    /// Path parameters, kept only when the rule has tags.
    pub params: Vec<(String, String)>,
}

impl Lookup {
    /// Path parameters as templates take them.
    pub fn params(&self) -> Vec<(&str, &str)> {
        self.params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// An owned copy of the request data templates read.
#[derive(Clone)]
pub(super) struct Snapshot {
    method: Method,
    host: String,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    client_ip: IpAddr,
    params: Vec<(String, String)>,
}

impl Snapshot {
    /// Copies what `view` and `params` hold.
    pub fn of(view: &RequestView<'_>, params: &[(&str, &str)]) -> Self {
        Self {
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
        }
    }

    /// The request as templates see it.
    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            client_ip: self.client_ip,
        }
    }

    /// Method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Host, lower-cased, without port.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Query string.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// Request headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Client address.
    pub fn client_ip(&self) -> IpAddr {
        self.client_ip
    }

    /// Path and query, as a request line has them.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    /// A GET of the same URL with the same headers, as request parts.
    pub fn get_parts(&self) -> request::Parts {
        let mut req = http::Request::new(());
        if let Ok(uri) = self.path_and_query().parse() {
            *req.uri_mut() = uri;
        }
        *req.headers_mut() = self.headers.clone();
        req.into_parts().0
    }

    /// Renders `templates` with the given path parameters.
    pub fn render_with(
        &self,
        templates: &[&Template],
        params: &[(&str, &str)],
        bodies: Bodies<'_>,
    ) -> Vec<String> {
        let view = self.view();
        templates
            .iter()
            .filter_map(|t| t.render(&view, params, bodies))
            .collect()
    }

    /// Renders `templates` with the snapshot's own path parameters; those
    /// whose JSON field is missing give nothing.
    pub fn render(&self, templates: &[&Template], bodies: Bodies<'_>) -> Vec<String> {
        let params: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.render_with(templates, &params, bodies)
    }
}

/// Renders the key of a matched request; refused when the request cannot
/// be keyed exactly (a value the key names is missing, empty or given
/// twice): such a request is forwarded, not cached.
pub(super) fn prepare(
    rule: &Arc<Rule>,
    view: &RequestView<'_>,
    params: &[(&str, &str)],
) -> Result<Lookup, KeyRefusal> {
    let key = rule.key.render_key(view, params, &rule.allow_empty)?;
    let params = if rule.tags.is_empty() {
        Vec::new()
    } else {
        params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    Ok(Lookup {
        rule: rule.clone(),
        key,
        params,
    })
}

/// The key the entry for this request is stored under.
pub(super) fn own_key(primary: &str, res: &CachedResponse, req: &request::Parts) -> String {
    match storable::vary_names_of(res.headers.get_all(&http::header::VARY)) {
        Some(names) if !names.is_empty() => vary::variant_key(primary, &names, &req.headers),
        _ => primary.to_owned(),
    }
}

/// Tags the backend names in `Surrogate-Key` (space-separated) and
/// `Cache-Tag` (comma-separated).
pub(super) fn origin_tags(headers: &HeaderMap) -> Vec<String> {
    let split = |name: &str, sep: char| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(sep))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut tags = split("surrogate-key", ' ');
    tags.extend(split("cache-tag", ','));
    tags
}

/// Everything needed to store a response once its body has streamed.
pub(super) struct Store {
    pub cache: Tiered,
    pub invalidator: Arc<Invalidator>,
    pub lookup: Lookup,
    /// The request, for tags and the Vary variant key.
    pub request: Snapshot,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub fresh: storable::Freshness,
    pub guard: Option<FlightGuard>,
    /// When the request went upstream, on the purge clock.
    pub fetched: u64,
    /// The global collapse lock, released once the entry is in Redis.
    pub lock: Option<Box<GlobalLock>>,
}

impl Store {
    /// Called by the tee with the body copy (`None`: nothing to store).
    pub fn finish(self, copy: Option<Bytes>) {
        let Some(body) = copy else {
            return; // Dropping the guard releases followers.
        };
        tokio::spawn(self.store(body));
    }

    async fn store(self, body: Bytes) {
        let Store {
            cache,
            invalidator,
            lookup,
            request,
            status,
            headers,
            fresh,
            guard,
            fetched,
            lock,
        } = self;
        // A body that is not JSON, or lacks a field, gives no tag from it.
        let reads_body = lookup.rule.tags.iter().any(Template::reads_body);
        let json = reads_body
            .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .flatten();
        let templates: Vec<&Template> = lookup.rule.tags.iter().collect();
        let mut names = request.render_with(
            &templates,
            &lookup.params(),
            Bodies {
                request: None,
                response: json.as_ref(),
            },
        );
        if lookup.rule.origin_tags {
            names.extend(origin_tags(&headers));
        }
        let vary = storable::vary_names(&headers).unwrap_or_default();
        if !vary.is_empty() {
            names.push(variant_tag(&lookup.key));
        }
        names.sort_unstable();
        names.dedup();
        if !invalidator.may_store(&lookup.key, &names, fetched) {
            // This entry was purged while its answer was on the way: it may
            // be the old value. Store nothing; followers fetch for themselves.
            // (Purges of other entries never get here.)
            return;
        }
        let tags = names;
        let entry = |payload| Arc::new(fresh.entry(fetched, payload));
        let response = entry(Payload::Response(CachedResponse {
            status,
            headers: StoredHeaders::from_map(&headers),
            body,
            tags,
        }));
        let tier = lookup.rule.tier;
        let key = if vary.is_empty() {
            lookup.key.clone()
        } else {
            let variant = vary::variant_key(&lookup.key, &vary, request.headers());
            cache
                .put(&lookup.key, entry(Payload::Vary(vary)), tier)
                .await;
            variant
        };
        match lock {
            // Replicas wait on the lock for the entry in Redis: write it first.
            Some(lock) => {
                cache.put_now(&key, response.clone(), tier).await;
                lock.release().await;
            }
            None => cache.put(&key, response.clone(), tier).await,
        }
        if let Some(guard) = guard {
            guard.land(Landing::Stored {
                key,
                entry: response,
            });
        }
    }
}
