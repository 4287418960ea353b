use super::*;

fn load(yaml: &str) -> Result<Loaded, ConfigError> {
    Config::from_yaml(yaml, Path::new("t.yaml"), &|name| {
        (name == "TOKEN").then(|| "s3cret".to_owned())
    })
}

fn errors(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

const BASE: &str = "upstream: { url: \"http://127.0.0.1:3000\" }\n";

/// A minimal file loads with the documented defaults.
#[test]
fn defaults_apply() {
    let l = load(BASE).unwrap();
    assert_eq!(l.config.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(l.config.memory.max_size, DEFAULT_MEMORY_MAX_SIZE);
    assert_eq!(l.config.upstream.timeout, DEFAULT_UPSTREAM_TIMEOUT);
    assert!(l.config.redis.is_none());
}

/// Human sizes and durations parse; `${VAR}` is replaced.
#[test]
fn sizes_durations_env() {
    let yaml = format!(
        "{BASE}memory: {{ max_size: 64MiB, max_object_size: 512KiB }}\nadmin: {{ token: \"${{TOKEN}}\" }}\nrules:\n  - name: a\n    match: {{ path: \"/a\" }}\n    ttl: 7d\n"
    );
    let l = load(&yaml).unwrap();
    assert_eq!(l.config.memory.max_size, 64 * 1024 * 1024);
    assert_eq!(l.config.memory.max_object_size, 512 * 1024);
    assert_eq!(l.config.admin.token.as_deref(), Some("s3cret"));
    assert_eq!(
        l.config.rules.rules()[0].ttl,
        crate::rules::Ttl::Fixed(std::time::Duration::from_secs(7 * 86400))
    );
}

/// An unknown field is named with its line and column.
#[test]
fn unknown_field_located() {
    let e = errors(&format!(
        "{BASE}rules:\n  - name: a\n    match: {{ path: \"/a\" }}\n    tll: 5m\n"
    ));
    assert!(e[0].starts_with("error: t.yaml:5:5:"), "{e:?}");
    assert!(e[0].contains("tll"), "{e:?}");
}

/// Bad duration and bad size name the field and place; all errors are listed.
#[test]
fn bad_values_all_listed() {
    let e = errors(&format!(
        "{BASE}memory: {{ max_size: lots }}\nrules:\n  - name: a\n    match: {{ path: \"/a\" }}\n    ttl: soon\n"
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("error: t.yaml:2:21: memory.max_size:"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("error: t.yaml:6:10: rules[0].ttl:"),
        "{e:?}"
    );
}

/// A missing environment variable is an error at its place.
#[test]
fn missing_env_var() {
    let e = errors(&format!("{BASE}admin: {{ token: \"${{NOPE}}\" }}\n"));
    assert!(e[0].starts_with("error: t.yaml:2:18:"), "{e:?}");
    assert!(e[0].contains("NOPE"), "{e:?}");
}

/// A key placeholder the route does not define is refused, naming the route's parameters.
#[test]
fn undefined_placeholder() {
    let e = errors(&format!(
        "{BASE}rules:\n  - name: a\n    match: {{ path: \"/p/{{id}}\" }}\n    key: \"p:{{sku}}\"\n"
    ));
    assert!(
        e[0].starts_with("error: t.yaml:5:10: rules[0].key:"),
        "{e:?}"
    );
    assert!(e[0].contains("{sku}") && e[0].contains("{id}"), "{e:?}");
}

/// Duplicate and conflicting routes are refused.
#[test]
fn duplicate_and_conflicting_routes() {
    let dup = errors(&format!(
        "{BASE}rules:\n  - name: a\n    match: {{ path: \"/p/{{id}}\" }}\n    key: \"a:{{id}}\"\n  - name: b\n    match: {{ path: \"/p/{{id}}\" }}\n    key: \"b:{{id}}\"\n"
    ));
    assert!(dup[0].contains("never be used"), "{dup:?}");
    assert!(dup[0].starts_with("error: t.yaml:6:"), "{dup:?}");
    let conflict = errors(&format!(
        "{BASE}rules:\n  - name: a\n    match: {{ path: \"/p/{{id}}\" }}\n    key: \"a:{{id}}\"\n  - name: b\n    match: {{ path: \"/p/{{sku}}\" }}\n    key: \"b:{{sku}}\"\n"
    ));
    assert!(
        conflict[0].contains("overlaps `/p/{id}` of rule `a`"),
        "{conflict:?}"
    );
    let names = errors(&format!(
        "{BASE}rules:\n  - name: a\n    match: {{ path: \"/a\" }}\n  - name: a\n    match: {{ path: \"/b\" }}\n"
    ));
    assert!(names[0].contains("used twice"), "{names:?}");
}

/// Two rules whose keys could render the same string are refused.
#[test]
fn overlapping_keys_refused() {
    let e = errors(&format!(
        "{BASE}rules:\n  - name: a\n    match: {{ path: \"/a/{{id}}\" }}\n    key: \"p:{{id}}\"\n  - name: b\n    match: {{ path: \"/b/{{id}}\" }}\n    key: \"p:{{id}}\"\n"
    ));
    assert!(e[0].contains("can render the same key"), "{e:?}");
    // Distinct prefixes are fine, and so is the default URL key on many rules.
    load(&format!("{BASE}rules:\n  - name: a\n    match: {{ path: \"/a/{{id}}\" }}\n    key: \"a:{{id}}\"\n  - name: b\n    match: {{ path: \"/b/{{id}}\" }}\n    key: \"a:{{id}}:b\"\n  - name: c\n    match: {{ path: \"/c\" }}\n  - name: d\n    match: {{ path: \"/d\" }}\n")).unwrap();
}

/// The DESIGN example's unquoted braces in flow style get a hint.
#[test]
fn flow_braces_hint() {
    let e = errors(&format!(
        "{BASE}rules:\n  - name: a\n    match: {{ path: /p/{{id}} }}\n"
    ));
    assert!(e[0].contains("quote values that contain braces"), "{e:?}");
}

/// An admin listener beyond loopback needs a token; the tier falls back to memory without Redis.
#[test]
fn admin_token_and_tier_fallback() {
    let e = errors(&format!("{BASE}admin: {{ listen: \"0.0.0.0:9901\" }}\n"));
    assert!(e[0].contains("admin.token"), "{e:?}");
    let l = load(&format!(
        "{BASE}rules:\n  - name: s\n    match: {{ path: \"/s\" }}\n    tier: redis\n"
    ))
    .unwrap();
    assert_eq!(l.config.rules.rules()[0].tier, crate::cache::Tier::Memory);
    assert!(
        l.warnings[0].message.contains("no redis"),
        "{:?}",
        l.warnings
    );
}

/// `rate_limit` is read with its line: a bad rate, burst or scope is an
/// error; `scope: global` without Redis is a warning and counts locally.
#[test]
fn rate_limits() {
    let rule = |limit: &str| {
        format!(
            "{BASE}rules:\n  - name: inv\n    match: {{ path: \"/inventory/{{id}}\" }}\n    cache: false\n    rate_limit: {limit}\n"
        )
    };
    let l = load(&rule("{ key: \"{client_ip}\", rate: 100/s, burst: 20 }")).unwrap();
    let limit = l.config.rules.rules()[0].rate_limit.as_ref().unwrap();
    assert_eq!(limit.interval, std::time::Duration::from_millis(10));
    assert_eq!(limit.burst.get(), 20);
    assert_eq!(limit.scope, crate::rules::Scope::Local);

    let l = load(&rule("{ key: \"{client_ip}\", rate: 5/m, scope: global }")).unwrap();
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(l.warnings[0].message.contains("global needs redis"));

    let e = errors(&rule("{ key: \"{client_ip}\", rate: fast }"));
    assert!(
        e.iter()
            .any(|l| l.contains("6:") && l.contains("rate_limit.rate")),
        "{e:?}"
    );
    let e = errors(&rule("{ key: \"{client_ip}\", rate: 1/s, burst: 0 }"));
    assert!(e.iter().any(|l| l.contains("rate_limit.burst")), "{e:?}");
    let e = errors(&rule("{ key: \"{client_ip}\", rate: 1/s, scope: planet }"));
    assert!(e.iter().any(|l| l.contains("rate_limit.scope")), "{e:?}");
    let e = errors(&rule("{ key: \"{nope}\", rate: 1/s }"));
    assert!(e.iter().any(|l| l.contains("rate_limit.key")), "{e:?}");
}

/// A `${VAR}` value is substituted into the scalar it stands in, never
/// read as YAML: in double quotes, single quotes or none, the token is the
/// variable's exact text, whatever YAML syntax it holds, and adds no key.
#[test]
fn env_values_are_scalars_never_yaml() {
    let with = |form: &str, value: &'static str| {
        Config::from_yaml(
            &format!("{BASE}admin:\n  token: {form}  # ${{NOT_READ}}\n"),
            Path::new("t.yaml"),
            &move |n| (n == "TOKEN").then(|| value.to_owned()),
        )
    };
    for value in [
        "s3cr3t",
        "&anchor s3cr3t",
        "!!binary czNjcjN0",
        "|",
        ">",
        "*alias",
        "x\"\nrules: []\n#",
        "a\nb",
        "x\", listen: \"0.0.0.0:1",
        "a: b",
        "q'",
        "null",
        "~",
        "@x",
        "%x",
        "- x",
        "redis://user:pw@host:6379/0",
    ] {
        for form in ["\"${TOKEN}\"", "${TOKEN}", "'${TOKEN}'"] {
            match with(form, value) {
                Ok(l) => assert_eq!(
                    l.config.admin.token.as_deref(),
                    Some(value),
                    "{form} with {value:?}"
                ),
                // Single quotes cannot hold a line break.
                Err(e) if form.starts_with('\'') && value.contains('\n') => {
                    assert!(e.to_string().contains("control character"), "{e}");
                }
                Err(e) => panic!("{form} with {value:?}: {e}"),
            }
        }
    }
    // `''` inside single quotes keeps them open: a value after it is still
    // inside them, and adds no key.
    let inject = "x', listen: \"0.0.0.0:1\", y: '";
    let l = Config::from_yaml(
        &format!("{BASE}admin:\n  token: 'it''s ${{TOKEN}}'\n"),
        Path::new("t.yaml"),
        &move |_| Some(inject.to_owned()),
    )
    .unwrap();
    assert_eq!(
        l.config.admin.token.as_deref(),
        Some(format!("it's {inject}").as_str())
    );
    // An empty value is an empty token, which is no token, in every form.
    for form in ["\"${TOKEN}\"", "${TOKEN}", "'${TOKEN}'"] {
        assert_eq!(with(form, "").unwrap().config.admin.token, None, "{form}");
    }
    // Inside part of a plain scalar a value with YAML syntax is refused.
    let e = Config::from_yaml(
        &format!("{BASE}admin:\n  token: a${{TOKEN}}b\n"),
        Path::new("t.yaml"),
        &|_| Some("x #y".to_owned()),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(e.contains("put quotes around"), "{e}");
}

/// `defaults:` takes every rule field: triggers, write-through, `warm_on`
/// and the rest reach each rule that leaves them out, and a rule's own
/// value wins.
#[test]
fn defaults_merge_every_field() {
    let yaml = format!(
        "{BASE}defaults:\n  ttl: 2m\n  invalidate_on: [\"PUT /items/{{id}}\"]\n  write_through: {{ methods: [PUT] }}\n  warm_on: [\"POST /login -> /x\"]\nrules:\n  - name: item\n    match: {{ path: \"/items/{{id}}\" }}\n    key: \"item:{{id}}\"\n  - name: other\n    match: {{ path: \"/other/{{id}}\" }}\n    key: \"other:{{id}}\"\n    ttl: 5m\n    invalidate_on: [\"DELETE /other/{{id}}\"]\n"
    );
    let l = load(&yaml).unwrap();
    let rules = l.config.rules.rules();
    let item = &rules[0];
    assert_eq!(item.ttl, crate::rules::Ttl::Fixed(Duration::from_secs(120)));
    assert_eq!(item.triggers.len(), 1);
    assert_eq!(item.triggers[0].method, http::Method::PUT);
    assert_eq!(
        item.write_through.as_ref().map(|w| w.methods.clone()),
        Some(vec![http::Method::PUT])
    );
    let other = &rules[1];
    assert_eq!(
        other.ttl,
        crate::rules::Ttl::Fixed(Duration::from_secs(300))
    );
    assert_eq!(other.triggers[0].method, http::Method::DELETE);
    for rule in rules {
        assert_eq!(rule.warm_on.len(), 1, "{}", rule.name);
        assert_eq!(rule.warm_on[0].method, http::Method::POST);
        assert_eq!(rule.warm_on[0].target.source(), "/x");
    }
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

/// `warm_on` in both forms, and each mistake named at its field.
#[test]
fn warm_on_is_checked() {
    let rule = |warm: &str| {
        format!(
            "{BASE}rules:\n  - name: reco\n    match: {{ path: \"/recommendations/{{user}}\" }}\n    key: \"reco:{{user}}\"\n    warm_on: [{warm}]\n"
        )
    };
    let l = load(&rule(
        r#""POST /login -> /recommendations/{response.user_id}", { on: "PUT /users/{id} -> /recommendations/{id}", forward: [cookie, authorization] }"#,
    ))
    .unwrap();
    let warm = &l.config.rules.rules()[0].warm_on;
    assert_eq!(warm.len(), 2);
    assert!(!warm[0].forward_cookie && !warm[0].forward_authorization);
    assert!(warm[1].forward_cookie && warm[1].forward_authorization);
    assert_eq!(warm[1].path, "/users/{id}");
    for (warm, message) in [
        (r#""POST /login""#, "METHOD /path/{param} -> /target"),
        (r#""GET /a -> /b""#, "not a write method"),
        (r#""POST a -> /b""#, "must start with `/`"),
        (r#""POST /login -> /r/{nope}""#, "nope"),
        (
            r#"{ on: "POST /a -> /b", forward: [body] }"#,
            "cannot be forwarded",
        ),
    ] {
        let errs = errors(&rule(warm)).join("\n");
        assert!(
            errs.contains("warm_on") && errs.contains(message),
            "{warm}: expected `{message}` in:\n{errs}"
        );
    }
}

/// `invalidate_on` in both forms: the map names what the write changed;
/// a string form that purges a group tag is warned of; each mistake is
/// named at its field.
#[test]
fn invalidate_on_is_checked() {
    let rule = |tags: &str, on: &str| {
        format!(
            "{BASE}rules:\n  - name: product\n    match: {{ path: \"/products/{{id}}\" }}\n    key: \"product:{{id}}\"\n    tags: [{tags}]\n    invalidate_on: [{on}]\n"
        )
    };
    let l = load(&rule(
        r#""product:{id}", "category:{response.category_id}""#,
        r#"{ on: "PUT /products/{id}", keys: ["price:{id}"], tags: ["shows:{id}", "listing:{previous.category_id}"], if_changed: [category_id, price.amount] }"#,
    ))
    .unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let t = &l.config.rules.rules()[0].triggers[0];
    assert_eq!(t.keys[0].source(), "price:{id}");
    let tags: Vec<&str> = t.tags.iter().map(|t| t.source()).collect();
    assert_eq!(tags, ["shows:{id}", "listing:{previous.category_id}"]);
    assert_eq!(t.if_changed, [vec!["category_id"], vec!["price", "amount"]]);

    // The string form purges the rule's own tags, and warns of a group.
    let l = load(&rule(
        r#""product:{id}", "category:{response.category_id}""#,
        r#""PUT /products/{id}""#,
    ))
    .unwrap();
    let t = &l.config.rules.rules()[0].triggers[0];
    assert_eq!(t.tags.len(), 2);
    let warned: Vec<String> = l.warnings.iter().map(|w| w.message.clone()).collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("category:{response.category_id}") && warned[0].contains("group"),
        "{warned:?}"
    );
    assert!(
        load(&rule(r#""product:{id}""#, r#""PUT /products/{id}""#))
            .unwrap()
            .warnings
            .is_empty()
    );

    for (on, message) in [
        (
            r#"{ on: "PUT /x/{other}", tags: [a] }"#,
            "does not define {id}",
        ),
        (r#"{ on: "PUT /products/{id}", tags: ["{nope}"] }"#, "nope"),
        (
            r#"{ on: "PUT /products/{id}", tags: ["{previous}"] }"#,
            "JSON field",
        ),
        (r#"{ on: "GET /products/{id}" }"#, "not a write method"),
        (
            r#"{ on: "PUT /products/{id}", if_changed: ["a[*]"] }"#,
            "if_changed",
        ),
    ] {
        let errs = errors(&rule(r#""product:{id}""#, on)).join("\n");
        assert!(
            errs.contains("invalidate_on") && errs.contains(message),
            "{on}: expected `{message}` in:\n{errs}"
        );
    }
    let errs = errors(&rule(
        r#""product:{id}""#,
        r#"{ on: "PUT /products/{id}", purge: [a] }"#,
    ));
    assert!(
        errs.join("\n").contains("unknown field `purge`"),
        "{errs:?}"
    );
    // `{previous.x}` stays where it means something.
    let errs = errors(&rule(
        r#""c:{previous.category_id}""#,
        r#""PUT /products/{id}""#,
    ))
    .join("\n");
    assert!(errs.contains("trigger"), "{errs}");
}

/// `redis.ca` needs a rediss:// URL and a readable PEM file with a
/// certificate; each problem is reported at its place.
#[test]
fn redis_ca_is_checked() {
    let yaml = |url: &str, ca: &str| {
        format!("{BASE}redis: {{ url: \"{url}\", ca: \"{ca}\" }}\nrules: []\n")
    };
    let e = errors(&yaml("redis://127.0.0.1:6379", "/etc/hostname"));
    assert!(
        e.iter()
            .any(|l| l.contains("redis.ca") && l.contains("rediss://")),
        "{e:?}"
    );
    let e = errors(&yaml("rediss://127.0.0.1:6379", "/no/such/ca.pem"));
    assert!(
        e.iter()
            .any(|l| l.contains("redis.ca") && l.contains("cannot read")),
        "{e:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let e = errors(&yaml(
        "rediss://127.0.0.1:6379",
        &not_pem.display().to_string(),
    ));
    assert!(e.iter().any(|l| l.contains("no PEM certificate")), "{e:?}");
}

/// TLS files of the upstream need an https:// URL, and a client certificate
/// needs its key; an https:// upstream with a CA loads.
#[test]
fn upstream_tls_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.pem").display().to_string();
    let e = errors(&format!(
        "upstream: {{ url: \"http://127.0.0.1:3000\", ca: \"{missing}\" }}\nrules: []\n"
    ));
    assert!(
        e.iter()
            .any(|l| l.contains("upstream.ca") && l.contains("https://")),
        "{e:?}"
    );
    let e = errors(&format!(
        "upstream: {{ url: \"https://127.0.0.1:3000\", ca: \"{missing}\" }}\nrules: []\n"
    ));
    assert!(
        e.iter()
            .any(|l| l.contains("upstream.ca") && l.contains("cannot read")),
        "{e:?}"
    );
    let not_pem = dir.path().join("bad.pem");
    std::fs::write(&not_pem, "nothing").unwrap();
    let bad = not_pem.display().to_string();
    let e = errors(&format!(
        "upstream: {{ url: \"https://127.0.0.1:3000\", client_cert: \"{bad}\" }}\nrules: []\n"
    ));
    assert!(e.iter().any(|l| l.contains("go together")), "{e:?}");
    let e = errors(&format!(
        "upstream: {{ url: \"https://127.0.0.1:3000\", ca: \"{bad}\" }}\nrules: []\n"
    ));
    assert!(e.iter().any(|l| l.contains("no PEM certificate")), "{e:?}");
}

/// `redis.cluster` takes seed nodes instead of `url`; each form is checked
/// and the two never mix.
#[test]
fn redis_cluster_is_checked() {
    let yaml = |redis: &str| format!("{BASE}redis: {redis}\nrules: []\n");
    let l = load(&yaml(
        r#"{ cluster: ["redis://10.0.0.1:6379", " redis://10.0.0.2:6379 "], key_prefix: "s:" }"#,
    ))
    .unwrap();
    let r = l.config.redis.unwrap();
    assert_eq!(
        r.servers,
        RedisServers::Cluster(vec![
            "redis://10.0.0.1:6379".into(),
            "redis://10.0.0.2:6379".into()
        ])
    );
    assert_eq!(r.key_prefix, "s:");
    // The single-server form is unchanged.
    let l = load(&yaml(r#"{ url: "redis://10.0.0.1:6379" }"#)).unwrap();
    assert_eq!(
        l.config.redis.unwrap().servers,
        RedisServers::Url("redis://10.0.0.1:6379".into())
    );
    for (redis, says) in [
        (r#"{ key_prefix: "s:" }"#, "needs `url`"),
        (
            r#"{ url: "redis://a:1", cluster: ["redis://b:1"] }"#,
            "not both",
        ),
        ("{ cluster: [] }", "lists no node"),
        (r#"{ cluster: ["nonsense"] }"#, "not a Redis URL"),
        (
            r#"{ cluster: ["redis+unix:///tmp/r.sock"] }"#,
            "reached over TCP",
        ),
        (
            r#"{ cluster: ["redis://a:1", "rediss://b:1"] }"#,
            "mixes rediss://",
        ),
        (
            r#"{ cluster: ["redis://a:1"], key_prefix: "{s}:" }"#,
            "one slot",
        ),
        (
            r#"{ cluster: ["redis://a:1"], ca: "/etc/hostname" }"#,
            "only a rediss://",
        ),
    ] {
        let e = errors(&yaml(redis));
        assert!(
            e.iter().any(|l| l.contains("redis") && l.contains(says)),
            "{redis}: {e:?}"
        );
    }
    // Braces in the prefix only matter on a cluster.
    assert!(load(&yaml(r#"{ url: "redis://a:1", key_prefix: "{s}:" }"#)).is_ok());
}

/// `region:` and `regions:` load in both forms of a region's Redis; what a
/// region does not say comes from this region's `redis:` (prefix) or the
/// cross-region default (timeout).
#[test]
fn regions_load() {
    let yaml = format!(
        "{BASE}redis: {{ url: \"redis://127.0.0.1:6379\", key_prefix: \"s:\" }}\nregion: eu\nregions:\n  us: {{ redis: \"redis://10.1.0.1:6379\" }}\n  ap: {{ redis: {{ cluster: [\"redis://10.2.0.1:6379\"], timeout: 3s }} }}\ninvalidation: {{ repeat_after: 2s, region_log: 500 }}\n"
    );
    let c = load(&yaml).unwrap().config;
    let regions = c.regions.unwrap();
    assert_eq!(regions.here, "eu");
    let names: Vec<_> = regions.others.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["ap", "us"]);
    let (ap, us) = (&regions.others[0].redis, &regions.others[1].redis);
    assert_eq!(
        us.servers,
        RedisServers::Url("redis://10.1.0.1:6379".into())
    );
    assert_eq!(us.key_prefix, "s:");
    assert_eq!(us.timeout, DEFAULT_REGION_TIMEOUT);
    assert_eq!(
        ap.servers,
        RedisServers::Cluster(vec!["redis://10.2.0.1:6379".into()])
    );
    assert_eq!(ap.timeout, std::time::Duration::from_secs(3));
    assert_eq!(
        c.invalidation.repeat_after,
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(c.invalidation.region_log, 500);
    assert_eq!(
        load(BASE).unwrap().config.invalidation,
        Invalidation::default()
    );
}

/// Each mistake in `region` / `regions` / `invalidation` is named with
/// its field.
#[test]
fn regions_are_checked() {
    let redis = "redis: { url: \"redis://127.0.0.1:6379\" }\n";
    for (rest, field, message) in [
        (
            "regions:\n  us: { redis: \"redis://10.1.0.1:6379\" }\n",
            "regions",
            "needs `region:`",
        ),
        (
            "region: eu\nregions:\n  eu: { redis: \"redis://10.1.0.1:6379\" }\n",
            "regions.eu",
            "own region",
        ),
        (
            "region: eu\nregions:\n  us: { redis: \"nonsense\" }\n",
            "regions.us.redis",
            "not a Redis URL",
        ),
        (
            "region: eu\nregions:\n  us: { redis: { cluster: [] } }\n",
            "regions.us.redis.cluster",
            "lists no node",
        ),
        (
            "region: eu\nregions:\n  us: { redis: \"redis://127.0.0.1:6379\" }\n",
            "regions.us.redis",
            "this region's own Redis",
        ),
        (
            "region: eu\nregions:\n  us: { redis: \"redis+unix:///tmp/r.sock\" }\n",
            "regions.us.redis",
            "over TCP",
        ),
        (
            "region: \"e u\"\nregions:\n  us: { redis: \"redis://10.1.0.1:6379\" }\n",
            "region",
            "not a region name",
        ),
        (
            "invalidation: { repeat_after: 0s }\n",
            "invalidation.repeat_after",
            "",
        ),
        (
            "invalidation: { region_log: 0 }\n",
            "invalidation.region_log",
            "at least one",
        ),
    ] {
        let errs = errors(&format!("{BASE}{redis}{rest}")).join("\n");
        assert!(
            errs.contains(field) && errs.contains(message),
            "{rest}: expected `{field}` / `{message}` in:\n{errs}"
        );
    }
    // Regions without this region's own Redis to log purges in.
    let errs = errors(&format!(
        "{BASE}region: eu\nregions:\n  us: {{ redis: \"redis://10.1.0.1:6379\" }}\n"
    ))
    .join("\n");
    assert!(errs.contains("needs `redis:`"), "{errs}");
}

/// `memory.warm.urls` is read with the config: paths and http(s) URLs,
/// comments and blank lines skipped; an unreadable file or a line that is
/// neither is an error naming it.
#[test]
fn warm_up_list_is_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("urls.txt");
    let yaml = || {
        format!(
            "{BASE}memory: {{ warm: {{ urls: \"{}\", timeout: 3s }} }}\n",
            list.display()
        )
    };
    std::fs::write(
        &list,
        "# top\n/products/1\n\nhttps://shop.local/products/2?x=1 # second\n",
    )
    .unwrap();
    let warm = load(&yaml()).unwrap().config.memory.warm.unwrap();
    assert_eq!(
        warm.urls,
        ["/products/1", "https://shop.local/products/2?x=1"]
    );
    assert_eq!(warm.timeout, Duration::from_secs(3));
    std::fs::write(&list, "/products/1\nftp://x/y\n").unwrap();
    let errs = errors(&yaml()).join("\n");
    assert!(
        errs.contains("memory.warm.urls") && errs.contains("line 2"),
        "{errs}"
    );
    std::fs::remove_file(&list).unwrap();
    let errs = errors(&yaml()).join("\n");
    assert!(errs.contains("cannot read"), "{errs}");
}

/// `memory.warm.from: hot` needs Redis, takes `top` (default 1000), and
/// each mistake is named at its field.
#[test]
fn warm_from_hot_is_checked() {
    const REDIS: &str = "redis: { url: \"redis://127.0.0.1:6379\" }\n";
    let warm = load(&format!(
        "{BASE}{REDIS}memory: {{ warm: {{ from: hot }} }}\n"
    ))
    .unwrap()
    .config
    .memory
    .warm
    .unwrap();
    assert_eq!((warm.hot, warm.urls.len()), (Some(1000), 0));
    let warm = load(&format!(
        "{BASE}{REDIS}memory: {{ warm: {{ from: hot, top: 50 }} }}\n"
    ))
    .unwrap()
    .config
    .memory
    .warm
    .unwrap();
    assert_eq!(warm.hot, Some(50));
    for (yaml, field, message) in [
        (
            "{ from: hot }",
            "memory.warm.from",
            "add a `redis:` section",
        ),
        (
            "{ from: cold }",
            "memory.warm.from",
            "the one source is `hot`",
        ),
        ("{ top: 5 }", "memory.warm.top", "goes with `from: hot`"),
        (
            "{ timeout: 5s }",
            "memory.warm",
            "`from: hot`, `urls: FILE`",
        ),
    ] {
        let errs = errors(&format!("{BASE}memory: {{ warm: {yaml} }}\n")).join("\n");
        assert!(
            errs.contains(field) && errs.contains(message),
            "{yaml}: expected `{message}` in:\n{errs}"
        );
    }
    let errs = errors(&format!(
        "{BASE}{REDIS}memory: {{ warm: {{ from: hot, top: 0 }} }}\n"
    ))
    .join("\n");
    assert!(errs.contains("memory.warm.top"), "{errs}");
}

/// `rollout` and `verify` on a rule or in `defaults:`, and each mistake
/// named at its field.
#[test]
fn rollout_and_verify_are_checked() {
    let rule = |fields: &str| {
        format!(
            "{BASE}defaults:\n  verify: {{ sample: 1%, ignore: [served_at, meta.request_id] }}\nrules:\n  - name: p\n    match: {{ path: \"/p/{{id}}\" }}\n    key: \"p:{{id}}\"\n{fields}"
        )
    };
    let l = load(&rule(
        "    rollout: { percent: 2.5, by: \"{cookie.session_id}\" }\n",
    ))
    .unwrap();
    let r = &l.config.rules.rules()[0];
    let rollout = r.rollout.as_ref().unwrap();
    assert_eq!(rollout.percent, 2.5);
    assert!(rollout.inside(249) && !rollout.inside(250));
    let verify = r.verify.as_ref().unwrap();
    assert!((verify.sample - 0.01).abs() < 1e-12);
    assert_eq!(verify.ignore[1], ["meta", "request_id"]);
    assert!(!verify.purge_on_mismatch);
    let l = load(&rule(
        "    verify: { sample: 100%, purge_on_mismatch: true }\n    rollout: { percent: 0 }\n",
    ))
    .unwrap();
    let r = &l.config.rules.rules()[0];
    assert!(r.verify.as_ref().unwrap().purge_on_mismatch);
    assert!(r.verify.as_ref().unwrap().ignore.is_empty());
    assert!(!r.rollout.as_ref().unwrap().inside(0) && r.rollout.as_ref().unwrap().by.is_none());
    for (fields, field, message) in [
        (
            "    rollout: { percent: 101 }\n",
            "rollout.percent",
            "from 0 to 100",
        ),
        (
            "    rollout: { percent: -1 }\n",
            "rollout.percent",
            "from 0 to 100",
        ),
        (
            "    rollout: { percent: 5, by: \"{nope}\" }\n",
            "rollout.by",
            "nope",
        ),
        (
            "    verify: { sample: 0% }\n",
            "verify.sample",
            "0.01% to 100%",
        ),
        (
            "    verify: { sample: 1 }\n",
            "verify.sample",
            "0.01% to 100%",
        ),
        (
            "    verify: { sample: 1%, ignore: [\"a..b\"] }\n",
            "verify.ignore",
            "dotted",
        ),
    ] {
        let errs = errors(&rule(fields)).join("\n");
        assert!(
            errs.contains(field) && errs.contains(message),
            "{fields}: expected `{message}` at {field} in:\n{errs}"
        );
    }
}

/// Legacy URLs: several parameters in a segment and parameters with a
/// pattern route, and a write that knows only the pk reaches the page;
/// two rules that overlap are named, and a pattern that cannot be read
/// says why rather than blaming another rule.
#[test]
fn legacy_url_patterns() {
    let yaml = format!(
        "{BASE}rules:\n  - name: page\n    match: {{ path: \"/catalogue/{{slug}}_{{pk:[0-9]+}}/\" }}\n    key: \"product:{{pk}}\"\n    tags: [\"product:{{pk}}\"]\n    invalidate_on: [\"POST /dashboard/products/{{pk:[0-9]+}}/\"]\n  - name: category\n    match: {{ path: \"/catalogue/category/{{slug}}/\" }}\n"
    );
    let l = load(&yaml).unwrap();
    let rules = &l.config.rules;
    let get = http::Method::GET;
    let m = rules
        .find(&get, "shop", "/catalogue/frob-item-number-10_10/")
        .unwrap();
    assert_eq!(m.rule.name, "page");
    assert_eq!(
        m.params,
        vec![("slug", "frob-item-number-10"), ("pk", "10")]
    );
    assert!(rules.find(&get, "shop", "/catalogue/frob_x/").is_none());
    let t = rules.triggered(&http::Method::POST, "/dashboard/products/10/");
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].params, vec![("pk", "10")]);
    assert!(
        rules
            .triggered(&http::Method::POST, "/dashboard/products/ten/")
            .is_empty()
    );

    let overlap = format!(
        "{BASE}rules:\n  - name: one\n    match: {{ path: \"/c/{{id}}\" }}\n  - name: two\n    match: {{ path: \"/c/{{slug}}_{{pk}}\" }}\n"
    );
    let e = errors(&overlap).join("\n");
    assert!(e.contains("rules[1].match.path"), "{e}");
    assert!(e.contains("overlaps `/c/{id}` of rule `one`"), "{e}");
    let bad = format!("{BASE}rules:\n  - name: one\n    match: {{ path: \"/c/{{pk:[0-9}}\" }}\n");
    let e = errors(&bad).join("\n");
    assert!(
        e.contains("is not a pattern") && !e.contains("rule `"),
        "{e}"
    );
    let trigger = format!(
        "{BASE}rules:\n  - name: one\n    match: {{ path: \"/c/{{id}}\" }}\n    invalidate_on: [\"POST /c/{{id}}_{{id}}\"]\n"
    );
    let e = errors(&trigger).join("\n");
    assert!(e.contains("invalidate_on") && e.contains("twice"), "{e}");
}

/// `log.access` reads all, errors, off or a share; anything else is named.
#[test]
fn access_log_values() {
    let with = |v: &str| format!("{BASE}log: {{ access: \"{v}\" }}\nrules: []\n");
    let access = |v: &str| load(&with(v)).map(|l| l.config.access_log).unwrap();
    assert_eq!(
        load(&format!("{BASE}rules: []\n"))
            .unwrap()
            .config
            .access_log,
        AccessLog::Errors
    );
    assert_eq!(access("all"), AccessLog::All);
    assert_eq!(access("off"), AccessLog::Off);
    assert_eq!(access("1%"), AccessLog::Sample(0.01));
    for bad in ["0%", "150%", "some", "1"] {
        let errs = errors(&with(bad));
        assert!(
            errs.iter().any(|e| e.contains("log.access")),
            "{bad}: {errs:?}"
        );
    }
}
