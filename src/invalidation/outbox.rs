//! The purge outbox: a purge whose Redis part failed (Redis did not
//! answer in time, or this replica's link to it is cut) is kept and applied
//! again, oldest first, until Redis has all of it; only then do the other
//! replicas (and regions) know of it. Meanwhile this replica already
//! refuses what it names (its own purge times hold it).
//!
//! Bounded in bytes ([`LIMIT`]). A purge that would go past the bound is
//! never dropped silently: the outbox is emptied and replaced by one floor,
//! a purge of every entry (`prefixes: [""]`), sent once Redis answers. It
//! is wide, and it is what an outbox that cannot hold the names can
//! promise.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Invalidator, Purge};

/// Most bytes of names the outbox holds.
pub const LIMIT: usize = 8 << 20;

/// How long after a failed retry the next is tried.
pub const RETRY: Duration = Duration::from_millis(500);

/// One purge waiting for Redis.
#[derive(Debug, Clone)]
pub struct Pending {
    /// What it purges.
    pub purge: Purge,
    /// Whether the other regions' log still lacks it.
    pub relay: bool,
    /// The time it was applied here at (ms, purge clock): Redis records
    /// it then, not at the retry.
    pub at: u64,
    bytes: usize,
}

/// Purges waiting for Redis, oldest first.
#[derive(Debug, Default)]
pub struct Outbox {
    state: Mutex<State>,
    wake: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Pending>,
    bytes: usize,
}

/// The bytes a purge's names take while it waits (here, or for its repeat).
pub fn weight(purge: &Purge) -> usize {
    purge
        .keys
        .iter()
        .chain(&purge.tags)
        .chain(&purge.prefixes)
        .map(|n| n.len() + 24)
        .sum::<usize>()
        + 96
}

impl Outbox {
    /// Keeps `purge` to apply again; past [`LIMIT`], the floor instead of
    /// everything held.
    pub fn push(&self, purge: &Purge, relay: bool, at: u64) {
        let bytes = weight(purge);
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.bytes + bytes > LIMIT {
            tracing::error!(
                held = s.queue.len() + 1,
                "the purge outbox is full: every entry will be purged once Redis answers"
            );
            s.queue.clear();
            let floor = Purge {
                prefixes: vec![String::new()],
                all: true,
                ..Purge::default()
            };
            let bytes = weight(&floor);
            s.queue.push_back(Pending {
                purge: floor,
                relay,
                at,
                bytes,
            });
            s.bytes = bytes;
        } else {
            s.queue.push_back(Pending {
                purge: purge.clone(),
                relay,
                at,
                bytes,
            });
            s.bytes += bytes;
        }
        gauge(s.queue.len());
        drop(s);
        self.wake.notify_one();
    }

    /// How many purges wait.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .queue
            .len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn front(&self) -> Option<Pending> {
        let s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.queue.front().cloned()
    }

    /// The oldest is in Redis now. (A floor that replaced the queue while
    /// it was retried is not the one retried, and stays.)
    fn done(&self, retried: &Pending) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if s.queue.front().is_some_and(|p| p.purge == retried.purge)
            && let Some(p) = s.queue.pop_front()
        {
            s.bytes -= p.bytes;
        }
        gauge(s.queue.len());
    }

    /// The oldest is in the other regions' log now (Redis still lacks the
    /// rest of it).
    fn relayed(&self, retried: &Pending) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = s.queue.front_mut()
            && p.purge == retried.purge
        {
            p.relay = false;
        }
    }
}

fn gauge(n: usize) {
    metrics::gauge!(crate::metrics::PURGES_PENDING).set(n as f64);
}

/// Applies the outbox's purges again, oldest first, until `shutdown`.
pub async fn run(inv: Arc<Invalidator>, shutdown: tokio_util::sync::CancellationToken) {
    gauge(inv.outbox.len());
    loop {
        let Some(next) = inv.outbox.front() else {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = inv.outbox.wake.notified() => continue,
            }
        };
        let (relayed, applied) = inv.retry(&next).await;
        if applied {
            tracing::info!("a pending purge reached Redis");
            inv.outbox.done(&next);
            continue;
        }
        if relayed && next.relay {
            inv.outbox.relayed(&next);
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge(tag: &str) -> Purge {
        Purge {
            tags: vec![tag.to_owned()],
            ..Purge::default()
        }
    }

    #[test]
    fn kept_in_order_and_bounded_in_bytes() {
        let out = Outbox::default();
        out.push(&purge("a"), false, 1);
        out.push(&purge("b"), true, 2);
        assert_eq!(out.len(), 2);
        let first = out.front().unwrap();
        assert_eq!(first.purge, purge("a"));
        out.done(&first);
        assert_eq!(out.front().unwrap().purge, purge("b"));
        assert!(out.front().unwrap().relay);

        // Past the bound: one floor, never a silent drop.
        let big = Purge {
            tags: (0..LIMIT / 64).map(|i| format!("tag:{i:040}")).collect(),
            ..Purge::default()
        };
        out.push(&big, false, 3);
        assert_eq!(out.len(), 1);
        let floor = out.front().unwrap();
        assert_eq!(floor.purge.prefixes, vec![String::new()]);
        assert!(floor.purge.all);
        // Later purges queue behind it.
        out.push(&purge("c"), false, 4);
        assert_eq!(out.len(), 2);
        out.done(&floor);
        assert_eq!(out.front().unwrap().purge, purge("c"));
    }
}
