//! docs/reference.md, the configuration reference, is generated from the
//! config's JSON Schema (`sidecache schema`, made from the same types the
//! config is read into), so it lists every field with its description and
//! cannot fall behind. This test fails when the file differs from what the
//! schema gives; `UPDATE_REFERENCE=1 cargo test --test reference` writes it.

use std::collections::{BTreeMap, VecDeque};
use std::process::Command;

use serde_json::Value;

const FILE: &str = "docs/reference.md";

#[test]
fn reference_is_generated_from_the_schema() {
    let out = Command::new(env!("CARGO_BIN_EXE_sidecache"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    let schema: Value = serde_json::from_slice(&out.stdout).unwrap();
    let made = render(&schema);
    if std::env::var_os("UPDATE_REFERENCE").is_some() {
        std::fs::write(FILE, &made).unwrap();
    }
    let kept = std::fs::read_to_string(FILE).unwrap_or_default();
    assert!(
        kept == made,
        "{FILE} is not what the schema gives: run UPDATE_REFERENCE=1 cargo test --test reference"
    );
    // Every section the schema defines is there, and the top level lists
    // every field.
    let top = schema["properties"].as_object().unwrap();
    for field in top.keys() {
        assert!(made.contains(&format!("| `{field}` |")), "{field}");
    }
}

/// The reference, as Markdown: the top level, then each section in the
/// order a reader meets it.
fn render(schema: &Value) -> String {
    let defs = schema["$defs"].as_object().unwrap();
    // Each definition's path (`rules[].match`), from the first place that
    // refers to it, walking breadth first.
    let mut paths: BTreeMap<String, String> = BTreeMap::new();
    let mut order = Vec::new();
    let mut queue = VecDeque::from([(String::new(), schema)]);
    while let Some((path, object)) = queue.pop_front() {
        // `rules` before `defaults`, which takes the same fields: a rule's
        // fields are documented under `rules[]`.
        let mut fields: Vec<_> = object["properties"]
            .as_object()
            .into_iter()
            .flatten()
            .collect();
        fields.sort_by_key(|(field, _)| field.as_str() != "rules");
        for (field, prop) in fields {
            let here = if path.is_empty() {
                field.clone()
            } else {
                format!("{path}.{field}")
            };
            if let Some((name, suffix)) = referred(prop)
                && !paths.contains_key(&name)
            {
                let at = format!("{here}{suffix}");
                paths.insert(name.clone(), at.clone());
                order.push(name.clone());
                queue.push_back((at, &defs[&name]));
            }
        }
    }
    let mut md = String::from(
        "# Configuration reference\n\n\
         Every field of the config file, with its description, generated from\n\
         the config's JSON Schema (`sidecache schema`) by `tests/reference.rs`:\n\
         `UPDATE_REFERENCE=1 cargo test --test reference` writes it anew. How\n\
         the fields work together is in [configuration.md](configuration.md).\n\n\
         Durations are written `100ms`, `30s`, `5m`, `24h`, `7d`; sizes `64KiB`,\n\
         `256MiB`. A field not given takes its default.\n\n## Top level\n\n",
    );
    table(&mut md, schema, &paths);
    for name in &order {
        let def = &defs[name];
        md.push_str(&format!("\n## `{}`\n\n", paths[name]));
        if let Some(d) = def["description"].as_str() {
            md.push_str(&format!("{}\n\n", one_line(d)));
        }
        table(&mut md, def, &paths);
    }
    md
}

/// One table: each field, its type and its description.
fn table(md: &mut String, object: &Value, paths: &BTreeMap<String, String>) {
    let required: Vec<&str> = object["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    md.push_str("| field | type | description |\n|---|---|---|\n");
    for (field, prop) in object["properties"].as_object().into_iter().flatten() {
        let needed = if required.contains(&field.as_str()) {
            " (required)"
        } else {
            ""
        };
        md.push_str(&format!(
            "| `{field}` | {}{needed} | {} |\n",
            kind(prop, paths),
            one_line(prop["description"].as_str().unwrap_or(""))
        ));
    }
}

/// The definition a property refers to, with `[]` or `.*` for a list or
/// map of it.
fn referred(prop: &Value) -> Option<(String, &'static str)> {
    let name = |r: &Value| r.as_str()?.strip_prefix("#/$defs/").map(str::to_owned);
    if let Some(n) = name(&prop["$ref"]) {
        return Some((n, ""));
    }
    for alt in prop["anyOf"].as_array().into_iter().flatten() {
        if let Some(found) = referred(alt) {
            return Some(found);
        }
    }
    if let Some(n) = name(&prop["items"]["$ref"]) {
        return Some((n, "[]"));
    }
    if let Some(n) = name(&prop["additionalProperties"]["$ref"]) {
        return Some((n, ".*"));
    }
    None
}

/// A property's type, in words, with a link to its section.
fn kind(prop: &Value, paths: &BTreeMap<String, String>) -> String {
    let link = |name: &str| {
        let path = &paths[name];
        format!("[{path}](#{})", anchor(&format!("`{path}`")))
    };
    if let Some(r) = prop["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        return link(r);
    }
    if let Some(alts) = prop["anyOf"].as_array() {
        let kinds: Vec<String> = alts
            .iter()
            .filter(|a| a["type"] != "null")
            .map(|a| kind(a, paths))
            .collect();
        return kinds.join(" or ");
    }
    let types: Vec<&str> = match &prop["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let words: Vec<String> = types
        .iter()
        .filter(|t| **t != "null")
        .map(|t| match *t {
            "array" => format!("list of {}", kind(&prop["items"], paths)),
            "object" if prop["additionalProperties"].is_object() => {
                format!("map of {}", kind(&prop["additionalProperties"], paths))
            }
            other => other.to_owned(),
        })
        .collect();
    if words.is_empty() {
        "any".to_owned()
    } else {
        words.join(" or ")
    }
}

/// A description on one table line.
fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The anchor GitHub gives a heading.
fn anchor(title: &str) -> String {
    title
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}
