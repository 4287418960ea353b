//! What a rule's key reads from a request. A cacheable fetch sends the
//! backend these and nothing else the client controls, so that every
//! answer stored under a key was built from what that key holds
//! (`proxy::forward` builds the backend's request from them).

use http::HeaderName;

use super::request::{canonical_query, is_canonical};
use super::template::{Template, Var};

/// The query parameters a key reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum QueryInputs {
    /// None: the backend gets no query.
    #[default]
    None,
    /// These parameters (`{query.page}`), by decoded name.
    Named(Vec<String>),
    /// The whole canonical query (`{query}`).
    All,
}

/// The request data a rule's key is rendered from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyInputs {
    /// Query parameters.
    pub query: QueryInputs,
    /// Cookies, by name.
    pub cookies: Vec<String>,
    /// Request headers: `{header.x}` of the key, then `forward.headers`.
    pub headers: Vec<HeaderName>,
    /// Whether the key holds `{host}`.
    pub host: bool,
    /// Headers `forward.headers` names: they are keyed as Vary variants.
    pub forwarded: Vec<HeaderName>,
}

impl KeyInputs {
    /// What `key` reads, with the headers `forward` adds.
    pub fn of(key: &Template, forward: &[HeaderName]) -> Self {
        let mut inputs = KeyInputs::default();
        let mut named = Vec::new();
        for var in key.vars() {
            match var {
                Var::QueryAll => inputs.query = QueryInputs::All,
                Var::Query(q) => named.push(q.clone()),
                Var::Cookie(c) => push_new(&mut inputs.cookies, c.clone()),
                Var::Header(h) => push_new(&mut inputs.headers, h.clone()),
                Var::Host => inputs.host = true,
                _ => {}
            }
        }
        if inputs.query != QueryInputs::All && !named.is_empty() {
            named.dedup();
            inputs.query = QueryInputs::Named(named);
        }
        for h in forward {
            push_new(&mut inputs.headers, h.clone());
            push_new(&mut inputs.forwarded, h.clone());
        }
        inputs
    }

    /// Whether the backend gets the query parameter named `name` (decoded).
    pub fn forwards_query(&self, name: &str) -> bool {
        match &self.query {
            QueryInputs::None => false,
            QueryInputs::Named(names) => names.iter().any(|n| n == name),
            QueryInputs::All => true,
        }
    }
}

/// The query a key reads and a cacheable fetch forwards from: the
/// request's, in canonical form, without the parameters `ignore` names.
/// `None` when nothing is left.
pub fn keyed_query(query: Option<&str>, ignore: &[String]) -> Option<String> {
    let query = query.filter(|q| !q.is_empty())?;
    let canonical = if is_canonical(query) {
        query.to_owned()
    } else {
        canonical_query(query)
    };
    if ignore.is_empty() {
        return Some(canonical);
    }
    let kept: Vec<&str> = canonical
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(k, _)| k);
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            !ignore.iter().any(|g| glob_matches(g, &name))
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

fn push_new<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// Whether the query parameter `name` matches the `ignore_query` glob
/// `pattern` (`*` stands for any run of characters, as in `utm_*`).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    let Some((last, middle)) = tail.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Use;

    /// The inputs of a key are the query, cookies, headers and host it names.
    #[test]
    fn inputs_of_a_key() {
        let params = vec!["id".to_owned()];
        let key = Template::parse(
            "p:{id}:{query.page}:{cookie.cur}:{header.x-lang}",
            Use::Key,
            &params,
        )
        .unwrap();
        let fwd = [HeaderName::from_static("x-device")];
        let i = KeyInputs::of(&key, &fwd);
        assert_eq!(i.query, QueryInputs::Named(vec!["page".into()]));
        assert!(i.forwards_query("page") && !i.forwards_query("callback"));
        assert_eq!(i.cookies, ["cur"]);
        assert_eq!(i.headers, ["x-lang", "x-device"]);
        assert_eq!(i.forwarded, ["x-device"]);
        assert!(!i.host);
        let all = Template::parse("{method}:{host}{path}?{query}", Use::Key, &[]).unwrap();
        let i = KeyInputs::of(&all, &[]);
        assert_eq!(i.query, QueryInputs::All);
        assert!(i.host && i.forwards_query("anything"));
    }

    /// Globs match with `*` anywhere, and only whole names.
    #[test]
    fn globs() {
        assert!(glob_matches("utm_*", "utm_source"));
        assert!(glob_matches("utm_*", "utm_"));
        assert!(!glob_matches("utm_*", "xutm_source"));
        assert!(glob_matches("gclid", "gclid"));
        assert!(!glob_matches("gclid", "gclid2"));
        assert!(glob_matches("*_id", "fb_id"));
        assert!(glob_matches("a*b*c", "a-b-c"));
        assert!(!glob_matches("a*b*c", "a-c"));
        assert!(!glob_matches("ab*ba", "aba"));
    }
}
