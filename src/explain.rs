//! `sidecache explain`: what a request would do, worked out by the proxy's
//! own [`Plan::of`]: its rule, rate limit, key, tier, TTL and tags, why it
//! would pass the cache, or what a write would purge and write through.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

use crate::config::{Config, RedisServers};
use crate::invalidation::triggers::{Triggered, get_key, key_for_get};
use crate::proxy::outcome::Pass;
use crate::proxy::plan::{Action, Plan, request_host};
use crate::rules::{Bodies, RequestView, Rule, Snapshot, Ttl};

/// The client address requests are explained for.
pub const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Why a request could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// The method is not an HTTP method.
    #[error("`{0}` is not an HTTP method")]
    Method(String),
    /// The URL does not parse.
    #[error("`{0}` is not a URL or path")]
    Url(String),
    /// A `-H` value is not `Name: value`.
    #[error("header `{0}` is not of the form 'Name: value'")]
    Header(String),
    /// The proxy refuses such a request.
    #[error("the proxy answers {0}: {1}")]
    Refused(u16, &'static str),
}

/// The head of `method url` with `headers`, as the proxy would read it,
/// and its host (`localhost` for a bare path, which has none).
pub fn head(
    method: &str,
    url: &str,
    headers: &[String],
) -> Result<(http::request::Parts, String), ExplainError> {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| ExplainError::Method(method.to_owned()))?;
    let uri: Uri = url.parse().map_err(|_| ExplainError::Url(url.to_owned()))?;
    let mut map = HeaderMap::new();
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| ExplainError::Header(h.clone()))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| ExplainError::Header(h.clone()))?;
        let value =
            HeaderValue::from_str(value.trim()).map_err(|_| ExplainError::Header(h.clone()))?;
        map.append(name, value);
    }
    let mut request = http::Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = map;
    let (mut parts, ()) = request.into_parts();
    if parts.uri.authority().is_none() && !parts.headers.contains_key(http::header::HOST) {
        parts
            .headers
            .insert(http::header::HOST, HeaderValue::from_static("localhost"));
    }
    // Made safe to key as the proxy does, so what is refused there is
    // refused here, and what is dropped is not seen.
    crate::proxy::headers::sanitize_request(&mut parts, false)
        .map_err(|(code, why)| ExplainError::Refused(code.as_u16(), why))?;
    let host = request_host(&parts)
        .map_err(|why| ExplainError::Refused(StatusCode::BAD_REQUEST.as_u16(), why))?;
    Ok((parts, host))
}

/// Describes what `method url` with `headers` would do.
pub fn explain(
    config: &Config,
    method: &str,
    url: &str,
    headers: &[String],
) -> Result<String, ExplainError> {
    let (parts, host) = head(method, url, headers)?;
    let plan = Plan::of(config, &parts, &host, CLIENT);
    let view = RequestView::of(&parts, &host, CLIENT);
    let mut out = String::new();
    let path = parts.uri.path();
    match &plan.rule {
        Some(rule) => {
            let methods: Vec<&str> = rule.methods.iter().map(Method::as_str).collect();
            let _ = writeln!(
                out,
                "rule:  {} ({} {})",
                rule.name,
                methods.join(", "),
                rule.path
            );
        }
        None if matches!(plan.action, Action::Pass(Pass::NoRule)) => {
            let _ = writeln!(
                out,
                "no rule matches {} {host}{path}: forwarded to the backend untouched (pass)",
                parts.method
            );
        }
        None => {}
    }
    if let Some(rule) = &plan.rule
        && let Some(rollout) = &rule.rollout
        && matches!(parts.method, Method::GET | Method::HEAD)
        && let Some(m) = config.rules.find(&parts.method, &host, path)
    {
        let bucket = rollout.bucket(&view, &m.params);
        let by = match &rollout.by {
            Some(t) if rollout.by_value(&view, &m.params).is_none() => format!(
                "the client address, {CLIENT}, since `{}` renders empty",
                t.source()
            ),
            Some(t) => format!("`{}`", t.source()),
            None => format!("the client address, {CLIENT}"),
        };
        let side = if rollout.inside(bucket) {
            "inside: uses the cache"
        } else {
            "outside: forwarded as with cache: false"
        };
        let _ = writeln!(
            out,
            "rollout: {side} (bucket {bucket} of {}, {}% inside, by {by})",
            crate::rules::ROLLOUT_BUCKETS,
            rollout.percent
        );
    }
    if let (Some(rule), Some(key)) = (&plan.rule, &plan.limit)
        && let Some(limit) = &rule.rate_limit
    {
        let per_second = 1.0 / limit.interval.as_secs_f64();
        let _ = writeln!(
            out,
            "limit: {per_second:.3}/s per client, {} at once ({}), this one counted as {key}",
            limit.burst,
            limit.scope.as_str()
        );
    }
    match &plan.action {
        Action::Purge => {
            let _ = writeln!(
                out,
                "PURGE: with the admin token, purges the entry of this URL"
            );
        }
        Action::Write => explain_write(config, &view, &mut out),
        Action::Pass(Pass::NoRule) => {}
        Action::Pass(why) => {
            let _ = writeln!(out, "{}", pass_text(*why));
        }
        Action::Reject(why) => {
            let _ = writeln!(out, "refused with 400: {why}");
        }
        Action::Cache { keyed, head } => {
            let _ = writeln!(out, "key:   {}", keyed.key);
            let keyed_view = RequestView::of(head, &host, CLIENT);
            explain_entry(config, &keyed.rule, &keyed_view, &mut out);
            explain_backend(&parts, headers, (head, &keyed.rule), &mut out);
        }
    }
    Ok(out)
}

