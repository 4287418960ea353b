//! Hot reload: POST /reload, the folder watch and SIGHUP; a bad config is
//! refused under load while the old one keeps serving.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use http::StatusCode;
use support::*;

fn config(upstream: &str, extra_rule: &str, product_key: &str) -> String {
    format!(
        r#"upstream: {{ url: "{upstream}" }}
admin: {{ token: "t0k" }}
rules:
  - name: product
    match: {{ path: "/products/{{id}}" }}
    key: "{product_key}"
    ttl: 1h
  - name: category
    match: {{ path: "/categories/{{id}}" }}
    key: "category:{{id}}"
    ttl: 1h
{extra_rule}"#
    )
}

const NEW_RULE: &str =
    "  - name: fresh\n    match: { path: \"/new/{id}\" }\n    key: \"new:{id}\"\n    ttl: 1h\n";

/// Replaces the file the way a ConfigMap update does: write aside, rename over.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn reload(proxy: &Proxy, token: Option<&str>) -> Got {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    send(
        "POST",
        &format!("http://{}/reload", proxy.admin),
        &headers,
        "",
    )
    .await
}

/// POST /reload puts a new rule in effect; entries of an unchanged rule
/// survive, those of a rule whose key changed are dropped.
#[tokio::test]
async fn reload_by_api() {
    let backend = Backend::json(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecache.yaml");
    std::fs::write(&path, config(&backend.url(), "", "product:{id}")).unwrap();
    let proxy = Proxy::start_file(&path).await;
    for p in ["/products/1", "/categories/1"] {
        get(&proxy.url(p), &[]).await;
        eventually("cached", || async {
            get(&proxy.url(p), &[]).await.is_hit()
        })
        .await;
    }
    assert!(
        get(&proxy.url("/new/1"), &[])
            .await
            .cache_status()
            .contains("no-rule")
    );
    std::fs::write(&path, config(&backend.url(), NEW_RULE, "p:{id}")).unwrap();
    assert_eq!(reload(&proxy, None).await.status, StatusCode::UNAUTHORIZED);
    let res = reload(&proxy, Some("t0k")).await;
    assert_eq!(res.status, StatusCode::OK, "{:?}", res.body);
    assert!(String::from_utf8_lossy(&res.body).contains("\"rules\":3"));
    assert!(
        get(&proxy.url("/new/1"), &[])
            .await
            .cache_status()
            .contains("stored")
    );
    assert!(
        get(&proxy.url("/categories/1"), &[]).await.is_hit(),
        "unchanged rule lost its entries"
    );
    assert!(
        !proxy.app.cache().in_l1("product:1").await,
        "entries of a changed key survived"
    );
}

/// A bad config reloaded under load is refused with its line and column;
/// no request fails and the old rules keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reload_under_load() {
    let backend = Backend::json(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecache.yaml");
    std::fs::write(&path, config(&backend.url(), "", "product:{id}")).unwrap();
    let proxy = Proxy::start_file(&path).await;
    let url = proxy.url("/products");
    let load = tokio::spawn(async move {
        let mut failed = 0;
        for i in 0..400 {
            if get(&format!("{url}/{}", i % 20), &[]).await.status != StatusCode::OK {
                failed += 1;
            }
        }
        failed
    });
    std::fs::write(
        &path,
        config(
            &backend.url(),
            "  - name: broken\n    match: { path: \"/b/{id}\" }\n    ttl: forever\n",
            "product:{id}",
        ),
    )
    .unwrap();
    let res = reload(&proxy, Some("t0k")).await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
    let text = String::from_utf8_lossy(&res.body);
    assert!(
        text.contains("sidecache.yaml:14:10: rules[2].ttl"),
        "{text}"
    );
    assert_eq!(
        load.await.unwrap(),
        0,
        "requests failed during a refused reload"
    );
    // The old rules still work: the answer is stored and then hit.
    get(&proxy.url("/products/1"), &[]).await;
    await_hit(&proxy.url("/products/1"), &[]).await;
}

/// Replacing the file (as a ConfigMap update does) reloads it by itself.
#[tokio::test]
async fn file_change_is_watched() {
    let backend = Backend::json(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecache.yaml");
    std::fs::write(&path, config(&backend.url(), "", "product:{id}")).unwrap();
    let proxy = Proxy::start_file_watched(&path).await;
    assert!(
        get(&proxy.url("/new/2"), &[])
            .await
            .cache_status()
            .contains("no-rule")
    );
    replace(&path, &config(&backend.url(), NEW_RULE, "product:{id}"));
    eventually("new rule in effect", || async {
        !get(&proxy.url("/new/2"), &[])
            .await
            .cache_status()
            .contains("no-rule")
    })
    .await;
}

/// SIGHUP makes the running binary read its config again.
#[tokio::test]
async fn sighup_reloads_binary() {
    let backend = Backend::json(vec![]).await;
    let (port, admin) = (free_port(), free_port());
    // The folder watch is off, so only the signal can reload.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecache.yaml");
    let head = format!(
        "listen: 127.0.0.1:{port}\nadmin: {{ listen: \"127.0.0.1:{admin}\", token: \"t0k\" }}\n"
    );
    let body = |extra: &str| {
        format!(
            "{head}upstream: {{ url: \"{}\" }}\nrules:\n  - name: product\n    match: {{ path: \"/products/{{id}}\" }}\n    key: \"product:{{id}}\"\n{extra}",
            backend.url()
        )
    };
    std::fs::write(&path, body("")).unwrap();
    let child = start_binary(
        &path,
        admin,
        &[],
        &[("SIDECACHE_WATCH", "false")],
        Stdio::null(),
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/new/3");
    assert!(get(&url, &[]).await.cache_status().contains("no-rule"));
    std::fs::write(&path, body(NEW_RULE)).unwrap();
    // Without a signal nothing changes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        get(&url, &[]).await.cache_status().contains("no-rule"),
        "reloaded without SIGHUP though the watch is off"
    );
    signal(&child, "HUP");
    eventually("new rule in effect", || async {
        !get(&url, &[]).await.cache_status().contains("no-rule")
    })
    .await;
    signal(&child, "TERM");
    let out = exit_output(child, Duration::from_secs(10)).await;
    assert!(out.status.success(), "{:?}", out.status);
}
