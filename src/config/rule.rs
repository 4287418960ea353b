//! One rule: `defaults:` merged into it first ([`with_defaults`]), so every
//! field a rule may carry is taken from the defaults when the rule leaves
//! it out; then each field checked on its own, so one `check` lists every
//! error of the rule.
//!
//! Longer than most files: one short function per field of a rule, in
//! the order the file documents them.

use std::num::NonZeroU32;
use std::time::Duration;

use http::Method;

use super::check::Check;
use super::raw::{RawCompress, RawRule, RawTrigger, RawWarm, Sp};
use super::{DEFAULT_KEY, DEFAULT_STATUSES, DEFAULT_TTL, Memory};
use crate::cache::Tier;
use crate::cache::encoding::Encoding;
use crate::ratelimit;
use crate::rules::{
    KeyInputs, PassIf, RateLimit, Rollout, Route, Rule, Scope, SetCookie, Template, Trigger, Ttl,
    Use, Verify, Warm, WriteThrough, route_params,
};

/// `rule` with every field it leaves out taken from `d` (the defaults),
/// each with its own place in the file. A field added to [`RawRule`] must be
/// added here too: the struct is written out whole.
pub(super) fn with_defaults(rule: &RawRule, d: &RawRule) -> RawRule {
    fn or<T: Clone>(own: &Option<T>, d: &Option<T>) -> Option<T> {
        own.as_ref().or(d.as_ref()).cloned()
    }
    RawRule {
        name: rule.name.clone(),
        matcher: rule.matcher.clone(),
        cache: or(&rule.cache, &d.cache),
        key: or(&rule.key, &d.key),
        ttl: or(&rule.ttl, &d.ttl),
        tier: or(&rule.tier, &d.tier),
        tags: or(&rule.tags, &d.tags),
        origin_tags: or(&rule.origin_tags, &d.origin_tags),
        invalidate_on: or(&rule.invalidate_on, &d.invalidate_on),
        sliding: or(&rule.sliding, &d.sliding),
        refresh_ahead: or(&rule.refresh_ahead, &d.refresh_ahead),
        write_through: or(&rule.write_through, &d.write_through),
        stale_while_revalidate: or(&rule.stale_while_revalidate, &d.stale_while_revalidate),
        stale_if_error: or(&rule.stale_if_error, &d.stale_if_error),
        stale: or(&rule.stale, &d.stale),
        allow_empty: or(&rule.allow_empty, &d.allow_empty),
        ignore_query: or(&rule.ignore_query, &d.ignore_query),
        forward: or(&rule.forward, &d.forward),
        keep_for_revalidation: or(&rule.keep_for_revalidation, &d.keep_for_revalidation),
        collapse: or(&rule.collapse, &d.collapse),
        warm_on: or(&rule.warm_on, &d.warm_on),
        rollout: or(&rule.rollout, &d.rollout),
        verify: or(&rule.verify, &d.verify),
        rate_limit: or(&rule.rate_limit, &d.rate_limit),
        statuses: or(&rule.statuses, &d.statuses),
        max_object_size: or(&rule.max_object_size, &d.max_object_size),
        allow_set_cookie: or(&rule.allow_set_cookie, &d.allow_set_cookie),
        set_cookie: or(&rule.set_cookie, &d.set_cookie),
        pass_if: or(&rule.pass_if, &d.pass_if),
        allow_authorized: or(&rule.allow_authorized, &d.allow_authorized),
        allow_private: or(&rule.allow_private, &d.allow_private),
        downstream: or(&rule.downstream, &d.downstream),
        esi: or(&rule.esi, &d.esi),
        compress: or(&rule.compress, &d.compress),
    }
}

/// What a rule's checks share: where errors go and how its fields are named.
struct Ctx<'a> {
    c: &'a mut Check,
    i: usize,
}

impl Ctx<'_> {
    fn field(&self, f: &str) -> String {
        format!("rules[{}].{f}", self.i)
    }
}

