//! Turns the raw file into a typed [`Config`]: the small top-level
//! sections here; the backend in [`backend`](super::backend), Redis and
//! the regions in [`shared`](super::shared), the warm-up in
//! [`warm`](super::warm); each rule in [`rule`](super::rule) (after its
//! defaults are merged in), the checks across rules in
//! [`across`](super::across). Every error is
//! collected with its place, so one `sidecache check` shows them all.

use std::path::Path;

use super::across::{cross_rule_checks, host_warnings};
use super::backend::upstream;
use super::check::{Check, MAX_COUNT};
use super::raw::{RawConfig, RawRule, Sp};
use super::rule::{rule, with_defaults};
use super::shared::{redis, regions};
use super::warm::warm_up;
use super::*;
use crate::rules::RuleSet;

/// Validates the whole file.
pub(super) fn validate(raw: RawConfig, source: &Path) -> Result<Loaded, Vec<Problem>> {
    let mut c = Check::default();
    let listen = match &raw.listen {
        Some(v) => c.addr(v, "listen"),
        None => DEFAULT_LISTEN.parse().ok(),
    };
    let upstream = upstream(&mut c, &raw);
    let admin = admin(&mut c, &raw);
    let memory = Memory {
        max_size: raw
            .memory
            .as_ref()
            .and_then(|m| m.max_size.as_ref())
            .map_or(Some(DEFAULT_MEMORY_MAX_SIZE), |v| {
                c.size(v, "memory.max_size")
            })
            .unwrap_or(DEFAULT_MEMORY_MAX_SIZE),
        max_object_size: raw
            .memory
            .as_ref()
            .and_then(|m| m.max_object_size.as_ref())
            .map_or(Some(DEFAULT_MAX_OBJECT_SIZE), |v| {
                c.size(v, "memory.max_object_size")
            })
            .unwrap_or(DEFAULT_MAX_OBJECT_SIZE),
        warm: raw
            .memory
            .as_ref()
            .and_then(|m| m.warm.as_ref())
            .and_then(|w| warm_up(&mut c, w, raw.redis.is_some())),
    };
    let limits = limits(&mut c, &raw);
    let redis = raw.redis.as_ref().and_then(|r| redis(&mut c, r));
    let regions = regions(&mut c, &raw, redis.as_ref());
    let invalidation = invalidation(&mut c, &raw);
    let access_log = access_log(&mut c, &raw);
    let empty = RawRule::default();
    let defaults = match &raw.defaults {
        Some(d) => {
            if let Some(n) = &d.value.name {
                c.error(
                    n,
                    "defaults.name",
                    "defaults apply to every rule and cannot have a name",
                );
            }
            if let Some(m) = &d.value.matcher {
                c.error(
                    m,
                    "defaults.match",
                    "defaults apply to every rule and cannot have a match",
                );
            }
            &d.value
        }
        None => &empty,
    };
    let mut rules = Vec::new();
    let mut spans = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let merged = with_defaults(&r.value, defaults);
        if let Some(rule) = rule(&mut c, i, r, &merged, &memory, redis.is_some()) {
            rules.push(rule);
            spans.push(r);
        }
    }
    cross_rule_checks(&mut c, &rules, &spans);
    host_warnings(&mut c, &rules, &spans);
    // A trusted proxy's `X-Forwarded-Proto` reaches the backend (a shop
    // behind a TLS front end needs it, or it redirects every request to
    // https), so it keys the entry: an answer for http (a redirect, `http://`
    // links) is never served to https.
    if raw.trusted_proxies.as_ref().is_some_and(|t| !t.is_empty()) {
        let proto = http::HeaderName::from_static("x-forwarded-proto");
        for rule in &mut rules {
            if !rule.inputs.forwarded.contains(&proto) {
                rule.inputs.forwarded.push(proto.clone());
            }
        }
    }
    let rules = match RuleSet::new(rules) {
        Ok(set) => Some(set),
        Err((i, msg)) => {
            let at = spans[i];
            c.error(at, &format!("rules[{i}].match.path"), msg);
            None
        }
    };

    if let (Some(l), Some(a), Some(v)) = (
        listen,
        &admin,
        raw.admin.as_ref().and_then(|a| a.listen.as_ref()),
    ) && l == a.listen
    {
        c.error(v, "admin.listen", "must differ from `listen`");
    }
    let mut trusted_proxies = Vec::new();
    for v in raw.trusted_proxies.iter().flatten() {
        let text = v.value.trim();
        let net = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match net {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => c.error(
                v,
                "trusted_proxies",
                format!("`{text}` is not an address or CIDR, e.g. 10.0.0.0/8"),
            ),
        }
    }
    match (listen, upstream, admin, rules) {
        (Some(listen), Some(upstream), Some(admin), Some(rules)) if c.errors.is_empty() => {
            Ok(Loaded {
                config: Config {
                    source: source.to_owned(),
                    listen,
                    upstream,
                    admin,
                    memory,
                    limits,
                    redis,
                    regions,
                    invalidation,
                    access_log,
                    digest: String::new(),
                    trusted_proxies,
                    rules,
                },
                warnings: c.warnings,
            })
        }
        _ => Err(c.errors),
    }
}

