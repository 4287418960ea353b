//! The README's quick start, as a newcomer runs it: the demo backend and
//! sidecache with `config/demo.yaml` (on free ports, with an admin token),
//! and the README's curl commands, in order.

mod support;

use std::process::{Command, Stdio};

use support::*;

/// One `curl` line of the README: method, URL, headers and body.
struct Curl {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// The curl commands of the README's quick start, in order.
fn quick_start() -> Vec<Curl> {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let start = readme.find("## Quick start").unwrap();
    let end = start + readme[start..].find("\n## ").unwrap();
    readme[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("curl "))
        .map(|l| parse(l.split(" #").next().unwrap_or(l)))
        .collect()
}

/// The few curl options the README uses: -X, -H, -d, and -s / -i.
fn parse(args: &str) -> Curl {
    let words = words(args);
    let mut curl = Curl {
        method: "GET".into(),
        url: String::new(),
        headers: Vec::new(),
        body: String::new(),
    };
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        match w.as_str() {
            "-X" => curl.method = it.next().unwrap(),
            "-H" => {
                let h = it.next().unwrap();
                let (k, v) = h.split_once(':').unwrap();
                curl.headers
                    .push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "-d" => curl.body = it.next().unwrap(),
            w if w.starts_with('-') => {}
            url => curl.url = url.to_owned(),
        }
    }
    curl
}

/// Shell words, with '...' and "..." quoting.
fn words(text: &str) -> Vec<String> {
    let (mut out, mut word, mut quote) = (Vec::new(), String::new(), None);
    for c in text.chars() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ' ') => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            (_, c) => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// The quick start's commands do what the README says: a miss, a hit from
/// memory with the same backend request number, a write, a miss again
/// with the new price, and a tag purge through the admin API.
#[tokio::test]
async fn the_quick_start_works_as_written() {
    let commands = quick_start();
    assert_eq!(commands.len(), 5, "the README's quick start changed");
    let (backend, proxy, admin) = (free_port(), free_port(), free_port());
    let _backend = Spawned::from(
        Command::new(env!("CARGO_BIN_EXE_demo-backend"))
            .args([
                "--listen",
                &format!("127.0.0.1:{backend}"),
                "--delay-ms",
                "0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string("config/demo.yaml")
        .unwrap()
        .replace(
            "http://127.0.0.1:3000",
            &format!("http://127.0.0.1:{backend}"),
        )
        .replace("0.0.0.0:8080", &format!("127.0.0.1:{proxy}"))
        .replace(
            "  listen: 127.0.0.1:9901",
            &format!("  listen: 127.0.0.1:{admin}\n  token: \"${{SIDECACHE_ADMIN_TOKEN}}\""),
        );
    let path = dir.path().join("demo.yaml");
    std::fs::write(&path, config).unwrap();
    let token = "quick-start-token";
    let _sidecache = start_binary(
        &path,
        admin,
        &[],
        &[("SIDECACHE_ADMIN_TOKEN", token)],
        Stdio::null(),
    )
    .await;
    eventually("the backend answers", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", backend))
            .await
            .is_ok()
    })
    .await;

    let mut got = Vec::new();
    for c in &commands {
        let url = c
            .url
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{proxy}"))
            .replace("127.0.0.1:9901", &format!("127.0.0.1:{admin}"));
        let headers: Vec<(String, String)> = c
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.replace("$TOKEN", token)))
            .collect();
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if got.len() == 1 {
            // The second command is the hit: the first answer is stored
            // just after it went out, so wait for L1 to hold it.
            let metrics = format!("http://127.0.0.1:{admin}/metrics");
            eventually("the first answer is in L1", || async {
                let text = get(&metrics, &[]).await;
                String::from_utf8_lossy(&text.body).lines().any(|l| {
                    l.strip_prefix("sidecache_l1_entries ")
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .is_some_and(|n| n >= 1.0)
                })
            })
            .await;
        }
        got.push(send(&c.method, &url, &headers, &c.body).await);
    }
    let n = |g: &Got| g.header("x-backend-request");
    assert!(
        got[0].cache_status().contains("stored"),
        "{}",
        got[0].cache_status()
    );
    assert!(
        got[1].cache_status().contains("hit") && got[1].cache_status().contains("detail=memory"),
        "{}",
        got[1].cache_status()
    );
    assert_eq!(n(&got[0]), n(&got[1]), "the backend saw the hit");
    assert!(got[2].status.is_success(), "{:?}", got[2].status);
    assert!(!got[3].is_hit(), "{}", got[3].cache_status());
    assert_ne!(n(&got[3]), n(&got[1]));
    assert!(String::from_utf8_lossy(&got[3].body).contains("9.99"));
    assert!(got[4].status.is_success(), "{:?}", got[4].body);
    let purged: serde_json::Value = serde_json::from_slice(&got[4].body).unwrap();
    assert_eq!(purged["purged"]["tags"], 1);
}
