//! The README and the pages under `docs/`: every relative link reaches a
//! file (and, for `page.md#anchor`, a heading of that page), and every YAML
//! block that is a whole config passes `sidecache check`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// README.md and every `docs/*.md`, sorted.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir("docs")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.sort();
    pages.insert(0, PathBuf::from("README.md"));
    pages
}

/// The page's lines, each with its number and whether it is inside a
/// fenced code block (the fences themselves count as inside).
fn lines(text: &str) -> Vec<(usize, &str, bool)> {
    let mut fenced = false;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            let fence = l.trim_start().starts_with("```");
            if fence {
                fenced = !fenced;
            }
            (i + 1, l, fenced || fence)
        })
        .collect()
}

/// The anchors GitHub gives a page's headings: lower-cased, punctuation
/// other than `-` and `_` removed, spaces made `-`; a repeated one gets
/// `-1`, `-2`, ...
fn anchors(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (_, line, fenced) in lines(text) {
        let Some(title) = line
            .strip_prefix('#')
            .map(|t| t.trim_start_matches('#'))
            .and_then(|t| t.strip_prefix(' '))
        else {
            continue;
        };
        if fenced {
            continue;
        }
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let seen = seen.entry(slug.clone()).or_insert(0);
        out.push(if *seen == 0 {
            slug
        } else {
            format!("{slug}-{seen}")
        });
        *seen += 1;
    }
    out
}

/// The targets of the page's Markdown links outside code blocks, with
/// their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line, fenced) in lines(text) {
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            out.push((n, target.to_owned()));
            rest = &rest[end..];
        }
    }
    out
}

/// Every relative link of the README and `docs/` reaches an existing file,
/// and a `#anchor` on a Markdown page (or on its own page) names one of
/// that page's headings.
#[test]
fn relative_links_resolve() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for (n, target) in links(&text) {
            if target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((f, a)) => (f, Some(a)),
                None => (target.as_str(), None),
            };
            let path = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap_or(Path::new("")).join(file)
            };
            if !path.exists() {
                broken.push(format!(
                    "{}:{n}: {target}: no file {}",
                    page.display(),
                    path.display()
                ));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if path.extension().is_some_and(|e| e == "md") {
                let there = std::fs::read_to_string(&path).unwrap();
                if !anchors(&there).iter().any(|a| a == anchor) {
                    broken.push(format!(
                        "{}:{n}: {target}: no heading #{anchor} in {}",
                        page.display(),
                        path.display()
                    ));
                }
            }
        }
    }
    assert!(checked >= 12, "only {checked} relative links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The YAML blocks of a page that are whole configs: a top-level
/// `upstream:` and `rules:`. Each with its first line's number.
fn whole_configs(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut block: Option<(usize, usize, Vec<&str>)> = None;
    for (n, line, _) in lines(text) {
        let trimmed = line.trim_start();
        match block.as_mut() {
            None if trimmed.starts_with("```yaml") => {
                block = Some((n + 1, line.len() - trimmed.len(), Vec::new()));
            }
            None => {}
            Some(_) if trimmed.starts_with("```") => {
                let (first, _, body) = block.take().unwrap();
                let whole = body.iter().any(|l| l.starts_with("upstream:"))
                    && body.iter().any(|l| l.starts_with("rules:"));
                if whole {
                    out.push((first, body.join("\n") + "\n"));
                }
            }
            Some((_, indent, body)) => {
                body.push(line.get(*indent..).unwrap_or(""));
            }
        }
    }
    out
}

/// Every whole config shown in the README and `docs/` passes
/// `sidecache check` (with the admin token they read from the environment).
#[test]
fn whole_configs_pass_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    let mut failed = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for (line, config) in whole_configs(&text) {
            let place = format!("{}:{line}", page.display());
            let path = dir.path().join("sidecache.yaml");
            std::fs::write(&path, &config).unwrap();
            let out = Command::new(env!("CARGO_BIN_EXE_sidecache"))
                .args(["check", "--config"])
                .arg(&path)
                .env("SIDECACHE_ADMIN_TOKEN", "t")
                .output()
                .unwrap();
            if !out.status.success() {
                failed.push(format!(
                    "{place}:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            checked.push(place);
        }
    }
    println!("checked: {}", checked.join(", "));
    assert!(checked.len() >= 3, "only {checked:?}");
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
