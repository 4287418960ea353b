use super::*;
use crate::rules::request::{canonical_query, is_canonical};

fn view<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> RequestView<'a> {
    RequestView {
        method: &Method::HEAD,
        host: "shop.example",
        path: "/p/a b",
        query,
        headers,
        client_ip: "10.1.2.3".parse().unwrap(),
    }
}

fn key(src: &str, params: &[&str]) -> Template {
    let params: Vec<String> = params.iter().map(|s| (*s).to_owned()).collect();
    Template::parse(src, Use::Key, &params).unwrap()
}

/// Every placeholder renders; HEAD renders as GET; the query is sorted and empties dropped.
#[test]
fn renders_all_placeholders() {
    let mut h = HeaderMap::new();
    h.insert("accept-language", "de-DE".parse().unwrap());
    h.insert("cookie", "a=1; session_id=abc".parse().unwrap());
    let t = key(
        "{method}:{host}{path}?{query}|{query.b}|{header.accept-language}|{cookie.session_id}|{client_ip}|{id}",
        &["id"],
    );
    let out = t
        .render(
            &view(&h, Some("b=2&a=1&c=")),
            &[("id", "7")],
            Bodies::default(),
        )
        .unwrap();
    assert_eq!(
        out,
        // `c=` is kept: `?c=` and no `c` are different requests.
        "GET:shop.example/p/a%20b?a=1&b=2&c=|2|de-DE|abc|10.1.2.3|7"
    );
}

/// Escaping: separators inside values are encoded; a path parameter is
/// keyed raw, as the backend gets it: `%41` and `A` are two values.
#[test]
fn escapes_values() {
    let h = HeaderMap::new();
    let t = key("p:{id}:{query.v}", &["id"]);
    let a = t
        .render(&view(&h, Some("v=x")), &[("id", "1:x")], Bodies::default())
        .unwrap();
    let b = t
        .render(&view(&h, Some("v=1:x")), &[("id", "1")], Bodies::default())
        .unwrap();
    assert_ne!(a, b);
    assert_eq!(a, "p:1%3Ax:x");
    let c = t
        .render(&view(&h, None), &[("id", "%41")], Bodies::default())
        .unwrap();
    assert_eq!(c, "p:%2541:");
}

/// Ambiguous templates, unknown placeholders and body fields in keys are refused.
#[test]
fn refuses_bad_templates() {
    let p = vec!["id".to_owned(), "sku".to_owned()];
    assert!(Template::parse("{id}{sku}", Use::Key, &p).is_err());
    assert!(Template::parse("{id}x{sku}", Use::Key, &p).is_err());
    assert!(Template::parse("{nope}", Use::Key, &p).is_err());
    assert!(Template::parse("{response.id}", Use::Key, &p).is_err());
    assert!(Template::parse("a#b", Use::Key, &p).is_err());
    assert!(Template::parse("{id", Use::Key, &p).is_err());
    assert!(Template::parse("{response.category_id}", Use::Tag, &p).is_ok());
}

/// Overlap detection: same shapes overlap, distinct literals do not.
#[test]
fn overlap() {
    let p = ["id"];
    assert!(key("p:{id}", &p).may_overlap(&key("p:{id}", &p)));
    assert!(key("p{id}", &p).may_overlap(&key("pa{id}", &p)));
    assert!(!key("p:{id}", &p).may_overlap(&key("q:{id}", &p)));
    assert!(!key("p:{id}", &p).may_overlap(&key("p:{id}:r", &p)));
    assert!(!key("{path}", &p).may_overlap(&key("p:{id}", &p)));
}

/// Tags read JSON fields; a missing field gives no tag.
#[test]
fn tags_from_json() {
    let h = HeaderMap::new();
    let t = Template::parse("category:{response.category.id}", Use::Tag, &[]).unwrap();
    let body = serde_json::json!({"category": {"id": 12}});
    let bodies = Bodies {
        response: Some(&body),
        ..Bodies::default()
    };
    assert_eq!(
        t.render(&view(&h, None), &[], bodies).as_deref(),
        Some("category:12")
    );
    let none = serde_json::json!({"other": 1});
    assert_eq!(
        t.render(
            &view(&h, None),
            &[],
            Bodies {
                response: Some(&none),
                ..Bodies::default()
            }
        ),
        None
    );
}

