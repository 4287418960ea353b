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
        } else if let Some(rollout) = &m.rule.rollout
            && !rollout.inside(rollout.bucket(&view, &m.params))
        {
            Action::Pass(Pass::Rollout)
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::rules::KeyRefusal;

    const YAML: &str = r#"
upstream: { url: "http://127.0.0.1:1" }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}:{query.lang}"
    allow_empty: [query.lang]
    invalidate_on: ["PUT /products/{id}"]
  - name: session
    match: { path: "/session" }
    key: "session:{cookie.sid}"
  - name: inventory
    match: { path: "/inventory/{id}" }
    cache: false
    rate_limit: { key: "{header.x-api-key}", rate: 5/s }
"#;

    fn plan(method: &str, uri: &str, headers: &[(&str, &str)]) -> Plan {
        let config = Config::from_yaml(YAML, Path::new("t.yaml"), &|_| None)
            .unwrap()
            .config;
        let mut req = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (parts, ()) = req.body(()).unwrap().into_parts();
        Plan::of(&config, &parts, "shop", IpAddr::from([10, 0, 0, 7]))
    }

    fn pass(p: &Plan) -> Option<Pass> {
        match p.action {
            Action::Pass(why) => Some(why),
            _ => None,
        }
    }

    /// Each reason a read passes the cache, decided from the head alone.
    #[test]
    fn pass_reasons() {
        assert_eq!(pass(&plan("GET", "/about", &[])), Some(Pass::NoRule));
        assert_eq!(pass(&plan("GET", "/inventory/1", &[])), Some(Pass::Rule));
        let auth = [("authorization", "Bearer x")];
        assert_eq!(
            pass(&plan("GET", "/products/1", &auth)),
            Some(Pass::Authorization)
        );
        assert_eq!(
            pass(&plan("GET", "/session", &[])),
            Some(Pass::Key(KeyRefusal::Incomplete))
        );
        assert_eq!(
            pass(&plan("GET", "/products/1?lang=de&lang=fr", &[])),
            Some(Pass::Key(KeyRefusal::Ambiguous))
        );
    }

    /// A cacheable read carries its rule and key, and the canonical URI
    /// when its query was not written canonically.
    #[test]
    fn cache_with_key_and_canonical_uri() {
        let p = plan("HEAD", "/products/9?lang=d%65", &[]);
        let Action::Cache { keyed, uri } = p.action else {
            panic!("{p:?}")
        };
        assert_eq!(keyed.key, "product:9:de");
        assert_eq!(uri.unwrap().to_string(), "/products/9?lang=de");
        let Action::Cache { uri, .. } = plan("GET", "/products/9", &[]).action else {
            panic!("not cached")
        };
        assert!(uri.is_none());
    }

    /// Writes are writes with or without a rule; PURGE is its own step.
    #[test]
    fn write_kinds() {
        let put = plan("PUT", "/products/1", &[]);
        assert!(matches!(put.action, Action::Write));
        assert!(put.rule.is_none(), "the product rule matches reads only");
        assert!(matches!(
            plan("POST", "/anything", &[]).action,
            Action::Write
        ));
        let purge = plan("PURGE", "/products/1", &[]);
        assert!(matches!(purge.action, Action::Purge));
        assert!(purge.rule.is_none() && purge.limit.is_none());
    }

    /// The rate-limit key is rendered from the request; a client without
    /// the header is counted by its address, not in one shared bucket.
    #[test]
    fn rate_limit_key() {
        let p = plan("GET", "/inventory/1", &[("x-api-key", "k1")]);
        assert_eq!(p.limit.as_deref(), Some("k1"));
        assert_eq!(p.rule.unwrap().name, "inventory");
        let p = plan("GET", "/inventory/1", &[]);
        assert_eq!(p.limit.as_deref(), Some("10.0.0.7"));
        assert!(plan("GET", "/products/1", &[]).limit.is_none());
    }
}
