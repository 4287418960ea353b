//! A write purges what depends on it and nothing more: a trigger names
//! what the write changed (`{ on, tags, if_changed }`), listings carry a
//! tag per product they show (`{response.products[*].id}`), and a product
//! moved to another category is read from before the write
//! (`{previous.category_id}`). Two replicas share one Redis while reads of
//! other products go on.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use support::*;

const SHOP: &str = r#"
upstream: { url: UPSTREAM }
redis: { url: "REDIS", key_prefix: "precise:", timeout: 1s }
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
    # The group: a back office may purge a whole category at once.
    tags: ["category:{response.category_id}"]
    invalidate_on:
      # The listings that show the product.
      - on: "PUT /products/{id}"
        tags: ["shows:{id}"]
      # A move also changes both categories' listings.
      - on: "PUT /products/{id}"
        if_changed: [category_id]
        tags: ["listing:{previous.category_id}", "listing:{response.category_id}"]
  - name: listing
    match: { path: "/categories/{cat}/products" }
    key: "listing:{cat}:{query.page}"
    allow_empty: [query.page]
    ttl: 1h
    tags: ["listing:{cat}", "shows:{response.products[*].id}"]
  - name: big
    match: { path: "/big/{n}" }
    key: "big:{n}"
    ttl: 1h
    tags: ["shows:{response.items[*]}"]
"#;

/// Products 1..=40: 1..=20 in category 1, 21..=40 in category 2; a PUT
/// raises a product's version and may move it (`{"category_id": n}`). A
/// listing shows its category's products, ten a page, by id; `/big/N`
/// lists products 1..=N.
async fn shop() -> Backend {
    let products: Arc<Mutex<HashMap<u64, (u64, u64)>>> = Arc::new(Mutex::new(
        (1..=40).map(|id| (id, (1 + (id - 1) / 20, 0))).collect(),
    ));
    Backend::start(Duration::ZERO, move |s| {
        let json = vec![("content-type", "application/json".to_owned())];
        let (path, query) = s.uri.split_once('?').unwrap_or((&s.uri, ""));
        let parts: Vec<&str> = path.split('/').collect();
        let mut products = products.lock().unwrap();
        let body = match parts.as_slice() {
            ["", "products", id] => {
                let id: u64 = id.parse().unwrap_or(0);
                let Some(p) = products.get_mut(&id) else {
                    return (StatusCode::NOT_FOUND, json, Bytes::new());
                };
                if s.method == "PUT" {
                    p.1 += 1;
                    let asked: serde_json::Value =
                        serde_json::from_slice(&s.body).unwrap_or_default();
                    if let Some(c) = asked["category_id"].as_u64() {
                        p.0 = c;
                    }
                }
                serde_json::json!({ "id": id, "category_id": p.0, "v": p.1 })
            }
            ["", "categories", cat, "products"] => {
                let cat: u64 = cat.parse().unwrap_or(0);
                let page: usize = query
                    .strip_prefix("page=")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(1);
                let mut ids: Vec<u64> = products
                    .iter()
                    .filter(|(_, p)| p.0 == cat)
                    .map(|(id, _)| *id)
                    .collect();
                ids.sort_unstable();
                let shown: Vec<serde_json::Value> = ids
                    .iter()
                    .skip((page - 1) * 10)
                    .take(10)
                    .map(|id| serde_json::json!({ "id": id, "v": products[id].1 }))
                    .collect();
                serde_json::json!({ "category_id": cat, "page": page, "products": shown })
            }
            ["", "big", n] => {
                let n: u64 = n.parse().unwrap_or(0);
                serde_json::json!({ "items": (1..=n).collect::<Vec<u64>>() })
            }
            _ => return (StatusCode::NOT_FOUND, json, Bytes::new()),
        };
        (StatusCode::OK, json, Bytes::from(body.to_string()))
    })
    .await
}

const LISTINGS: [&str; 4] = [
    "/categories/1/products",
    "/categories/1/products?page=2",
    "/categories/2/products",
    "/categories/2/products?page=2",
];

/// Two replicas on one Redis in front of the shop.
async fn replicas() -> (Redis, Backend, Proxy, Proxy) {
    let redis = Redis::start();
    let backend = shop().await;
    let a = Proxy::start(SHOP, &backend.url(), Some(&redis.url())).await;
    let b = Proxy::start(SHOP, &backend.url(), Some(&redis.url())).await;
    (redis, backend, a, b)
}

/// Caches `paths` on `proxy` and waits until each answers from cache.
async fn cache_all(proxy: &Proxy, paths: &[String]) {
    for path in paths {
        get(&proxy.url(path), &[]).await;
        await_hit(&proxy.url(path), &[]).await;
    }
}

fn paths(list: &[&str]) -> Vec<String> {
    list.iter().map(|p| (*p).to_owned()).collect()
}