/// `[*]` renders a tag per element (elements without the field skipped,
/// an empty array none), refuses more than the limit, and is written one
/// way; `{previous.x}` is for triggers only.
#[test]
fn fan_out_and_previous() {
    let h = HeaderMap::new();
    let t = Template::parse("shows:{response.products[*].id}", Use::Tag, &[]).unwrap();
    assert!(t.fans_out());
    let body = serde_json::json!({"products": [{"id": 1}, {"id": "a b"}, {"x": 3}, {"id": 4}]});
    let bodies = Bodies {
        response: Some(&body),
        ..Bodies::default()
    };
    let v = view(&h, None);
    assert_eq!(
        t.render_each(&v, &[], bodies, 10).unwrap(),
        vec!["shows:1", "shows:a%20b", "shows:4"]
    );
    assert_eq!(t.render_each(&v, &[], bodies, 3), Err(Unrendered::Over(4)));
    let empty = serde_json::json!({"products": []});
    let empty = Bodies {
        response: Some(&empty),
        ..Bodies::default()
    };
    assert_eq!(
        t.render_each(&v, &[], empty, 10).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        t.render_each(&v, &[], Bodies::default(), 10),
        Err(Unrendered::Missing)
    );
    let scalars = Template::parse("p:{request.ids[*]}", Use::Tag, &[]).unwrap();
    let ids = serde_json::json!({"ids": [7, 8]});
    let ids = Bodies {
        request: Some(&ids),
        ..Bodies::default()
    };
    assert_eq!(
        scalars.render_each(&v, &[], ids, 10).unwrap(),
        vec!["p:7", "p:8"]
    );
    for bad in [
        "{response.[*]}",
        "{response.a[*].b[*]}",
        "{response.a[0]}",
        "{response.a..b}",
    ] {
        assert!(Template::parse(bad, Use::Tag, &[]).is_err(), "{bad}");
    }

    let prev = Template::parse("c:{previous.category_id}", Use::Trigger, &[]).unwrap();
    assert!(prev.reads_previous() && !prev.fans_out());
    let old = serde_json::json!({"category_id": 4});
    let bodies = Bodies {
        previous: Some(&old),
        ..Bodies::default()
    };
    assert_eq!(prev.render(&v, &[], bodies).as_deref(), Some("c:4"));
    let err = Template::parse("c:{previous.category_id}", Use::Tag, &[]).unwrap_err();
    assert!(err.contains("trigger"), "{err}");
    assert!(Template::parse("c:{previous.x}", Use::Key, &[]).is_err());
}

/// Query names compare decoded; a repeated named parameter renders no key;
/// `{query}` keeps the order of repeated names.
#[test]
fn query_ambiguity() {
    let h = HeaderMap::new();
    let t = key("c:{query.page}", &[]);
    assert_eq!(
        t.render(&view(&h, Some("pag%65=5")), &[], Bodies::default())
            .as_deref(),
        Some("c:5")
    );
    assert_eq!(
        t.render(&view(&h, Some("page=1&page=5")), &[], Bodies::default()),
        None
    );
    let all = key("c:{query}", &[]);
    let a = all
        .render(&view(&h, Some("a=2&a=1")), &[], Bodies::default())
        .unwrap();
    let b = all
        .render(&view(&h, Some("a=1&a=2")), &[], Bodies::default())
        .unwrap();
    assert_ne!(a, b);
}

/// A query `is_canonical` calls canonical comes back from
/// `canonical_query` unchanged, and one it does not changes.
#[test]
fn canonical_check_agrees_with_canonical_form() {
    for q in [
        "page=2", "a&b=&c=1", "pag%65=2", "q=a+b", "x=1=2", "a&&b", "s=%7E", "k=a:b", "z=~._-",
    ] {
        assert_eq!(is_canonical(q), canonical_query(q) == q, "{q}");
    }
}
