//! `memory.warm:`: what a new replica loads into L1 before it is ready.

use super::check::Check;
use super::raw::Sp;
use super::*;

/// `memory.warm`: `from: hot` (with Redis) and its `top`, and the URL
/// file read now (so a reload reads it again), each line a path or an
/// `http(s)://` URL.
pub(super) fn warm_up(c: &mut Check, w: &Sp<super::raw::RawWarmUp>, redis: bool) -> Option<WarmUp> {
    let hot = match &w.value.from {
        Some(f) if f.value != "hot" => {
            c.error(f, "memory.warm.from", "the one source is `hot`");
            return None;
        }
        Some(f) if !redis => {
            c.error(
                f,
                "memory.warm.from",
                "`from: hot` copies from Redis: add a `redis:` section",
            );
            return None;
        }
        Some(_) => Some(match &w.value.top {
            Some(t) if t.value == 0 || t.value > MAX_WARM_TOP => {
                let message = format!("must be from 1 to {MAX_WARM_TOP}");
                c.error(t, "memory.warm.top", message);
                return None;
            }
            Some(t) => usize::try_from(t.value).unwrap_or(DEFAULT_WARM_TOP),
            None => DEFAULT_WARM_TOP,
        }),
        None => {
            if let Some(t) = &w.value.top {
                c.error(t, "memory.warm.top", "`top` goes with `from: hot`");
            }
            None
        }
    };
    let urls = match &w.value.urls {
        Some(file) => warm_urls(c, file)?,
        None if hot.is_none() => {
            c.error(w, "memory.warm", "say `from: hot`, `urls: FILE`, or both");
            return None;
        }
        None => Vec::new(),
    };
    let timeout = w
        .value
        .timeout
        .as_ref()
        .and_then(|t| c.positive(t, "memory.warm.timeout"))
        .unwrap_or(DEFAULT_WARM_TIMEOUT);
    Some(WarmUp { urls, hot, timeout })
}

/// The URLs of `memory.warm.urls`'s file.
pub(super) fn warm_urls(c: &mut Check, file: &Sp<String>) -> Option<Vec<String>> {
    let text = match std::fs::read_to_string(file.value.trim()) {
        Ok(t) => t,
        Err(e) => {
            c.error(
                file,
                "memory.warm.urls",
                format!("cannot read `{}`: {e}", file.value),
            );
            return None;
        }
    };
    let mut urls = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fine = match line.parse::<http::Uri>() {
            Ok(u) if u.scheme().is_none() => line.starts_with('/'),
            Ok(u) => matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some(),
            Err(_) => false,
        };
        if !fine {
            let message = format!(
                "line {}: `{line}` is not a path (`/products/1`) or an http(s) URL",
                n + 1
            );
            c.error(file, "memory.warm.urls", message);
            return None;
        }
        urls.push(line.to_owned());
    }
    Some(urls)
}
