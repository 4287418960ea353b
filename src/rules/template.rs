//! Key and tag templates: `product:{id}`, `{method}:{host}{path}?{query}`.
//!
//! Every value is percent-encoded before it goes into a key, and a template
//! is accepted only if its placeholders are separated by a character no value
//! can contain. So a rendered key parses back into exactly one set of values:
//! no request can make its key equal to one rendered from other values, and
//! [`Template::may_overlap`] tells at load time whether two rules' templates
//! could ever render the same key.
//!
//! Longer than most files because parsing, rendering and the overlap
//! proof must agree on one grammar; keeping them together keeps them in
//! step.

use std::fmt;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, Method};
use percent_encoding::{AsciiSet, percent_encode};

use super::request::{
    VALUE, cookie, cookie_count, decoded, push_escaped, query_pairs, query_pairs_raw,
};

/// `{path}` keeps its slashes so keys stay readable.
const PATH: &AsciiSet = &VALUE.remove(b'/');

/// One placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// A path parameter of the route (`{id}`).
    Param(String),
    /// One query parameter (`{query.page}`).
    Query(String),
    /// The whole query, sorted by name (`{query}`); `?a`, `?a=` and no
    /// `a` at all render differently.
    QueryAll,
    /// A request header (`{header.accept-language}`).
    Header(HeaderName),
    /// A cookie (`{cookie.session_id}`).
    Cookie(String),
    /// The client address.
    ClientIp,
    /// The method (HEAD renders as GET, since HEAD is answered from GET entries).
    Method,
    /// The request's authority (the Host header), lower-cased, port included.
    Host,
    /// The path.
    Path,
    /// A field of the JSON request body (tags and triggers only).
    Request(Vec<String>),
    /// A field of the JSON response body (tags and triggers only).
    Response(Vec<String>),
    /// A field of the written resource's cached answer from before the
    /// write (triggers only).
    Previous(Vec<String>),
}

/// The most tags one fan-out tag (`{response.items[*].id}`) gives an
/// entry; an answer with more elements is not stored.
pub const MAX_FAN_OUT: usize = 256;

/// The segment of a JSON field path that fans out over an array's
/// elements (`{response.items[*].id}`).
const EACH: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Var),
}

/// Where a template is used; decides which placeholders it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A cache key: request data only.
    Key,
    /// A tag: may also read JSON bodies, and fan out over an array.
    Tag,
    /// A trigger's key or tag: as a tag, and may read the written
    /// resource's answer from before the write (`{previous.x}`).
    Trigger,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Request data a template renders from.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method.
    pub method: &'a Method,
    /// Host: the request's authority, validated and lower-cased, port
    /// included (`proxy::plan::request_host`).
    pub host: &'a str,
    /// Path, as received.
    pub path: &'a str,
    /// Query string, as received.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Client address.
    pub client_ip: IpAddr,
}

/// JSON bodies a tag template may read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bodies<'a> {
    /// The request body, when it was JSON.
    pub request: Option<&'a serde_json::Value>,
    /// The response body, when it was JSON.
    pub response: Option<&'a serde_json::Value>,
    /// The written resource's cached answer from before the write, when
    /// it was cached and JSON.
    pub previous: Option<&'a serde_json::Value>,
}

/// Why a template rendered nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrendered {
    /// A JSON field it reads is missing (or a query parameter it names is
    /// given twice).
    Missing,
    /// It fans out over more elements than allowed (how many).
    Over(usize),
}

