//! Compiled cache rules: route matching (matchit) and per-rule settings.
//!
//! Lookup: the path is matched once against a router holding every rule's
//! path pattern; among the rules sharing the matched pattern, the first in
//! file order whose methods and host fit wins. The router picks the most
//! specific pattern (a literal segment beats `{param}`, which beats
//! `{*rest}`), as axum and nginx's location matching do.
//!
//! Longer than most files because the rule type, its settings and the
//! router that finds it are read together; the templates they hold live in
//! [`template`].

pub mod inputs;
pub mod request;
pub mod route;
pub mod snapshot;
pub mod template;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use http::Method;

use crate::cache::Tier;
pub use inputs::{KeyInputs, QueryInputs, keyed_query};
pub use request::{canonical_query, cookies_named, is_canonical};
pub use route::{Route, route_params};
pub use snapshot::Snapshot;
pub use template::{
    Bodies, KeyRefusal, MAX_FAN_OUT, RequestView, Template, Unrendered, Use, Var, json_text,
};

/// The longest freshness taken from a backend's headers under `ttl:
/// origin` (a cache may always keep less): bounds how long an entry, and so
/// what is remembered of purges, can live.
pub const MAX_ORIGIN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a stale entry with a validator is kept for revalidation when
/// the rule does not say (its TTL otherwise): an answer fresh for no time
/// (`no-cache`, `max-age=0`) is still worth a conditional request for a
/// while, as nginx's `inactive=10m` keeps it.
pub const MIN_KEEP_FOR_REVALIDATION: Duration = Duration::from_secs(600);

/// How long an entry stays fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// A fixed lifetime from the moment it was stored.
    Fixed(Duration),
    /// Freshness from the backend's Cache-Control / Expires headers.
    Origin,
}

/// As the config writes it: `1day 2h`, or `origin`.
impl std::fmt::Display for Ttl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ttl::Fixed(d) => write!(f, "{}", humantime::format_duration(*d)),
            Ttl::Origin => f.write_str("origin"),
        }
    }
}

/// One rule, validated: plain data. What changes while it is in effect
/// (rate-limit state, request counters) lives in services keyed by its
/// name, which outlive a reload.
#[derive(Debug)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// Its place in the file (set by [`RuleSet::new`]).
    pub index: usize,
    /// Methods it matches.
    pub methods: Vec<Method>,
    /// Path pattern (`/products/{id}`).
    pub path: String,
    /// Host it is limited to (lower case; `*.example.com` allowed).
    pub host: Option<String>,
    /// `false`: always forwarded.
    pub cache: bool,
    /// Key template.
    pub key: Template,
    /// Freshness.
    pub ttl: Ttl,
    /// Storage tier in effect (already `memory` when no Redis is configured).
    pub tier: Tier,
    /// Tag templates.
    pub tags: Vec<Template>,
    /// Statuses that are stored.
    pub statuses: Vec<u16>,
    /// Largest body stored.
    pub max_object_size: u64,
    /// What becomes of an answer that sets a cookie.
    pub set_cookie: SetCookie,
    /// Requests carrying any of these cookies or headers pass uncached.
    pub pass_if: PassIf,
    /// Answer requests carrying Authorization from the shared cache.
    pub allow_authorized: bool,
    /// Store `Cache-Control: private` responses.
    pub allow_private: bool,
    /// Edge Side Includes in its HTML answers are assembled for each
    /// client (`proxy::esi`).
    pub esi: bool,
    /// The codings of its compressible answers (`compress`): stored in the
    /// first; empty for none.
    pub compress: Vec<crate::cache::encoding::Encoding>,
    /// Each hit renews the TTL.
    pub sliding: bool,
    /// A fresh entry requested in this last share of its fresh life (0 to
    /// 1) is refreshed in the background while the request is answered.
    pub refresh_ahead: Option<f64>,
    /// Misses of one key wait for one backend request across all replicas
    /// (a Redis lock), not only within this one.
    pub collapse_global: bool,
    /// After expiry, serve the entry at once for this long while one
    /// background request refreshes it. `None`: not set (under `ttl:
    /// origin` the backend's `stale-while-revalidate` then applies alone);
    /// `stale: never` sets it to zero.
    pub stale_while_revalidate: Option<Duration>,
    /// After expiry, serve the entry for this long when the backend fails
    /// (5xx, timeout, refused connection). `None` as above.
    pub stale_if_error: Option<Duration>,
    /// How long a stale entry with a validator is kept to be revalidated
    /// (`None`: as long as its TTL).
    pub keep_for_revalidation: Option<Duration>,
    /// Key placeholders that may render empty (`query.page`); any other
    /// that does makes the request pass uncached.
    pub allow_empty: Vec<String>,
    /// Query parameters dropped before keying and forwarding
    /// (`ignore_query`, globs such as `utm_*`).
    pub ignore_query: Vec<String>,
    /// What the key reads, which is all a cacheable fetch forwards
    /// (`forward.headers` included: they join the entry's variant).
    pub inputs: KeyInputs,
    /// Add the backend's `Surrogate-Key` / `Cache-Tag` values as tags.
    pub origin_tags: bool,
    /// Writes that go to the backend and then replace the entry.
    pub write_through: Option<WriteThrough>,
    /// Writes whose 2xx answer purges this rule's key and tags.
    pub triggers: Vec<Trigger>,
    /// Writes whose 2xx answer warms a URL of this rule.
    pub warm_on: Vec<Warm>,
    /// Requests per client key allowed through this rule.
    pub rate_limit: Option<RateLimit>,
    /// The `Cache-Control` clients get on answers from the cache path,
    /// instead of the backend's (`downstream.cache_control`).
    pub downstream: Option<http::HeaderValue>,
    /// `rollout:`: only this share of requests use the cache.
    pub rollout: Option<Rollout>,
    /// `verify:`: a share of hits compared with the backend's answer.
    pub verify: Option<Verify>,
}

