//! `verify`: consistency sampling. For a rule's `sample` share of hits, the
//! request a miss would send is sent to the backend in the background,
//! after the hit was answered, and its answer compared with the entry that was served:
//! status, and body (JSON with the `ignore` fields left out, anything else
//! byte for byte). Nothing in the cache changes unless the rule says
//! `purge_on_mismatch`, which purges the key on every replica.
//!
//! Bounded: at most `limits.verify_in_flight` checks run at once. A check
//! is skipped (and counted) when that many already run, when every
//! backend place is taken, or for [`PAUSE`] after a check that got no
//! answer in time (the backend is slow). A mismatch is logged with the
//! rule, the entry's age and the names of the JSON fields that differ,
//! never values, keys or bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use serde_json::Value;

use super::Proxy;
use super::keyed::Keyed;
use super::plan::Ctx;
use crate::cache::{CachedResponse, Entry, Payload};
use crate::invalidation::Purge;
use crate::metrics::{self, PurgeSource};
use crate::rules::Verify;

/// Longest a check waits for the backend's whole answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// How long checks stop after one that got no answer in time.
const PAUSE: Duration = Duration::from_secs(10);

/// Field names a mismatch log lists at most.
const MAX_FIELDS: usize = 20;

/// The checks' state on one replica.
pub(super) struct Verifier {
    permits: Arc<tokio::sync::Semaphore>,
    /// Until when checks are skipped, in ms since the epoch.
    paused_until: AtomicU64,
}

impl Verifier {
    /// At most `in_flight` checks at once.
    pub(super) fn new(in_flight: usize) -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(in_flight)),
            paused_until: AtomicU64::new(0),
        }
    }
}

/// What a check found.
#[derive(Debug, PartialEq, Eq)]
enum Checked {
    /// The backend answers the same.
    Match,
    /// It answers otherwise: the status, and the JSON fields that differ
    /// (empty for a body that is not JSON or a status alone).
    Mismatch { status: bool, fields: Vec<String> },
}

impl Proxy {
    /// After a hit on `entry` (under `key`) of a rule with `verify`: for
    /// its sample share, starts a check in the background.
    pub(super) fn verify(self: &Arc<Self>, ctx: &Ctx, keyed: &Keyed, entry: &Arc<Entry>) {
        let Some(verify) = &keyed.rule.verify else {
            return;
        };
        if fastrand::f64() >= verify.sample {
            return;
        }
        let rule = keyed.rule.clone();
        let paused = self.verifier.paused_until.load(Ordering::Relaxed) > crate::cache::now_ms();
        let permit = if paused || self.upstream.busy() {
            None
        } else {
            self.verifier.permits.clone().try_acquire_owned().ok()
        };
        let Some(permit) = permit else {
            return count(&rule.name, "skipped");
        };
        // The request a miss of this key would send.
        let (head, _) = super::miss::upstream_head(ctx, None);
        let req = Request::from_parts(head, super::empty());
        let (this, entry, key) = (self.clone(), entry.clone(), keyed.key.clone());
        tokio::spawn(async move {
            let found = this
                .ask_backend(req, &rule.name, rule.max_object_size)
                .await;
            drop(permit);
            let Payload::Response(stored) = &entry.payload else {
                return;
            };
            let (status, body) = match found {
                Ok(answer) => answer,
                Err(why) => {
                    tracing::debug!(rule = rule.name, why, "verify: no usable answer");
                    return count(&rule.name, "error");
                }
            };
            match compare(stored, status, &body, verify_of(&rule)) {
                Checked::Match => count(&rule.name, "match"),
                Checked::Mismatch { status, fields } => {
                    count(&rule.name, "mismatch");
                    let age = entry.age(SystemTime::now());
                    ::metrics::histogram!(metrics::VERIFY_MISMATCH_AGE, "rule" => rule.name.clone())
                        .record(age.as_secs_f64());
                    tracing::warn!(
                        rule = rule.name,
                        age_seconds = age.as_secs(),
                        status_differs = status,
                        fields = fields.join(","),
                        "verify: the backend answers otherwise than the cached entry"
                    );
                    if verify_of(&rule).is_some_and(|v| v.purge_on_mismatch) {
                        let purge = Purge {
                            keys: vec![key],
                            ..Purge::default()
                        };
                        this.invalidator.purge(&purge, PurgeSource::Verify).await;
                    }
                }
            }
        });
    }

    /// The backend's status and whole body for `req`, within [`TIMEOUT`]
    /// and `limit` bytes; a timeout pauses the checks for [`PAUSE`].
    async fn ask_backend(
        &self,
        req: Request<super::ProxyBody>,
        rule: &str,
        limit: u64,
    ) -> Result<(http::StatusCode, Bytes), &'static str> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let ask = async {
            let res = self.upstream.send(req).await.map_err(|_| "backend error")?;
            let status = res.status();
            match super::write::read_limited(res.into_body(), limit).await {
                Ok(body) => Ok((status, body)),
                Err(_) => Err("body too large or cut short"),
            }
        };
        match tokio::time::timeout(TIMEOUT.min(self.upstream.timeout()), ask).await {
            Ok(answer) => answer,
            Err(_) => {
                let until = crate::cache::now_ms() + crate::redis::millis(PAUSE);
                self.verifier.paused_until.store(until, Ordering::Relaxed);
                tracing::debug!(rule, "verify: the backend is slow; checks paused");
                Err("no answer in time")
            }
        }
    }
}