/// The `i`-th rule, at `at` in the file, with the defaults already merged
/// into `raw`.
pub(super) fn rule(
    c: &mut Check,
    i: usize,
    at: &Sp<RawRule>,
    raw: &RawRule,
    memory: &Memory,
    have_redis: bool,
) -> Option<Rule> {
    let mut x = Ctx { c, i };
    let name = name(&mut x, at, raw)?;
    let (path, host, methods) = matcher(&mut x, at, raw)?;
    let params = route_params(&path);
    // Each field is checked even when an earlier one failed, so that one
    // `check` lists every error.
    let key = key(&mut x, raw, &params);
    let ttl = match &raw.ttl {
        Some(v) if v.value.trim() == "origin" => Some(Ttl::Origin),
        Some(v) => x.c.positive(v, &x.field("ttl")).map(Ttl::Fixed),
        None => Some(Ttl::Fixed(DEFAULT_TTL)),
    };
    let tier = tier(&mut x, raw, have_redis);
    let tags = tags(&mut x, raw, &params);
    let statuses = statuses(&mut x, raw);
    let max_object_size = match &raw.max_object_size {
        Some(v) => x.c.size(v, &x.field("max_object_size")),
        None => Some(memory.max_object_size),
    };
    let triggers = triggers(&mut x, raw, key.as_ref(), &tags);
    let (stale_while_revalidate, stale_if_error) = stale_windows(&mut x, raw);
    let collapse_global = raw
        .collapse
        .as_ref()
        .and_then(|v| {
            let choices = [("local", false), ("global", true)];
            x.c.choice(v, &x.field("collapse"), &choices)
        })
        .unwrap_or(false);
    let allow_empty = allow_empty(&mut x, raw);
    let ignore_query = ignore_query(&mut x, raw);
    let set_cookie = set_cookie(&mut x, raw);
    let pass_if = pass_if(&mut x, raw);
    let forward = forward(&mut x, raw);
    let keep_for_revalidation = raw
        .keep_for_revalidation
        .as_ref()
        .and_then(|v| x.c.duration(v, &x.field("keep_for_revalidation")));
    let write_through = write_through(&mut x, raw, &params);
    let rate_limit = rate_limit(&mut x, raw, &params, have_redis);
    let downstream = downstream(&mut x, raw);
    let refresh_ahead = refresh_ahead(&mut x, raw);
    let warm_on = warm_on(&mut x, raw);
    let rollout = rollout(&mut x, raw, &params);
    let verify = verify(&mut x, raw);
    let (Some(key), Some(ttl), Some(max_object_size)) = (key, ttl, max_object_size) else {
        return None;
    };
    let inputs = KeyInputs::of(&key, &forward);
    let compress = compress(&mut x, raw);
    let flag = |v: &Option<Sp<bool>>| v.as_ref().is_some_and(|v| v.value);
    if let Some(s) = raw
        .sliding
        .as_ref()
        .filter(|s| s.value && ttl == Ttl::Origin)
    {
        let message = "sliding renews a fixed ttl; under `ttl: origin` it does nothing";
        x.c.warn(s, &x.field("sliding"), message);
    }
    Some(Rule {
        name,
        index: 0,
        methods,
        path,
        host,
        cache: raw.cache.as_ref().is_none_or(|v| v.value),
        key,
        ttl,
        tier,
        tags,
        statuses,
        max_object_size,
        set_cookie,
        pass_if,
        allow_authorized: flag(&raw.allow_authorized),
        allow_private: flag(&raw.allow_private),
        esi: flag(&raw.esi),
        compress,
        sliding: flag(&raw.sliding),
        refresh_ahead,
        collapse_global,
        stale_while_revalidate,
        stale_if_error,
        keep_for_revalidation,
        allow_empty,
        ignore_query,
        inputs,
        origin_tags: flag(&raw.origin_tags),
        write_through,
        triggers,
        warm_on,
        rate_limit,
        downstream,
        rollout,
        verify,
    })
}