/// A rule's `verify:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Verify {
    /// The share of hits checked, from 0.0001 to 1.
    pub sample: f64,
    /// JSON fields left out of the comparison, each as its path.
    pub ignore: Vec<Vec<String>>,
    /// Whether a mismatch purges the entry.
    pub purge_on_mismatch: bool,
}

/// A rule's `rollout:`. A request is inside when the hash of its rendered
/// `by` (XXH3, the same on every replica and version) falls in the first
/// `percent` of [`ROLLOUT_BUCKETS`] buckets. So a user stays on one side on
/// every replica, and a larger `percent` only moves users in.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// The share inside, from 0 to 100.
    pub percent: f64,
    /// What users are told apart by; the client address when `None` or
    /// when it renders empty.
    pub by: Option<Template>,
    /// Buckets below this are inside.
    inside_below: u64,
}

/// The buckets of a rollout: steps of 0.01 %.
pub const ROLLOUT_BUCKETS: u64 = 10_000;

impl Rollout {
    /// A rollout of `percent` (0 to 100) told apart by `by`.
    pub fn new(percent: f64, by: Option<Template>) -> Self {
        let inside_below = (percent.clamp(0.0, 100.0) * 100.0).round() as u64;
        Self {
            percent,
            by,
            inside_below,
        }
    }

    /// The rendered `by`, unless there is none or it renders empty (then
    /// the client address tells users apart).
    pub fn by_value(&self, view: &RequestView<'_>, params: &[(&str, &str)]) -> Option<String> {
        self.by
            .as_ref()
            .and_then(|t| t.render(view, params, Bodies::default()))
            .filter(|v| !v.is_empty())
    }

    /// A request's bucket: of its `by` value, or of the client address.
    pub fn bucket(&self, view: &RequestView<'_>, params: &[(&str, &str)]) -> u64 {
        let by = self
            .by_value(view, params)
            .unwrap_or_else(|| view.client_ip.to_string());
        xxhash_rust::xxh3::xxh3_64(by.as_bytes()) % ROLLOUT_BUCKETS
    }

    /// Whether a bucket is inside the rollout.
    pub fn inside(&self, bucket: u64) -> bool {
        bucket < self.inside_below
    }
}

