//! What the cache saved the backend, per rule, from this replica's own
//! counts since it started: requests answered without the backend, bytes
//! the backend did not send, and backend time saved (each saved request
//! times the rule's measured backend latency).
//!
//! A request is saved when it is answered from an entry (a hit from L1 or
//! Redis, a stale-while-revalidate answer) or with the entry another
//! request fetched (collapsed); not a stale-if-error answer, for which the
//! backend was asked and failed. A revalidation (304) saves the body's bytes but not the
//! request. The backend latency of a rule is the mean time to the answer's
//! head of its misses; before its first miss, that of every rule's misses.
//!
//! Counted with atomic adds on the request path; shown by `GET /report`
//! (and `sidecache report`), and copied into the metrics
//! `sidecache_backend_saved_*` once a second.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a request was served, as the report counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Without the backend: a hit, a stale-while-revalidate answer, or
    /// another request's fetch (collapsed).
    FromCache,
    /// From the entry after the backend's 304: the body was not sent.
    Revalidated,
    /// From the backend, under the rule (its time is the rule's latency).
    Miss,
    /// Anything else: a pass, an error, a stale-if-error answer (the
    /// backend was asked and failed), a refusal.
    Other,
}

/// One rule's counts.
#[derive(Debug, Default)]
pub struct Offload {
    requests: AtomicU64,
    saved_requests: AtomicU64,
    saved_bytes: AtomicU64,
    saved_micros: AtomicU64,
    misses: AtomicU64,
    miss_micros: AtomicU64,
}

/// The counts of every rule seen since start, kept across reloads by
/// rule name, and the misses of all rules together.
#[derive(Debug, Default)]
pub struct Offloads {
    rules: Mutex<Vec<(String, Arc<Offload>)>>,
    all: Offload,
}

impl Offloads {
    /// The counts of each of `names`, in order: the same as before for a
    /// rule seen earlier.
    pub fn of<'a>(&self, names: impl Iterator<Item = &'a str>) -> Vec<Arc<Offload>> {
        let Ok(mut rules) = self.rules.lock() else {
            return names.map(|_| Arc::default()).collect();
        };
        names
            .map(|name| match rules.iter().find(|(n, _)| n == name) {
                Some((_, o)) => o.clone(),
                None => {
                    let o = Arc::new(Offload::default());
                    rules.push((name.to_owned(), o.clone()));
                    o
                }
            })
            .collect()
    }

    /// Counts one finished request of the rule `rule` counts: how it was
    /// `served`, the body it was answered with (`bytes`), and the time to
    /// its head.
    pub fn count(&self, rule: &Offload, served: Served, bytes: u64, took: Duration) {
        rule.requests.fetch_add(1, Ordering::Relaxed);
        match served {
            Served::FromCache => {
                let latency = rule.mean_miss().or_else(|| self.all.mean_miss());
                rule.saved_requests.fetch_add(1, Ordering::Relaxed);
                rule.saved_bytes.fetch_add(bytes, Ordering::Relaxed);
                rule.saved_micros
                    .fetch_add(latency.unwrap_or(0), Ordering::Relaxed);
            }
            Served::Revalidated => {
                rule.saved_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Served::Miss => {
                let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                for o in [rule, &self.all] {
                    o.misses.fetch_add(1, Ordering::Relaxed);
                    o.miss_micros.fetch_add(micros, Ordering::Relaxed);
                }
            }
            Served::Other => {}
        }
    }

    /// The report of every rule seen since start, with the total.
    pub fn report(&self) -> Report {
        let rules: Vec<RuleReport> = match self.rules.lock() {
            Ok(rules) => rules
                .iter()
                .map(|(name, o)| o.report(name, self.all.mean_miss()))
                .collect(),
            Err(_) => Vec::new(),
        };
        Report::of(rules)
    }

    /// Sets the `sidecache_backend_saved_*` metrics from the counts.
    pub fn export(&self) {
        for r in self.report().rules {
            let rule = r.rule.clone();
            metrics::counter!(crate::metrics::SAVED_REQUESTS, "rule" => rule.clone())
                .absolute(r.saved_requests);
            metrics::counter!(crate::metrics::SAVED_BYTES, "rule" => rule.clone())
                .absolute(r.saved_bytes);
            metrics::gauge!(crate::metrics::SAVED_SECONDS, "rule" => rule).set(r.saved_seconds);
        }
    }
}

impl Offload {
    /// The mean time of this rule's misses, in µs, once there is one.
    fn mean_miss(&self) -> Option<u64> {
        let n = self.misses.load(Ordering::Relaxed);
        (n > 0).then(|| self.miss_micros.load(Ordering::Relaxed) / n)
    }

    fn report(&self, rule: &str, fallback: Option<u64>) -> RuleReport {
        let latency = self.mean_miss().or(fallback).unwrap_or(0);
        RuleReport {
            rule: rule.to_owned(),
            requests: self.requests.load(Ordering::Relaxed),
            saved_requests: self.saved_requests.load(Ordering::Relaxed),
            saved_bytes: self.saved_bytes.load(Ordering::Relaxed),
            saved_seconds: self.saved_micros.load(Ordering::Relaxed) as f64 / 1e6,
            backend_ms: latency as f64 / 1e3,
        }
    }
}

/// `GET /report`: the rules and their total.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// One row per rule seen since start.
    pub rules: Vec<RuleReport>,
    /// All rules together.
    pub total: RuleReport,
}