/// `verify: { sample, ignore, purge_on_mismatch }`.
fn verify(x: &mut Ctx<'_>, raw: &RawRule) -> Option<Verify> {
    let v = &raw.verify.as_ref()?.value;
    let sample = v
        .sample
        .value
        .trim()
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<f64>().ok())
        .filter(|n| (0.01..=100.0).contains(n));
    let Some(sample) = sample else {
        let message = "a share of hits from 0.01% to 100%, e.g. `1%`";
        x.c.error(&v.sample, &x.field("verify.sample"), message);
        return None;
    };
    let mut ignore = Vec::new();
    for field in &v.ignore {
        let path: Vec<String> = field.value.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            let message = "a JSON field, dotted for nested ones: `served_at`, `meta.request_id`";
            x.c.error(field, &x.field("verify.ignore"), message);
            return None;
        }
        ignore.push(path);
    }
    Some(Verify {
        sample: sample / 100.0,
        ignore,
        purge_on_mismatch: v.purge_on_mismatch.as_ref().is_some_and(|p| p.value),
    })
}

/// `rollout: { percent, by }`.
fn rollout(x: &mut Ctx<'_>, raw: &RawRule, params: &[String]) -> Option<Rollout> {
    let r = &raw.rollout.as_ref()?.value;
    let percent = r.percent.value;
    if !(0.0..=100.0).contains(&percent) {
        let message = "a share of requests from 0 to 100, e.g. `5` or `0.5`";
        x.c.error(&r.percent, &x.field("rollout.percent"), message);
        return None;
    }
    let by = match &r.by {
        Some(by) => Some(
            Template::parse(&by.value, Use::Key, params)
                .map_err(|e| x.c.error(by, &x.field("rollout.by"), e))
                .ok()?,
        ),
        None => None,
    };
    Some(Rollout::new(percent, by))
}

/// The write method a trigger names (upper case, not GET or HEAD), or an
/// error at `at`.
fn write_method<T>(x: &mut Ctx<'_>, at: &Sp<T>, field: &str, method: &str) -> Option<Method> {
    match Method::from_bytes(method.as_bytes()) {
        Ok(m)
            if !matches!(m, Method::GET | Method::HEAD)
                && method.bytes().all(|b| b.is_ascii_uppercase()) =>
        {
            Some(m)
        }
        _ => {
            let message =
                format!("`{method}` is not a write method (POST, PUT, PATCH, DELETE, ...)");
            x.c.error(at, field, message);
            None
        }
    }
}

/// `warm_on`: `"METHOD /trigger/{param} -> /target/{...}"`, each part
/// checked: a write method, paths starting with `/`, and a target whose
/// placeholders the write defines (path parameters, JSON fields, headers,
/// cookies).
fn warm_on(x: &mut Ctx<'_>, raw: &RawRule) -> Vec<Warm> {
    let mut out = Vec::new();
    for w in raw.warm_on.iter().flatten() {
        let field = x.field("warm_on");
        let (text, forward) = match &w.value {
            RawWarm::Plain(t) => (t.as_str(), &[][..]),
            RawWarm::Map(m) => (m.on.as_str(), &m.forward[..]),
        };
        let parsed = text.split_once("->").and_then(|(on, target)| {
            let (method, path) = on.trim().split_once(' ')?;
            Some((method, path.trim(), target.trim()))
        });
        let Some((method, path, target)) = parsed else {
            let message =
                format!("`{text}`: write it as \"METHOD /path/{{param}} -> /target/{{param}}\"");
            x.c.error(w, &field, message);
            continue;
        };
        let Some(method) = write_method(x, w, &field, method) else {
            continue;
        };
        if !path.starts_with('/') || !target.starts_with('/') {
            x.c.error(w, &field, "both paths must start with `/`");
            continue;
        }
        if let Err(e) = Route::parse(path) {
            x.c.error(w, &field, format!("`{path}`: {e}"));
            continue;
        }
        let target = match Template::parse(target, Use::Tag, &route_params(path)).and_then(single) {
            Ok(t) => t,
            Err(e) => {
                x.c.error(w, &field, e);
                continue;
            }
        };
        let (mut forward_cookie, mut forward_authorization) = (false, false);
        for f in forward {
            match f.trim().to_ascii_lowercase().as_str() {
                "cookie" => forward_cookie = true,
                "authorization" => forward_authorization = true,
                other => {
                    let message =
                        format!("`{other}` cannot be forwarded: `cookie` or `authorization`");
                    x.c.error(w, &field, message);
                }
            }
        }
        out.push(Warm {
            method,
            path: path.to_owned(),
            target,
            forward_cookie,
            forward_authorization,
        });
    }
    out
}