/// A rule's `rate_limit:`: GCRA, `interval` between requests on average,
/// up to `burst` at once (the state is kept by `ratelimit::RateLimits`).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// What a client is counted by (`{client_ip}`, `{header.x-api-key}`).
    pub key: Template,
    /// Time between two requests at the average rate.
    pub interval: Duration,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
    /// Where it is counted.
    pub scope: Scope,
}

/// Where a rate limit is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// In this replica only.
    Local,
    /// Across replicas, in Redis.
    Global,
}

impl Scope {
    /// The `scope` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Global => "global",
        }
    }
}

/// What a rule does with an answer that carries `Set-Cookie`. No entry
/// ever holds one: a cookie is never handed to a client it was not set for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetCookie {
    /// Not stored (the default).
    #[default]
    Refuse,
    /// Stored without its `Set-Cookie`; the client whose request fetched
    /// it still gets its own (`set_cookie: strip`).
    Strip,
}

/// `pass_if:` of a rule: what marks a request as personal (a logged-in
/// visitor's session cookie, an open basket), so it is forwarded as
/// received and never answered from a shared entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassIf {
    /// Cookie names, compared as backends compare them (trimmed).
    pub cookies: Vec<String>,
    /// Header names.
    pub headers: Vec<http::HeaderName>,
}

impl PassIf {
    /// Whether a request with `headers` carries any of them.
    pub fn matches(&self, headers: &http::HeaderMap) -> bool {
        self.headers.iter().any(|h| headers.contains_key(h))
            || (!self.cookies.is_empty()
                && self
                    .cookies
                    .iter()
                    .any(|c| request::cookie(headers, c).is_some()))
    }
}

/// `write_through:` of a rule.
#[derive(Debug)]
pub struct WriteThrough {
    /// Methods written through.
    pub methods: Vec<Method>,
    /// Channel template an event is published on.
    pub publish: Option<Template>,
}

/// One `invalidate_on` entry: a write, and what it purges besides the
/// rule's key rendered from it.
#[derive(Debug, Clone)]
pub struct Trigger {
    /// The write method.
    pub method: Method,
    /// The path pattern.
    pub path: String,
    /// Further keys it purges (`keys:`).
    pub keys: Vec<Template>,
    /// The tags it purges: those it names, or in the string form the
    /// rule's own tags.
    pub tags: Vec<Template>,
    /// JSON fields (`if_changed:`): when given, `keys` and `tags` are
    /// purged only if one of them differs between the written resource's
    /// answer from before the write and the write's (its answer, else its
    /// request body), or either is unknown.
    pub if_changed: Vec<Vec<String>>,
}

impl Trigger {
    /// Its templates, the rule's key aside.
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        self.keys.iter().chain(&self.tags)
    }
}

/// A `warm_on` entry: after a 2xx answer to `method` on `path`, `target`
/// (rendered from that write) is fetched through the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Warm {
    /// The write method.
    pub method: Method,
    /// The write's path pattern.
    pub path: String,
    /// The path to fetch, rendered from the write and its JSON bodies.
    pub target: Template,
    /// Whether the warm fetch carries the write's cookies.
    pub forward_cookie: bool,
    /// Whether the warm fetch carries the write's `Authorization`.
    pub forward_authorization: bool,
}

impl Rule {
    /// The longest an entry of this rule is kept after it goes stale.
    pub fn grace(&self) -> Duration {
        let ttl = match self.ttl {
            Ttl::Fixed(d) => d,
            Ttl::Origin => MAX_ORIGIN_TTL,
        };
        // Under `ttl: origin` the backend's windows apply when the rule
        // sets none; they are capped at the longest TTL.
        let window = |w: Option<Duration>| match (w, self.ttl) {
            (Some(d), _) => d,
            (None, Ttl::Origin) => MAX_ORIGIN_TTL,
            (None, Ttl::Fixed(_)) => Duration::ZERO,
        };
        window(self.stale_while_revalidate)
            .max(window(self.stale_if_error))
            .max(
                self.keep_for_revalidation
                    .unwrap_or(ttl.max(MIN_KEEP_FOR_REVALIDATION)),
            )
    }

    /// Whether this rule matches the method and host.
    fn fits(&self, method: &Method, host: &str) -> bool {
        let method_ok = self.methods.iter().any(|m| m == method)
            || (*method == Method::HEAD && self.methods.contains(&Method::GET));
        method_ok && self.host.as_deref().is_none_or(|h| host_matches(h, host))
    }
}

