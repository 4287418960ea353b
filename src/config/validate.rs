//! Turns the raw file into a typed [`Config`]: every error is collected with
//! its place, so one `sidecache check` shows them all.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::Method;

use super::raw::{RawConfig, RawRule, Sp};
use super::*;
use std::num::NonZeroU32;

use crate::cache::Tier;
use crate::ratelimit;
use crate::rules::{
    RateLimit, Rule, RuleSet, Scope, Template, Trigger, Ttl, Use, Var, WriteThrough, route_params,
};

/// The longest duration any field takes: ten years.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The largest count any field takes (connections, concurrency, queue).
const MAX_COUNT: u64 = 1_000_000;

/// Collects problems while walking the file.
struct Check {
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

fn pos<T>(sp: &Sp<T>) -> Option<Pos> {
    Some(Pos {
        line: sp.referenced.line(),
        column: sp.referenced.column(),
    })
}

impl Check {
    fn error<T>(&mut self, at: &Sp<T>, field: &str, message: impl Into<String>) {
        self.errors.push(Problem {
            pos: pos(at),
            field: field.to_owned(),
            message: message.into(),
        });
    }

    fn warn<T>(&mut self, at: &Sp<T>, field: &str, message: impl Into<String>) {
        self.warnings.push(Problem {
            pos: pos(at),
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// The value `v` names among `choices`; otherwise an error listing them.
    fn choice<T: Copy>(&mut self, v: &Sp<String>, field: &str, choices: &[(&str, T)]) -> Option<T> {
        if let Some((_, t)) = choices.iter().find(|(name, _)| *name == v.value) {
            return Some(*t);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let hint = match names.as_slice() {
            [only] => format!("the only value is `{only}`"),
            [rest @ .., last] => format!("use {} or {last}", rest.join(", ")),
            [] => "no value is accepted".to_owned(),
        };
        self.error(v, field, format!("`{}`: {hint}", v.value));
        None
    }

    fn duration(&mut self, v: &Sp<String>, field: &str) -> Option<Duration> {
        match humantime::parse_duration(v.value.trim()) {
            // Longer would overflow the clock arithmetic it is used in;
            // what `check` accepts, `run` must run.
            Ok(d) if d > MAX_DURATION => {
                self.error(
                    v,
                    field,
                    format!("`{}` is longer than the most allowed, 10 years", v.value),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.error(
                    v,
                    field,
                    format!(
                        "`{}` is not a duration ({e}); write e.g. 100ms, 30s, 5m, 24h, 7d",
                        v.value
                    ),
                );
                None
            }
        }
    }

    fn positive(&mut self, v: &Sp<String>, field: &str) -> Option<Duration> {
        let d = self.duration(v, field)?;
        if d.is_zero() {
            self.error(v, field, "must be greater than zero");
            return None;
        }
        Some(d)
    }

    fn size(&mut self, v: &Sp<String>, field: &str) -> Option<u64> {
        match v.value.trim().parse::<bytesize::ByteSize>() {
            Ok(s) if s.as_u64() > 0 => Some(s.as_u64()),
            Ok(_) => {
                self.error(v, field, "must be greater than zero");
                None
            }
            Err(e) => {
                self.error(
                    v,
                    field,
                    format!(
                        "`{}` is not a size ({e}); write e.g. 512KiB, 1MiB, 256MiB",
                        v.value
                    ),
                );
                None
            }
        }
    }

    fn addr(&mut self, v: &Sp<String>, field: &str) -> Option<SocketAddr> {
        match v.value.trim().parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    v,
                    field,
                    format!("`{}` is not an address such as 0.0.0.0:8080", v.value),
                );
                None
            }
        }
    }
}

/// Validates the whole file.
pub(super) fn validate(raw: RawConfig, source: &Path) -> Result<Loaded, Vec<Problem>> {
    let mut c = Check {
        errors: Vec::new(),
        warnings: Vec::new(),
    };
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
    };
    let limits = limits(&mut c, &raw);
    let redis = raw.redis.as_ref().map(|r| RedisConfig {
        url: r.url.value.trim().to_owned(),
        key_prefix: r.key_prefix.as_ref().map_or(DEFAULT_KEY_PREFIX.to_owned(), |p| {
            // An empty prefix would let a prefix purge reach every key of
            // the database, other applications' included.
            if p.value.is_empty() || p.value.contains('#') {
                c.error(
                    p,
                    "redis.key_prefix",
                    "must not be empty or hold `#`: sidecache's keys must be told apart from others'",
                );
            }
            p.value.clone()
        }),
        timeout: r
            .timeout
            .as_ref()
            .and_then(|t| c.positive(t, "redis.timeout"))
            .unwrap_or(DEFAULT_REDIS_TIMEOUT),
        disconnect_grace: r
            .disconnect_grace
            .as_ref()
            .and_then(|t| c.duration(t, "redis.disconnect_grace"))
            .unwrap_or(DEFAULT_DISCONNECT_GRACE),
    });
    if let Some(r) = &raw.redis
        && let Err(e) = redis::Client::open(r.url.value.trim())
    {
        c.error(&r.url, "redis.url", format!("not a Redis URL: {e}"));
    }

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
        if let Some(rule) = rule(&mut c, i, r, defaults, &memory, redis.is_some()) {
            rules.push(rule);
            spans.push(r);
        }
    }
    cross_rule_checks(&mut c, &rules, &spans);
    host_warnings(&mut c, &rules, &spans);
    let rules = match RuleSet::new(rules) {
        Ok(set) => Some(set),
        Err((i, msg)) => {
            let at = spans[i];
            c.error(
                at,
                &format!("rules[{i}].match.path"),
                format!("conflicts with another rule: {msg}"),
            );
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
                    trusted_proxies,
                    rules,
                },
                warnings: c.warnings,
            })
        }
        _ => Err(c.errors),
    }
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
    }
}

