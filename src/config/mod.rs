//! The configuration: read the YAML, replace `${VAR}` from the environment,
//! deserialize into [`raw`] structs, then validate into a typed [`Config`].
//!
//! Nothing here binds a socket: `sidecache check` and `sidecache run` share
//! this path, so a file that `check` accepts is one `run` starts with.
//!
//! Longer than most files because it holds the typed config every module
//! reads, with its documented defaults beside each field; the checks are
//! in the files below it.

mod across;
mod backend;
mod check;
pub mod raw;
mod rule;
mod shared;
pub mod tls;
mod validate;
mod warm;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::rules::RuleSet;

/// Default proxy listener.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Default admin listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// Default time to open a connection to the backend.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default time the backend has to send its response headers.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on requests waiting on the backend at once.
pub const DEFAULT_MAX_CONCURRENCY: usize = 256;
/// Default number of requests that may wait for a place.
pub const DEFAULT_QUEUE: usize = 1024;
/// Default L1 size bound.
pub const DEFAULT_MEMORY_MAX_SIZE: u64 = 256 * 1024 * 1024;
/// Default largest response body that is cached; larger ones stream through.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 1024 * 1024;
/// Default Redis key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "sidecache:";
/// Default time one Redis command may take before it counts as a miss.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// Default bound on L1 staleness while cut off from Redis.
pub const DEFAULT_DISCONNECT_GRACE: Duration = Duration::from_secs(5);
/// Default freshness of a rule that names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Default key template.
pub const DEFAULT_KEY: &str = "{method}:{host}{path}?{query}";
/// Statuses stored unless a rule lists its own.
pub const DEFAULT_STATUSES: [u16; 7] = [200, 203, 204, 300, 301, 404, 410];

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it came from (for messages and reloads).
    pub source: PathBuf,
    /// Proxy listener.
    pub listen: SocketAddr,
    /// The backend.
    pub upstream: Upstream,
    /// Admin listener.
    pub admin: Admin,
    /// L1 bounds.
    pub memory: Memory,
    /// Client limits.
    pub limits: Limits,
    /// L2, when configured.
    pub redis: Option<RedisConfig>,
    /// This region and the others, when configured.
    pub regions: Option<Regions>,
    /// How purges are applied.
    pub invalidation: Invalidation,
    /// Which requests get an access-log line.
    pub access_log: AccessLog,
    /// The file's hash (xxh3, hex), as written: tells which config a
    /// replica runs (`sidecache_config_info`).
    pub digest: String,
    /// Proxies in front whose forwarding headers are kept.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The compiled rules, in file order.
    pub rules: RuleSet,
}

impl Config {
    /// Whether `client` is a proxy in front whose forwarding headers count.
    pub fn trusts(&self, client: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&client))
    }
}

/// `upstream:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// Scheme and authority of the backend (`http://host:port` or `https://...`).
    pub url: http::Uri,
    /// Time to open a connection.
    pub connect_timeout: Duration,
    /// Time for the response headers to arrive.
    pub timeout: Duration,
    /// Most requests waiting on the backend at once.
    pub max_concurrency: usize,
    /// Most requests waiting for one of those places; beyond, 503.
    pub queue: usize,
    /// For an `https://` URL: how the backend is reached over TLS.
    pub tls: Option<tls::UpstreamTls>,
    /// The `Host` a cacheable fetch sends when its key does not hold
    /// `{host}` (`upstream.host`).
    pub host: Option<http::HeaderValue>,
}

/// `admin:`.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Admin listener.
    pub listen: SocketAddr,
    /// Bearer token for purge and reload.
    pub token: Option<String>,
    /// Whether `PURGE /url` is answered on the proxy port.
    pub purge_on_proxy_port: bool,
}

impl Admin {
    /// Whether `headers` carry `Authorization: Bearer <token>` for the
    /// configured token, compared in constant time. No token configured: no.
    pub fn authorizes(&self, headers: &http::HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq::constant_time_eq(given.trim().as_bytes(), token.as_bytes())
    }
}

