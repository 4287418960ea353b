//! What a write purges, rendered from the write: for every `invalidate_on`
//! entry it matches, its rule's key and the keys and tags the entry names
//! (with the pattern's path parameters, the JSON bodies and the written
//! resource's cached answer from before the write), and the entries of its
//! own URL and of its answer's `Location` / `Content-Location` on the same
//! host (RFC 9111 section 4.4).

use std::collections::HashMap;
use std::sync::Arc;

use http::{Method, Uri};

use super::Purge;
use crate::rules::{
    Bodies, RequestView, Rule, RuleSet, Snapshot, Template, Trigger, json_text, keyed_query,
};

/// The `invalidate_on` entries a write matches, each with the write as
/// its pattern reads it.
pub struct Triggered {
    write: Snapshot,
    fired: Vec<Fired>,
}

/// One matched entry.
struct Fired {
    rule: Arc<Rule>,
    /// Its index in the rule's `invalidate_on` (not a copy of it).
    trigger: usize,
    snap: Snapshot,
}

impl Fired {
    fn trigger(&self) -> &Trigger {
        &self.rule.triggers[self.trigger]
    }
}

/// The cached answers of the written resources from before the write, by
/// key, as JSON (`{previous.x}`, `if_changed`).
pub type Previous = HashMap<String, serde_json::Value>;

impl Triggered {
    /// The entries of `rules` that the write `view` matches.
    pub fn of(rules: &RuleSet, view: &RequestView<'_>) -> Self {
        Self {
            write: Snapshot::of(view, &[]),
            fired: rules
                .triggered(view.method, view.path)
                .into_iter()
                .map(|f| Fired {
                    rule: f.rule.clone(),
                    trigger: f.index,
                    snap: Snapshot::of(view, &f.params),
                })
                .collect(),
        }
    }

    fn templates(&self) -> impl Iterator<Item = &Template> {
        self.fired.iter().flat_map(|f| f.trigger().templates())
    }

    /// Whether a key or tag reads the write's JSON body (`{request.x}`),
    /// or `if_changed` may compare it.
    pub fn reads_request(&self) -> bool {
        self.templates().any(Template::reads_request) || self.compares()
    }

    /// Whether a key or tag reads a JSON body (the answer's, `{response.x}`),
    /// or `if_changed` compares it.
    pub fn reads_body(&self) -> bool {
        self.templates().any(Template::reads_body) || self.compares()
    }

    fn compares(&self) -> bool {
        self.fired
            .iter()
            .any(|f| !f.trigger().if_changed.is_empty())
    }

    /// The keys whose cached answers the triggers read: the rule's key for
    /// each entry with `{previous.x}` or `if_changed`. Read them before
    /// the write is sent, so that they are what the write changed.
    pub fn previous_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .fired
            .iter()
            .filter(|f| {
                !f.trigger().if_changed.is_empty()
                    || f.trigger().templates().any(Template::reads_previous)
            })
            .filter_map(|f| f.snap.render(&[&f.rule.key], Bodies::default()).pop())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// What the write purges, once the backend answered it with 2xx or
    /// 3xx and `locations` (its `Location` / `Content-Location`);
    /// `previous` as [`Triggered::previous_keys`] found them.
    pub fn purge(
        &self,
        rules: &RuleSet,
        bodies: Bodies<'_>,
        previous: &Previous,
        locations: &[Uri],
    ) -> Purge {
        let mut purge = Purge::default();
        for fired in &self.fired {
            let (rule, trigger, snap) = (&fired.rule, fired.trigger(), &fired.snap);
            let key = snap.render(&[&rule.key], Bodies::default()).pop();
            let bodies = Bodies {
                previous: key.as_ref().and_then(|k| previous.get(k)),
                ..bodies
            };
            purge.keys.extend(key);
            if !changed(&trigger.if_changed, bodies) {
                continue;
            }
            let (keys, missed_keys) = render_all(snap, &trigger.keys, bodies);
            let (tags, missed) = render_all(snap, &trigger.tags, bodies);
            // A template whose JSON field is missing (an answer too long to
            // read, not JSON, a first write with nothing cached before) is
            // told of; the rest still go.
            let missed = missed + missed_keys;
            if missed > 0 {
                tracing::debug!(rule = %rule.name, missed, "a write's purge names could not all be rendered");
                ::metrics::counter!(crate::metrics::PURGE_TAGS_UNRENDERED, "rule" => rule.name.clone())
                    .increment(missed as u64);
            }
            purge.keys.extend(keys);
            purge.tags.extend(tags);
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

/// The value at `field` under `body`, whatever it is.
fn walk_to<'a>(body: &'a serde_json::Value, field: &[String]) -> Option<&'a serde_json::Value> {
    field.iter().try_fold(body, |v, f| v.as_object()?.get(f))
}

/// Every string `templates` render for the write (one per element of a
/// fan-out, without bound: a purge is never cut short), and how many
/// rendered nothing.
fn render_all(snap: &Snapshot, templates: &[Template], bodies: Bodies<'_>) -> (Vec<String>, usize) {
    let params: Vec<(&str, &str)> = snap
        .params()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let view = snap.view();
    let mut out = Vec::new();
    let mut missed = 0;
    for t in templates {
        match t.render_each(&view, &params, bodies, usize::MAX) {
            Ok(names) => out.extend(names),
            Err(_) => missed += 1,
        }
    }
    (out, missed)
}

/// Whether the write changed one of `fields`. A JSON request body that
/// leaves a field out did not change it (a PATCH, or a form of the fields
/// it edits: the backend keeps the rest). Otherwise the field is compared
/// between the answer from before the write and the write's own (its
/// answer, else its request body), and counts as changed when either is
/// unknown. With no fields, always.
fn changed(fields: &[Vec<String>], bodies: Bodies<'_>) -> bool {
    if fields.is_empty() {
        return true;
    }
    fields.iter().any(|f| {
        let sent = bodies.request.filter(|b| b.is_object());
        if sent.is_some_and(|b| walk_to(b, f).is_none()) {
            return false;
        }
        let before = bodies.previous.and_then(|b| json_text(b, f));
        let after = bodies
            .response
            .and_then(|b| json_text(b, f))
            .or_else(|| bodies.request.and_then(|b| json_text(b, f)));
        before.is_none() || after.is_none() || before != after
    })
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
