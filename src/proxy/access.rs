//! The access log: one structured line per request at info level (target
//! `sidecache::access`), for the requests `log.access` picks. It holds the
//! request id, the W3C trace id (when the request continued one), method, path (never the query: its values may be personal),
//! rule, outcome, `Cache-Status`, status, body bytes when known, time to
//! the response head and the client address; never a header value, a
//! cookie or a body.

use std::net::IpAddr;
use std::time::Duration;

use http::{Method, Request, Response, Uri};

use crate::config::AccessLog;
use crate::metrics::Label;
use crate::rules::Rule;

/// What the line needs of the request, kept while it is handled (the
/// request itself is consumed).
pub struct Line {
    method: Method,
    uri: Uri,
    which: AccessLog,
    /// The W3C trace the request continued, if any.
    trace: Option<String>,
}

impl Line {
    /// The line for `req`, unless the access log is off.
    pub fn of<B>(req: &Request<B>, which: AccessLog, trace: Option<String>) -> Option<Self> {
        (which != AccessLog::Off).then(|| Self {
            method: req.method().clone(),
            // A clone shares the URI's bytes.
            uri: req.uri().clone(),
            which,
            trace,
        })
    }

    /// Writes the line, if the request is one `log.access` picks.
    pub fn write<B: http_body::Body>(
        self,
        res: &Response<B>,
        rule: Option<&Rule>,
        outcome: Label,
        client: IpAddr,
        took: Duration,
    ) {
        let failed = matches!(outcome, Label::Error | Label::Rejected);
        if !self.which.wants(res.status(), failed) {
            return;
        }
        let header = |name: &http::HeaderName| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        tracing::info!(
            target: "sidecache::access",
            id = %header(&super::request_id::HEADER),
            trace_id = self.trace.as_deref().unwrap_or(""),
            method = %self.method,
            path = self.uri.path(),
            rule = rule.map_or("", |r| r.name.as_str()),
            outcome = outcome.as_str(),
            cache_status = %header(&super::outcome::cache_status_name()),
            status = res.status().as_u16(),
            bytes = res.body().size_hint().exact(),
            ms = took.as_secs_f64() * 1e3,
            client = %client,
            "request"
        );
    }
}