/// `invalidation:`.
/// `log.access`: `all`, `errors`, `off` or a share (`1%`).
fn access_log(c: &mut Check, raw: &RawConfig) -> AccessLog {
    let Some(v) = raw.log.as_ref().and_then(|l| l.access.as_ref()) else {
        return AccessLog::default();
    };
    let text = v.value.trim();
    match text {
        "all" => AccessLog::All,
        "errors" => AccessLog::Errors,
        "off" => AccessLog::Off,
        _ => match text.strip_suffix('%').map(|n| n.trim().parse::<f64>()) {
            Some(Ok(p)) if p > 0.0 && p <= 100.0 => AccessLog::Sample(p / 100.0),
            _ => {
                c.error(
                    v,
                    "log.access",
                    format!("`{text}`: give all, errors, off or a share such as 1%"),
                );
                AccessLog::default()
            }
        },
    }
}

fn invalidation(c: &mut Check, raw: &RawConfig) -> Invalidation {
    let mut inv = Invalidation::default();
    let Some(i) = &raw.invalidation else {
        return inv;
    };
    if let Some(r) = &i.repeat_after {
        inv.repeat_after = c.positive(r, "invalidation.repeat_after");
    }
    if let Some(n) = &i.region_log {
        if n.value == 0 {
            c.error(n, "invalidation.region_log", "must keep at least one purge");
        } else {
            inv.region_log = n.value;
        }
    }
    inv
}

fn limits(c: &mut Check, raw: &RawConfig) -> Limits {
    let d = Limits::default();
    let Some(l) = &raw.limits else { return d };
    let count = |c: &mut Check, v: &Option<Sp<u64>>, field: &str, dflt: usize| match v {
        Some(n) if n.value > MAX_COUNT => {
            c.error(
                n,
                field,
                format!("{} is more than the most allowed, {MAX_COUNT}", n.value),
            );
            dflt
        }
        Some(n) if n.value > 0 => usize::try_from(n.value).unwrap_or(usize::MAX),
        Some(n) => {
            c.error(n, field, "must be greater than zero");
            dflt
        }
        None => dflt,
    };
    let header_bytes = l.max_header_bytes.as_ref().and_then(|v| {
        let n = c.size(v, "limits.max_header_bytes")?;
        if n < 8192 {
            c.error(v, "limits.max_header_bytes", "must be at least 8KiB");
        }
        usize::try_from(n).ok()
    });
    Limits {
        header_timeout: l
            .header_timeout
            .as_ref()
            .and_then(|v| c.positive(v, "limits.header_timeout"))
            .unwrap_or(d.header_timeout),
        max_header_bytes: header_bytes.unwrap_or(d.max_header_bytes),
        max_headers: count(c, &l.max_headers, "limits.max_headers", d.max_headers),
        max_body: l
            .max_body
            .as_ref()
            .and_then(|v| c.size(v, "limits.max_body"))
            .unwrap_or(d.max_body),
        max_connections: count(
            c,
            &l.max_connections,
            "limits.max_connections",
            d.max_connections,
        ),
        shutdown_grace: l
            .shutdown_grace
            .as_ref()
            .and_then(|v| c.duration(v, "limits.shutdown_grace"))
            .unwrap_or(d.shutdown_grace),
        idle_timeout: l
            .idle_timeout
            .as_ref()
            .and_then(|v| c.positive(v, "limits.idle_timeout"))
            .unwrap_or(d.idle_timeout),
        warm_in_flight: count(
            c,
            &l.warm_in_flight,
            "limits.warm_in_flight",
            d.warm_in_flight,
        ),
        verify_in_flight: count(
            c,
            &l.verify_in_flight,
            "limits.verify_in_flight",
            d.verify_in_flight,
        ),
    }
}

fn admin(c: &mut Check, raw: &RawConfig) -> Option<Admin> {
    let a = raw.admin.as_ref();
    let listen = match a.and_then(|a| a.listen.as_ref()) {
        Some(v) => c.addr(v, "admin.listen")?,
        None => DEFAULT_ADMIN_LISTEN.parse().ok()?,
    };
    let token = a
        .and_then(|a| a.token.as_ref())
        .filter(|t| !t.value.is_empty());
    if let (Some(v), None) = (a.and_then(|a| a.listen.as_ref()), token)
        && !listen.ip().is_loopback()
    {
        c.error(
            v,
            "admin.listen",
            "an admin listener beyond loopback needs admin.token",
        );
    }
    Some(Admin {
        listen,
        token: token.map(|t| t.value.clone()),
        purge_on_proxy_port: a
            .and_then(|a| a.purge_on_proxy_port.as_ref())
            .is_none_or(|v| v.value),
    })
}
