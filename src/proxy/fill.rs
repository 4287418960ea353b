//! The fill job: storing an answer once its body is in. The one store
//! path of the proxy: a miss's answer (when the tee has its copy), a 304
//! that refreshed a stale entry, and a write's new representation all go
//! through [`Fill::store`], which renders the entry's tags, asks the purge
//! engine whether the answer may still be stored, stores it (with its
//! Vary marker) in the rule's tiers, and lands the flight that waited.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use super::collapse::{Claim, Landing};
use super::keyed::{Keyed, origin_tags};
use super::storable;
use super::tee::NotKept;
use crate::cache::encoding;
use crate::cache::tiered::Tiered;
use crate::cache::vary::{variant_key, variant_tag};
use crate::cache::{CachedResponse, Payload, StoredHeaders};
use crate::invalidation::Invalidator;
use crate::rules::{Bodies, MAX_FAN_OUT, Rule, Snapshot, Template, Unrendered};

/// Everything needed to store an answer once its body is in.
pub struct Fill {
    /// Where it goes.
    pub cache: Tiered,
    /// Asked whether a purge since the fetch refuses it.
    pub invalidator: Arc<Invalidator>,
    /// Its rule and key.
    pub keyed: Keyed,
    /// The request, for tags and the Vary variant key.
    pub request: Snapshot,
    /// The request's JSON body, for tags that read it (a write's).
    pub request_json: Option<serde_json::Value>,
    /// The answer's status.
    pub status: StatusCode,
    /// The answer's end-to-end headers.
    pub headers: HeaderMap,
    /// Its lifetime.
    pub fresh: storable::Freshness,
    /// When the request went upstream, on the purge clock.
    pub fetched: u64,
    /// The flight and global lock it leads, if any.
    pub claim: Claim,
}

impl Fill {
    /// Called by the tee with the body copy, or why there is none.
    pub fn finish(self, copy: Result<Bytes, NotKept>) {
        let body = match copy {
            Ok(body) => body,
            Err(why) => {
                crate::metrics::store_refused(why.as_str());
                return; // Dropping the claim releases followers.
            }
        };
        crate::metrics::spawn(async move {
            self.store(body).await;
        });
    }

    /// Stores the answer with `body`; answers whether it was stored.
    pub async fn store(self, body: Bytes) -> bool {
        let Fill {
            cache,
            invalidator,
            keyed,
            request,
            request_json,
            status,
            headers,
            fresh,
            fetched,
            claim,
        } = self;
        let vary = keyed
            .variant_names(storable::vary_names(&headers))
            .unwrap_or_default();
        let tags = match tags(
            &keyed,
            &request,
            request_json.as_ref(),
            &headers,
            &body,
            &vary,
        ) {
            Ok(tags) => tags,
            Err((tag, n)) => {
                // Stored without some of its tags, the entry would outlive
                // a purge that names it: not stored at all.
                tracing::warn!(rule = %keyed.rule.name, %tag, elements = n, limit = MAX_FAN_OUT, "an answer fans out to more tags than allowed; not stored");
                crate::metrics::store_refused("too-many-tags");
                return false;
            }
        };
        if !invalidator.may_store(&keyed.key, &tags, fetched) {
            // This entry was purged while its answer was on the way: it may
            // be the old value. Store nothing; followers fetch for themselves.
            // (Purges of other entries never get here.)
            crate::metrics::store_refused("purged");
            return false;
        }
        let (headers, body) = compressed(&keyed.rule, headers, body);
        let entry = |payload| Arc::new(fresh.entry(fetched, payload));
        let response = entry(Payload::Response(CachedResponse {
            status,
            headers: StoredHeaders::from_map(&headers),
            body,
            tags,
        }));
        let tier = keyed.rule.tier;
        let key = if vary.is_empty() {
            keyed.key.clone()
        } else {
            let variant = variant_key(&keyed.key, &vary, request.headers());
            cache
                .put(&keyed.key, entry(Payload::Vary(vary)), tier)
                .await;
            variant
        };
        let Claim { guard, lock } = claim;
        let stored = match lock {
            // Replicas wait on the lock for the entry in Redis: write it first.
            Some(lock) => {
                let stored = cache.put_now(&key, response.clone(), tier).await;
                lock.release().await;
                stored
            }
            None => {
                cache.put(&key, response.clone(), tier).await;
                true
            }
        };
        if let Some(guard) = guard {
            guard.land(Landing::Stored {
                key,
                entry: response,
            });
        }
        stored
    }
}

/// The answer as it is kept: compressed once in the rule's coding when it
/// is compressible and the coding makes it smaller (an ESI page keeps the
/// offsets of its includes, so it is kept as it is).
fn compressed(rule: &Rule, mut headers: HeaderMap, body: Bytes) -> (HeaderMap, Bytes) {
    let Some(enc) = rule.compress.first().copied().filter(|_| !rule.esi) else {
        return (headers, body);
    };
    if body.len() < encoding::MIN_SIZE || !encoding::compressible(&headers) {
        return (headers, body);
    }
    match enc.compress(&body) {
        Some(packed) if packed.len() < body.len() => {
            encoding::mark(&mut headers, &rule.compress, &packed);
            (headers, packed)
        }
        _ => (headers, body),
    }
}

/// The tags of an answer: the rule's templates (rendered from the
/// request, its path parameters and the JSON bodies; a fan-out at most
/// [`MAX_FAN_OUT`] times, else the template and its count), the backend's
/// own when the rule takes them, and the internal tag of a varying answer.
fn tags(
    keyed: &Keyed,
    request: &Snapshot,
    request_json: Option<&serde_json::Value>,
    headers: &HeaderMap,
    body: &Bytes,
    vary: &[http::HeaderName],
) -> Result<Vec<String>, (String, usize)> {
    let rule = &keyed.rule;
    // A body that is not JSON, or lacks a field, gives no tag from it.
    let reads_body = rule.tags.iter().any(Template::reads_body);
    let json = reads_body
        .then(|| serde_json::from_slice::<serde_json::Value>(body).ok())
        .flatten();
    let bodies = Bodies {
        request: request_json,
        response: json.as_ref(),
        previous: None,
    };
    let (view, params) = (request.view(), keyed.params());
    let mut names = Vec::new();
    for t in &rule.tags {
        match t.render_each(&view, &params, bodies, MAX_FAN_OUT) {
            Ok(each) => names.extend(each),
            Err(Unrendered::Over(n)) => return Err((t.source().to_owned(), n)),
            Err(Unrendered::Missing) => {}
        }
    }
    if rule.origin_tags {
        names.extend(origin_tags(headers));
    }
    if !vary.is_empty() {
        names.push(variant_tag(&keyed.key));
    }
    names.sort_unstable();
    names.dedup();
    Ok(names)
}