fn upstream(c: &mut Check, raw: &RawConfig) -> Option<Upstream> {
    let u = &raw.upstream;
    let url = match u.url.value.trim().parse::<http::Uri>() {
        Ok(url) if url.scheme_str() == Some("http") && url.authority().is_some() => {
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
                "must be an http:// URL with a host, e.g. http://127.0.0.1:3000",
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
    Some(Upstream {
        url: url?,
        connect_timeout: connect_timeout?,
        timeout: timeout?,
        max_concurrency: max_concurrency?,
        queue,
    })
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
    })
}

fn rule(
    c: &mut Check,
    i: usize,
    r: &Sp<RawRule>,
    d: &RawRule,
    memory: &Memory,
    have_redis: bool,
) -> Option<Rule> {
    let field = |f: &str| format!("rules[{i}].{f}");
    let raw = &r.value;
    let name = match &raw.name {
        Some(n)
            if !n.value.is_empty()
                && n.value
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.')) =>
        {
            n.value.clone()
        }
        Some(n) => {
            c.error(
                n,
                &field("name"),
                "use letters, digits, `-`, `_` and `.` only",
            );
            return None;
        }
        None => {
            c.error(r, &field("name"), "every rule needs a name");
            return None;
        }
    };
    let Some(m) = &raw.matcher else {
        c.error(
            r,
            &field("match"),
            "every rule needs a match with at least a path",
        );
        return None;
    };
    let path = m.value.path.value.clone();
    if let Some(h) = &m.value.host {
        let bare = h.value.strip_prefix("*.").unwrap_or(&h.value);
        if bare.is_empty() || !bare.is_ascii() || bare.contains([':', '*', '/', ' ']) {
            c.error(
                h,
                &field("match.host"),
                "a host name only (`shop.example` or `*.shop.example`): no port, no other `*`, ASCII (punycode for other names)",
            );
        }
    }
    if !path.starts_with('/') {
        c.error(&m.value.path, &field("match.path"), "must start with `/`");
        return None;
    }
    let methods = match &m.value.methods {
        Some(list) => {
            let mut out = Vec::new();
            for v in list {
                match Method::from_bytes(v.value.as_bytes()) {
                    Ok(meth) if v.value.bytes().all(|b| b.is_ascii_uppercase()) => out.push(meth),
                    _ => c.error(
                        v,
                        &field("match.methods"),
                        format!("`{}` is not an HTTP method (write it in capitals)", v.value),
                    ),
                }
            }
            out
        }
        None => vec![Method::GET, Method::HEAD],
    };
    let params = route_params(&path);
    let cache = raw
        .cache
        .as_ref()
        .or(d.cache.as_ref())
        .is_none_or(|v| v.value);

    let key_src = raw.key.as_ref().or(d.key.as_ref());
    // Each field is checked even when an earlier one failed, so that one
    // `check` lists every error.
    let key = match key_src {
        Some(k) if k.value.trim().is_empty() => {
            c.error(k, &field("key"), "must not be empty");
            None
        }
        Some(k) => Template::parse(&k.value, Use::Key, &params)
            .map_err(|e| c.error(k, &field("key"), e))
            .ok()
            .filter(|t| {
                // Every product would be served as the first one fetched.
                let constant = t.is_constant() && !params.is_empty();
                if constant {
                    c.error(
                        k,
                        &field("key"),
                        format!(
                            "has no placeholder, though the path has `{{{}}}`: every request would share one entry",
                            params[0]
                        ),
                    );
                }
                !constant
            }),
        None => Template::parse(DEFAULT_KEY, Use::Key, &params).ok(),
    };
    let ttl = match raw.ttl.as_ref().or(d.ttl.as_ref()) {
        Some(v) if v.value.trim() == "origin" => Some(Ttl::Origin),
        Some(v) => c.positive(v, &field("ttl")).map(Ttl::Fixed),
        None => Some(Ttl::Fixed(DEFAULT_TTL)),
    };
    let tier = match raw.tier.as_ref().or(d.tier.as_ref()) {
        None => Tier::Both,
        Some(v) => c
            .choice(
                v,
                &field("tier"),
                &[
                    ("memory", Tier::Memory),
                    ("redis", Tier::Redis),
                    ("both", Tier::Both),
                ],
            )
            .unwrap_or(Tier::Memory),
    };
    let tier = if have_redis || tier == Tier::Memory {
        tier
    } else {
        if let Some(v) = raw.tier.as_ref().filter(|_| tier == Tier::Redis) {
            c.warn(
                v,
                &field("tier"),
                "no redis is configured: this rule is cached in memory only",
            );
        }
        Tier::Memory
    };
    let mut tags = Vec::new();
    for t in raw.tags.as_ref().or(d.tags.as_ref()).into_iter().flatten() {
        match Template::parse(&t.value, Use::Tag, &params) {
            Ok(tpl) => tags.push(tpl),
            Err(e) => c.error(t, &field("tags"), e),
        }
    }
    let statuses = match raw.statuses.as_ref().or(d.statuses.as_ref()) {
        Some(list) => {
            for s in list {
                if !(100..=599).contains(&s.value) {
                    c.error(
                        s,
                        &field("statuses"),
                        format!("{} is not an HTTP status", s.value),
                    );
                } else if s.value < 200 || s.value == 206 || s.value == 304 {
                    c.error(
                        s,
                        &field("statuses"),
                        format!("{} is never stored: only full, final answers are", s.value),
                    );
                }
            }
            list.iter().map(|s| s.value).collect()
        }
        None => DEFAULT_STATUSES.to_vec(),
    };
    let max_object_size = match raw.max_object_size.as_ref().or(d.max_object_size.as_ref()) {
        Some(v) => c.size(v, &field("max_object_size")),
        None => Some(memory.max_object_size),
    };
    let flag = |a: &Option<Sp<bool>>, b: &Option<Sp<bool>>| {
        a.as_ref().or(b.as_ref()).is_some_and(|v| v.value)
    };
    let triggers = triggers(c, raw, &field, key.as_ref(), &tags);
    let never = raw
        .stale
        .as_ref()
        .or(d.stale.as_ref())
        .and_then(|v| c.choice(v, &field("stale"), &[("never", true)]))
        .unwrap_or(false);
    let window =
        |c: &mut Check, own: &Option<Sp<String>>, dflt: &Option<Sp<String>>, name: &str| {
            if never {
                return Some(Duration::ZERO);
            }
            own.as_ref()
                .or(dflt.as_ref())
                .and_then(|v| c.duration(v, &field(name)))
        };
    let collapse_global = raw
        .collapse
        .as_ref()
        .or(d.collapse.as_ref())
        .and_then(|v| c.choice(v, &field("collapse"), &[("local", false), ("global", true)]))
        .unwrap_or(false);
    let stale_while_revalidate = window(
        c,
        &raw.stale_while_revalidate,
        &d.stale_while_revalidate,
        "stale_while_revalidate",
    );
    let stale_if_error = window(c, &raw.stale_if_error, &d.stale_if_error, "stale_if_error");
    let mut allow_empty = Vec::new();
    for a in raw
        .allow_empty
        .as_ref()
        .or(d.allow_empty.as_ref())
        .into_iter()
        .flatten()
    {
        let named = ["query.", "header.", "cookie."]
            .iter()
            .any(|p| a.value.starts_with(p));
        if !named || !key_src.is_some_and(|k| k.value.contains(&format!("{{{}}}", a.value))) {
            c.error(
                a,
                &field("allow_empty"),
                format!(
                    "`{}` is not a query, header or cookie placeholder of this rule's key",
                    a.value
                ),
            );
        }
        allow_empty.push(a.value.clone());
    }
    let keep_for_revalidation = raw
        .keep_for_revalidation
        .as_ref()
        .or(d.keep_for_revalidation.as_ref())
        .and_then(|v| c.duration(v, &field("keep_for_revalidation")));
    let write_through = match &raw.write_through {
        Some(wt) => {
            let mut methods = Vec::new();
            for m in &wt.value.methods {
                match Method::from_bytes(m.value.as_bytes()) {
                    Ok(meth) if !matches!(meth, Method::GET | Method::HEAD) => methods.push(meth),
                    _ => c.error(
                        m,
                        &field("write_through.methods"),
                        format!("`{}` is not a write method", m.value),
                    ),
                }
            }
            let publish = wt.value.publish.as_ref().and_then(|p| {
                Template::parse(&p.value, Use::Tag, &params)
                    .map_err(|e| c.error(p, &field("write_through.publish"), e))
                    .ok()
            });
            Some(WriteThrough { methods, publish })
        }
        None => None,
    };
    let rate_limit = rate_limit(c, raw, d, &field, &params, have_redis);
    pending_fields(c, raw, &field);
    let (Some(key), Some(ttl), Some(max_object_size)) = (key, ttl, max_object_size) else {
        return None;
    };

    Some(Rule {
        name,
        index: 0,
        methods,
        path,
        host: m.value.host.as_ref().map(|h| h.value.to_ascii_lowercase()),
        cache,
        key,
        ttl,
        tier,
        tags,
        statuses,
        max_object_size,
        allow_set_cookie: flag(&raw.allow_set_cookie, &d.allow_set_cookie),
        allow_authorized: flag(&raw.allow_authorized, &d.allow_authorized),
        allow_private: flag(&raw.allow_private, &d.allow_private),
        sliding: flag(&raw.sliding, &d.sliding),
        collapse_global,
        stale_while_revalidate,
        stale_if_error,
        keep_for_revalidation,
        allow_empty,
        origin_tags: flag(&raw.origin_tags, &d.origin_tags),
        write_through,
        triggers,
        rate_limit,
    })
}

