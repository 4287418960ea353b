//! The keyed request: what a cacheable request carries through the hit
//! and miss paths: its rule, its key, and for a rule with tags the path
//! parameters they read.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, request};

use super::storable;
use crate::cache::CachedResponse;
use crate::cache::vary::variant_key;
use crate::rules::{KeyRefusal, RequestView, Rule};

/// What a cacheable request carries: its rule and key, and for a rule
/// with tags the path parameters they read. Built on every cacheable
/// request, so it holds nothing a hit does not need; tags are rendered
/// only when an answer is stored.
#[derive(Clone, Debug)]
pub struct Keyed {
    /// The rule.
    pub rule: Arc<Rule>,
    /// The rule's key, rendered from the request.
    pub key: String,
    /// Path parameters, kept only when the rule has tags.
    pub params: Vec<(String, String)>,
}

impl Keyed {
    /// Renders the key of a request `rule` matched; refused when the
    /// request cannot be keyed exactly (a value the key names is missing,
    /// empty or given twice): such a request is forwarded, not cached.
    pub fn of(
        rule: &Arc<Rule>,
        view: &RequestView<'_>,
        params: &[(&str, &str)],
    ) -> Result<Self, KeyRefusal> {
        let key = rule.key.render_key(view, params, &rule.allow_empty)?;
        let params = if rule.tags.is_empty() {
            Vec::new()
        } else {
            params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Ok(Self {
            rule: rule.clone(),
            key,
            params,
        })
    }

    /// Path parameters as templates take them.
    pub fn params(&self) -> Vec<(&str, &str)> {
        self.params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The key the entry of `res`, answering `req`, is stored under.
    pub fn own_key(&self, res: &CachedResponse, req: &request::Parts) -> String {
        let vary = storable::vary_names_of(res.headers.get_all(&http::header::VARY));
        match self.variant_names(vary) {
            Some(names) if !names.is_empty() => variant_key(&self.key, &names, &req.headers),
            _ => self.key.clone(),
        }
    }

    /// The request headers an entry varies on: the answer's `Vary`
    /// names (`None` for `Vary: *`) and the headers the rule's `forward`
    /// sends the backend, which join the key this way.
    pub fn variant_names(&self, vary: Option<Vec<HeaderName>>) -> Option<Vec<HeaderName>> {
        let mut names = vary?;
        // Asked for unencoded whatever the client takes (`fetch_head`): the
        // answer does not depend on the client's `Accept-Encoding`.
        if !self.rule.compress.is_empty() || self.rule.esi {
            names.retain(|n| *n != http::header::ACCEPT_ENCODING);
        }
        let forwarded = &self.rule.inputs.forwarded;
        if !forwarded.is_empty() {
            names.extend(forwarded.iter().cloned());
            names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            names.dedup();
        }
        Some(names)
    }
}

/// Tags the backend names in `Surrogate-Key` (space-separated) and
/// `Cache-Tag` (comma-separated).
pub fn origin_tags(headers: &HeaderMap) -> Vec<String> {
    let split = |name: &str, sep: char| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(sep))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut tags = split("surrogate-key", ' ');
    tags.extend(split("cache-tag", ','));
    tags
}
