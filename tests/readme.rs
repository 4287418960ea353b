//! The `explain` examples of `docs/command-line.md`: each prints what the
//! page shows, and a proxy running the same config does what it says.

mod support;

use std::path::Path;

use support::{Backend, Proxy, await_hit, get, send};

/// One `$ sidecache explain ...` example: its method, URL and headers, and
/// the output the page shows.
struct Example {
    method: String,
    url: String,
    headers: Vec<String>,
    output: String,
}

/// The examples, from the text of `docs/command-line.md`.
fn examples() -> Vec<Example> {
    let page = std::fs::read_to_string("docs/command-line.md").unwrap();
    let prefix = "$ sidecache explain --config config/demo.yaml ";
    let mut out = Vec::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        let Some(args) = line.strip_prefix(prefix) else {
            continue;
        };
        let words = shell_words(args);
        let mut headers = Vec::new();
        let mut rest = words[2..].iter();
        while let (Some(flag), Some(value)) = (rest.next(), rest.next()) {
            assert_eq!(flag, "-H", "{line}");
            headers.push(value.clone());
        }
        let output: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.is_empty() && !l.starts_with("```"))
            .collect();
        out.push(Example {
            method: words[0].clone(),
            url: words[1].clone(),
            headers,
            output: output.join("\n") + "\n",
        });
    }
    out
}

/// Splits on spaces, keeping 'single-quoted' words whole.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The value after `prefix` on the output's line that starts with it.
fn line_value<'a>(output: &'a str, prefix: &str) -> Option<&'a str> {
    output.lines().find_map(|l| l.strip_prefix(prefix))
}

/// Every example prints what the page shows, and the proxy agrees:
/// a key shown is the key the answer is stored under (the second request
/// is a hit), a `detail=` shown is the proxy's `Cache-Status` detail, and a
/// write purges the keys shown.
#[tokio::test]
async fn explain_examples_agree_with_the_proxy() {
    let examples = examples();
    assert!(examples.len() >= 8, "found {} examples", examples.len());
    let text = std::fs::read_to_string("config/demo.yaml").unwrap();
    let loaded = sidecache::Config::from_yaml(&text, Path::new("demo.yaml"), &|_| None).unwrap();
    let backend = Backend::json(Vec::new()).await;
    let yaml = text.replace("http://127.0.0.1:3000", &backend.url());
    let proxy = Proxy::start(&yaml, &backend.url(), None).await;
    for ex in &examples {
        let shown =
            sidecache::explain::explain(&loaded.config, &ex.method, &ex.url, &ex.headers).unwrap();
        assert_eq!(
            shown, ex.output,
            "docs/command-line.md out of date for {} {}",
            ex.method, ex.url
        );

        let headers: Vec<(&str, &str)> = ex
            .headers
            .iter()
            .filter_map(|h| h.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let url = proxy.url(&ex.url);
        if let Some(key) = line_value(&shown, "key:   ").filter(|k| !k.starts_with("none")) {
            get(&url, &headers).await;
            await_hit(&url, &headers).await;
            assert!(proxy.app.cache().in_l1(key).await, "{key} not stored");
        } else if let Some(detail) = shown.split("(detail=").nth(1) {
            let detail = detail.trim_end().trim_end_matches(')');
            let got = send(&ex.method, &url, &headers, "").await;
            assert!(
                got.cache_status().contains(&format!("detail={detail}")),
                "{} {}: {}",
                ex.method,
                ex.url,
                got.cache_status()
            );
        } else if shown.starts_with("no rule matches") {
            let got = send(&ex.method, &url, &headers, "").await;
            assert!(
                got.cache_status().contains("detail=no-rule"),
                "{}",
                got.cache_status()
            );
        } else if shown.contains("is never answered from cache") {
            // Each key it names is stored first, then purged by the write.
            let keys: Vec<&str> = shown
                .lines()
                .filter_map(|l| l.split(" key ").nth(1))
                .map(|k| k.split([';', ' ']).next().unwrap_or(""))
                .filter(|k| !k.ends_with(':'))
                .collect();
            assert!(!keys.is_empty(), "{shown}");
            get(&url, &headers).await;
            let got = send(&ex.method, &url, &headers, "{}").await;
            assert!(
                got.cache_status().contains("fwd=method"),
                "{}",
                got.cache_status()
            );
            for key in keys {
                let stored = proxy.app.cache().in_l1(key).await;
                let written_through = shown.contains(&format!("stores the new value under {key}"));
                assert_eq!(
                    stored, written_through,
                    "{} {}: {key} after the write",
                    ex.method, ex.url
                );
            }
        } else {
            panic!("no check for example {} {}:\n{shown}", ex.method, ex.url);
        }
    }
}