/// The host name of an authority, without its port: `shop:8080` is
/// `shop`, `[::1]:80` is `[::1]`.
pub fn hostname(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    }
}

/// Whether `pattern` (`shop.example.com` or `*.example.com`) covers the
/// host name of the authority `host` (any port).
fn host_matches(pattern: &str, host: &str) -> bool {
    let host = hostname(host);
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1
                && host.ends_with(suffix)
                && host.as_bytes()[host.len() - suffix.len() - 1] == b'.'
        }
        None => pattern == host,
    }
}

/// The rules in file order, with a router over their paths and one over
/// their `invalidate_on` patterns.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    router: Routed<usize>,
    /// Pattern -> (rule index, index in its `invalidate_on`).
    triggers: Routed<(usize, usize)>,
    /// `warm_on` pattern -> (rule index, index in its `warm_on`).
    warms: Routed<(usize, usize)>,
}

/// Patterns routed together: each with its compiled route and value, in
/// file order.
type Routed<V> = matchit::Router<Vec<(Route, V)>>;

/// A router over `entries` (the rule each comes from, its path pattern, its
/// value); patterns matchit routes alike are tried in file order. Fails,
/// naming the rule and `what`, on a pattern that cannot be compiled or one
/// that overlaps another's (`/a/{x}` next to `/a/{y}`), naming that one.
fn grouped<'a, V>(
    rules: &[Rule],
    entries: impl Iterator<Item = (usize, &'a str, V)>,
    what: &str,
) -> Result<Routed<V>, (usize, String)> {
    /// Patterns routed alike: the first's rule and pattern, and all.
    struct Group<'p, V> {
        routed: String,
        first: usize,
        path: &'p str,
        list: Vec<(Route, V)>,
    }
    let mut by_path: Vec<Group<'_, V>> = Vec::new();
    for (rule, path, value) in entries {
        let route = Route::parse(path).map_err(|e| (rule, format!("{what} `{path}`: {e}")))?;
        match by_path.iter_mut().find(|g| g.routed == route.router) {
            Some(g) => g.list.push((route, value)),
            None => by_path.push(Group {
                routed: route.router.clone(),
                first: rule,
                path,
                list: vec![(route, value)],
            }),
        }
    }
    let mut router = matchit::Router::new();
    let mut inserted: Vec<(String, usize, &str)> = Vec::new();
    for Group {
        routed,
        first,
        path,
        list,
    } in by_path
    {
        if let Err(e) = router.insert(routed.as_str(), list) {
            let message = match &e {
                matchit::InsertError::Conflict { with } => {
                    match inserted.iter().find(|(r, ..)| r == with) {
                        Some((_, other, theirs)) => format!(
                            "{what} `{path}` overlaps `{theirs}` of rule `{}`: a request could match either; make one literal where they differ, or give both one pattern",
                            rules[*other].name
                        ),
                        None => {
                            format!("{what} `{path}` overlaps another rule's pattern near `{with}`")
                        }
                    }
                }
                other => format!("{what} `{path}`: {other}"),
            };
            return Err((first, message));
        }
        inserted.push((routed, first, path));
    }
    Ok(router)
}

/// The rule a request matched, with its path parameters.
#[derive(Debug)]
pub struct Matched<'a> {
    /// The rule.
    pub rule: &'a Arc<Rule>,
    /// Path parameters, still percent-encoded.
    pub params: Vec<(&'a str, &'a str)>,
}

/// An `invalidate_on` entry a write matched.
#[derive(Debug)]
pub struct Fired<'a> {
    /// The rule it belongs to.
    pub rule: &'a Arc<Rule>,
    /// The entry.
    pub trigger: &'a Trigger,
    /// Its index in the rule's `triggers`.
    pub index: usize,
    /// Path parameters of its pattern, still percent-encoded.
    pub params: Vec<(&'a str, &'a str)>,
}