/// `limits:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Time a client has to send its request headers (slowloris guard).
    pub header_timeout: Duration,
    /// Largest request head, in bytes.
    pub max_header_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
    /// Largest request body; a larger one gets 413.
    pub max_body: u64,
    /// Most client connections at once; further ones wait to be accepted.
    /// Each idle keep-alive connection holds about 21 KiB
    /// (`bench/connections.sh`), so the default bounds them to about 90 MiB.
    pub max_connections: usize,
    /// How long in-flight requests may take after a shutdown signal.
    pub shutdown_grace: Duration,
    /// A connection (HTTP/1.1 or HTTP/2) on which no request has started
    /// for this long is closed once its in-flight requests are done.
    pub idle_timeout: Duration,
    /// Most `warm_on` fetches in flight at once; more are dropped.
    pub warm_in_flight: usize,
    /// Most `verify` checks in flight at once; more are skipped.
    pub verify_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body: 10 * 1024 * 1024,
            max_connections: 4096,
            shutdown_grace: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            warm_in_flight: 16,
            verify_in_flight: 4,
        }
    }
}

/// `memory:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    /// Total bytes of L1, weighed by entry size.
    pub max_size: u64,
    /// Largest body stored, by default.
    pub max_object_size: u64,
    /// What a starting replica fetches before it turns ready.
    pub warm: Option<WarmUp>,
}

/// `memory.warm:`.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmUp {
    /// The URLs to fetch (paths, or absolute URLs naming the host), as the
    /// file listed them when the config was read.
    pub urls: Vec<String>,
    /// With `from: hot`: how many of the keys hottest across replicas to
    /// copy from L2 first.
    pub hot: Option<usize>,
    /// How long readiness waits for the warm-up.
    pub timeout: Duration,
}

/// Default number of hot keys a starting replica copies.
pub const DEFAULT_WARM_TOP: usize = 1000;

/// Most hot keys a starting replica may copy.
pub const MAX_WARM_TOP: u64 = 100_000;

/// Default time readiness waits for the warm-up.
pub const DEFAULT_WARM_TIMEOUT: Duration = Duration::from_secs(10);

/// `redis:`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// One server, or a cluster.
    pub servers: RedisServers,
    /// Prefix of every key and channel sidecache uses.
    pub key_prefix: String,
    /// Time one command may take.
    pub timeout: Duration,
    /// How long L1 entries are still served after this replica loses its
    /// connection to Redis (and so may miss purges). On reconnect L1 is dropped.
    pub disconnect_grace: Duration,
    /// For `rediss://`: the PEM of the CA certificates trusted instead of
    /// the system's (read when the config is).
    pub ca: Option<Vec<u8>>,
}

/// `region:` and `regions:`: purges made in any region reach all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Regions {
    /// This replica's region.
    pub here: String,
    /// The other regions, by name.
    pub others: Vec<Region>,
}

/// One other region.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// Its name, as `regions:` gives it.
    pub name: String,
    /// Its Redis.
    pub redis: RedisConfig,
}

/// `log.access`: which requests get an access-log line.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum AccessLog {
    /// None.
    Off,
    /// Answers of 500 and over, and requests refused or failed before an
    /// answer (the default).
    #[default]
    Errors,
    /// Every request.
    All,
    /// This share of requests (0 to 1), picked at random, and every error.
    Sample(f64),
}

impl AccessLog {
    /// Whether a request answered `status` (`failed`: refused or without
    /// the backend's answer) gets a line.
    pub fn wants(self, status: http::StatusCode, failed: bool) -> bool {
        let error = failed || status.is_server_error();
        match self {
            Self::Off => false,
            Self::Errors => error,
            Self::All => true,
            Self::Sample(share) => error || fastrand::f64() < share,
        }
    }
}

/// `invalidation:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalidation {
    /// Each purge is applied again after this delay.
    pub repeat_after: Option<Duration>,
    /// How many of this region's purges Redis keeps for the other regions.
    pub region_log: u64,
}

impl Default for Invalidation {
    fn default() -> Self {
        Self {
            repeat_after: None,
            region_log: DEFAULT_REGION_LOG,
        }
    }
}

/// Default number of purges kept for other regions to catch up.
pub const DEFAULT_REGION_LOG: u64 = 100_000;
/// Default time one command to another region's Redis may take.
pub const DEFAULT_REGION_TIMEOUT: Duration = Duration::from_secs(1);

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisServers {
    /// One server's URL (`redis://`, `rediss://`, `redis+unix://`).
    Url(String),
    /// Seed nodes of a Redis Cluster (`redis://` or `rediss://`).
    Cluster(Vec<String>),
}

impl RedisServers {
    /// Whether the connection speaks TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        match self {
            Self::Url(u) => u.starts_with("rediss://"),
            Self::Cluster(seeds) => seeds.iter().all(|u| u.starts_with("rediss://")),
        }
    }
}

