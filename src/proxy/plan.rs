//! Decide, then do. [`Plan::of`] works out from a request's head alone
//! what the proxy will do with it: answer a `PURGE`, forward a write and
//! purge after it, pass it by the cache (and why), or look it up under its
//! key, and by which key its rule's rate limit counts it. It reads nothing
//! but the config and the head, so `sidecache explain` calls it too and can
//! never disagree with the proxy.

use std::net::IpAddr;
use std::sync::Arc;

use http::{Method, Uri, header, request};

use super::keyed::Keyed;
use super::outcome::Pass;
use crate::config::Config;
use crate::rules::{Bodies, RequestView, Rule, canonical_query, is_canonical};

/// One request as the pipeline works on it, built once: its head (already
/// made safe to key), the client, its host as the rules read it, and the
/// config in effect when it arrived.
pub struct Ctx {
    /// The head.
    pub parts: request::Parts,
    /// The client's address.
    pub client: IpAddr,
    /// The host, lower-cased, without port ([`request_host`]).
    pub host: String,
    /// The config snapshot this request works with from start to end.
    pub config: Arc<Config>,
}

impl Ctx {
    /// The context of a request whose head is `parts`.
    pub fn new(parts: request::Parts, client: IpAddr, config: Arc<Config>) -> Self {
        let host = request_host(&parts);
        Self {
            parts,
            client,
            host,
            config,
        }
    }

    /// The request as templates see it.
    pub fn view(&self) -> RequestView<'_> {
        RequestView::of(&self.parts, &self.host, self.client)
    }
}

/// What to do with a request.
#[derive(Debug)]
pub struct Plan {
    /// The rule it matched, if any.
    pub rule: Option<Arc<Rule>>,
    /// The client key its rule's rate limit counts it by, when the rule
    /// has one: the rendered `rate_limit.key`, or the client's address
    /// when that renders empty (a header it did not send), so such clients
    /// do not share one bucket.
    pub limit: Option<String>,
    /// The step it takes.
    pub action: Action,
}

/// The step a request takes after its rate limit.
#[derive(Debug)]
pub enum Action {
    /// `PURGE /url`: purges that URL's entry (with the admin token).
    Purge,
    /// Any method but GET and HEAD: forwarded, then purges what it made
    /// stale and writes through.
    Write,
    /// Forwarded without the cache.
    Pass(Pass),
    /// Answered from the cache or fetched under its key.
    Cache {
        /// Its rule and key.
        keyed: Keyed,
        /// The URI with the query in the canonical form the key was read
        /// from, when the request's differs: the backend is sent this one.
        uri: Option<Uri>,
    },
    /// Refused with 400: its query cannot be rewritten.
    Reject(&'static str),
}

impl Plan {
    /// The plan for a request with head `parts` and `host` from `client`.
    pub fn of(config: &Config, parts: &request::Parts, host: &str, client: IpAddr) -> Plan {
        let plan = |rule: Option<&Arc<Rule>>, limit, action| Plan {
            rule: rule.cloned(),
            limit,
            action,
        };
        // PURGE is answered by the proxy, whatever the rules say.
        if parts.method.as_str() == "PURGE" {
            return plan(None, None, Action::Purge);
        }
        let read = matches!(parts.method, Method::GET | Method::HEAD);
        let Some(m) = config.rules.find(&parts.method, host, parts.uri.path()) else {
            let action = if read {
                Action::Pass(Pass::NoRule)
            } else {
                Action::Write
            };
            return plan(None, None, action);
        };
        let view = RequestView::of(parts, host, client);
        let limit = m.rule.rate_limit.as_ref().map(|l| {
            l.key
                .render(&view, &m.params, Bodies::default())
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| client.to_string())
        });
        let action = if !read {
            Action::Write
        } else if !m.rule.cache {
            Action::Pass(Pass::Rule)
        } else if !m.rule.allow_authorized && parts.headers.contains_key(header::AUTHORIZATION) {
            Action::Pass(Pass::Authorization)
        } else {
            // The key reads the query in its canonical form, and the
            // backend is sent that same form, so both read the same
            // parameters.
            let canonical = parts
                .uri
                .query()
                .filter(|q| !is_canonical(q))
                .map(canonical_query);
            let view = RequestView {
                query: canonical.as_deref().or(view.query),
                ..view
            };
            match (Keyed::of(m.rule, &view, &m.params), canonical) {
                (Err(why), _) => Action::Pass(Pass::Key(why)),
                (Ok(keyed), None) => Action::Cache { keyed, uri: None },
                (Ok(keyed), Some(query)) => match with_query(&parts.uri, &query) {
                    Ok(uri) => Action::Cache {
                        keyed,
                        uri: Some(uri),
                    },
                    Err(why) => Action::Reject(why),
                },
            }
        };
        plan(Some(m.rule), limit, action)
    }
}

/// `uri` with its query replaced by `query`.
fn with_query(uri: &Uri, query: &str) -> Result<Uri, &'static str> {
    let text = format!("{}?{query}", uri.path());
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(http::uri::PathAndQuery::try_from(text).map_err(|_| "the query cannot be read")?);
    Uri::from_parts(parts).map_err(|_| "the URI cannot be read")
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