/// `refresh_ahead: 10%`: the share of an entry's fresh life, at its end,
/// in which a request refreshes it; 1% to 99%.
fn refresh_ahead(x: &mut Ctx<'_>, raw: &RawRule) -> Option<f64> {
    let v = raw.refresh_ahead.as_ref()?;
    let share = v
        .value
        .trim()
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<f64>().ok())
        .filter(|n| (1.0..=99.0).contains(n));
    if share.is_none() {
        let message = "a share of the entry's life from 1% to 99%, e.g. `10%`";
        x.c.error(v, &x.field("refresh_ahead"), message);
    }
    share.map(|n| n / 100.0)
}

/// `downstream: { cache_control }`: a header value clients get instead of
/// the backend's `Cache-Control`.
fn downstream(x: &mut Ctx<'_>, raw: &RawRule) -> Option<http::HeaderValue> {
    let cc = &raw.downstream.as_ref()?.value.cache_control;
    match http::HeaderValue::from_str(cc.value.trim()) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            let message =
                "a Cache-Control value, e.g. `public, max-age=60`, `private` or `no-store`";
            x.c.error(cc, &x.field("downstream.cache_control"), message);
            None
        }
    }
}

/// `name:`: letters, digits, `-`, `_` and `.`.
fn name(x: &mut Ctx<'_>, at: &Sp<RawRule>, raw: &RawRule) -> Option<String> {
    match &raw.name {
        Some(n)
            if !n.value.is_empty()
                && n.value
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.')) =>
        {
            Some(n.value.clone())
        }
        Some(n) => {
            let message = "use letters, digits, `-`, `_` and `.` only";
            x.c.error(n, &x.field("name"), message);
            None
        }
        None => {
            x.c.error(at, &x.field("name"), "every rule needs a name");
            None
        }
    }
}

/// `match:`: its path, host (lower case) and methods (GET and HEAD unless said).
fn matcher(
    x: &mut Ctx<'_>,
    at: &Sp<RawRule>,
    raw: &RawRule,
) -> Option<(String, Option<String>, Vec<Method>)> {
    let Some(m) = &raw.matcher else {
        let message = "every rule needs a match with at least a path";
        x.c.error(at, &x.field("match"), message);
        return None;
    };
    let path = m.value.path.value.clone();
    if let Some(h) = &m.value.host {
        let bare = h.value.strip_prefix("*.").unwrap_or(&h.value);
        if bare.is_empty() || !bare.is_ascii() || bare.contains([':', '*', '/', ' ']) {
            x.c.error(
                h,
                &x.field("match.host"),
                "a host name only (`shop.example` or `*.shop.example`): no port, no other `*`, ASCII (punycode for other names)",
            );
        }
    }
    if !path.starts_with('/') {
        x.c.error(&m.value.path, &x.field("match.path"), "must start with `/`");
        return None;
    }
    if let Err(e) = Route::parse(&path) {
        x.c.error(&m.value.path, &x.field("match.path"), e);
        return None;
    }
    let methods = match &m.value.methods {
        Some(list) => {
            let mut out = Vec::new();
            for v in list {
                match Method::from_bytes(v.value.as_bytes()) {
                    Ok(meth) if v.value.bytes().all(|b| b.is_ascii_uppercase()) => out.push(meth),
                    _ => x.c.error(
                        v,
                        &x.field("match.methods"),
                        format!("`{}` is not an HTTP method (write it in capitals)", v.value),
                    ),
                }
            }
            out
        }
        None => vec![Method::GET, Method::HEAD],
    };
    let host = m.value.host.as_ref().map(|h| h.value.to_ascii_lowercase());
    Some((path, host, methods))
}