/// `rate_limit: { key, rate, burst, scope }`, the rule's own or the defaults'.
fn rate_limit(
    c: &mut Check,
    raw: &RawRule,
    d: &RawRule,
    field: &dyn Fn(&str) -> String,
    params: &[String],
    have_redis: bool,
) -> Option<RateLimit> {
    let r = raw.rate_limit.as_ref().or(d.rate_limit.as_ref())?;
    let l = &r.value;
    let key = Template::parse(&l.key.value, Use::Key, params)
        .map_err(|e| c.error(&l.key, &field("rate_limit.key"), e))
        .ok();
    let rate = ratelimit::parse_rate(&l.rate.value)
        .map_err(|e| c.error(&l.rate, &field("rate_limit.rate"), e))
        .ok();
    let burst = match &l.burst {
        Some(b) => match NonZeroU32::new(b.value) {
            Some(n) => Some(n),
            None => {
                c.error(b, &field("rate_limit.burst"), "must be at least 1");
                return None;
            }
        },
        None => None,
    };
    let scope = match &l.scope {
        None => Scope::Local,
        Some(s) => {
            let choices = [("local", Scope::Local), ("global", Scope::Global)];
            match c.choice(s, &field("rate_limit.scope"), &choices)? {
                Scope::Global if !have_redis => {
                    c.warn(
                        s,
                        &field("rate_limit.scope"),
                        "global needs redis; counted per replica",
                    );
                    Scope::Local
                }
                scope => scope,
            }
        }
    };
    let (Some(key), Some((rate, per))) = (key, rate) else {
        return None;
    };
    ratelimit::limit(key, rate, per, burst, scope)
}

