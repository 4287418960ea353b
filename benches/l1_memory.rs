//! Memory per L1 entry: RSS growth while 10,000 entries of a 2,000-byte
//! body and eight nginx-style headers are kept three ways — the bodies
//! alone, whole entries outside moka, and entries in `MemoryStore`; then
//! 100,000 tiny answers (a stored 404 of 20 bytes under a unique URL's
//! key, as a flood of unique URLs leaves) against what L1 weighs them.
//!
//!   cargo bench --bench l1_memory

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sidecache::cache::memory::MemoryStore;
use sidecache::cache::{CachedResponse, Entry, Payload, StoredHeaders};

const ENTRIES: usize = 10_000;
const BODY: usize = 2_000;

fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(0)
        * 1024
}

fn headers(i: usize) -> HeaderMap {
    let mut h = HeaderMap::new();
    let date = HeaderValue::from_static("Tue, 24 Nov 2026 15:52:26 GMT");
    h.insert(header::SERVER, HeaderValue::from_static("nginx/1.22.1"));
    h.insert(header::DATE, date.clone());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(BODY));
    h.insert(header::LAST_MODIFIED, date);
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"6743a8fa-{i:x}\""))
            .unwrap_or(HeaderValue::from_static("\"x\"")),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h
}

fn entry(i: usize) -> Arc<Entry> {
    Arc::new(Entry {
        stored_at: SystemTime::now(),
        ttl: Duration::from_secs(3600),
        grace: Duration::ZERO,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        fetched_ms: 0,
        payload: Payload::Response(CachedResponse {
            status: StatusCode::OK,
            headers: StoredHeaders::from_map(&headers(i)),
            body: Bytes::from(vec![b'x'; BODY]),
            tags: Vec::new(),
        }),
    })
}

fn report(what: &str, before: usize) {
    let grown = rss().saturating_sub(before);
    println!(
        "{what:<40} {:>6} bytes per entry ({:.1} MiB for {ENTRIES})",
        grown / ENTRIES,
        grown as f64 / 1_048_576.0
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Kept to the end, so the next measures start from fresh memory too.
    let _tiny = tiny().await;
    let before = rss();
    let bodies: Vec<Bytes> = (0..ENTRIES)
        .map(|_| Bytes::from(vec![b'x'; BODY]))
        .collect();
    report("the body alone", before);

    let before = rss();
    let entries: Vec<Arc<Entry>> = (0..ENTRIES).map(entry).collect();
    report("entry, outside moka", before);

    let store = MemoryStore::new(1 << 30);
    let before = rss();
    for i in 0..ENTRIES {
        store.put(&format!("product:{i}"), entry(i)).await;
    }
    let (count, weighed) = store.usage().await;
    report("entry in MemoryStore (L1)", before);
    println!("L1 holds {count} entries, {weighed} bytes as weighed");
    drop((bodies, entries, store));
}

/// A flood of tiny answers, measured first: memory freed before would be
/// handed back by the allocator without RSS growing.
async fn tiny() -> MemoryStore {
    const TINY: usize = 100_000;
    let store = MemoryStore::new(1 << 30);
    let before = rss();
    for i in 0..TINY {
        let mut e = (*entry(i)).clone();
        if let Payload::Response(r) = &mut e.payload {
            r.status = StatusCode::NOT_FOUND;
            r.body = Bytes::from_static(b"{\"error\":\"missing\"}");
        }
        store
            .put(
                &format!("GET:shop.example/products/{i:08}?q=x"),
                Arc::new(e),
            )
            .await;
    }
    let (count, weighed) = store.usage().await;
    let grown = rss().saturating_sub(before);
    println!(
        "tiny answer in MemoryStore (L1)          {:>6} bytes per entry in RSS, {:>6} weighed ({count} entries)",
        grown / TINY,
        weighed / count.max(1),
    );
    store
}