/// `key:`, or the default key; never empty, and never constant on a path
/// with parameters (every product would be served as the first fetched).
fn key(x: &mut Ctx<'_>, raw: &RawRule, params: &[String]) -> Option<Template> {
    let Some(k) = &raw.key else {
        return Template::parse(DEFAULT_KEY, Use::Key, params).ok();
    };
    if k.value.trim().is_empty() {
        x.c.error(k, &x.field("key"), "must not be empty");
        return None;
    }
    let t = Template::parse(&k.value, Use::Key, params)
        .map_err(|e| x.c.error(k, &x.field("key"), e))
        .ok()?;
    if t.is_constant() && !params.is_empty() {
        x.c.error(
            k,
            &x.field("key"),
            format!(
                "has no placeholder, though the path has `{{{}}}`: every request would share one entry",
                params[0]
            ),
        );
        return None;
    }
    Some(t)
}

/// `tier:`; memory when no Redis is configured (with a warning when the
/// rule asked for Redis alone).
fn tier(x: &mut Ctx<'_>, raw: &RawRule, have_redis: bool) -> Tier {
    let tier = match &raw.tier {
        None => Tier::Both,
        Some(v) => {
            let choices = [
                ("memory", Tier::Memory),
                ("redis", Tier::Redis),
                ("both", Tier::Both),
            ];
            x.c.choice(v, &x.field("tier"), &choices)
                .unwrap_or(Tier::Memory)
        }
    };
    if have_redis || tier == Tier::Memory {
        return tier;
    }
    if let Some(v) = raw.tier.as_ref().filter(|_| tier == Tier::Redis) {
        let message = "no redis is configured: this rule is cached in memory only";
        x.c.warn(v, &x.field("tier"), message);
    }
    Tier::Memory
}

/// `compress:` the codings of a compressible answer: the first is how it
/// is stored, the others what a client that does not take the first gets
/// (re-encoded). `[gzip, br]` unless the rule says otherwise (gzip, which
/// every client that compresses takes and which decodes fast for those
/// that do not); `false` or `[]` for none.
fn compress(x: &mut Ctx<'_>, raw: &RawRule) -> Vec<Encoding> {
    let all = vec![Encoding::Gzip, Encoding::Br];
    let Some(v) = &raw.compress else {
        return all;
    };
    match &v.value {
        RawCompress::Flag(true) => all,
        RawCompress::Flag(false) => Vec::new(),
        RawCompress::List(list) => {
            let mut codings = Vec::new();
            for name in list {
                match Encoding::parse(name) {
                    Some(e) if !codings.contains(&e) => codings.push(e),
                    Some(_) => {}
                    None => x.c.error(
                        v,
                        &x.field("compress"),
                        format!("`{name}` is not a coding sidecache stores: use br or gzip"),
                    ),
                }
            }
            codings
        }
    }
}

/// A template that must render one value, not one per array element.
fn single(t: Template) -> Result<Template, String> {
    if t.fans_out() {
        return Err(format!("`{t}` renders one value: `[*]` is for tags"));
    }
    Ok(t)
}

/// `tags:`.
fn tags(x: &mut Ctx<'_>, raw: &RawRule, params: &[String]) -> Vec<Template> {
    let mut tags = Vec::new();
    for t in raw.tags.iter().flatten() {
        match Template::parse(&t.value, Use::Tag, params) {
            Ok(tpl) => tags.push(tpl),
            Err(e) => x.c.error(t, &x.field("tags"), e),
        }
    }
    tags
}