/// A place in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

/// One problem found in the file.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Where, when known.
    pub pos: Option<Pos>,
    /// The field, dotted (`rules[2].key`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Every error found in one file; the file is rejected if there is any.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The errors, in file order.
    pub problems: Vec<Problem>,
}

/// A loaded config with the warnings it raised.
#[derive(Debug)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// Things that work but are probably not what was meant.
    pub warnings: Vec<Problem>,
}

impl Problem {
    /// Formats as `file:line:column: field: message`.
    pub fn display<'a>(&'a self, file: &'a Path) -> impl fmt::Display + 'a {
        DisplayProblem {
            file,
            problem: self,
        }
    }
}

struct DisplayProblem<'a> {
    file: &'a Path,
    problem: &'a Problem,
}

impl fmt::Display for DisplayProblem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.problem;
        write!(f, "{}", self.file.display())?;
        if let Some(pos) = &p.pos {
            write!(f, ":{}:{}", pos.line, pos.column)?;
        }
        if p.field.is_empty() {
            write!(f, ": {}", p.message)
        } else {
            write!(f, ": {}: {}", p.field, p.message)
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {}", p.display(&self.file))?;
        }
        Ok(())
    }
}

impl Config {
    /// The JSON Schema of the config file, for editors (`sidecache schema`).
    /// It describes the file's shape; `check` still catches what a schema
    /// cannot (bad durations, duplicate routes, unknown placeholders).
    pub fn json_schema() -> serde_json::Value {
        let mut schema = schemars::schema_for!(raw::RawConfig);
        schema.insert("title".into(), "sidecache config".into());
        schema.into()
    }

    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            problems: vec![Problem {
                pos: None,
                field: String::new(),
                message: format!("cannot read the file: {e}"),
            }],
        })?;
        Self::from_yaml(&text, path, &|name| std::env::var(name).ok())
    }

    /// Validates YAML text; `env` answers `${VAR}` look-ups. `source` names
    /// the file in messages.
    pub fn from_yaml(
        text: &str,
        source: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Loaded, ConfigError> {
        let fail = |problems| ConfigError {
            file: source.to_owned(),
            problems,
        };
        // The file as written (before `${VAR}`s, which may be secrets).
        let digest = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(text.as_bytes()));
        let text = interpolate(text, env).map_err(fail)?;
        let raw: raw::RawConfig = serde_saphyr::from_str(&text).map_err(|e| {
            fail(vec![Problem {
                pos: e.location().map(|l| Pos {
                    line: l.line(),
                    column: l.column(),
                }),
                field: String::new(),
                message: yaml_message(&e),
            }])
        })?;
        let mut loaded = validate::validate(raw, source).map_err(fail)?;
        loaded.config.digest = digest;
        Ok(loaded)
    }
}

/// The first line of a YAML error, without the location and snippet the
/// library adds (we print our own location).
fn yaml_message(e: &serde_saphyr::Error) -> String {
    let full = e.to_string();
    let mut msg = full.lines().next().unwrap_or("invalid YAML").trim();
    msg = msg.strip_prefix("error: ").unwrap_or(msg);
    // The library may lead with its own "line X column Y: "; we print ours.
    if msg.starts_with("line ")
        && let Some(i) = msg.find(": ")
    {
        msg = &msg[i + 2..];
    }
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    if msg.contains("flow mapping") || msg.contains("flow sequence") {
        // The most common cause: `{ path: /products/{id} }`.
        format!(
            "{msg} (inside `{{ ... }}` or `[ ... ]`, quote values that contain braces: path: \"/products/{{id}}\")"
        )
    } else {
        msg.to_owned()
    }
}