/// Why a request passes, as `explain` says it (with the `Cache-Status`
/// detail the proxy gives it).
fn pass_text(why: Pass) -> String {
    let text = match why {
        Pass::NoRule => "no rule: forwarded untouched",
        Pass::Rule => "cache: false: forwarded to the backend every time",
        Pass::Authorization => {
            "the request carries Authorization, so it is forwarded and not answered from cache \
             (allow_authorized: true relaxes this)"
        }
        Pass::Key(_) => {
            "key:   none: a value the key names is missing, empty or repeated, so the request \
             is forwarded uncached"
        }
        Pass::Rollout => "outside the rule's rollout share: forwarded to the backend",
        Pass::PassIf => {
            "the request carries a cookie or header the rule's pass_if names (a logged-in \
             visitor, an open basket): forwarded as received, not answered from cache"
        }
        Pass::Range(_) | Pass::Write { .. } => "forwarded",
    };
    match why.as_str() {
        Some(detail) => format!("{text} (detail={detail})"),
        None => text.to_owned(),
    }
}

/// Tier, TTL and tags of the entry a cacheable request would have.
fn explain_entry(config: &Config, rule: &Rule, view: &RequestView<'_>, out: &mut String) {
    if rule.host.is_none()
        && !rule.key.uses(&crate::rules::Var::Host)
        && config.rules.rules().iter().any(|r| r.host.is_some())
    {
        let _ = writeln!(
            out,
            "warning: this rule matches any host but its key leaves out {{host}}: two hosts' \
             answers would share one entry"
        );
    }
    if !rule.pass_if.cookies.is_empty() || !rule.pass_if.headers.is_empty() {
        let names: Vec<&str> = rule
            .pass_if
            .cookies
            .iter()
            .map(|c| c.as_str())
            .chain(rule.pass_if.headers.iter().map(|h| h.as_str()))
            .collect();
        let _ = writeln!(
            out,
            "pass:  with any of {} the request passes uncached",
            names.join(", ")
        );
    }
    let set_cookie = match rule.set_cookie {
        crate::rules::SetCookie::Refuse => "an answer with Set-Cookie is not stored",
        crate::rules::SetCookie::Strip => {
            "an answer with Set-Cookie is stored without it (the fetching client gets its own)"
        }
    };
    let _ = writeln!(out, "cookie: {set_cookie}");
    if rule.esi {
        let _ = writeln!(
            out,
            "esi:   <esi:include src=\"/...\"/> in its HTML is fetched for each client, with \
             the client's cookies, under the fragment's own rule (a fragment that sets a \
             cookie or is private makes the page `private, no-store`)"
        );
    }
    let _ = write!(out, "tier:  {}", rule.tier.as_str());
    if rule.tier.uses_redis()
        && let Some(redis) = &config.redis
    {
        let _ = match &redis.servers {
            RedisServers::Url(_) => write!(out, " (L2 on one Redis server)"),
            RedisServers::Cluster(seeds) => write!(
                out,
                " (L2 on a Redis Cluster, reached through {} seed node{})",
                seeds.len(),
                if seeds.len() == 1 { "" } else { "s" }
            ),
        };
    }
    let _ = writeln!(out);
    let _ = write!(out, "ttl:   {}", rule.ttl);
    if rule.ttl == Ttl::Origin {
        let _ = write!(out, " (from the backend's Cache-Control / Expires)");
    }
    let _ = writeln!(out);
    let matched = config.rules.find(view.method, view.host, view.path);
    let params = matched.map(|m| m.params).unwrap_or_default();
    let tags: Vec<String> = rule
        .tags
        .iter()
        .map(|t| match t.render(view, &params, Bodies::default()) {
            Some(tag) => tag,
            None => format!("{} (from the response body)", t.source()),
        })
        .collect();
    let _ = writeln!(
        out,
        "tags:  {}",
        if tags.is_empty() {
            "none".to_owned()
        } else {
            tags.join(", ")
        }
    );
}