/// `statuses:`: full, final answers only.
fn statuses(x: &mut Ctx<'_>, raw: &RawRule) -> Vec<u16> {
    let Some(list) = &raw.statuses else {
        return DEFAULT_STATUSES.to_vec();
    };
    for s in list {
        if !(100..=599).contains(&s.value) {
            let message = format!("{} is not an HTTP status", s.value);
            x.c.error(s, &x.field("statuses"), message);
        } else if s.value < 200 || s.value == 206 || s.value == 304 {
            let message = format!("{} is never stored: only full, final answers are", s.value);
            x.c.error(s, &x.field("statuses"), message);
        }
    }
    list.iter().map(|s| s.value).collect()
}

/// `stale_while_revalidate:` and `stale_if_error:`; both zero with
/// `stale: never`.
fn stale_windows(x: &mut Ctx<'_>, raw: &RawRule) -> (Option<Duration>, Option<Duration>) {
    let never = raw
        .stale
        .as_ref()
        .and_then(|v| x.c.choice(v, &x.field("stale"), &[("never", true)]))
        .unwrap_or(false);
    if never {
        return (Some(Duration::ZERO), Some(Duration::ZERO));
    }
    let mut window = |v: &Option<Sp<String>>, name: &str| {
        v.as_ref().and_then(|v| x.c.duration(v, &x.field(name)))
    };
    (
        window(&raw.stale_while_revalidate, "stale_while_revalidate"),
        window(&raw.stale_if_error, "stale_if_error"),
    )
}

/// `set_cookie:` (`strip`), and the `allow_set_cookie` it replaces, refused.
fn set_cookie(x: &mut Ctx<'_>, raw: &RawRule) -> SetCookie {
    if let Some(a) = raw.allow_set_cookie.as_ref().filter(|a| a.value) {
        let message = "would replay one visitor's Set-Cookie (a session, a CSRF secret) to every \
                       other; use `set_cookie: strip`, which stores the answer without it and \
                       gives the fetching client its own";
        x.c.error(a, &x.field("allow_set_cookie"), message);
    }
    raw.set_cookie
        .as_ref()
        .and_then(|v| {
            let choices = [("strip", SetCookie::Strip)];
            x.c.choice(v, &x.field("set_cookie"), &choices)
        })
        .unwrap_or_default()
}

/// `pass_if: { cookies, headers }`.
fn pass_if(x: &mut Ctx<'_>, raw: &RawRule) -> PassIf {
    let mut out = PassIf::default();
    let Some(p) = &raw.pass_if else {
        return out;
    };
    for c in p.value.cookies.iter().flatten() {
        let name = c.value.trim();
        if name.is_empty() || name.contains([';', '=', ' ']) {
            x.c.error(
                c,
                &x.field("pass_if.cookies"),
                "a cookie name, e.g. `sessionid`",
            );
        } else {
            out.cookies.push(name.to_owned());
        }
    }
    for h in p.value.headers.iter().flatten() {
        match http::HeaderName::from_bytes(h.value.trim().to_ascii_lowercase().as_bytes()) {
            Ok(n) => out.headers.push(n),
            Err(_) => {
                x.c.error(h, &x.field("pass_if.headers"), "not a valid header name")
            }
        }
    }
    if out.cookies.is_empty() && out.headers.is_empty() {
        x.c.error(p, &x.field("pass_if"), "name `cookies` or `headers`");
    }
    out
}

/// `ignore_query:`: query parameter names or globs (`utm_*`).
fn ignore_query(x: &mut Ctx<'_>, raw: &RawRule) -> Vec<String> {
    let mut out = Vec::new();
    for g in raw.ignore_query.iter().flatten() {
        let ok = !g.value.is_empty()
            && !g.value.contains("**")
            && g.value
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"&=#?".contains(&b));
        if ok {
            out.push(g.value.clone());
        } else {
            let message =
                "a query parameter name, `*` standing for any characters: `utm_*`, `gclid`";
            x.c.error(g, &x.field("ignore_query"), message);
        }
    }
    out
}

