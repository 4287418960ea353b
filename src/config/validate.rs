//! Turns the raw file into a typed [`Config`]: the top-level sections
//! here, each rule in [`rule`](super::rule) (after its defaults are merged
//! in), the checks across rules in [`across`](super::across). Every error is
//! collected with its place, so one `sidecache check` shows them all.

use std::path::Path;

use super::across::{cross_rule_checks, host_warnings};
use super::check::{Check, MAX_COUNT};
use super::raw::{RawConfig, RawRedis, RawRegionRedis, RawRule, Sp};
use super::rule::{rule, with_defaults};
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

/// `redis:`: one server's `url` or a `cluster`'s seed nodes, and the
/// settings both share.
fn redis(c: &mut Check, r: &Sp<RawRedis>) -> Option<RedisConfig> {
    redis_at(c, &r.value, r, "redis")
}

/// A `redis:` map found at `at` (`redis`, `regions.us.redis`).
fn redis_at<T>(c: &mut Check, raw: &RawRedis, r: &Sp<T>, at: &str) -> Option<RedisConfig> {
    let field = |f: &str| format!("{at}.{f}");
    let servers = match (&raw.url, &raw.cluster) {
        (Some(url), None) => {
            let url = url_or_error(c, &url.value, url, &field("url"))?;
            RedisServers::Url(url)
        }
        (None, Some(seeds)) => {
            if seeds.value.is_empty() {
                c.error(seeds, &field("cluster"), "lists no node: give at least one");
                return None;
            }
            let mut urls = Vec::with_capacity(seeds.value.len());
            for seed in &seeds.value {
                let url = url_or_error(c, &seed.value, seed, &field("cluster"))?;
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    c.error(
                        seed,
                        &field("cluster"),
                        "a cluster node is reached over TCP: redis://host:port or rediss://host:port",
                    );
                    return None;
                }
                urls.push(url);
            }
            if urls.iter().any(|u| u.starts_with("rediss://"))
                && !urls.iter().all(|u| u.starts_with("rediss://"))
            {
                c.error(
                    seeds,
                    &field("cluster"),
                    "mixes rediss:// and redis://: a cluster's nodes speak TLS or none do",
                );
                return None;
            }
            RedisServers::Cluster(urls)
        }
        (Some(url), Some(_)) => {
            c.error(
                url,
                &field("url"),
                "give `url` (one server) or `cluster` (its nodes), not both",
            );
            return None;
        }
        (None, None) => {
            c.error(
                r,
                at,
                "needs `url` (one server) or `cluster` (a Redis Cluster's nodes)",
            );
            return None;
        }
    };
    let cluster = matches!(servers, RedisServers::Cluster(_));
    let key_prefix = raw
        .key_prefix
        .as_ref()
        .map_or(DEFAULT_KEY_PREFIX.to_owned(), |p| {
            // An empty prefix would let a prefix purge reach every key of
            // the database, other applications' included.
            if p.value.is_empty() || p.value.contains('#') {
                c.error(
                    p,
                    &field("key_prefix"),
                    "must not be empty or hold `#`: sidecache's keys must be told apart from others'",
                );
            }
            // Braces in the prefix would decide every key's cluster slot.
            if cluster && p.value.contains(['{', '}']) {
                c.error(
                    p,
                    &field("key_prefix"),
                    "must not hold `{` or `}` on a cluster: they would put every key in one slot",
                );
            }
            p.value.clone()
        });
    let ca = raw
        .ca
        .as_ref()
        .and_then(|ca| redis_ca(c, ca, servers.tls(), &field("ca")));
    Some(RedisConfig {
        servers,
        key_prefix,
        timeout: raw
            .timeout
            .as_ref()
            .and_then(|t| c.positive(t, &field("timeout")))
            .unwrap_or(DEFAULT_REDIS_TIMEOUT),
        disconnect_grace: raw
            .disconnect_grace
            .as_ref()
            .and_then(|t| c.duration(t, &field("disconnect_grace")))
            .unwrap_or(DEFAULT_DISCONNECT_GRACE),
        ca,
    })
}