/// `invalidate_on: ["PUT /products/{id}"]`: each pattern must define the
/// path parameters the rule's key and tags use.
fn triggers(
    c: &mut Check,
    raw: &RawRule,
    field: &dyn Fn(&str) -> String,
    key: Option<&Template>,
    tags: &[Template],
) -> Vec<Trigger> {
    let mut out = Vec::new();
    for t in raw.invalidate_on.iter().flatten() {
        let Some((method, path)) = t.value.trim().split_once(' ') else {
            c.error(
                t,
                &field("invalidate_on"),
                format!("`{}`: write it as \"METHOD /path/{{param}}\"", t.value),
            );
            continue;
        };
        let path = path.trim();
        let method = match Method::from_bytes(method.as_bytes()) {
            Ok(m)
                if !matches!(m, Method::GET | Method::HEAD)
                    && method.bytes().all(|b| b.is_ascii_uppercase()) =>
            {
                m
            }
            _ => {
                c.error(
                    t,
                    &field("invalidate_on"),
                    format!("`{method}` is not a write method (POST, PUT, PATCH, DELETE, ...)"),
                );
                continue;
            }
        };
        if !path.starts_with('/') {
            c.error(
                t,
                &field("invalidate_on"),
                format!("`{path}` must start with `/`"),
            );
            continue;
        }
        let defined = route_params(path);
        let needed = key.into_iter().chain(tags).flat_map(Template::params);
        let missing: Vec<String> = needed
            .filter(|p| !defined.contains(p))
            .map(|p| format!("{{{p}}}"))
            .collect();
        if !missing.is_empty() {
            c.error(
                t,
                &field("invalidate_on"),
                format!(
                    "`{path}` does not define {}, which the rule's key or tags use",
                    missing.join(", ")
                ),
            );
            continue;
        }
        out.push(Trigger {
            method,
            path: path.to_owned(),
        });
    }
    out
}

