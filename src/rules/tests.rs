use super::*;
use crate::cache::Tier;

fn rule(name: &str, path: &str, methods: &[Method], host: Option<&str>) -> Rule {
    Rule {
        name: name.into(),
        index: 0,
        methods: methods.to_vec(),
        path: path.into(),
        host: host.map(str::to_owned),
        cache: true,
        key: Template::parse(&format!("{name}:{{path}}"), Use::Key, &route_params(path)).unwrap(),
        ttl: Ttl::Fixed(Duration::from_secs(1)),
        tier: Tier::Memory,
        tags: vec![],
        statuses: vec![200],
        max_object_size: 1024,
        set_cookie: Default::default(),
        pass_if: Default::default(),
        allow_authorized: false,
        allow_private: false,
        esi: false,
        compress: Vec::new(),
        sliding: false,
        refresh_ahead: None,
        warm_on: Vec::new(),
        collapse_global: false,
        stale_while_revalidate: None,
        stale_if_error: None,
        keep_for_revalidation: None,
        allow_empty: Vec::new(),
        ignore_query: Vec::new(),
        inputs: Default::default(),
        origin_tags: false,
        write_through: None,
        triggers: vec![],
        rate_limit: None,
        downstream: None,
        rollout: None,
        verify: None,
    }
}

/// A literal segment beats a parameter; HEAD matches GET rules; methods and host filter.
#[test]
fn lookup_order() {
    let set = RuleSet::new(vec![
        rule("any", "/p/{id}", &[Method::GET], None),
        rule("featured", "/p/featured", &[Method::GET], None),
        rule("shop", "/s/{*rest}", &[Method::GET], Some("*.example.com")),
        rule("write", "/s/{*rest}", &[Method::POST], None),
    ])
    .unwrap();
    let name = |m: Method, h: &str, p: &str| set.find(&m, h, p).map(|x| x.rule.name.clone());
    assert_eq!(name(Method::GET, "", "/p/1").as_deref(), Some("any"));
    assert_eq!(name(Method::HEAD, "", "/p/1").as_deref(), Some("any"));
    assert_eq!(
        name(Method::GET, "", "/p/featured").as_deref(),
        Some("featured")
    );
    assert_eq!(
        name(Method::GET, "a.example.com", "/s/x/y").as_deref(),
        Some("shop")
    );
    assert_eq!(name(Method::GET, "example.com", "/s/x"), None);
    assert_eq!(name(Method::POST, "", "/s/x").as_deref(), Some("write"));
    assert_eq!(name(Method::PUT, "", "/p/1"), None);
    let m = set.find(&Method::GET, "", "/p/42").unwrap();
    assert_eq!(m.params, vec![("id", "42")]);
}

/// Parameter names come out of patterns, catch-alls without their star.
#[test]
fn params_of_pattern() {
    assert_eq!(route_params("/c/{id}/p/{*rest}"), vec!["id", "rest"]);
    assert!(route_params("/static").is_empty());
}
