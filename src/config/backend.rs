//! `upstream:`: the backend, its timeouts, its queue and its TLS.

use super::check::{Check, MAX_COUNT};
use super::raw::{RawConfig, Sp};
use super::*;

pub(super) fn upstream(c: &mut Check, raw: &RawConfig) -> Option<Upstream> {
    let u = &raw.upstream;
    let url = match u.url.value.trim().parse::<http::Uri>() {
        Ok(url)
            if matches!(url.scheme_str(), Some("http" | "https")) && url.authority().is_some() =>
        {
            if url.query().is_some() || url.authority().is_some_and(|a| a.as_str().contains('@')) {
                c.error(
                    &u.url,
                    "upstream.url",
                    "give only scheme, host and port: a query or user info would be dropped",
                );
            }
            if !matches!(url.path(), "" | "/") {
                c.error(
                    &u.url,
                    "upstream.url",
                    "give only scheme, host and port: requests keep their own path",
                );
            }
            Some(url)
        }
        Ok(_) => {
            c.error(
                &u.url,
                "upstream.url",
                "must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:3000",
            );
            None
        }
        Err(e) => {
            c.error(&u.url, "upstream.url", format!("not a URL: {e}"));
            None
        }
    };
    let connect_timeout = u
        .connect_timeout
        .as_ref()
        .map_or(Some(DEFAULT_CONNECT_TIMEOUT), |v| {
            c.positive(v, "upstream.connect_timeout")
        });
    let timeout = u
        .timeout
        .as_ref()
        .map_or(Some(DEFAULT_UPSTREAM_TIMEOUT), |v| {
            c.positive(v, "upstream.timeout")
        });
    let max_concurrency = match &u.max_concurrency {
        Some(n) if n.value == 0 => {
            c.error(n, "upstream.max_concurrency", "must be greater than zero");
            None
        }
        Some(n) if n.value > MAX_COUNT => {
            c.error(
                n,
                "upstream.max_concurrency",
                format!("{} is more than the most allowed, {MAX_COUNT}", n.value),
            );
            None
        }
        Some(n) => Some(usize::try_from(n.value).unwrap_or(usize::MAX)),
        None => Some(DEFAULT_MAX_CONCURRENCY),
    };
    let queue = u.queue.as_ref().map_or(DEFAULT_QUEUE, |n| {
        if n.value > MAX_COUNT {
            c.error(
                n,
                "upstream.queue",
                format!("{} is more than the most allowed, {MAX_COUNT}", n.value),
            );
        }
        usize::try_from(n.value.min(MAX_COUNT)).unwrap_or(usize::MAX)
    });
    let host = u.host.as_ref().and_then(|h| {
        let v = h.value.trim().to_ascii_lowercase();
        match crate::proxy::plan::valid_authority(&v).then(|| http::HeaderValue::from_str(&v)) {
            Some(Ok(v)) => Some(v),
            _ => {
                let message =
                    "a host name with an optional port, e.g. `shop.example` or `shop.example:8443`";
                c.error(h, "upstream.host", message);
                None
            }
        }
    });
    let url = url?;
    let tls = upstream_tls(c, u, url.scheme_str() == Some("https"));
    Some(Upstream {
        host,
        url,
        connect_timeout: connect_timeout?,
        timeout: timeout?,
        max_concurrency: max_concurrency?,
        queue,
        tls: tls?,
    })
}

/// `upstream.ca`, `client_cert` and `client_key`, for an `https://` URL:
/// `Some(None)` for plain HTTP, `None` when something is wrong (reported).
pub(super) fn upstream_tls(
    c: &mut Check,
    u: &super::raw::RawUpstream,
    https: bool,
) -> Option<Option<super::tls::UpstreamTls>> {
    let files = [
        ("ca", &u.ca),
        ("client_cert", &u.client_cert),
        ("client_key", &u.client_key),
    ];
    if !https {
        for (name, v) in files {
            if let Some(v) = v {
                c.error(
                    v,
                    &format!("upstream.{name}"),
                    "only an https:// URL uses TLS",
                );
            }
        }
        return Some(None);
    }
    let mut read = |name: &str, v: &Option<Sp<String>>| -> Result<Option<Vec<u8>>, ()> {
        let Some(v) = v else { return Ok(None) };
        std::fs::read(v.value.trim()).map(Some).map_err(|e| {
            c.error(
                v,
                &format!("upstream.{name}"),
                format!("cannot read `{}`: {e}", v.value),
            );
        })
    };
    let (ca, cert, key) = (
        read("ca", &u.ca),
        read("client_cert", &u.client_cert),
        read("client_key", &u.client_key),
    );
    let (Ok(ca), Ok(cert), Ok(key)) = (ca, cert, key) else {
        return None;
    };
    let client = match (&cert, &key) {
        (Some(cert), Some(key)) => Some((cert.as_slice(), key.as_slice())),
        (None, None) => None,
        _ => {
            c.error(
                &u.url,
                "upstream.client_cert",
                "client_cert and client_key go together",
            );
            return None;
        }
    };
    match super::tls::upstream_tls(ca.as_deref(), client) {
        Ok(tls) => Some(Some(tls)),
        Err(e) => {
            let at = u.ca.as_ref().or(u.client_cert.as_ref()).unwrap_or(&u.url);
            c.error(at, "upstream", e);
            None
        }
    }
}