/// `forward: { headers }`: header names a cacheable fetch sends and keys.
fn forward(x: &mut Ctx<'_>, raw: &RawRule) -> Vec<http::HeaderName> {
    let mut out = Vec::new();
    let Some(f) = &raw.forward else {
        return out;
    };
    for h in &f.value.headers {
        let name = http::HeaderName::from_bytes(h.value.trim().to_ascii_lowercase().as_bytes());
        match name {
            Ok(n) if n == http::header::COOKIE || n == http::header::HOST => {
                let message = "forward cookies by naming them in the key (`{cookie.x}`), the host with `{host}`";
                x.c.error(h, &x.field("forward.headers"), message);
            }
            Ok(n) => out.push(n),
            Err(_) => {
                x.c.error(h, &x.field("forward.headers"), "not a valid header name")
            }
        }
    }
    out
}

/// `allow_empty:`: query, header or cookie placeholders of the rule's key.
fn allow_empty(x: &mut Ctx<'_>, raw: &RawRule) -> Vec<String> {
    let mut out = Vec::new();
    for a in raw.allow_empty.iter().flatten() {
        let named = ["query.", "header.", "cookie."]
            .iter()
            .any(|p| a.value.starts_with(p));
        let in_key = raw
            .key
            .as_ref()
            .is_some_and(|k| k.value.contains(&format!("{{{}}}", a.value)));
        if !named || !in_key {
            x.c.error(
                a,
                &x.field("allow_empty"),
                format!(
                    "`{}` is not a query, header or cookie placeholder of this rule's key",
                    a.value
                ),
            );
        }
        out.push(a.value.clone());
    }
    out
}

/// `write_through: { methods, publish }`.
fn write_through(x: &mut Ctx<'_>, raw: &RawRule, params: &[String]) -> Option<WriteThrough> {
    let wt = raw.write_through.as_ref()?;
    let mut methods = Vec::new();
    for m in &wt.value.methods {
        match Method::from_bytes(m.value.as_bytes()) {
            Ok(meth) if !matches!(meth, Method::GET | Method::HEAD) => methods.push(meth),
            _ => x.c.error(
                m,
                &x.field("write_through.methods"),
                format!("`{}` is not a write method", m.value),
            ),
        }
    }
    let publish = wt.value.publish.as_ref().and_then(|p| {
        Template::parse(&p.value, Use::Tag, params)
            .and_then(single)
            .map_err(|e| x.c.error(p, &x.field("write_through.publish"), e))
            .ok()
    });
    Some(WriteThrough { methods, publish })
}

