//! The subscriber side of purge announcements: keeps a pub/sub connection
//! to Redis, applies what other replicas announce, and tells the
//! [`Invalidator`] when the connection is lost (a heartbeat PING every
//! second, allowed 5 × `redis.timeout`, notices a silent cut within the sum)
//! and when it is back. On a cluster it subscribes on one seed node (every
//! node hears every `PUBLISH`) and moves to the next one when that one
//! fails. Each heartbeat also reads Redis's clock and checks
//! that Redis was not flushed (`Invalidator::heartbeat`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Invalidator;

/// How often the subscription is checked with a PING.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Runs until `shutdown`; reconnects with backoff (100 ms doubling to 2 s).
pub async fn run(inv: Arc<Invalidator>, shutdown: CancellationToken) {
    let (Some(redis), Some(channel)) = (inv.redis.clone(), inv.channel()) else {
        return;
    };
    let mut backoff = Duration::from_millis(100);
    // Which try this is: picks the node to subscribe on.
    let mut attempt = 0usize;
    loop {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tokio::time::timeout(redis.timeout() * 10, async {
                let mut pubsub = redis.subscriber(attempt).get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            }) => r,
        };
        let pubsub = match connected {
            Ok(Ok(p)) => p,
            _ => {
                attempt = attempt.wrapping_add(1);
                redis.mark_unreachable();
                inv.cut_off();
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        inv.reconnected();
        tracing::info!(%channel, "subscribed to purge announcements");
        let (sink, mut stream) = pubsub.split();
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The PING in flight, if any. It runs beside the loop, so a slow
        // answer never holds back the announcements behind it.
        let mut ping: Option<tokio::task::JoinHandle<bool>> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                msg = stream.next() => match msg {
                    Some(m) => match m.get_payload::<String>() {
                        Ok(text) => inv.apply(&text).await,
                        Err(_) => tracing::warn!("ignored a purge announcement that is not text"),
                    },
                    None => break,
                },
                _ = beat.tick(), if ping.is_none() => {
                    let (mut sink, wait) = (sink.clone(), redis.timeout() * 5);
                    ping = Some(crate::metrics::spawn(async move {
                        matches!(tokio::time::timeout(wait, sink.ping::<redis::Value>()).await, Ok(Ok(_)))
                    }));
                    // Bounded by the Redis timeout; on the data connection.
                    let inv = inv.clone();
                    crate::metrics::spawn(async move { inv.heartbeat().await });
                }
                alive = async {
                    match ping.as_mut() {
                        Some(handle) => handle.await,
                        None => std::future::pending().await,
                    }
                } => {
                    ping = None;
                    if !matches!(alive, Ok(true)) {
                        break;
                    }
                }
            }
        }
        tracing::warn!("lost the purge announcement channel; reconnecting");
        attempt = attempt.wrapping_add(1);
        redis.mark_unreachable();
        inv.cut_off();
    }
}