impl RuleSet {
    /// Builds the routers. Fails on a pattern that cannot be compiled or
    /// that overlaps another's (`/a/{x}` next to `/a/{y}`).
    pub fn new(rules: Vec<Rule>) -> Result<Self, (usize, String)> {
        let paths = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.path.as_str(), i));
        let router = grouped(&rules, paths, "path")?;
        let triggers = rules.iter().enumerate().flat_map(|(i, r)| {
            r.triggers
                .iter()
                .enumerate()
                .map(move |(j, t)| (i, t.path.as_str(), (i, j)))
        });
        let triggers = grouped(&rules, triggers, "invalidate_on")?;
        let warms = rules.iter().enumerate().flat_map(|(i, r)| {
            r.warm_on
                .iter()
                .enumerate()
                .map(move |(j, w)| (i, w.path.as_str(), (i, j)))
        });
        let warms = grouped(&rules, warms, "warm_on")?;
        Ok(Self {
            rules: rules
                .into_iter()
                .enumerate()
                .map(|(index, rule)| Arc::new(Rule { index, ..rule }))
                .collect(),
            router,
            triggers,
            warms,
        })
    }

    /// The `warm_on` entries a write matches: each rule with the index of
    /// its entry and the pattern's parameters.
    pub fn warmed<'a>(&'a self, method: &Method, path: &'a str) -> Vec<(Matched<'a>, usize)> {
        routed(&self.warms, path)
            .filter(|((i, j), _)| self.rules[*i].warm_on[*j].method == method)
            .map(|((i, j), params)| {
                let matched = Matched {
                    rule: &self.rules[*i],
                    params,
                };
                (matched, *j)
            })
            .collect()
    }

    /// The `invalidate_on` entries a write matches, each with its rule and
    /// the pattern's parameters.
    pub fn triggered<'a>(&'a self, method: &Method, path: &'a str) -> Vec<Fired<'a>> {
        routed(&self.triggers, path)
            .filter(|((i, j), _)| self.rules[*i].triggers[*j].method == method)
            .map(|((i, j), params)| Fired {
                rule: &self.rules[*i],
                trigger: &self.rules[*i].triggers[*j],
                index: *j,
                params,
            })
            .collect()
    }

    /// The rule that writes `method` to this path through to the cache.
    pub fn write_through<'a>(
        &'a self,
        method: &Method,
        host: &str,
        path: &'a str,
    ) -> Option<Matched<'a>> {
        routed(&self.router, path)
            .find(|(i, _)| {
                let r = &self.rules[**i];
                r.cache
                    && r.write_through
                        .as_ref()
                        .is_some_and(|w| w.methods.contains(method))
                    && r.host.as_deref().is_none_or(|h| host_matches(h, host))
            })
            .map(|(i, params)| Matched {
                rule: &self.rules[*i],
                params,
            })
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// The longest an entry of any rule can be kept: its TTL (for `ttl:
    /// origin`, [`MAX_ORIGIN_TTL`]) plus its stale windows.
    pub fn longest_lifetime(&self) -> Duration {
        self.rules
            .iter()
            .map(|r| {
                let ttl = match r.ttl {
                    Ttl::Fixed(d) => d,
                    Ttl::Origin => MAX_ORIGIN_TTL,
                };
                ttl.saturating_add(r.grace())
            })
            .max()
            .unwrap_or_default()
    }

    /// The rule for a request, if any.
    pub fn find<'a>(&'a self, method: &Method, host: &str, path: &'a str) -> Option<Matched<'a>> {
        routed(&self.router, path)
            .find(|(i, _)| self.rules[**i].fits(method, host))
            .map(|(i, params)| Matched {
                rule: &self.rules[*i],
                params,
            })
    }
}

/// The values whose pattern matches `path`, in file order, each with its
/// parameters (a refined segment's pattern must match too).
fn routed<'a, V>(
    router: &'a Routed<V>,
    path: &'a str,
) -> impl Iterator<Item = (&'a V, Vec<(&'a str, &'a str)>)> {
    let found = router.at(path).ok();
    let params = found.as_ref().map(|f| f.params.clone());
    found
        .into_iter()
        .flat_map(|f| f.value.iter())
        .filter_map(move |(route, value)| {
            let params = params.as_ref()?;
            Some((value, route.params(params.iter())?))
        })
}

#[cfg(test)]
mod tests;