/// `rate_limit: { key, rate, burst, scope }`.
fn rate_limit(
    x: &mut Ctx<'_>,
    raw: &RawRule,
    params: &[String],
    have_redis: bool,
) -> Option<RateLimit> {
    let l = &raw.rate_limit.as_ref()?.value;
    let key = Template::parse(&l.key.value, Use::Key, params)
        .map_err(|e| x.c.error(&l.key, &x.field("rate_limit.key"), e))
        .ok();
    let rate = ratelimit::parse_rate(&l.rate.value)
        .map_err(|e| x.c.error(&l.rate, &x.field("rate_limit.rate"), e))
        .ok();
    let burst = match &l.burst {
        Some(b) => match NonZeroU32::new(b.value) {
            Some(n) => Some(n),
            None => {
                x.c.error(b, &x.field("rate_limit.burst"), "must be at least 1");
                return None;
            }
        },
        None => None,
    };
    let scope = match &l.scope {
        None => Scope::Local,
        Some(s) => {
            let choices = [("local", Scope::Local), ("global", Scope::Global)];
            match x.c.choice(s, &x.field("rate_limit.scope"), &choices)? {
                Scope::Global if !have_redis => {
                    let message = "global needs redis; counted per replica";
                    x.c.warn(s, &x.field("rate_limit.scope"), message);
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

/// `invalidate_on`: `"PUT /products/{id}"` (the rule's key and all its
/// tags) or `{ on, keys, tags, if_changed }` (the rule's key, and what it
/// names). The pattern must define the path parameters the key and every
/// template it purges use.
fn triggers(
    x: &mut Ctx<'_>,
    raw: &RawRule,
    key: Option<&Template>,
    tags: &[Template],
) -> Vec<Trigger> {
    let mut out = Vec::new();
    for t in raw.invalidate_on.iter().flatten() {
        let field = x.field("invalidate_on");
        let (text, map) = match &t.value {
            RawTrigger::Plain(s) => (s.as_str(), None),
            RawTrigger::Map(m) => (m.on.as_str(), Some(m)),
        };
        let Some((method, path)) = text.trim().split_once(' ') else {
            let message = format!("`{text}`: write it as \"METHOD /path/{{param}}\"");
            x.c.error(t, &field, message);
            continue;
        };
        let path = path.trim();
        let Some(method) = write_method(x, t, &field, method) else {
            continue;
        };
        if !path.starts_with('/') {
            x.c.error(t, &field, format!("`{path}` must start with `/`"));
            continue;
        }
        if let Err(e) = Route::parse(path) {
            x.c.error(t, &field, format!("`{path}`: {e}"));
            continue;
        }
        let defined = route_params(path);
        let (keys, purged, if_changed) = match map {
            None => (Vec::new(), tags.to_vec(), Vec::new()),
            Some(m) => {
                let parse = |x: &mut Ctx<'_>, list: &[String]| -> Option<Vec<Template>> {
                    let mut ok = Vec::new();
                    for s in list {
                        match Template::parse(s, Use::Trigger, &defined) {
                            Ok(tpl) => ok.push(tpl),
                            Err(e) => x.c.error(t, &field, e),
                        }
                    }
                    (ok.len() == list.len()).then_some(ok)
                };
                let (Some(keys), Some(purged)) = (parse(x, &m.keys), parse(x, &m.tags)) else {
                    continue;
                };
                let mut fields = Vec::new();
                for f in &m.if_changed {
                    match Template::parse(&format!("{{response.{f}}}"), Use::Tag, &[]) {
                        Ok(_) if !f.contains("[*]") => {
                            fields.push(f.split('.').map(str::to_owned).collect());
                        }
                        _ => x.c.error(
                            t,
                            &field,
                            format!("if_changed: `{f}` is not a JSON field such as `category_id` or `price.amount`"),
                        ),
                    }
                }
                (keys, purged, fields)
            }
        };
        let needed = key.into_iter().chain(&purged).flat_map(Template::params);
        let missing: Vec<String> = needed
            .filter(|p| !defined.contains(p))
            .map(|p| format!("{{{p}}}"))
            .collect();
        if !missing.is_empty() {
            let message = format!(
                "`{path}` does not define {}, which the rule's key or tags use (a trigger purges its rule's key: put it on the rule whose key the write names)",
                missing.join(", ")
            );
            x.c.error(t, &field, message);
            continue;
        }
        if map.is_none() {
            group_warning(x, t, key, tags, text);
        }
        out.push(Trigger {
            method,
            path: path.to_owned(),
            keys,
            tags: purged,
            if_changed,
        });
    }
    out
}

/// A string trigger purges every tag of its rule; a tag the key does not
/// decide (`category:{response.category_id}` on `product:{id}`) is a
/// group that many entries carry, and one write would empty all of them.
fn group_warning<T>(
    x: &mut Ctx<'_>,
    at: &Sp<T>,
    key: Option<&Template>,
    tags: &[Template],
    on: &str,
) {
    let Some(key) = key else { return };
    for tag in tags {
        let decided = tag.vars().all(|v| key.uses(v));
        if decided || tag.fans_out() {
            continue;
        }
        let message = format!(
            "`{on}` purges tag `{tag}`, which is not decided by the key `{key}`: every entry that shares it (a group) goes with each write. \
             Name what the write changed instead: `{{ on: \"{on}\", tags: [...] }}` (see docs/invalidation.md, precise purges)"
        );
        x.c.warn(at, &x.field("invalidate_on"), message);
    }
}
