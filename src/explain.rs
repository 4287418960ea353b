//! `sidecache explain`: which rule a request matches, the key it renders,
//! its tier, TTL and tags, or why nothing matches.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::config::Config;
use crate::proxy::request_host;
use crate::rules::{Bodies, RequestView, Ttl};

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
}

/// Describes what `method url` with `headers` would do.
pub fn explain(
    config: &Config,
    method: &str,
    url: &str,
    headers: &[String],
) -> Result<String, ExplainError> {
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
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = map;
    let (parts, ()) = request.into_parts();
    // The proxy's own reading of the host (Host header or authority, port
    // dropped); a bare path has neither, so it is shown for localhost.
    let host = match request_host(&parts) {
        h if h.is_empty() => "localhost".to_owned(),
        h => h,
    };
    let path = parts.uri.path();
    let mut out = String::new();
    let view = RequestView::of(&parts, &host, IpAddr::V4(Ipv4Addr::LOCALHOST));
    if !matches!(method, Method::GET | Method::HEAD) {
        explain_write(config, &view, &mut out);
        return Ok(out);
    }
    let Some(m) = config.rules.find(&method, &host, path) else {
        let _ = writeln!(
            out,
            "no rule matches {method} {host}{path}: forwarded to the backend untouched (pass)"
        );
        return Ok(out);
    };
    let rule = m.rule;
    let methods: Vec<&str> = rule.methods.iter().map(Method::as_str).collect();
    let _ = writeln!(
        out,
        "rule:  {} ({} {})",
        rule.name,
        methods.join(", "),
        rule.path
    );
    if !rule.cache {
        let _ = writeln!(out, "cache: false: forwarded to the backend every time");
        return Ok(out);
    }
    match rule.key.render_key(&view, &m.params, &rule.allow_empty) {
        Ok(key) => {
            let _ = writeln!(out, "key:   {key}");
        }
        Err(why) => {
            let _ = writeln!(
                out,
                "key:   none: a value the key names is missing, empty or repeated, so the request \
                 is forwarded uncached (detail={})",
                why.as_str()
            );
        }
    }
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
    let _ = writeln!(out, "tier:  {}", rule.tier.as_str());
    let _ = write!(out, "ttl:   {}", rule.ttl);
    if rule.ttl == Ttl::Origin {
        let _ = write!(out, " (from the backend's Cache-Control / Expires)");
    }
    let _ = writeln!(out);
    let tags: Vec<String> = rule
        .tags
        .iter()
        .map(|t| match t.render(&view, &m.params, Bodies::default()) {
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
    if parts.headers.contains_key(http::header::AUTHORIZATION) && !rule.allow_authorized {
        let _ = writeln!(
            out,
            "note:  the request carries Authorization, so it is forwarded and not answered from cache (allow_authorized: true relaxes this)"
        );
    }
    Ok(out)
}

/// What a write does: forwarded, then on 2xx what it purges and writes through.
fn explain_write(config: &Config, view: &RequestView<'_>, out: &mut String) {
    let method = view.method;
    let _ = writeln!(
        out,
        "{method} is never answered from cache: forwarded to the backend; on a 2xx answer it purges:"
    );
    let render = |t: &crate::rules::Template, params: &[(&str, &str)]| match t.render(
        view,
        params,
        Bodies::default(),
    ) {
        Some(s) => s,
        None => format!("{} (from the JSON bodies)", t.source()),
    };
    let mut any = false;
    for m in config.rules.triggered(method, view.path) {
        any = true;
        let tags: Vec<String> = m.rule.tags.iter().map(|t| render(t, &m.params)).collect();
        let _ = writeln!(
            out,
            "  rule {} (invalidate_on): key {}; tags {}",
            m.rule.name,
            render(&m.rule.key, &m.params),
            if tags.is_empty() {
                "none".to_owned()
            } else {
                tags.join(", ")
            }
        );
    }
    if let Some(m) = config
        .rules
        .find(&Method::GET, view.host, view.path)
        .filter(|m| m.rule.cache)
    {
        any = true;
        let get = RequestView {
            method: &Method::GET,
            ..*view
        };
        let key = m
            .rule
            .key
            .render(&get, &m.params, Bodies::default())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  its own URL (RFC 9111 4.4): key {key} of rule {}",
            m.rule.name
        );
    }
    let _ = writeln!(
        out,
        "  and the URLs in the answer's Location / Content-Location on the same host"
    );
    if !any {
        let _ = writeln!(out, "  (no rule covers this URL)");
    }
    if let Some(m) = config.rules.write_through(method, view.host, view.path) {
        let key = m
            .rule
            .key
            .render(view, &m.params, Bodies::default())
            .unwrap_or_default();
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