/// Counts a check of `rule` in `sidecache_verify_total`.
fn count(rule: &str, result: &'static str) {
    ::metrics::counter!(metrics::VERIFY, "rule" => rule.to_owned(), "result" => result)
        .increment(1);
}

fn verify_of(rule: &crate::rules::Rule) -> Option<&Verify> {
    rule.verify.as_ref()
}

/// Compares what was served with the backend's answer.
fn compare(
    stored: &CachedResponse,
    status: http::StatusCode,
    body: &[u8],
    verify: Option<&Verify>,
) -> Checked {
    let status_differs = stored.status != status;
    let ignore = verify.map_or(&[][..], |v| &v.ignore[..]);
    let fields = match (
        serde_json::from_slice::<Value>(&stored.body),
        serde_json::from_slice::<Value>(body),
    ) {
        (Ok(mut a), Ok(mut b)) => {
            for path in ignore {
                remove(&mut a, path);
                remove(&mut b, path);
            }
            let mut fields = Vec::new();
            differ(&a, &b, "", &mut fields);
            fields
        }
        _ if stored.body[..] == body[..] => Vec::new(),
        // Not JSON: the body as a whole.
        _ => vec![String::new()],
    };
    if !status_differs && fields.is_empty() {
        return Checked::Match;
    }
    let fields = fields.into_iter().filter(|f| !f.is_empty()).collect();
    Checked::Mismatch {
        status: status_differs,
        fields,
    }
}

/// Removes the field at `path` (object keys) from `v`, if it is there.
fn remove(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = v;
    for p in parents {
        match at.get_mut(p.as_str()) {
            Some(next) => at = next,
            None => return,
        }
    }
    if let Some(obj) = at.as_object_mut() {
        obj.remove(last.as_str());
    }
}

/// Pushes to `out` the dotted names of the fields where `a` and `b`
/// differ (`price`, `items[2].qty`; the whole value as `""`), at most
/// [`MAX_FIELDS`].
fn differ(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    if out.len() >= MAX_FIELDS || a == b {
        return;
    }
    let field = |name: &str| {
        if at.is_empty() {
            name.to_owned()
        } else {
            format!("{at}.{name}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => differ(va, vb, &field(k), out),
                    None => out.push(field(k)),
                }
            }
            for k in y.keys().filter(|k| !x.contains_key(*k)) {
                out.push(field(k));
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differ(va, vb, &format!("{at}[{i}]"), out);
            }
        }
        _ => out.push(at.to_owned()),
    }
    out.truncate(MAX_FIELDS);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::StoredHeaders;

    fn stored(body: &str) -> CachedResponse {
        CachedResponse {
            status: http::StatusCode::OK,
            headers: StoredHeaders::default(),
            body: Bytes::from(body.to_owned()),
            tags: Vec::new(),
        }
    }

    fn verify(ignore: &[&str]) -> Verify {
        Verify {
            sample: 1.0,
            ignore: ignore
                .iter()
                .map(|f| f.split('.').map(str::to_owned).collect())
                .collect(),
            purge_on_mismatch: false,
        }
    }

    #[test]
    fn json_fields_are_named_and_ignored_fields_left_out() {
        let a = stored(
            r#"{"id":1,"price":9.5,"meta":{"request_id":"x","v":1},"items":[{"q":1},{"q":2}]}"#,
        );
        let b = br#"{"id":1,"price":7.0,"meta":{"request_id":"y","v":1},"items":[{"q":1},{"q":3}],"new":true}"#;
        let ok = http::StatusCode::OK;
        assert_eq!(
            compare(&a, ok, b, Some(&verify(&[]))),
            Checked::Mismatch {
                status: false,
                fields: vec![
                    "items[1].q".into(),
                    "meta.request_id".into(),
                    "price".into(),
                    "new".into()
                ]
            }
        );
        let ignoring = verify(&["meta.request_id", "price", "new", "items"]);
        assert_eq!(compare(&a, ok, b, Some(&ignoring)), Checked::Match);
    }

    #[test]
    fn other_bodies_and_statuses_are_compared_whole() {
        let a = stored("<p>hello</p>");
        let ok = http::StatusCode::OK;
        assert_eq!(compare(&a, ok, b"<p>hello</p>", None), Checked::Match);
        assert_eq!(
            compare(&a, ok, b"<p>bye</p>", None),
            Checked::Mismatch {
                status: false,
                fields: vec![]
            }
        );
        assert_eq!(
            compare(&a, http::StatusCode::NOT_FOUND, b"<p>hello</p>", None),
            Checked::Mismatch {
                status: true,
                fields: vec![]
            }
        );
    }
}
