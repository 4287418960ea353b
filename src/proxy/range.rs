//! Range requests answered from a cached full response (RFC 9110 section
//! 14): one range gives a `206` cut from the entry; an `If-Range` that does
//! not match the entry gives the whole entry. Anything else (several
//! ranges, a range that cannot be read) is for the backend to answer.

use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::cache::CachedResponse;

/// What to do with a Range request for a fresh entry.
pub(super) enum Ranged {
    /// Answer the whole entry (`If-Range` did not match).
    Whole,
    /// Answer bytes `start..=end` of the body.
    Part { start: u64, end: u64 },
    /// No part can be cut from this entry: `416`.
    Unsatisfiable,
    /// Forward the request to the backend untouched.
    Forward,
}

/// Decides how a request with `Range` is answered from `stored`.
pub(super) fn plan(req: &HeaderMap, stored: &CachedResponse) -> Ranged {
    let Some(range) = req.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ranged::Forward;
    };
    if stored.status != StatusCode::OK {
        return Ranged::Forward;
    }

    if let Some(if_range) = req.get(header::IF_RANGE)
        && !if_range_matches(if_range, stored)
    {
        return Ranged::Whole;
    }
    let Ok(parsed) = http_range_header::parse_range_header(range) else {
        return Ranged::Forward;
    };
    match parsed.validate(stored.body.len() as u64) {
        Ok(ranges) if ranges.len() == 1 => Ranged::Part {
            start: *ranges[0].start(),
            end: *ranges[0].end(),
        },
        Ok(_) => Ranged::Forward,
        Err(_) => Ranged::Unsatisfiable,
    }
}

/// `If-Range` holds a strong ETag equal to the entry's, or a date equal to
/// its Last-Modified (RFC 9110 13.1.5); a weak ETag never matches.
fn if_range_matches(if_range: &HeaderValue, stored: &CachedResponse) -> bool {
    let Ok(v) = if_range.to_str() else {
        return false;
    };
    let v = v.trim();
    if v.starts_with('"') {
        return stored
            .headers
            .get(&header::ETAG)
            .and_then(|e| e.to_str().ok().map(|e| e.trim() == v))
            .unwrap_or(false);
    }
    if v.starts_with("W/") {
        return false;
    }
    let date = httpdate::parse_http_date(v).ok();
    let modified = stored.headers.get(&header::LAST_MODIFIED).and_then(|m| {
        m.to_str()
            .ok()
            .and_then(|m| httpdate::parse_http_date(m).ok())
    });
    date.is_some() && date == modified
}

/// The `Content-Range` of a part, or of an unsatisfiable range.
pub(super) fn content_range(stored: &CachedResponse, part: Option<(u64, u64)>) -> HeaderValue {
    let len = stored.body.len();
    let text = match part {
        Some((start, end)) => format!("bytes {start}-{end}/{len}"),
        None => format!("bytes */{len}"),
    };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("bytes */0"))
}