/// Replaces `${VAR}` with the variable's value; `$${` stays a literal `${`.
/// A missing variable is an error at its place; a `${` in a comment is
/// left alone.
///
/// The value goes into the scalar it stands in, never into the YAML
/// around it: inside quotes it is escaped for them, and a whole plain
/// scalar whose value YAML would read as anything but that text (an
/// anchor `&a`, a tag `!!binary`, a block `|` or `>`, a quote, a flow
/// character, `null`, nothing at all) is written as a quoted string. A
/// value that cannot be written into part of a plain scalar that way is
/// refused, asking for quotes.
fn interpolate(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<Problem>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (line_no, line) in text.split_inclusive('\n').enumerate() {
        let mut quotes = Quotes::default();
        let mut done = 0; // bytes of `line` already copied to `out`
        let mut i = 0;
        let problem = |at: usize, message: String| Problem {
            pos: Some(Pos {
                line: line_no as u64 + 1,
                column: line[..at].chars().count() as u64 + 1,
            }),
            field: String::new(),
            message,
        };
        while i < line.len() {
            if quotes.comment {
                break;
            }
            if quotes.single && line[i..].starts_with("''") {
                // One quote inside single quotes, which stay open.
                i += 2;
                continue;
            }
            if !line[i..].starts_with("${") {
                let c = line[i..].chars().next().unwrap_or(' ');
                quotes.step(&line[..i], c);
                i += c.len_utf8();
                continue;
            }
            if line[..i].ends_with('$') {
                // `$${` is a literal `${`.
                out.push_str(&line[done..i - 1]);
                out.push_str("${");
                i += 2;
                done = i;
                continue;
            }
            out.push_str(&line[done..i]);
            let Some(end) = line[i + 2..].find('}') else {
                problems.push(problem(i, "unclosed `${`".into()));
                done = i;
                break;
            };
            let name = &line[i + 2..i + 2 + end];
            let after = i + 2 + end + 1;
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            match env(name).filter(|_| valid) {
                Some(v) => match quotes.write(&v, &line[..i], &line[after..]) {
                    Ok(text) => out.push_str(&text),
                    Err(why) => {
                        problems.push(problem(i, format!("environment variable `{name}` {why}")))
                    }
                },
                None => problems.push(problem(
                    i,
                    if valid {
                        format!("environment variable `{name}` is not set")
                    } else {
                        format!("`${{{name}}}` is not a valid variable name")
                    },
                )),
            }
            i = after;
            done = after;
        }
        out.push_str(&line[done..]);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Where on a line of YAML a scan stands: inside quotes, in a comment.
#[derive(Default)]
struct Quotes {
    double: bool,
    single: bool,
    escaped: bool,
    comment: bool,
}

impl Quotes {
    /// Moves past `c`, which follows `before` on the line.
    fn step(&mut self, before: &str, c: char) {
        if self.double {
            match (self.escaped, c) {
                (true, _) => self.escaped = false,
                (false, '\\') => self.escaped = true,
                (false, '"') => self.double = false,
                _ => {}
            }
        } else if self.single {
            // (`''` inside them, one quote, is skipped before this.)
            if c == '\'' {
                self.single = false;
            }
        } else {
            let starts = before.trim_end().is_empty()
                || before.ends_with(|b: char| b.is_whitespace() || "[{,:".contains(b));
            match c {
                '#' if before.is_empty() || before.ends_with(char::is_whitespace) => {
                    self.comment = true;
                }
                '"' if starts => self.double = true,
                '\'' if starts => self.single = true,
                _ => {}
            }
        }
    }

    /// `v` as it is written where the scan stands, between `before` and
    /// `after` on the line.
    fn write(&self, v: &str, before: &str, after: &str) -> Result<String, &'static str> {
        if self.double {
            // JSON's escapes are YAML's double-quoted ones.
            let quoted = serde_json::to_string(v).map_err(|_| "cannot be quoted")?;
            return Ok(quoted[1..quoted.len() - 1].to_owned());
        }
        if self.single {
            if v.chars().any(char::is_control) {
                return Err("holds a control character: use double quotes around it");
            }
            return Ok(v.replace('\'', "''"));
        }
        let lead = before.trim_end();
        let whole = (lead.ends_with(':')
            || lead.ends_with("- ")
            || lead.ends_with('-')
            || lead.ends_with(['[', '{', ',']))
            && {
                let rest = after.trim_start();
                rest.is_empty() || rest.starts_with(['#', ',', ']', '}'])
            };
        let inner_ok = !v.is_empty()
            && !v
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "#,[]{}\"'\\".contains(c))
            && !v.ends_with(':');
        let first_ok = v
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || "._/+=(".contains(c));
        let typed = matches!(v, "~" | "null" | "Null" | "NULL");
        if whole {
            if inner_ok && first_ok && !typed {
                return Ok(v.to_owned());
            }
            return serde_json::to_string(v).map_err(|_| "cannot be quoted");
        }
        if inner_ok {
            Ok(v.to_owned())
        } else {
            Err(
                "holds YAML syntax (a space, quote, `#`, or one of {}[],): put quotes around the value it stands in",
            )
        }
    }
}

#[cfg(test)]
mod tests;