/// The exact request a miss sends the backend, and what of the client's
/// request it leaves out.
fn explain_backend(
    parts: &http::request::Parts,
    given: &[String],
    (head, rule): (&http::request::Parts, &crate::rules::Rule),
    out: &mut String,
) {
    let up = crate::proxy::forward::fetch_head(head, CLIENT, rule);
    let _ = writeln!(out, "backend gets, on a miss:");
    let _ = writeln!(
        out,
        "  GET {}",
        up.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    for (name, value) in &up.headers {
        let _ = writeln!(
            out,
            "  {name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        );
    }
    let sent: Vec<&str> = up.uri.query().unwrap_or("").split('&').collect();
    let dropped_query: Vec<&str> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or(p, |(k, _)| k))
        .filter(|k| {
            !sent
                .iter()
                .any(|s| s.split_once('=').map_or(*s, |(n, _)| n) == *k)
        })
        .collect();
    let sent_cookies = up
        .headers
        .get(http::header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let dropped_cookies: Vec<&str> = parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.split_once('=').map(|(k, _)| k.trim()))
        .filter(|k| {
            !sent_cookies
                .split("; ")
                .any(|c| c.split_once('=').is_some_and(|(n, _)| n == *k))
        })
        .collect();
    // As given with -H: the forwarding family is gone before the plan.
    let mut dropped_headers: Vec<String> = given
        .iter()
        .filter_map(|h| h.split_once(':'))
        .map(|(n, _)| n.trim().to_ascii_lowercase())
        .filter(|n| n != "cookie" && n != "host" && !head.headers.contains_key(n.as_str()))
        .collect();
    dropped_headers.dedup();
    for (what, names) in [
        ("query parameters", dropped_query),
        ("cookies", dropped_cookies),
        (
            "headers",
            dropped_headers.iter().map(String::as_str).collect(),
        ),
    ] {
        if !names.is_empty() {
            let _ = writeln!(
                out,
                "  not sent (the key does not hold them): {what} {}",
                names.join(", ")
            );
        }
    }
}

/// What a write does: forwarded, then on 2xx or 3xx what it purges, and on 2xx what it writes through.
fn explain_write(config: &Config, view: &RequestView<'_>, out: &mut String) {
    let method = view.method;
    let _ = writeln!(
        out,
        "{method} is never answered from cache: forwarded to the backend; on a 2xx or 3xx answer it purges:"
    );
    let render = |t: &crate::rules::Template, params: &[(&str, &str)]| match t.render(
        view,
        params,
        Bodies::default(),
    ) {
        Some(s) => s,
        None => format!("{} (from the JSON bodies)", t.source()),
    };
    let triggered = Triggered::of(&config.rules, view);
    let mut any = false;
    for f in config.rules.triggered(method, view.path) {
        any = true;
        let list = |ts: &[crate::rules::Template]| -> String {
            if ts.is_empty() {
                return "none".to_owned();
            }
            let names: Vec<String> = ts.iter().map(|t| render(t, &f.params)).collect();
            names.join(", ")
        };
        let mut line = format!(
            "  rule {} (invalidate_on {} {}): key {}",
            f.rule.name,
            f.trigger.method,
            f.trigger.path,
            render(&f.rule.key, &f.params)
        );
        if !f.trigger.keys.is_empty() {
            let _ = write!(line, ", keys {}", list(&f.trigger.keys));
        }
        let _ = write!(line, "; tags {}", list(&f.trigger.tags));
        if !f.trigger.if_changed.is_empty() {
            let fields: Vec<String> = f.trigger.if_changed.iter().map(|p| p.join(".")).collect();
            let _ = write!(
                line,
                " (keys and tags only if {} changed)",
                fields.join(" or ")
            );
        }
        let _ = writeln!(out, "{line}");
    }
    let own = key_for_get(&config.rules, &Snapshot::of(view, &[]), None);
    if let (Some(key), Some(m)) = (own, config.rules.find(&Method::GET, view.host, view.path)) {
        any = true;
        let _ = writeln!(
            out,
            "  its own URL (RFC 9111 4.4): key {key} of rule {}",
            m.rule.name
        );
    }
    let _ = writeln!(
        out,
        "  and the URLs in the answer's Location (not a redirect's) / Content-Location on the same host"
    );
    if !any {
        let _ = writeln!(out, "  (no cached GET has this URL's key)");
    }
    if triggered.reads_request() {
        let _ = writeln!(out, "  (the write's JSON body is read for the names above)");
    }
    if let Some(m) = config.rules.write_through(method, view.host, view.path) {
        let snap = Snapshot::of(view, &m.params);
        let Some(key) = get_key(m.rule, &snap, view.path, view.query, &m.params) else {
            let _ = writeln!(
                out,
                "then writes nothing through: a GET of it with these headers would pass the cache (a value rule {}'s key names is missing)",
                m.rule.name
            );
            return;
        };
        let channel = m
            .rule
            .write_through
            .as_ref()
            .and_then(|w| w.publish.as_ref())
            .map(|c| render(c, &m.params));
        let _ = writeln!(
            out,
            "then writes through: rule {} stores the new value under {key}{}",
            m.rule.name,
            channel
                .map(|c| format!(" and publishes an event on {c}"))
                .unwrap_or_default()
        );
    }
}
