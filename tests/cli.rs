//! The `sidecache` command itself: check, explain, and refusing to run on a bad config.

use std::process::Command;

fn sidecache(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sidecache"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let p = dir.path().join("sidecache.yaml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// The demo config checks clean.
#[test]
fn demo_config_checks() {
    let (code, out, err) = sidecache(&["check", "--config", "config/demo.yaml"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok (6 rules, no Redis)"), "{out}");
}

/// check prints every error with file:line:column and exits 1; run refuses to start.
#[test]
fn check_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "upstream: { url: \"http://127.0.0.1:1\" }\nrules:\n  - name: a\n    match: { path: \"/a/{id}\" }\n    key: \"a:{sku}\"\n    ttl: 5 parsecs\n",
    );
    let (code, _, err) = sidecache(&["check", "--config", &path]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!("error: {path}:5:10: rules[0].key:")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("error: {path}:6:10: rules[0].ttl:")),
        "{err}"
    );
    let (code, _, err) = sidecache(&["run", "--config", &path]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("rules[0].key"));
}

/// explain names the rule, key, tier, TTL and tags, or says nothing matches.
#[test]
fn explain_shows_the_rule() {
    let (code, out, err) = sidecache(&[
        "explain",
        "--config",
        "config/demo.yaml",
        "GET",
        "http://shop.local/products/42",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("rule:  product"), "{out}");
    assert!(out.contains("key:   product:42"), "{out}");
    assert!(out.contains("tier:  memory"), "{out}");
    assert!(out.contains("ttl:   1day"), "{out}");
    assert!(
        out.contains("tags:  category:{response.category_id} (from the response body)"),
        "{out}"
    );
    let (_, out, _) = sidecache(&[
        "explain",
        "--config",
        "config/demo.yaml",
        "GET",
        "/session",
        "-H",
        "Cookie: session_id=a:b",
    ]);
    assert!(out.contains("key:   session:a%3Ab"), "{out}");
    let (_, out, _) = sidecache(&["explain", "--config", "config/demo.yaml", "GET", "/nowhere"]);
    assert!(out.contains("no rule matches"), "{out}");
    let (_, out, _) = sidecache(&[
        "explain",
        "--config",
        "config/demo.yaml",
        "GET",
        "/inventory/3",
    ]);
    assert!(out.contains("cache: false"), "{out}");
}

/// `schema` prints a JSON Schema that accepts the demo config and the
/// Kubernetes example, and rejects an unknown field and an unknown tier.
#[test]
fn schema_validates_configs() {
    let (code, out, err) = sidecache(&["schema"]);
    assert_eq!(code, 0, "{err}");
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let yaml = |text: &str| -> serde_json::Value { serde_saphyr::from_str(text).unwrap() };
    let errors = |doc: &serde_json::Value| -> Vec<String> {
        validator.iter_errors(doc).map(|e| e.to_string()).collect()
    };

    let demo = yaml(&std::fs::read_to_string("config/demo.yaml").unwrap());
    assert_eq!(errors(&demo), Vec::<String>::new());
    let k8s = std::fs::read_to_string("deploy/kubernetes/sidecache-config.yaml").unwrap();
    let map = yaml(&k8s);
    let embedded = yaml(map["data"]["sidecache.yaml"].as_str().unwrap());
    assert_eq!(errors(&embedded), Vec::<String>::new());

    let mut unknown = demo.clone();
    unknown["upstream"]["retries"] = 3.into();
    assert!(!errors(&unknown).is_empty());
    let mut tier = demo.clone();
    tier["rules"][0]["tier"] = "disk".into();
    assert!(!errors(&tier).is_empty());
}

/// check and explain say which Redis a config uses: one server or a
/// cluster (neither needs to be reachable); check names the regions
/// purges reach, and explain is the same with them.
#[test]
fn check_and_explain_name_the_redis_mode() {
    let dir = tempfile::tempdir().unwrap();
    let rules = "rules:\n  - name: p\n    match: { path: \"/p/{id}\" }\n    key: \"p:{id}\"\n    tier: both\n";
    for (redis, check_says, explain_says) in [
        (
            r#"{ cluster: ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001", "redis://127.0.0.1:7002"] }"#,
            "ok (1 rules, a Redis Cluster through 3 seed nodes)",
            "tier:  both (L2 on a Redis Cluster, reached through 3 seed nodes)",
        ),
        (
            r#"{ url: "redis://127.0.0.1:6379" }"#,
            "ok (1 rules, one Redis server)",
            "tier:  both (L2 on one Redis server)",
        ),
        (
            "{ url: \"redis://127.0.0.1:6379\" }\nregion: eu\nregions:\n  us: { redis: \"redis://10.1.0.1:6379\" }\n  ap: { redis: { cluster: [\"redis://10.2.0.1:6379\"] } }",
            "ok (1 rules, one Redis server, region eu; purges reach ap, us)",
            "tier:  both (L2 on one Redis server)",
        ),
    ] {
        let path = write(
            &dir,
            &format!("upstream: {{ url: \"http://127.0.0.1:1\" }}\nredis: {redis}\n{rules}"),
        );
        let (code, out, err) = sidecache(&["check", "--config", &path]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(check_says), "{out}");
        let (code, out, err) = sidecache(&["explain", "--config", &path, "GET", "/p/1"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(explain_says), "{out}");
    }
}

/// The Kubernetes config's documented switch to an existing Redis Cluster
/// (its commented `cluster:` line in place of `url`) checks clean.
#[test]
fn kubernetes_config_switches_to_a_cluster() {
    let config = k8s_config();
    let config = config.as_str();
    let cluster_line = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("# cluster: "))
        .expect("the config shows the cluster form");
    let switched: String = config
        .lines()
        .map(|l| {
            if let Some(url) = l.find("url: redis://") {
                format!("{}cluster: {cluster_line}", &l[..url])
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(switched, config);
    let stdout = check_ok(&switched);
    assert!(
        stdout.contains("a Redis Cluster through 3 seed nodes"),
        "{stdout}"
    );
}

/// The Kubernetes config's commented regions lines, uncommented, check
/// clean and name the regions purges reach.
#[test]
fn kubernetes_config_switches_to_regions() {
    let config = k8s_config();
    let config = config.as_str();
    let switched: String = config
        .lines()
        .map(|l| {
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            match t.strip_prefix("# ") {
                Some(rest) if rest.starts_with("region") || rest.starts_with("  us:") => {
                    format!("{indent}{rest}")
                }
                _ => l.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(switched, config);
    let stdout = check_ok(&switched);
    assert!(stdout.contains("region eu; purges reach us"), "{stdout}");
}

/// The sidecache.yaml inside the Kubernetes ConfigMap.
fn k8s_config() -> String {
    let k8s = std::fs::read_to_string("deploy/kubernetes/sidecache-config.yaml").unwrap();
    let map: serde_json::Value = serde_saphyr::from_str(&k8s).unwrap();
    map["data"]["sidecache.yaml"].as_str().unwrap().to_owned()
}

/// `sidecache check` of `config` (with the admin token it reads from the
/// environment): asserts it passes, answers what it printed.
fn check_ok(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, config);
    let out = Command::new(env!("CARGO_BIN_EXE_sidecache"))
        .args(["check", "--config", &path])
        .env("SIDECACHE_ADMIN_TOKEN", "t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The shop's pods survive a node drain: a PodDisruptionBudget keeps one
/// of them up, its selector is the Deployment's, and the pods spread over
/// nodes; the CPU request leaves room for the config's Redis timeout.
#[test]
fn kubernetes_shop_survives_a_node_drain() {
    let text = std::fs::read_to_string("deploy/kubernetes/shop.yaml").unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(&text).unwrap();
    let of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in shop.yaml"))
    };
    let (deployment, budget) = (of("Deployment"), of("PodDisruptionBudget"));
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let pods = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(budget["spec"]["selector"]["matchLabels"], *pods);
    assert_eq!(budget["spec"]["minAvailable"], 1);
    let spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
        .as_array()
        .expect("the pods spread");
    assert!(
        spread
            .iter()
            .any(|c| c["topologyKey"] == "kubernetes.io/hostname"
                && c["labelSelector"]["matchLabels"] == *pods),
        "{spread:?}"
    );
    let sidecache = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sidecache")
        .expect("a sidecache container");
    assert_eq!(sidecache["resources"]["requests"]["cpu"], "250m");
    assert!(k8s_config().contains("timeout: 250ms"));
}