/// Rule fields this version reads but does not act on yet: said once, as a
/// warning, so a config written for a later version still loads.
fn pending_fields(c: &mut Check, raw: &RawRule, field: &dyn Fn(&str) -> String) {
    if let Some(first) = raw.warm_on.iter().flatten().next() {
        c.warn(
            first,
            &field("warm_on"),
            "accepted but not acted on by this version",
        );
    }
}

/// When some rules name a host, the proxy serves several: a caching rule
/// that matches any host and whose key leaves `{host}` out would serve one
/// host's answer for another's.
fn host_warnings(c: &mut Check, rules: &[Rule], spans: &[&Sp<RawRule>]) {
    if rules.iter().all(|r| r.host.is_none()) {
        return;
    }
    for (r, at) in rules.iter().zip(spans) {
        if r.cache && r.host.is_none() && !r.key.uses(&Var::Host) {
            c.warn(
                *at,
                "key",
                format!(
                    "rule `{}` matches any host but its key `{}` leaves out {{host}}: \
                     two hosts' answers would share one entry",
                    r.name, r.key
                ),
            );
        }
    }
}

/// Names must be unique; two rules must not match the same requests on the
/// same path; two caching rules must not be able to render the same key.
fn cross_rule_checks(c: &mut Check, rules: &[Rule], spans: &[&Sp<RawRule>]) {
    for (j, b) in rules.iter().enumerate() {
        for a in &rules[..j] {
            let at = spans[j];
            if a.name == b.name {
                c.error(at, "name", format!("rule name `{}` is used twice", b.name));
                continue;
            }
            let same_route = a.path == b.path
                && a.host == b.host
                && a.methods.iter().any(|m| b.methods.contains(m));
            if same_route {
                c.error(at, "match", format!("rule `{}` matches the same path, host and methods as `{}` before it, so it would never be used", b.name, a.name));
                continue;
            }
            if !(a.cache && b.cache) {
                continue;
            }
            // One key template over `{path}` keeps rules on different paths
            // apart; on the same path only `{host}` can (with other hosts).
            let shared_url_key = a.key == b.key
                && a.key.uses(&Var::Path)
                && (a.path != b.path || (a.key.uses(&Var::Host) && a.host != b.host));
            if !shared_url_key && a.key.may_overlap(&b.key) {
                c.error(at, "key", format!("key `{}` of rule `{}` can render the same key as `{}` of rule `{}`; give each rule its own key prefix", b.key, b.name, a.key, a.name));
            }
        }
    }
}
