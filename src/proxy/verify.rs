//! `verify`: consistency sampling. For a rule's `sample` share of hits, the
//! request a miss would send is sent to the backend in the background,
//! after the hit was answered, and its answer compared with the entry that
//! was served: status, and body (JSON with the `ignore` fields left out,
//! anything else byte for byte). Nothing in the cache changes unless the
//! rule says `purge_on_mismatch`, which purges the key on every replica.
//!
//! Bounded: at most `limits.verify_in_flight` checks run at once. A check
//! is skipped (and counted) when that many already run, when every
//! backend place is taken, or for [`PAUSE`] after a check whose answer
//! took over [`SLOW`] or never came (the backend is slow). A mismatch is
//! logged with the rule, the entry's age and the names of the JSON fields
//! that differ, never values, keys or bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use serde_json::Value;

use super::Proxy;
use super::keyed::Keyed;
use super::plan::Ctx;
use crate::cache::{CachedResponse, Entry, Payload};
use crate::invalidation::Purge;
use crate::metrics::{self, PurgeSource};

/// Longest a check waits for the backend's whole answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A check whose whole answer takes longer finds the backend slow.
const SLOW: Duration = Duration::from_secs(1);

/// How long checks stop after one that found the backend slow.
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
        let (head, _) = super::miss::upstream_head(ctx, &keyed.rule, None);
        let req = Request::from_parts(head, super::empty());
        let (this, entry, key) = (self.clone(), entry.clone(), keyed.key.clone());
        crate::metrics::spawn(async move {
            let Some(verify) = rule.verify.as_ref() else {
                return;
            };
            let found = this
                .ask_backend(req, &rule.name, rule.max_object_size)
                .await;
            drop(permit);
            let Payload::Response(stored) = &entry.payload else {
                return;
            };
            // An entry sidecache compressed is compared as the backend
            // sent it.
            let decoded = crate::cache::encoding::identity_of(stored);
            let stored = decoded.as_ref().unwrap_or(stored);
            let mut answer = match found {
                Ok(answer) => answer,
                Err(why) => {
                    tracing::debug!(rule = rule.name, why, "verify: no usable answer");
                    return count(&rule.name, "error");
                }
            };
            // A write through sidecache since the entry's fetch: the entry
            // is on its way out, and a difference says nothing of writes
            // that bypass sidecache.
            if this
                .invalidator
                .purged_since(&key, &stored.tags, entry.fetched_ms)
            {
                return count(&rule.name, "skipped");
            }
            // An ESI page is stored with its markup read (includes cut
            // out): the backend's is read the same way to compare.
            if rule.esi
                && answer.encoding.is_none()
                && let Ok(prepared) = super::esi::prepare(&answer.body)
            {
                answer.body = prepared.body;
            }
            let checked = match compare(stored, &answer, &verify.ignore) {
                Ok(checked) => checked,
                Err(why) => {
                    tracing::debug!(rule = rule.name, why, "verify: not comparable");
                    return count(&rule.name, "error");
                }
            };
            match checked {
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
                    if verify.purge_on_mismatch {
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

    /// The backend's answer to `req`, read whole within [`TIMEOUT`] and
    /// `limit` bytes; a 5xx or 429 is an error (the backend failing, not
    /// answering otherwise). An answer slower than [`SLOW`], or none in
    /// time, pauses the checks for [`PAUSE`].
    async fn ask_backend(
        &self,
        req: Request<super::ProxyBody>,
        rule: &str,
        limit: u64,
    ) -> Result<Answer, &'static str> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let ask = async {
            let res = self.upstream.send(req).await.map_err(|_| "backend error")?;
            let status = res.status();
            if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
                return Err("backend error status");
            }
            let encoding = res.headers().get(header::CONTENT_ENCODING).cloned();
            match super::write::read_limited(res.into_body(), limit).await {
                Ok(body) => Ok(Answer {
                    status,
                    encoding,
                    body,
                }),
                Err(_) => Err("body too large or cut short"),
            }
        };
        let start = std::time::Instant::now();
        let answer = tokio::time::timeout(TIMEOUT.min(self.upstream.timeout()), ask).await;
        if answer.is_err() || start.elapsed() > SLOW {
            let until = crate::cache::now_ms() + crate::redis::millis(PAUSE);
            self.verifier.paused_until.store(until, Ordering::Relaxed);
            tracing::debug!(rule, "verify: the backend is slow; checks paused");
        }
        answer.unwrap_or(Err("no answer in time"))
    }
}

/// The `result` values of `sidecache_verify_total`.
const RESULTS: [&str; 4] = ["match", "mismatch", "error", "skipped"];

/// Registers the check counters of `rule`, if it verifies, so that a result
/// never seen reads 0 on `/metrics` rather than being absent.
pub(super) fn register(rule: &crate::rules::Rule) {
    if rule.verify.is_some() {
        for result in RESULTS {
            ::metrics::counter!(metrics::VERIFY, "rule" => rule.name.clone(), "result" => result)
                .increment(0);
        }
    }
}