/// `memory.warm`: `from: hot` (with Redis) and its `top`, and the URL
/// file read now (so a reload reads it again), each line a path or an
/// `http(s)://` URL.
fn warm_up(c: &mut Check, w: &Sp<super::raw::RawWarmUp>, redis: bool) -> Option<WarmUp> {
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
fn warm_urls(c: &mut Check, file: &Sp<String>) -> Option<Vec<String>> {
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

/// A region's name: what metrics and `/readyz` label it with.
fn region_name(c: &mut Check, at: &Sp<impl std::fmt::Debug>, name: &str, field: &str) -> bool {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
    if !fine {
        c.error(
            at,
            field,
            format!("`{name}` is not a region name: letters, digits, `-` and `_`, at most 64"),
        );
    }
    fine
}

/// `region:` and `regions:`: each other region's Redis, with this
/// region's own Redis to record purges in first.
fn regions(c: &mut Check, raw: &RawConfig, local: Option<&RedisConfig>) -> Option<Regions> {
    let Some(list) = &raw.regions else {
        if let Some(r) = &raw.region {
            c.warn(
                r,
                "region",
                "no `regions:` are listed: purges stay in this region",
            );
        }
        return None;
    };
    let Some(here) = &raw.region else {
        c.error(
            list,
            "regions",
            "needs `region:`, the name of this replica's own region",
        );
        return None;
    };
    let here_ok = region_name(c, here, here.value.trim(), "region");
    if raw.redis.is_none() {
        c.error(
            list,
            "regions",
            "needs `redis:`: a purge is recorded in this region's Redis before it is relayed",
        );
        return None;
    }
    let local = local?;
    let mut others = Vec::with_capacity(list.value.len());
    for (name, region) in &list.value {
        let at = format!("regions.{name}");
        if !region_name(c, region, name, &at) {
            continue;
        }
        if name == here.value.trim() {
            c.error(
                region,
                &at,
                "names this replica's own region: list only the other regions",
            );
            continue;
        }
        let field = format!("{at}.redis");
        let redis = match &region.value.redis.value {
            RawRegionRedis::Url(url) => {
                let Some(url) = url_or_error(c, url, &region.value.redis, &field) else {
                    continue;
                };
                RedisConfig {
                    servers: RedisServers::Url(url),
                    key_prefix: local.key_prefix.clone(),
                    timeout: DEFAULT_REGION_TIMEOUT,
                    disconnect_grace: local.disconnect_grace,
                    ca: None,
                }
            }
            RawRegionRedis::Map(map) => {
                let Some(mut r) = redis_at(c, map, &region.value.redis, &field) else {
                    continue;
                };
                if map.key_prefix.is_none() {
                    r.key_prefix.clone_from(&local.key_prefix);
                }
                if map.timeout.is_none() {
                    r.timeout = DEFAULT_REGION_TIMEOUT;
                }
                if let Some(g) = &map.disconnect_grace {
                    c.warn(
                        g,
                        &format!("{field}.disconnect_grace"),
                        "applies to this region's own Redis only; ignored here",
                    );
                }
                r
            }
        };
        if let RedisServers::Url(u) = &redis.servers
            && u.starts_with("redis+unix")
        {
            c.error(
                &region.value.redis,
                &field,
                "another region is reached over TCP: redis://host:port or rediss://host:port",
            );
            continue;
        }
        if redis.servers == local.servers {
            c.error(
                &region.value.redis,
                &field,
                "is this region's own Redis (`redis:`): give the other region's",
            );
            continue;
        }
        others.push(Region {
            name: name.clone(),
            redis,
        });
    }
    if others.is_empty() && list.value.is_empty() {
        c.warn(
            list,
            "regions",
            "lists no region: purges stay in this region",
        );
    }
    here_ok.then(|| Regions {
        here: here.value.trim().to_owned(),
        others,
    })
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

/// A Redis URL the client accepts, trimmed.
fn url_or_error<T>(c: &mut Check, url: &str, at: &Sp<T>, field: &str) -> Option<String> {
    let trimmed = url.trim();
    match redis::Client::open(trimmed) {
        Ok(_) => Some(trimmed.to_owned()),
        Err(e) => {
            c.error(at, field, format!("not a Redis URL: {e}"));
            None
        }
    }
}

/// `redis.ca`: a readable PEM file holding at least one certificate, for a
/// `rediss://` URL.
fn redis_ca(c: &mut Check, ca: &Sp<String>, tls: bool, field: &str) -> Option<Vec<u8>> {
    if !tls {
        c.error(ca, field, "only a rediss:// URL uses TLS");
        return None;
    }
    let pem = match std::fs::read(ca.value.trim()) {
        Ok(pem) => pem,
        Err(e) => {
            c.error(ca, field, format!("cannot read `{}`: {e}", ca.value));
            return None;
        }
    };
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .filter(Result::is_ok)
        .count();
    if certs == 0 {
        c.error(ca, field, "holds no PEM certificate");
        return None;
    }
    Some(pem)
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

fn upstream(c: &mut Check, raw: &RawConfig) -> Option<Upstream> {
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
fn upstream_tls(
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
