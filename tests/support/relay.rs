//! A TCP relay that delays what passes through it, in user space: each
//! chunk is held for the set delay, then forwarded in order. It can delay
//! only the connections that subscribe to Redis pub/sub (so a replica's
//! purge announcements arrive late while its other Redis commands do not).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Which connections the delay applies to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Delayed {
    /// Every byte both ways.
    All,
    /// Only what Redis sends to connections that have sent `SUBSCRIBE`.
    Subscribers,
}

/// A running relay; stops on drop.
pub struct Relay {
    pub addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    stop: CancellationToken,
    /// While set, connections are closed and new ones refused: a link cut.
    cut: Arc<AtomicBool>,
    /// Cancelled on a cut: ends the connections open then.
    open: Arc<std::sync::Mutex<CancellationToken>>,
}

impl Relay {
    /// Relays connections made to [`Relay::addr`] to `target`.
    pub async fn start(target: SocketAddr, delay: Duration, which: Delayed) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let delay_ms = Arc::new(AtomicU64::new(delay.as_millis() as u64));
        let stop = CancellationToken::new();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(std::sync::Mutex::new(stop.child_token()));
        let (d, st, c, o) = (delay_ms.clone(), stop.clone(), cut.clone(), open.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    () = st.cancelled() => return,
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                };
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let st = o.lock().unwrap().clone();
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let subscriber = Arc::new(AtomicBool::new(false));
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let up = Direction {
                    delay_ms: d.clone(),
                    applies: move |_: &AtomicBool| which == Delayed::All,
                };
                let down = Direction {
                    delay_ms: d.clone(),
                    applies: move |s: &AtomicBool| {
                        which == Delayed::All || s.load(Ordering::Relaxed)
                    },
                };
                tokio::spawn(pump(cr, sw, up, subscriber.clone(), true, st.clone()));
                tokio::spawn(pump(sr, cw, down, subscriber, false, st.clone()));
            }
        });
        Self {
            addr,
            delay_ms,
            stop,
            cut,
            open,
        }
    }

    /// Cuts the link: open connections are closed, new ones refused,
    /// until [`Relay::restore`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut open = self.open.lock().unwrap();
        open.cancel();
        *open = self.stop.child_token();
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Changes the delay for chunks read from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Direction<F> {
    delay_ms: Arc<AtomicU64>,
    applies: F,
}

/// Reads chunks from `from` and writes each to `to` once its delay is over,
/// in order; the reader never waits on the writer, so the delay does not
/// add up over chunks.
async fn pump<F>(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dir: Direction<F>,
    subscriber: Arc<AtomicBool>,
    client_side: bool,
    stop: CancellationToken,
) where
    F: Fn(&AtomicBool) -> bool + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            () = stop.cancelled() => break,
            r = from.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
        };
        let chunk = buf[..n].to_vec();
        if client_side
            && chunk
                .to_ascii_uppercase()
                .windows(9)
                .any(|w| w == b"SUBSCRIBE")
        {
            subscriber.store(true, Ordering::Relaxed);
        }
        let delay = if (dir.applies)(&subscriber) {
            Duration::from_millis(dir.delay_ms.load(Ordering::Relaxed))
        } else {
            Duration::ZERO
        };
        if tx.send((Instant::now() + delay, chunk)).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