/// Counts a check of `rule` in `sidecache_verify_total`.
fn count(rule: &str, result: &'static str) {
    ::metrics::counter!(metrics::VERIFY, "rule" => rule.to_owned(), "result" => result)
        .increment(1);
}

/// The backend's answer to a check.
struct Answer {
    status: http::StatusCode,
    /// Its `Content-Encoding`, if any.
    encoding: Option<HeaderValue>,
    body: Bytes,
}

/// Compares what was served with the backend's answer, leaving out the
/// JSON fields at the `ignore` paths. Bodies in another encoding than the
/// entry's cannot be compared, nor encoded ones when fields are to be
/// ignored (their JSON cannot be read).
fn compare(
    stored: &CachedResponse,
    answer: &Answer,
    ignore: &[Vec<String>],
) -> Result<Checked, &'static str> {
    let identity =
        |v: Option<&HeaderValue>| v.is_none_or(|v| v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let stored_encoding = stored.headers.get(&header::CONTENT_ENCODING);
    if stored_encoding.as_ref() != answer.encoding.as_ref() {
        return Err("the backend answered in another content encoding");
    }
    if !identity(stored_encoding.as_ref()) && !ignore.is_empty() {
        return Err("an encoded body: ignored fields cannot be left out");
    }
    let (status, body) = (answer.status, &answer.body[..]);
    let status_differs = stored.status != status;
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
        return Ok(Checked::Match);
    }
    let fields = fields.into_iter().filter(|f| !f.is_empty()).collect();
    Ok(Checked::Mismatch {
        status: status_differs,
        fields,
    })
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
        let name = loggable(name);
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

/// A JSON field name as the log may show it: a name of the schema
/// (`price`, `request_id`) as it is, anything else (a map keyed by emails
/// or ids, which is data) as `*`.
fn loggable(name: &str) -> &str {
    let mut chars = name.chars();
    let schema_like = name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if schema_like { name } else { "*" }
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

    fn answer(status: u16, body: &[u8]) -> Answer {
        Answer {
            status: http::StatusCode::from_u16(status).unwrap(),
            encoding: None,
            body: Bytes::copy_from_slice(body),
        }
    }

    fn ignore(fields: &[&str]) -> Vec<Vec<String>> {
        fields
            .iter()
            .map(|f| f.split('.').map(str::to_owned).collect())
            .collect()
    }

    #[test]
    fn json_fields_are_named_and_ignored_fields_left_out() {
        let a = stored(
            r#"{"id":1,"price":9.5,"meta":{"request_id":"x","v":1},"items":[{"q":1},{"q":2}],"by_email":{"a@b.c":1}}"#,
        );
        let b = answer(
            200,
            br#"{"id":1,"price":7.0,"meta":{"request_id":"y","v":1},"items":[{"q":1},{"q":3}],"by_email":{"a@b.c":2},"new":true}"#,
        );
        assert_eq!(
            compare(&a, &b, &[]),
            Ok(Checked::Mismatch {
                status: false,
                fields: vec![
                    "by_email.*".into(),
                    "items[1].q".into(),
                    "meta.request_id".into(),
                    "price".into(),
                    "new".into()
                ]
            })
        );
        let ignoring = ignore(&["meta.request_id", "price", "new", "items", "by_email"]);
        assert_eq!(compare(&a, &b, &ignoring), Ok(Checked::Match));
    }

    #[test]
    fn other_bodies_and_statuses_are_compared_whole() {
        let a = stored("<p>hello</p>");
        assert_eq!(
            compare(&a, &answer(200, b"<p>hello</p>"), &[]),
            Ok(Checked::Match)
        );
        assert_eq!(
            compare(&a, &answer(200, b"<p>bye</p>"), &[]),
            Ok(Checked::Mismatch {
                status: false,
                fields: vec![]
            })
        );
        assert_eq!(
            compare(&a, &answer(404, b"<p>hello</p>"), &[]),
            Ok(Checked::Mismatch {
                status: true,
                fields: vec![]
            })
        );
    }

    #[test]
    fn encoded_bodies_are_compared_only_as_they_can_be() {
        let mut a = stored("gzipped bytes");
        let mut headers = http::HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        a.headers = StoredHeaders::from_map(&headers);
        let mut same = answer(200, b"gzipped bytes");
        assert!(compare(&a, &same, &[]).is_err(), "identity against gzip");
        same.encoding = Some(HeaderValue::from_static("gzip"));
        assert_eq!(compare(&a, &same, &[]), Ok(Checked::Match));
        assert!(compare(&a, &same, &ignore(&["served_at"])).is_err());
    }

    #[test]
    fn only_schema_names_are_logged() {
        assert_eq!(loggable("request_id"), "request_id");
        assert_eq!(loggable("a@b.c"), "*");
        assert_eq!(loggable("12345"), "*");
        assert_eq!(loggable(&"x".repeat(65)), "*");
    }
}