/// Reads of products 31..=40 on both replicas until stopped; every answer
/// must be a 200 naming the product asked for.
fn reads_of_others(a: &Proxy, b: &Proxy) -> (Arc<AtomicBool>, tokio::task::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = (31..=40)
        .flat_map(|id| {
            [
                a.url(&format!("/products/{id}")),
                b.url(&format!("/products/{id}")),
            ]
        })
        .collect();
    let done = stop.clone();
    let task = tokio::spawn(async move {
        let mut n = 0;
        while !done.load(Ordering::Relaxed) {
            for (i, url) in urls.iter().enumerate() {
                let got = get(url, &[]).await;
                assert_eq!(got.status, StatusCode::OK, "{url}");
                let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
                assert_eq!(body["id"], 31 + (i / 2) as u64, "{url}");
                n += 1;
            }
        }
        n
    });
    (stop, task)
}

async fn is_hit(proxy: &Proxy, path: &str) -> bool {
    get(&proxy.url(path), &[]).await.is_hit()
}

/// Waits until `path` on `proxy` answers what the backend answers now.
async fn current(backend: &Backend, proxy: &Proxy, path: &str) {
    let now = get(&format!("{}{path}", backend.url()), &[]).await.body;
    eventually(&format!("{path} is refetched"), || async {
        get(&proxy.url(path), &[]).await.body == now
    })
    .await;
}

/// The backend's count of requests for each of `paths`.
fn counts(backend: &Backend, paths: &[&str]) -> Vec<usize> {
    paths.iter().map(|p| backend.hits_for(p)).collect()
}

/// Each of `paths` still answers from cache on both replicas, and the
/// backend was not asked for it again since `before`.
async fn still_cached(backend: &Backend, replicas: [&Proxy; 2], paths: &[&str], before: &[usize]) {
    for proxy in replicas {
        for path in paths {
            assert!(is_hit(proxy, path).await, "{path} was purged");
        }
    }
    assert_eq!(counts(backend, paths), before, "{paths:?} fetched again");
}

/// A price change of product 3 through A (which holds it in L1): product 3
/// and the one listing page that shows it are refetched on both replicas;
/// the other products of its category, its category's second page and the
/// other category stay cached.
#[tokio::test]
async fn a_write_purges_the_listing_that_shows_it_and_nothing_else() {
    let (_redis, backend, a, b) = replicas().await;
    let mut all = paths(&LISTINGS);
    all.extend((1..=20).map(|id| format!("/products/{id}")));
    cache_all(&a, &all).await;
    cache_all(&b, &all).await;
    let (stop, readers) = reads_of_others(&a, &b);

    let others: Vec<String> = (1..=20)
        .filter(|id| *id != 3)
        .map(|id| format!("/products/{id}"))
        .collect();
    let mut kept: Vec<&str> = others.iter().map(String::as_str).collect();
    kept.extend([LISTINGS[1], LISTINGS[2], LISTINGS[3]]);
    let before = counts(&backend, &kept);

    // The body names the category (unchanged): whether it changed is read
    // from the product's answer from before the write, in A's L1.
    let put = send(
        "PUT",
        &a.url("/products/3"),
        &[],
        r#"{"category_id":1,"price":10}"#,
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);

    for proxy in [&a, &b] {
        current(&backend, proxy, "/products/3").await;
        current(&backend, proxy, LISTINGS[0]).await;
    }
    still_cached(&backend, [&a, &b], &kept, &before).await;
    stop.store(true, Ordering::Relaxed);
    assert!(readers.await.unwrap() > 0);
}

