//! What a write purges, rendered from the write: the key and tags of every
//! rule whose `invalidate_on` matches it (with the pattern's path
//! parameters and the JSON bodies), and the entries of its own URL and of
//! its answer's `Location` / `Content-Location` on the same host (RFC 9111
//! section 4.4).

use std::sync::Arc;

use http::{Method, Uri};

use super::Purge;
use crate::rules::{Bodies, RequestView, Rule, RuleSet, Snapshot, Template, keyed_query};

/// The rules a write triggers, each with the write as its pattern reads it.
pub struct Triggered {
    write: Snapshot,
    matched: Vec<(Arc<Rule>, Snapshot)>,
}

impl Triggered {
    /// The rules of `rules` that the write `view` triggers.
    pub fn of(rules: &RuleSet, view: &RequestView<'_>) -> Self {
        Self {
            write: Snapshot::of(view, &[]),
            matched: rules
                .triggered(view.method, view.path)
                .into_iter()
                .map(|m| (m.rule.clone(), Snapshot::of(view, &m.params)))
                .collect(),
        }
    }

    fn templates(&self) -> impl Iterator<Item = &Template> {
        self.matched
            .iter()
            .flat_map(|(r, _)| std::iter::once(&r.key).chain(&r.tags))
    }

    /// Whether a key or tag reads the write's JSON body (`{request.x}`).
    pub fn reads_request(&self) -> bool {
        self.templates().any(Template::reads_request)
    }

    /// Whether a key or tag reads a JSON body (the answer's, `{response.x}`).
    pub fn reads_body(&self) -> bool {
        self.templates().any(Template::reads_body)
    }

    /// What the write purges, once the backend answered it with 2xx or
    /// 3xx and `locations` (its `Location` / `Content-Location`).
    pub fn purge(&self, rules: &RuleSet, bodies: Bodies<'_>, locations: &[Uri]) -> Purge {
        let mut purge = Purge::default();
        for (rule, snap) in &self.matched {
            purge.keys.extend(snap.render(&[&rule.key], bodies));
            let tags: Vec<&Template> = rule.tags.iter().collect();
            let rendered = snap.render(&tags, bodies);
            // A tag whose JSON field the answer lacks (or an answer too
            // long to read, or not JSON) is told of; the rest still go.
            let missed = tags.len() - rendered.len();
            if missed > 0 {
                tracing::warn!(rule = %rule.name, missed, "a write's purge tags could not be rendered");
                ::metrics::counter!(crate::metrics::PURGE_TAGS_UNRENDERED, "rule" => rule.name.clone())
                    .increment(missed as u64);
            }
            purge.tags.extend(rendered);
        }
        purge.keys.extend(key_for_get(rules, &self.write, None));
        for uri in locations {
            // The write's host is its authority, port included.
            let same_host = uri.authority().is_none_or(|a| {
                a.as_str().eq_ignore_ascii_case(self.write.host())
                    || (a.port().is_none()
                        && a.host()
                            .eq_ignore_ascii_case(crate::rules::hostname(self.write.host())))
            });
            if same_host {
                purge
                    .keys
                    .extend(key_for_get(rules, &self.write, Some(uri)));
            }
        }
        purge.keys.sort_unstable();
        purge.keys.dedup();
        purge.tags.sort_unstable();
        purge.tags.dedup();
        purge
    }
}

/// The key a GET of the request's URL (or of `other`) renders, if a
/// caching rule covers it.
pub fn key_for_get(rules: &RuleSet, snap: &Snapshot, other: Option<&Uri>) -> Option<String> {
    let (path, query) = match other {
        Some(u) => (u.path(), u.query()),
        None => (snap.path(), snap.query()),
    };
    let m = rules.find(&Method::GET, snap.host(), path)?;
    if !m.rule.cache {
        return None;
    }
    get_key(m.rule, snap, path, query, &m.params)
}

/// The key a GET of `path?query` with the headers of `snap` has under
/// `rule`, read as the proxy reads it (the canonical query less
/// `ignore_query`; `None` where the GET would pass for want of a value).
pub fn get_key(
    rule: &Rule,
    snap: &Snapshot,
    path: &str,
    query: Option<&str>,
    params: &[(&str, &str)],
) -> Option<String> {
    let query = keyed_query(query, &rule.ignore_query);
    let view = RequestView {
        method: &Method::GET,
        path,
        query: query.as_deref(),
        ..snap.view()
    };
    rule.key.render_key(&view, params, &rule.allow_empty).ok()
}
