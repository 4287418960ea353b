//! Decide, then do. [`Plan::of`] works out from a request's head alone
//! what the proxy will do with it: answer a `PURGE`, forward a write and
//! purge after it, pass it by the cache (and why), or look it up under its
//! key, and by which key its rule's rate limit counts it. It reads nothing
//! but the config and the head, so `sidecache explain` calls it too and can
//! never disagree with the proxy.

use std::net::IpAddr;
use std::sync::Arc;

use http::{Method, header, request};

use super::forward;
use super::keyed::Keyed;
use super::outcome::Pass;
use crate::config::Config;
use crate::rules::{Bodies, RequestView, Rule, keyed_query};

/// One request as the pipeline works on it, built once: its head (already
/// made safe to key), the client, its host as the rules read it, and the
/// config in effect when it arrived.
pub struct Ctx {
    /// The head.
    pub parts: request::Parts,
    /// The client's address.
    pub client: IpAddr,
    /// The host: the request's authority, validated, lower-cased, port
    /// included ([`request_host`]).
    pub host: String,
    /// The config snapshot this request works with from start to end.
    pub config: Arc<Config>,
    /// On the cache path: the client's headers that the keyed head left
    /// out and that a backend's `Vary` may still name (not its cookies,
    /// host, credentials or forwarding headers; `forward::others`).
    pub others: http::HeaderMap,
    /// On the cache path: the client's own `Cookie`. A miss's answer
    /// setting a cookie of it that the keyed head left out is not passed
    /// on: the backend set it only because it did not see the client's own.
    pub client_cookie: Option<http::HeaderValue>,
}

impl Ctx {
    /// The context of a request whose head is `parts` and whose host is
    /// `host` ([`request_host`]).
    pub fn new(parts: request::Parts, host: String, client: IpAddr, config: Arc<Config>) -> Self {
        Self {
            parts,
            client,
            host,
            config,
            others: http::HeaderMap::new(),
            client_cookie: None,
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
        /// The request as the cache path works on it and the backend gets
        /// it: built from the key's inputs alone ([`forward::keyed_head`]).
        head: Box<request::Parts>,
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
        } else if m.rule.pass_if.matches(&parts.headers) {
            Action::Pass(Pass::PassIf)
        } else if let Some(rollout) = &m.rule.rollout
            && !rollout.inside(rollout.bucket(&view, &m.params))
        {
            Action::Pass(Pass::Rollout)
        } else {
            // The key reads the query in its canonical form, less the
            // parameters the rule ignores; the backend gets the part of
            // that same query the key reads, so both see the same values.
            let query = keyed_query(parts.uri.query(), &m.rule.ignore_query);
            let view = RequestView {
                query: query.as_deref(),
                ..view
            };
            match Keyed::of(m.rule, &view, &m.params) {
                Err(why) => Action::Pass(Pass::Key(why)),
                Ok(keyed) => {
                    match forward::keyed_head(parts, m.rule, host, query.as_deref(), config) {
                        Ok(head) => Action::Cache {
                            keyed,
                            head: Box::new(head),
                        },
                        Err(why) => Action::Reject(why),
                    }
                }
            }
        };
        plan(Some(m.rule), limit, action)
    }
}

/// The request's host as keys hold it: the Host header (HTTP/1) or the
/// URI authority (HTTP/2), lower-cased, port included. Refused unless it
/// is a plain authority ([`valid_authority`]): the backend is sent exactly
/// what the key holds, so it must be one no backend reads another way.
pub fn request_host(parts: &request::Parts) -> Result<String, &'static str> {
    let raw = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    if raw.is_empty() {
        return Err("no Host");
    }
    if !valid_authority(raw) {
        return Err("Host is not a host name or address with an optional port");
    }
    Ok(raw.to_ascii_lowercase())
}

/// Whether `a` is `name[:port]` or `[v6]:port`: letters, digits, `-`,
/// `.` and `_` in the name, digits in a port; no user info, no escapes.
pub fn valid_authority(a: &str) -> bool {
    let (name, port) = match a.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if v6.parse::<std::net::Ipv6Addr>().is_ok() => ("v6", port),
            _ => return false,
        },
        None => match a.split_once(':') {
            Some((name, _)) => (name, &a[name.len()..]),
            None => (a, ""),
        },
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        });
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && port_ok
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

    /// A cacheable read carries its rule and key, and the head the backend
    /// gets: the canonical query the key read, and only that.
    #[test]
    fn cache_with_key_and_keyed_head() {
        let p = plan(
            "HEAD",
            "/products/9?callback=evil&lang=d%65&fields=none",
            &[("cookie", "sid=1"), ("x-forwarded-prefix", "/evil")],
        );
        let Action::Cache { keyed, head } = p.action else {
            panic!("{p:?}")
        };
        assert_eq!(keyed.key, "product:9:de");
        assert_eq!(head.uri.to_string(), "/products/9?lang=de");
        assert!(head.headers.get("cookie").is_none());
        assert!(head.headers.get("x-forwarded-prefix").is_none());
        assert_eq!(
            head.headers["host"], "127.0.0.1:1",
            "the upstream's: the key holds no host"
        );
        let Action::Cache { head, .. } = plan("GET", "/products/9?utm_source=x", &[]).action else {
            panic!("not cached")
        };
        assert_eq!(head.uri.to_string(), "/products/9");
        let Action::Cache { keyed, head } =
            plan("GET", "/session", &[("cookie", "a=1; sid=%41b; b=2")]).action
        else {
            panic!("not cached")
        };
        assert_eq!(keyed.key, "session:%2541b", "the raw value, not decoded");
        assert_eq!(head.headers["cookie"], "sid=%41b");
    }

    /// `ignore_query` parameters are gone before the key is read, and a
    /// key with `{query}` forwards the rest; the host is the authority,
    /// port included.
    #[test]
    fn ignored_query_and_host() {
        let config = Config::from_yaml(
            "upstream: { url: \"http://127.0.0.1:1\" }\nrules:\n  - name: all\n    match: { path: \"/p/{id}\" }\n    ignore_query: [utm_*, gclid]\n",
            Path::new("t.yaml"),
            &|_| None,
        )
        .unwrap()
        .config;
        let req = http::Request::get("/p/1?utm_source=a&b=2&gclid=x&a=1")
            .header("host", "Shop:8080")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let host = request_host(&parts).unwrap();
        assert_eq!(host, "shop:8080");
        let p = Plan::of(&config, &parts, &host, IpAddr::from([10, 0, 0, 7]));
        let Action::Cache { keyed, head } = p.action else {
            panic!("{p:?}")
        };
        assert_eq!(keyed.key, "GET:shop%3A8080/p/1?a=1&b=2");
        assert_eq!(head.uri.to_string(), "/p/1?b=2&a=1");
        assert_eq!(head.headers["host"], "shop:8080");
    }

    /// A Host that is not a plain authority is refused.
    #[test]
    fn hosts() {
        for ok in [
            "shop",
            "shop:8080",
            "127.0.0.1:80",
            "[::1]:8080",
            "a-b.c_d.example",
        ] {
            assert!(valid_authority(ok), "{ok}");
        }
        for bad in [
            "sh%6Fp",
            "shop:",
            "shop:x",
            "u@shop",
            "shop:1:2",
            "[zz]",
            "",
            "shop/x",
            "shop:123456",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
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