impl<'a> RequestView<'a> {
    /// The view of a request's head; `host` as the proxy normalised it.
    pub fn of(parts: &'a http::request::Parts, host: &'a str, client_ip: IpAddr) -> Self {
        Self {
            method: &parts.method,
            host,
            path: parts.uri.path(),
            query: parts.uri.query(),
            headers: &parts.headers,
            client_ip,
        }
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Template {
    /// Parses `source`; `params` are the route's parameter names.
    pub fn parse(source: &str, usage: Use, params: &[String]) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(i) if rest.as_bytes()[i] == b'}' => {
                    return Err(format!("unmatched `}}` in `{source}`"));
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Lit(rest[..i].to_owned()));
                    }
                    let end = rest[i..]
                        .find('}')
                        .ok_or_else(|| format!("unclosed `{{` in `{source}`"))?;
                    let name = &rest[i + 1..i + end];
                    parts.push(Part::Var(parse_var(name, usage, params)?));
                    rest = &rest[i + end + 1..];
                }
                None => {
                    parts.push(Part::Lit(rest.to_owned()));
                    rest = "";
                }
            }
        }
        if usage == Use::Key
            && parts
                .iter()
                .any(|p| matches!(p, Part::Lit(l) if l.contains('#')))
        {
            return Err(format!(
                "`{source}`: `#` is reserved for Vary variants and may not appear in a key"
            ));
        }
        let template = Self {
            source: source.to_owned(),
            parts,
        };
        template.check_separated()?;
        Ok(template)
    }

    /// The literal text before the first placeholder: every key the
    /// template renders starts with it.
    pub fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Lit(l)) => l,
            _ => "",
        }
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether a placeholder reads a JSON body.
    pub fn reads_body(&self) -> bool {
        self.vars()
            .any(|v| matches!(v, Var::Request(_) | Var::Response(_)))
    }

    /// Whether a placeholder reads the written resource's previous answer.
    pub fn reads_previous(&self) -> bool {
        self.vars().any(|v| matches!(v, Var::Previous(_)))
    }

    /// Whether it renders one string per element of a JSON array
    /// (`{response.items[*].id}`).
    pub fn fans_out(&self) -> bool {
        self.vars().any(|v| fan_path(v).is_some())
    }

    /// Path parameters the template uses.
    pub fn params(&self) -> impl Iterator<Item = String> + '_ {
        self.vars().filter_map(|v| match v {
            Var::Param(p) => Some(p.clone()),
            _ => None,
        })
    }

    /// Whether a placeholder reads the JSON request body.
    pub fn reads_request(&self) -> bool {
        self.vars().any(|v| matches!(v, Var::Request(_)))
    }

    /// Whether the template uses this placeholder.
    pub fn uses(&self, var: &Var) -> bool {
        self.vars().any(|v| v == var)
    }

    /// Whether it has no placeholder at all.
    pub fn is_constant(&self) -> bool {
        self.vars().next().is_none()
    }

    /// Its placeholders, in order.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Lit(_) => None,
        })
    }

    /// Two placeholders must be split by a character the first cannot emit,
    /// or the rendered key would not tell where one value ends.
    fn check_separated(&self) -> Result<(), String> {
        for pair in self.parts.windows(2) {
            if let [Part::Var(a), Part::Var(b)] = pair {
                if *b == Var::Path && *a != Var::Path {
                    continue; // {path} always starts with '/', which `a` never emits.
                }
                return Err(format!(
                    "`{}`: placeholders `{}` and `{}` must be separated by a character such as `:`",
                    self.source,
                    var_name(a),
                    var_name(b)
                ));
            }
        }
        for triple in self.parts.windows(3) {
            if let [Part::Var(a), Part::Lit(lit), Part::Var(_)] = triple
                && lit.chars().all(|c| emits(a, c))
            {
                return Err(format!(
                    "`{}`: the text `{lit}` after `{}` can also appear in its value; use a separator such as `:`",
                    self.source,
                    var_name(a)
                ));
            }
        }
        Ok(())
    }

    /// Renders the template; `None` when a JSON field it reads is missing
    /// or a query parameter it names is given twice.
    pub fn render(
        &self,
        req: &RequestView<'_>,
        params: &[(&str, &str)],
        bodies: Bodies<'_>,
    ) -> Option<String> {
        self.render_checked(req, params, bodies, None, None).ok()
    }

    /// Renders the template once per element its fan-out placeholder
    /// (`[*]`) finds, at most `limit` times, or once if it has none. An
    /// empty array renders nothing; an element without the field is
    /// skipped.
    pub fn render_each(
        &self,
        req: &RequestView<'_>,
        params: &[(&str, &str)],
        bodies: Bodies<'_>,
        limit: usize,
    ) -> Result<Vec<String>, Unrendered> {
        let Some((var, path)) = self.vars().find_map(|v| Some((v, fan_path(v)?))) else {
            return self
                .render(req, params, bodies)
                .map(|s| vec![s])
                .ok_or(Unrendered::Missing);
        };
        let each = body_of(var, bodies)
            .and_then(|b| walk(b, &path[..path.iter().position(|f| f == EACH)?]))
            .and_then(serde_json::Value::as_array)
            .ok_or(Unrendered::Missing)?;
        if each.len() > limit {
            return Err(Unrendered::Over(each.len()));
        }
        let rest = &path[path.iter().position(|f| f == EACH).unwrap_or(0) + 1..];
        let values: Vec<String> = each.iter().filter_map(|e| scalar(walk(e, rest)?)).collect();
        let mut out = Vec::with_capacity(values.len());
        for v in &values {
            if let Ok(s) = self.render_checked(req, params, bodies, None, Some(v)) {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Renders a cache key, refusing a request it cannot key exactly: a
    /// query parameter, header or cookie it names that is missing or empty
    /// (unless `allow_empty` lists the placeholder, as `query.page`), or
    /// that the request gives more than once (the backend may read another
    /// one than the key did).
    pub fn render_key(
        &self,
        req: &RequestView<'_>,
        params: &[(&str, &str)],
        allow_empty: &[String],
    ) -> Result<String, KeyRefusal> {
        self.render_checked(req, params, Bodies::default(), Some(allow_empty), None)
    }

    /// `each`: the value of the fan-out placeholder for this rendering.
    fn render_checked(
        &self,
        req: &RequestView<'_>,
        params: &[(&str, &str)],
        bodies: Bodies<'_>,
        strict: Option<&[String]>,
        each: Option<&str>,
    ) -> Result<String, KeyRefusal> {
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(v) if each.is_some() && fan_path(v).is_some() => {
                    out.extend(percent_encode(each.unwrap_or("").as_bytes(), VALUE));
                }
                Part::Var(v) => {
                    let start = out.len();
                    let found = render_var(v, req, params, bodies, &mut out)?;
                    if let Some(allowed) = strict {
                        if found > 1 {
                            return Err(KeyRefusal::Ambiguous);
                        }
                        let named = matches!(v, Var::Query(_) | Var::Header(_) | Var::Cookie(_));
                        if named
                            && out.len() == start
                            && !allowed.iter().any(|a| *a == placeholder_name(v))
                        {
                            return Err(KeyRefusal::Incomplete);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Whether `self` and `other` could render the same string for some
    /// values (a search over both templates read as patterns).
    pub fn may_overlap(&self, other: &Template) -> bool {
        let a = tokens(&self.parts);
        let b = tokens(&other.parts);
        let mut seen = vec![false; (a.len() + 1) * (b.len() + 1)];
        let mut stack = vec![(0usize, 0usize)];
        while let Some((i, j)) = stack.pop() {
            let idx = i * (b.len() + 1) + j;
            if std::mem::replace(&mut seen[idx], true) {
                continue;
            }
            if i == a.len() && j == b.len() {
                return true;
            }
            let (ta, tb) = (a.get(i), b.get(j));
            if let Some(Tok::Any(_)) = ta {
                stack.push((i + 1, j));
            }
            if let Some(Tok::Any(_)) = tb {
                stack.push((i, j + 1));
            }
            match (ta, tb) {
                (Some(Tok::Char(x)), Some(Tok::Char(y))) if x == y => stack.push((i + 1, j + 1)),
                (Some(Tok::Char(x)), Some(Tok::Any(v))) if emits(v, *x) => stack.push((i + 1, j)),
                (Some(Tok::Any(v)), Some(Tok::Char(y))) if emits(v, *y) => stack.push((i, j + 1)),
                _ => {}
            }
        }
        false
    }
}

#[derive(Debug)]
enum Tok<'a> {
    Char(char),
    Any(&'a Var),
}

fn tokens(parts: &[Part]) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    for p in parts {
        match p {
            Part::Lit(s) => out.extend(s.chars().map(Tok::Char)),
            Part::Var(v) => {
                if *v == Var::Path {
                    out.push(Tok::Char('/'));
                }
                out.push(Tok::Any(v));
            }
        }
    }
    out
}

/// Whether a rendered value of `var` can contain `c`.
fn emits(var: &Var, c: char) -> bool {
    let plain = c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%');
    match var {
        Var::Path => plain || c == '/',
        Var::QueryAll => plain || c == '=' || c == '&',
        _ => plain,
    }
}

fn var_name(v: &Var) -> String {
    match v {
        Var::Param(p) => format!("{{{p}}}"),
        Var::Query(q) => format!("{{query.{q}}}"),
        Var::QueryAll => "{query}".into(),
        Var::Header(h) => format!("{{header.{h}}}"),
        Var::Cookie(c) => format!("{{cookie.{c}}}"),
        Var::ClientIp => "{client_ip}".into(),
        Var::Method => "{method}".into(),
        Var::Host => "{host}".into(),
        Var::Path => "{path}".into(),
        Var::Request(f) => format!("{{request.{}}}", field_name(f)),
        Var::Response(f) => format!("{{response.{}}}", field_name(f)),
        Var::Previous(f) => format!("{{previous.{}}}", field_name(f)),
    }
}

/// A JSON field path as written: `items[*].id`.
fn field_name(path: &[String]) -> String {
    path.join(".").replace(".*", "[*]")
}

/// The path of a placeholder that fans out over an array.
fn fan_path(v: &Var) -> Option<&[String]> {
    match v {
        Var::Request(p) | Var::Response(p) | Var::Previous(p) if p.iter().any(|f| f == EACH) => {
            Some(p)
        }
        _ => None,
    }
}

/// The body a JSON placeholder reads.
fn body_of<'a>(v: &Var, bodies: Bodies<'a>) -> Option<&'a serde_json::Value> {
    match v {
        Var::Request(_) => bodies.request,
        Var::Response(_) => bodies.response,
        Var::Previous(_) => bodies.previous,
        _ => None,
    }
}

fn parse_var(name: &str, usage: Use, params: &[String]) -> Result<Var, String> {
    let (head, tail) = match name.split_once('.') {
        Some((h, t)) => (h, Some(t)),
        None => (name, None),
    };
    let field = |what: &str| -> Result<String, String> {
        match tail {
            Some(t) if !t.is_empty() => Ok(t.to_owned()),
            _ => Err(format!(
                "`{{{name}}}`: name the {what}, as in `{{{head}.name}}`"
            )),
        }
    };
    let var = match head {
        "query" if tail.is_none() => Var::QueryAll,
        "query" => Var::Query(field("query parameter")?),
        "header" => Var::Header(
            HeaderName::try_from(field("header")?.to_ascii_lowercase())
                .map_err(|_| format!("`{{{name}}}`: not a valid header name"))?,
        ),
        "cookie" => Var::Cookie(field("cookie")?),
        "request" | "response" | "previous" => {
            if usage == Use::Key {
                return Err(format!(
                    "`{{{name}}}`: keys are rendered before the body is read; JSON fields may be used in tags and triggers only"
                ));
            }
            if head == "previous" && usage != Use::Trigger {
                return Err(format!(
                    "`{{{name}}}`: the answer from before a write is read in a trigger's `keys` and `tags` only"
                ));
            }
            let path =
                json_path(&field("JSON field")?).map_err(|e| format!("`{{{name}}}`: {e}"))?;
            match head {
                "request" => Var::Request(path),
                "response" => Var::Response(path),
                _ => Var::Previous(path),
            }
        }
        "client_ip" if tail.is_none() => Var::ClientIp,
        "method" if tail.is_none() => Var::Method,
        "host" if tail.is_none() => Var::Host,
        "path" if tail.is_none() => Var::Path,
        _ if tail.is_none() && params.iter().any(|p| p == name) => Var::Param(name.to_owned()),
        _ if tail.is_none() => {
            let known = if params.is_empty() {
                "the route has no parameters".to_owned()
            } else {
                format!(
                    "the route defines {}",
                    params
                        .iter()
                        .map(|p| format!("{{{p}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(format!(
                "`{{{name}}}` is not a parameter of the route ({known})"
            ));
        }
        _ => return Err(format!("`{{{name}}}` is not a known placeholder")),
    };
    Ok(var)
}

/// `items[*].id` as the fields it walks: `["items", "*", "id"]`; one
/// `[*]` at most.
fn json_path(text: &str) -> Result<Vec<String>, String> {
    let path: Vec<String> = text
        .replace("[*]", ".*")
        .split('.')
        .map(str::to_owned)
        .collect();
    if path.iter().any(|f| f.is_empty() || f.contains(['[', ']'])) {
        return Err("write a JSON field as `a.b`, an array's elements as `items[*].id`".into());
    }
    match path.iter().filter(|f| *f == EACH).count() {
        0 | 1 if path.first().is_some_and(|f| f != EACH) => Ok(path),
        0 | 1 => Err("`[*]` follows the name of an array, as in `items[*].id`".into()),
        _ => Err("a placeholder may fan out over one array only".into()),
    }
}

/// A path segment's value as a key holds it: its raw bytes, escapes kept
/// as escapes (`%2F` is not `/`, `%41` is not `A`), since the backend is
/// sent the path as received and may route on it raw (Apache refuses an
/// escaped slash by default).
fn push_path_value(out: &mut String, raw: &str) {
    out.extend(percent_encode(raw.as_bytes(), VALUE));
}

/// Why a request cannot be keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// A value the key names is missing or empty (`detail=key-incomplete`).
    Incomplete,
    /// A value the key names is given more than once, or a JSON field is
    /// missing (`detail=ambiguous-key`).
    Ambiguous,
}

impl KeyRefusal {
    /// The `Cache-Status` detail.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRefusal::Incomplete => "key-incomplete",
            KeyRefusal::Ambiguous => "ambiguous-key",
        }
    }
}

/// A named placeholder as `allow_empty` lists it: `query.page`,
/// `header.x-lang`, `cookie.session_id`.
fn placeholder_name(v: &Var) -> String {
    match v {
        Var::Query(q) => format!("query.{q}"),
        Var::Header(h) => format!("header.{h}"),
        Var::Cookie(c) => format!("cookie.{c}"),
        _ => String::new(),
    }
}

/// Renders one placeholder; answers how many values the request gave for
/// it (so more than one is ambiguous as a key). A missing JSON field, or a
/// query parameter named twice, is refused as ambiguous.
fn render_var(
    var: &Var,
    req: &RequestView<'_>,
    params: &[(&str, &str)],
    bodies: Bodies<'_>,
    out: &mut String,
) -> Result<usize, KeyRefusal> {
    let mut given = 1;
    match var {
        Var::Param(name) => {
            let v = params
                .iter()
                .find(|(k, _)| k == name)
                .map_or("", |(_, v)| *v);
            push_path_value(out, v);
        }
        Var::Query(name) => {
            // Names compare decoded (`pag%65` is `page`, as the backend reads
            // it); a name given twice is ambiguous (backends differ on which
            // value wins), so the key cannot be rendered and the request passes.
            let mut found = query_pairs(req.query).filter(|(k, _)| decoded(k) == *name);
            let v = found.next().map_or("", |(_, v)| v);
            if found.next().is_some() {
                return Err(KeyRefusal::Ambiguous);
            }
            push_escaped(out, &v.replace('+', " "), VALUE);
        }
        Var::QueryAll => {
            let mut pairs: Vec<(String, Option<&str>)> = query_pairs_raw(req.query)
                .map(|(k, v)| (decoded(k), v))
                .collect();
            // Stable, by name only: repeated names keep their order, which
            // backends may give meaning to.
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            for (i, (k, v)) in pairs.into_iter().enumerate() {
                if i > 0 {
                    out.push('&');
                }
                out.extend(percent_encode(k.as_bytes(), VALUE));
                // `?a` and `?a=` are different requests to some backends.
                if let Some(v) = v {
                    out.push('=');
                    push_escaped(out, &v.replace('+', " "), VALUE);
                }
            }
        }
        Var::Header(name) => {
            let mut values = req.headers.get_all(name).iter();
            let v = values.next().map(|v| String::from_utf8_lossy(v.as_bytes()));
            given = usize::from(v.is_some()) + values.count();
            out.extend(percent_encode(
                v.as_deref().unwrap_or("").trim().as_bytes(),
                VALUE,
            ));
        }
        Var::Cookie(name) => {
            // The raw bytes, as backends read them: `%45UR` is not `EUR`.
            given = cookie_count(req.headers, name);
            let v = cookie(req.headers, name).unwrap_or_default();
            out.extend(percent_encode(v.as_bytes(), VALUE));
        }
        Var::ClientIp => out.push_str(&req.client_ip.to_string()),
        Var::Method => {
            let m = if req.method == Method::HEAD {
                "GET"
            } else {
                req.method.as_str()
            };
            out.extend(percent_encode(m.as_bytes(), VALUE));
        }
        // Not decoded: the host is validated to hold no `%` at all.
        Var::Host => out.extend(percent_encode(req.host.as_bytes(), VALUE)),
        Var::Path => {
            let p = req.path.strip_prefix('/').unwrap_or(req.path);
            out.push('/');
            // Not decoded: `%2F` and `/` are different paths, and encoding
            // the raw bytes (`%` included) keeps distinct paths distinct.
            out.extend(percent_encode(p.as_bytes(), PATH));
        }
        Var::Request(field) => bodies
            .request
            .and_then(|b| push_json(out, b, field))
            .ok_or(KeyRefusal::Ambiguous)?,
        Var::Response(field) => bodies
            .response
            .and_then(|b| push_json(out, b, field))
            .ok_or(KeyRefusal::Ambiguous)?,
        Var::Previous(field) => bodies
            .previous
            .and_then(|b| push_json(out, b, field))
            .ok_or(KeyRefusal::Ambiguous)?,
    }
    Ok(given)
}

fn push_json(out: &mut String, body: &serde_json::Value, field: &[String]) -> Option<()> {
    let text = scalar(walk(body, field)?)?;
    out.extend(percent_encode(text.as_bytes(), VALUE));
    Some(())
}

/// The text of the string, number or boolean at `field` under `body`.
pub fn json_text(body: &serde_json::Value, field: &[String]) -> Option<String> {
    scalar(walk(body, field)?)
}

/// The value at `field` (object names, array indexes) under `body`; a
/// fan-out segment (`*`) finds nothing here.
pub(super) fn walk<'a>(
    body: &'a serde_json::Value,
    field: &[String],
) -> Option<&'a serde_json::Value> {
    let mut v = body;
    for f in field {
        v = match v {
            serde_json::Value::Object(m) => m.get(f)?,
            serde_json::Value::Array(a) => a.get(f.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// A string, number or boolean as text; anything else is not a value.
pub(super) fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
