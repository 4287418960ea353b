//! The hit and miss paths without sockets: the shared tier is the fake
//! store, and the backend is an address nothing listens on, so every fetch
//! fails at once.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};

use super::Proxy;
use super::collapse::{Claim, Join, Landing};
use super::fill::Fill;
use super::keyed::Keyed;
use super::storable::Freshness;
use crate::cache::fake::FakeStore;
use crate::cache::memory::MemoryStore;
use crate::cache::tiered::Tiered;
use crate::cache::{CachedResponse, Entry, Payload, Store, StoredHeaders};
use crate::config::Config;
use crate::invalidation::Purge;
use crate::metrics::PurgeSource;
use crate::rules::{RequestView, Snapshot};

/// A rule in both tiers (the config names a Redis, which the fake stands
/// for), in front of a backend that refuses every connection.
const YAML: &str = r#"
upstream: { url: "http://127.0.0.1:1", connect_timeout: 1s }
redis: { url: "redis://127.0.0.1:1" }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    tier: both
    ttl: 1m
"#;

fn proxy() -> (Arc<Proxy>, Arc<FakeStore>) {
    let config = Config::from_yaml(YAML, Path::new("t.yaml"), &|_| None)
        .unwrap()
        .config;
    let fake = Arc::new(FakeStore::default());
    let shared: Arc<dyn Store> = fake.clone();
    let cache = Tiered::new(MemoryStore::new(1 << 24), Some(shared));
    (
        Arc::new(Proxy::new(Arc::new(config), cache, None, None)),
        fake,
    )
}

/// An entry stored `age` ago, fresh for a minute, with the given windows.
fn entry(body: &'static str, age: Duration, stale: Duration, if_error: Duration) -> Arc<Entry> {
    Arc::new(Entry {
        stored_at: SystemTime::now() - age,
        ttl: Duration::from_secs(60),
        grace: Duration::from_secs(3600),
        stale_while_revalidate: stale,
        stale_if_error: if_error,
        fetched_ms: 1,
        payload: Payload::Response(CachedResponse {
            status: StatusCode::OK,
            headers: StoredHeaders::from_map(&HeaderMap::new()),
            body: Bytes::from_static(body.as_bytes()),
            tags: Vec::new(),
        }),
    })
}

async fn get(proxy: &Arc<Proxy>, path: &str) -> (StatusCode, String, Bytes) {
    let req = Request::get(path)
        .header("host", "shop")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = proxy.handle(req, [127, 0, 0, 1].into()).await;
    let status = res.status();
    let cache_status = res.headers()["cache-status"].to_str().unwrap().to_owned();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, cache_status, body)
}

/// A fresh entry in the shared store is answered from it, then from L1,
/// which the lookup filled.
#[tokio::test]
async fn fresh_hit_from_shared_then_memory() {
    let (proxy, fake) = proxy();
    fake.put(
        "product:1",
        entry("one", Duration::ZERO, Duration::ZERO, Duration::ZERO),
    )
    .await
    .unwrap();
    let (status, cs, body) = get(&proxy, "/products/1").await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"one"[..]));
    assert!(
        cs.starts_with("sidecache; hit;") && cs.ends_with("detail=redis"),
        "{cs}"
    );
    let (_, cs, _) = get(&proxy, "/products/1").await;
    assert!(cs.ends_with("detail=memory"), "{cs}");
}

/// An expired entry inside its stale-while-revalidate window is answered
/// at once while a background request refreshes it.
#[tokio::test]
async fn stale_while_revalidate() {
    let (proxy, fake) = proxy();
    let old = entry(
        "old",
        Duration::from_secs(70),
        Duration::from_secs(30),
        Duration::ZERO,
    );
    fake.put("product:2", old).await.unwrap();
    let (status, cs, body) = get(&proxy, "/products/2").await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"old"[..]));
    assert!(
        cs.contains("hit; fwd=stale") && cs.ends_with("detail=revalidating"),
        "{cs}"
    );
}

/// Past that window but inside stale-if-error, a backend that cannot be
/// reached is answered with the stale entry; without a stale entry it is
/// a 502 counted as an error.
#[tokio::test]
async fn stale_if_error_then_error() {
    let (proxy, fake) = proxy();
    let old = entry(
        "old",
        Duration::from_secs(90),
        Duration::ZERO,
        Duration::from_secs(600),
    );
    fake.put("product:3", old).await.unwrap();
    let (status, cs, body) = get(&proxy, "/products/3").await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"old"[..]));
    assert!(
        cs.contains("hit; fwd=stale") && cs.ends_with("detail=stale-if-error"),
        "{cs}"
    );
    let (status, cs, _) = get(&proxy, "/products/4").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(cs, "sidecache; fwd=uri-miss; detail=upstream-error");
}

/// A miss that finds another request fetching the key waits for it and
/// answers with the entry it stored.
#[tokio::test]
async fn collapse_follower_gets_the_leaders_entry() {
    let (proxy, _fake) = proxy();
    let Join::Leader(guard) = proxy.flights.join("product:5") else {
        panic!("nobody else leads")
    };
    let follower = tokio::spawn({
        let proxy = proxy.clone();
        async move { get(&proxy, "/products/5").await }
    });
    while guard.followers() == 0 {
        tokio::task::yield_now().await;
    }
    let stored = entry("five", Duration::ZERO, Duration::ZERO, Duration::ZERO);
    guard.land(Landing::Stored {
        key: "product:5".into(),
        entry: stored,
    });
    let (status, cs, body) = follower.await.unwrap();
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"five"[..]));
    assert!(
        cs.starts_with("sidecache; fwd=uri-miss; collapsed;"),
        "{cs}"
    );
}

/// The fill job stores an answer in both tiers, and refuses one whose key
/// was purged after its fetch began (it may be the old value).
#[tokio::test]
async fn fill_stores_unless_purged_since_the_fetch() {
    let (proxy, fake) = proxy();
    let fill = |key: &str, fetched: u64| {
        let rule = proxy.config().rules.rules()[0].clone();
        let parts = Request::get("/products/6").body(()).unwrap().into_parts().0;
        let view = RequestView::of(&parts, "shop", [127, 0, 0, 1].into());
        Fill {
            cache: proxy.cache.clone(),
            invalidator: proxy.invalidator.clone(),
            keyed: Keyed {
                rule,
                key: key.to_owned(),
                params: Vec::new(),
            },
            request: Snapshot::of(&view, &[]),
            request_json: None,
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            fresh: Freshness {
                stored_at: SystemTime::now(),
                ttl: Duration::from_secs(60),
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                keep: Duration::ZERO,
            },
            fetched,
            claim: Claim {
                guard: None,
                lock: None,
            },
        }
    };
    let body = Bytes::from_static(b"new");
    let fetched = proxy.invalidator.fetch_started();
    assert!(fill("product:6", fetched).store(body.clone()).await);
    assert!(proxy.cache.in_l1("product:6").await);

    let fetched = proxy.invalidator.fetch_started();
    let purge = Purge {
        keys: vec!["product:7".into()],
        ..Purge::default()
    };
    proxy.invalidator.purge(&purge, PurgeSource::Api).await;
    assert!(
        !fill("product:7", fetched).store(body).await,
        "stored though purged"
    );
    assert!(!proxy.cache.in_l1("product:7").await);
    assert!(fake.entry("product:7").is_none());
    // Shared stores run in the background; the first one lands there.
    for _ in 0..1000 {
        if fake.entry("product:6").is_some() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("product:6 never reached the shared store");
}