/// One rule's row (or the total's, named `total`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RuleReport {
    /// The rule's name.
    pub rule: String,
    /// Requests the rule matched.
    pub requests: u64,
    /// Answered without the backend.
    pub saved_requests: u64,
    /// Body bytes answered without the backend sending them.
    pub saved_bytes: u64,
    /// Backend time saved, in seconds.
    pub saved_seconds: f64,
    /// The rule's measured backend latency (mean of its misses), in ms.
    pub backend_ms: f64,
}

impl Report {
    /// The report of `rules`, with their total.
    pub fn of(rules: Vec<RuleReport>) -> Self {
        let mut total = RuleReport {
            rule: "total".to_owned(),
            ..RuleReport::default()
        };
        let mut weighed = 0.0;
        for r in &rules {
            total.requests += r.requests;
            total.saved_requests += r.saved_requests;
            total.saved_bytes += r.saved_bytes;
            total.saved_seconds += r.saved_seconds;
            weighed += r.backend_ms * r.requests as f64;
        }
        if total.requests > 0 {
            total.backend_ms = weighed / total.requests as f64;
        }
        Self { rules, total }
    }

    /// Several replicas' reports as one: rows of the same rule added up.
    pub fn merge(reports: &[Report]) -> Self {
        let mut rows: Vec<RuleReport> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for r in reports.iter().flat_map(|r| &r.rules) {
            match seen.get(&r.rule) {
                Some(&i) => {
                    let row = &mut rows[i];
                    let (a, b) = (row.requests as f64, r.requests as f64);
                    if a + b > 0.0 {
                        row.backend_ms = (row.backend_ms * a + r.backend_ms * b) / (a + b);
                    }
                    row.requests += r.requests;
                    row.saved_requests += r.saved_requests;
                    row.saved_bytes += r.saved_bytes;
                    row.saved_seconds += r.saved_seconds;
                }
                None => {
                    seen.insert(r.rule.clone(), rows.len());
                    rows.push(r.clone());
                }
            }
        }
        Self::of(rows)
    }

    /// The report as a table for a terminal.
    pub fn table(&self, replicas: usize) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<20} {:>12} {:>12} {:>7} {:>12} {:>14} {:>10}",
            "rule", "requests", "from cache", "share", "bytes saved", "backend time", "backend"
        );
        for r in self.rules.iter().chain(std::iter::once(&self.total)) {
            let share = if r.requests > 0 {
                100.0 * r.saved_requests as f64 / r.requests as f64
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "{:<20} {:>12} {:>12} {:>6.1}% {:>12} {:>14} {:>8.1}ms",
                r.rule,
                r.requests,
                r.saved_requests,
                share,
                bytesize::ByteSize::b(r.saved_bytes)
                    .display()
                    .si()
                    .to_string(),
                duration(r.saved_seconds),
                r.backend_ms
            );
        }
        let _ = writeln!(
            out,
            "since start, {replicas} replica{}; backend time: requests from cache times the rule's mean miss time",
            if replicas == 1 { "" } else { "s" }
        );
        out
    }
}

/// `1h 02m 03s`, `4m 05s`, `6.2s`.
fn duration(seconds: f64) -> String {
    let whole = seconds as u64;
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{seconds:.1}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_saved_requests_bytes_and_time() {
        let all = Offloads::default();
        let rules = all.of(["product", "cart"].into_iter());
        let (product, cart) = (&rules[0], &rules[1]);
        // Before any miss, a hit saves a request and bytes but no known time.
        all.count(product, Served::FromCache, 100, Duration::ZERO);
        all.count(product, Served::Miss, 500, Duration::from_millis(40));
        all.count(product, Served::Miss, 500, Duration::from_millis(20));
        all.count(product, Served::FromCache, 100, Duration::ZERO);
        all.count(product, Served::Revalidated, 300, Duration::ZERO);
        all.count(product, Served::Other, 10, Duration::ZERO);
        // A rule without misses borrows every rule's mean.
        all.count(cart, Served::FromCache, 7, Duration::ZERO);
        let report = all.report();
        let p = &report.rules[0];
        assert_eq!((p.requests, p.saved_requests, p.saved_bytes), (6, 2, 500));
        assert!((p.saved_seconds - 0.030).abs() < 1e-9, "{p:?}");
        assert!((p.backend_ms - 30.0).abs() < 1e-9);
        let c = &report.rules[1];
        assert_eq!((c.saved_requests, c.saved_bytes), (1, 7));
        assert!((c.saved_seconds - 0.030).abs() < 1e-9);
        assert_eq!(report.total.saved_requests, 3);
        // The same rule name gets the same counts after a reload.
        let again = all.of(["cart"].into_iter());
        assert!(Arc::ptr_eq(&again[0], cart));
    }

    #[test]
    fn replicas_merge_by_rule() {
        let row = |rule: &str, requests, saved, ms| RuleReport {
            rule: rule.to_owned(),
            requests,
            saved_requests: saved,
            saved_bytes: saved * 10,
            saved_seconds: saved as f64 * ms / 1e3,
            backend_ms: ms,
        };
        let a = Report::of(vec![row("product", 100, 90, 10.0)]);
        let b = Report::of(vec![
            row("product", 300, 200, 30.0),
            row("cart", 10, 0, 5.0),
        ]);
        let m = Report::merge(&[a, b]);
        assert_eq!(m.rules.len(), 2);
        assert_eq!((m.rules[0].requests, m.rules[0].saved_requests), (400, 290));
        assert!((m.rules[0].backend_ms - 25.0).abs() < 1e-9);
        assert_eq!(m.total.saved_requests, 290);
        let table = m.table(2);
        assert!(
            table.contains("product") && table.contains("72.5%"),
            "{table}"
        );
        assert!(table.contains("2 replicas"), "{table}");
    }
}
