//! `sidecache explain`: which rule a request matches, the key it renders,
//! its tier, TTL and tags, or why nothing matches.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::config::Config;
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
    let host = map
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.host().map(str::to_owned))
        .unwrap_or_else(|| "localhost".to_owned())
        .to_ascii_lowercase();
    let path = uri.path();
    let mut out = String::new();
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
    if !matches!(method, Method::GET | Method::HEAD) {
        let _ = writeln!(
            out,
            "{method} is never answered from cache: forwarded to the backend"
        );
        return Ok(out);
    }
    let view = RequestView {
        method: &method,
        host: &host,
        path,
        query: uri.query(),
        headers: &map,
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let key = rule
        .key
        .render(&view, &m.params, Bodies::default())
        .unwrap_or_default();
    let _ = writeln!(out, "key:   {key}");
    let _ = writeln!(out, "tier:  {}", rule.tier.as_str());
    match rule.ttl {
        Ttl::Fixed(d) => {
            let _ = writeln!(out, "ttl:   {}", humantime::format_duration(d));
        }
        Ttl::Origin => {
            let _ = writeln!(
                out,
                "ttl:   origin (from the backend's Cache-Control / Expires)"
            );
        }
    }
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
    if map.contains_key(http::header::AUTHORIZATION) && !rule.allow_authorized {
        let _ = writeln!(
            out,
            "note:  the request carries Authorization, so it is forwarded and not answered from cache (allow_authorized: true relaxes this)"
        );
    }
    Ok(out)
}