/// Product 5 moves from category 1 to 2, written through B, which never
/// read it: B finds its answer from before the write in Redis. Both
/// categories' listings are refetched on both replicas; the other products
/// stay cached. A price change written through B afterwards (the old
/// answer again only in Redis) purges no listing of the category.
#[tokio::test]
async fn a_moved_product_refetches_both_categories_listings() {
    let (_redis, backend, a, b) = replicas().await;
    let mut all = paths(&LISTINGS);
    all.extend(["/products/5".to_owned(), "/products/6".to_owned()]);
    cache_all(&a, &all).await;
    cache_all(&b, &paths(&LISTINGS)).await;
    cache_all(&b, &["/products/6".to_owned()]).await;
    let (stop, readers) = reads_of_others(&a, &b);
    let before = counts(&backend, &["/products/6"]);

    let put = send("PUT", &b.url("/products/5"), &[], r#"{"category_id":2}"#).await;
    assert_eq!(put.status, StatusCode::OK);
    for proxy in [&a, &b] {
        for path in LISTINGS {
            current(&backend, proxy, path).await;
        }
    }
    let page: serde_json::Value =
        serde_json::from_slice(&get(&a.url(LISTINGS[2]), &[]).await.body).unwrap();
    assert_eq!(page["products"][0]["id"], 5, "{page}");
    still_cached(&backend, [&a, &b], &["/products/6"], &before).await;

    // Now in category 2: product 5 is cached again on A only (B reads it
    // from Redis), and a price change keeps every other page.
    cache_all(&a, &["/products/5".to_owned()]).await;
    cache_all(&a, &paths(&LISTINGS)).await;
    cache_all(&b, &paths(&LISTINGS)).await;
    let kept = [LISTINGS[0], LISTINGS[1], LISTINGS[3]];
    let before = counts(&backend, &kept);
    let put = send(
        "PUT",
        &b.url("/products/5"),
        &[],
        r#"{"category_id":2,"price":3}"#,
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    for proxy in [&a, &b] {
        current(&backend, proxy, LISTINGS[2]).await;
    }
    still_cached(&backend, [&a, &b], &kept, &before).await;
    stop.store(true, Ordering::Relaxed);
    assert!(readers.await.unwrap() > 0);
}

/// The first write of a product nobody read: there is no answer from
/// before, so whether a category the write names changed is unknown, and
/// both its category's listing pages go (the safe side). A write whose
/// body does not name the category did not change it: only the page that
/// shows the product goes.
#[tokio::test]
async fn a_first_write_with_nothing_cached_takes_the_category_as_changed() {
    let (_redis, backend, a, b) = replicas().await;
    cache_all(&a, &paths(&LISTINGS)).await;
    cache_all(&b, &paths(&LISTINGS)).await;
    let second = backend.hits_for(LISTINGS[1]);
    let kept = [LISTINGS[2], LISTINGS[3]];
    let before = counts(&backend, &kept);
    let put = send(
        "PUT",
        &a.url("/products/7"),
        &[],
        r#"{"category_id":1,"price":1}"#,
    )
    .await;
    assert_eq!(put.status, StatusCode::OK);
    for proxy in [&a, &b] {
        current(&backend, proxy, LISTINGS[0]).await;
    }
    // The second page shows the same products as before: it was fetched
    // again all the same (once, then shared through Redis, or once each).
    eventually("category 1's second page is fetched again", || async {
        get(&a.url(LISTINGS[1]), &[]).await;
        get(&b.url(LISTINGS[1]), &[]).await;
        backend.hits_for(LISTINGS[1]) > second
    })
    .await;
    still_cached(&backend, [&a, &b], &kept, &before).await;

    // A price change of product 8, not cached either, that does not name
    // the category: its page is refetched, the second page stays.
    cache_all(&a, &paths(&LISTINGS)).await;
    cache_all(&b, &paths(&LISTINGS)).await;
    let kept = [LISTINGS[1], LISTINGS[2], LISTINGS[3]];
    let before = counts(&backend, &kept);
    let put = send("PUT", &b.url("/products/8"), &[], r#"{"price":2}"#).await;
    assert_eq!(put.status, StatusCode::OK);
    for proxy in [&a, &b] {
        current(&backend, proxy, LISTINGS[0]).await;
    }
    still_cached(&backend, [&a, &b], &kept, &before).await;
}

/// A fan-out tag gives an entry at most `MAX_FAN_OUT` tags: a list of 200
/// products is stored with a tag for each (a write of the 150th purges
/// it), one of 500 is not stored at all, and `check` says the bound.
#[tokio::test]
async fn a_fan_out_tag_is_bounded_as_check_says() {
    const { assert!(sidecache::rules::MAX_FAN_OUT >= 200 && sidecache::rules::MAX_FAN_OUT < 500) };
    let (_redis, backend, a, b) = replicas().await;
    cache_all(&a, &["/big/200".to_owned()]).await;
    for _ in 0..3 {
        let got = get(&a.url("/big/500"), &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        assert!(!got.is_hit(), "{}", got.cache_status());
    }
    assert_eq!(backend.hits_for("/big/500"), 3);
    let refused = metric_sum(
        &a,
        "sidecache_store_refused_total",
        "reason=\"too-many-tags\"",
    )
    .await;
    assert!(refused >= 3, "{refused}");

    let put = send("PUT", &b.url("/products/150"), &[], "{}").await;
    // Product 150 does not exist: a 404 purges nothing.
    assert_eq!(put.status, StatusCode::NOT_FOUND);
    assert!(is_hit(&a, "/big/200").await);
    let put = send("PUT", &b.url("/products/15"), &[], "{}").await;
    assert_eq!(put.status, StatusCode::OK);
    let before = backend.hits_for("/big/200");
    eventually("A fetches /big/200 again", || async {
        !is_hit(&a, "/big/200").await
    })
    .await;
    assert_eq!(backend.hits_for("/big/200"), before + 1);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shop.yaml");
    std::fs::write(
        &file,
        SHOP.replace("UPSTREAM", "http://127.0.0.1:1")
            .replace("REDIS", "redis://127.0.0.1:1"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sidecache"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bound = format!(
        "rule big: tag `shows:{{response.items[*]}}` gives an entry at most {} tags",
        sidecache::rules::MAX_FAN_OUT
    );
    assert!(said.contains(&bound), "{said}");
}
