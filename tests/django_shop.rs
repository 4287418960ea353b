//! In front of a real Django shop (`tests/django_shop`: sessions, CSRF
//! forms, `Vary: Cookie`, a recently-viewed cookie on every product view,
//! login, a dashboard edit answered 302), with two replicas and one Redis,
//! driven by many browsers at once, each with its own cookie jar. The shop
//! is changed only by ESI includes for its personal fragments (the CSRF
//! token of the add-to-basket form, the mini basket), and the config is
//! the one `docs/legacy-shop.md` gives.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use support::*;

/// The config of the guide (`docs/legacy-shop.md`), as a reader copies it.
fn rules() -> String {
    let guide = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/legacy-shop.md");
    let guide = std::fs::read_to_string(guide).unwrap();
    let block = guide
        .split("<!-- shop.yaml -->")
        .nth(1)
        .and_then(|r| r.split("<!-- /shop.yaml -->").next())
        .expect("the guide's config block");
    block
        .trim()
        .trim_start_matches("```yaml")
        .trim_end_matches("```")
        .replace("http://127.0.0.1:8000", "UPSTREAM")
        .replace("redis://127.0.0.1:6379", "REDIS")
}

/// The venv with Django (`target/tmp/django-venv`), made when missing
/// (`scripts/test.sh` makes it before the tests run).
fn django_python() -> PathBuf {
    let shop = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/django_shop");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("django-venv");
    let python = venv.join("bin/python");
    let has_django = || {
        Command::new(&python)
            .args(["-c", "import django"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_django() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 runs (scripts/test.sh installs it)");
        assert!(
            made.success(),
            "python3 -m venv failed: install python3-venv"
        );
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "-r"])
            .arg(shop.join("requirements.txt"))
            .status()
            .expect("pip runs");
        assert!(pip.success(), "pip could not install Django");
    }
    python
}

/// The shop on a port of its own, with its database in a temp dir.
struct Shop {
    _process: Spawned,
    _data: tempfile::TempDir,
    url: String,
}

impl Shop {
    async fn start() -> Self {
        let python = django_python();
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let serve = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/django_shop/serve.py");
        let child = Command::new(python)
            .arg(serve)
            .arg(port.to_string())
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the shop starts");
        let process = Spawned::from(child);
        let url = format!("http://127.0.0.1:{port}");
        let list = format!("{url}/catalogue/");
        eventually_within(Duration::from_secs(60), "the shop answers", || {
            let list = list.clone();
            async move {
                let client = client();
                try_get(&client, &list)
                    .await
                    .is_ok_and(|g| g.status == StatusCode::OK)
            }
        })
        .await;
        Self {
            _process: process,
            _data: data,
            url,
        }
    }
}

/// One browser: its cookies, kept from every `Set-Cookie` it gets.
#[derive(Debug, Default, Clone)]
struct Browser {
    cookies: BTreeMap<String, String>,
    /// Every `csrftoken` it was ever given.
    given_tokens: HashSet<String>,
}

impl Browser {
    fn with(cookies: &[(&str, &str)]) -> Self {
        Self {
            cookies: cookies
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Self::default()
        }
    }

    fn cookie_header(&self) -> String {
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join("; ")
    }

    fn keep(&mut self, got: &Got) {
        for v in got.headers.get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if name == "csrftoken" {
                self.given_tokens.insert(value.to_owned());
            }
            self.cookies.insert(name.to_owned(), value.to_owned());
        }
    }

    async fn get(&mut self, url: &str) -> Got {
        let cookie = self.cookie_header();
        let headers: Vec<(&str, &str)> = if cookie.is_empty() {
            vec![]
        } else {
            vec![("cookie", cookie.as_str())]
        };
        let got = get(url, &headers).await;
        self.keep(&got);
        got
    }

    async fn post(&mut self, url: &str, form: &str) -> Got {
        let cookie = self.cookie_header();
        let headers = [
            ("cookie", cookie.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        let got = send("POST", url, &headers, form).await;
        self.keep(&got);
        got
    }
}

/// The CSRF token a page's form holds.
fn form_token(body: &[u8]) -> String {
    let body = std::str::from_utf8(body).unwrap();
    let at = body
        .find("name=\"csrfmiddlewaretoken\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF token in {body}"));
    let rest = &body[at + "name=\"csrfmiddlewaretoken\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// The price a page shows for product `pk` (the product page's, or the
/// listing's entry for it).
fn price(body: &[u8], pk: u32) -> String {
    let body = std::str::from_utf8(body).unwrap();
    let marker = format!("data-pk=\"{pk}\">");
    let at = body
        .find(&marker)
        .map(|i| i + marker.len())
        .or_else(|| body.find("<span class=\"price\">").map(|i| i + 20))
        .unwrap_or_else(|| panic!("no price in {body}"));
    body[at..at + body[at..].find('<').unwrap()].to_owned()
}

async fn log_in(proxy: &Proxy, user: &str, password: &str) -> Browser {
    let mut browser = Browser::default();
    let login = browser.get(&proxy.url("/accounts/login/")).await;
    let token = form_token(&login.body);
    let form = format!("csrfmiddlewaretoken={token}&username={user}&password={password}");
    let done = browser.post(&proxy.url("/accounts/login/"), &form).await;
    assert_eq!(done.status, StatusCode::FOUND, "{user} logs in");
    assert!(browser.cookies.contains_key("sessionid"));
    browser
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_django_shop_is_cached_safely_and_its_forms_work() {
    let redis = Redis::start();
    let shop = Shop::start().await;
    let rules = rules();
    let a = Proxy::start(&rules, &shop.url, Some(&redis.url())).await;
    let b = Proxy::start(&rules, &shop.url, Some(&redis.url())).await;
    let pages: Vec<String> = std::iter::once("/catalogue/".to_owned())
        .chain((1..=10).map(|pk| format!("/catalogue/frob-item-number-{pk}_{pk}/")))
        .collect();

    // Anonymous browsers, each with its own analytics and history cookies,
    // browse on both replicas at once.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (pages, a_url, b_url) = (pages.clone(), a.url(""), b.url(""));
        tasks.push(tokio::spawn(async move {
            let ga = format!("GA1.2.{i}");
            let history = format!("{}", i + 1);
            let mut browser = Browser::with(&[("_ga", &ga), ("history", &history)]);
            let (mut hits, mut total) = (0, 0);
            for round in 0..10 {
                for page in &pages {
                    let base = if (i + round) % 2 == 0 { &a_url } else { &b_url };
                    let got = browser.get(&format!("{base}{page}")).await;
                    assert_eq!(got.status, StatusCode::OK, "{page}");
                    let body = String::from_utf8_lossy(&got.body).into_owned();
                    assert!(body.contains("Basket: 0 items (anonymous)"), "{body}");
                    assert!(!body.contains("esi:"), "{body}");
                    total += 1;
                    hits += usize::from(got.is_hit());
                }
            }
            (browser, hits, total)
        }));
    }
    let mut browsers = Vec::new();
    let (mut hits, mut total) = (0, 0);
    for t in tasks {
        let (browser, h, n) = t.await.unwrap();
        browsers.push(browser);
        hits += h;
        total += n;
    }
    eprintln!("anonymous browsers, own cookies each: {hits} hits of {total}");
    assert!(
        hits * 100 >= total * 80,
        "anonymous browsers with their own cookies: {hits} hits of {total}"
    );

    // Each browser was given one CSRF secret, its own, and kept its own
    // history cookie (a cached page never replaced it).
    let mut secrets = HashSet::new();
    for (i, browser) in browsers.iter().enumerate() {
        assert_eq!(browser.given_tokens.len(), 1, "{browser:?}");
        assert!(secrets.insert(browser.given_tokens.iter().next().unwrap().clone()));
        assert_eq!(browser.cookies["history"], format!("{}", i + 1));
    }

    // A form on a cached page posts: its token is the browser's own.
    let browser = &mut browsers[0];
    let page = browser
        .get(&b.url("/catalogue/frob-item-number-3_3/"))
        .await;
    assert!(page.is_hit(), "{}", page.cache_status());
    let token = form_token(&page.body);
    let added = browser
        .post(
            &b.url("/basket/add/3/"),
            &format!("csrfmiddlewaretoken={token}"),
        )
        .await;
    assert_eq!(added.status, StatusCode::FOUND, "the CSRF check passes");
    assert!(browser.cookies.contains_key("sessionid"));
    // With a session, the browser passes, and sees its basket.
    let mine = browser
        .get(&a.url("/catalogue/frob-item-number-3_3/"))
        .await;
    assert!(
        mine.cache_status().contains("detail=pass-if"),
        "{}",
        mine.cache_status()
    );
    assert!(String::from_utf8_lossy(&mine.body).contains("Basket: 1 items (anonymous)"));
    // Another browser's token does not pass the check.
    let other = form_token(
        &browsers[1]
            .get(&a.url("/catalogue/frob-item-number-3_3/"))
            .await
            .body,
    );
    let mut stranger = Browser::with(&[("csrftoken", "x".repeat(32).as_str())]);
    let refused = stranger
        .post(
            &a.url("/basket/add/3/"),
            &format!("csrfmiddlewaretoken={other}"),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    // A logged-in browser passes; its page reaches no one else.
    let mut alice = log_in(&a, "alice", "alice-pass").await;
    let hers = alice.get(&b.url("/catalogue/frob-item-number-4_4/")).await;
    assert!(hers.cache_status().contains("detail=pass-if"));
    assert!(String::from_utf8_lossy(&hers.body).contains("(alice)"));
    for url in [
        a.url("/catalogue/frob-item-number-4_4/"),
        b.url("/catalogue/"),
    ] {
        let mut fresh = Browser::default();
        let got = fresh.get(&url).await;
        assert!(got.is_hit(), "{}", got.cache_status());
        let body = String::from_utf8_lossy(&got.body);
        assert!(
            !body.contains("alice") && body.contains("(anonymous)"),
            "{body}"
        );
        assert!(!fresh.cookies.contains_key("sessionid"));
        if let Some(token) = fresh.cookies.get("csrftoken") {
            assert!(!alice.given_tokens.contains(token));
        }
    }

    // The shop's dashboard changes a price; the edit answers 302 and
    // purges the product page and the listing on both replicas.
    assert_eq!(
        price(
            &get(&a.url("/catalogue/frob-item-number-7_7/"), &[])
                .await
                .body,
            7
        ),
        "17.00"
    );
    let mut staff = log_in(&b, "staff", "staff-pass").await;
    let edit = staff.get(&b.url("/dashboard/catalogue/products/7/")).await;
    let token = form_token(&edit.body);
    let saved = staff
        .post(
            &b.url("/dashboard/catalogue/products/7/"),
            &format!("csrfmiddlewaretoken={token}&price=99.50"),
        )
        .await;
    assert_eq!(saved.status, StatusCode::FOUND);
    for proxy in [&a, &b] {
        for page in ["/catalogue/frob-item-number-7_7/", "/catalogue/"] {
            let url = proxy.url(page);
            eventually("the new price on every replica", || {
                let url = url.clone();
                async move { price(&get(&url, &[]).await.body, 7) == "99.50" }
            })
            .await;
        }
    }
    // Another product's page was not purged.
    assert!(
        get(&a.url("/catalogue/frob-item-number-8_8/"), &[])
            .await
            .is_hit()
    );

    // No cookie value is in any Redis key.
    let mut conn = redis.conn().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.iter().any(|k| k.contains("product:3")), "{keys:?}");
    let mut values: Vec<String> = secrets.into_iter().collect();
    values.push("GA1.2".to_owned());
    values.extend(alice.cookies.values().cloned());
    values.extend(staff.cookies.values().cloned());
    // (Secrets and ids: a history cookie's `4` is in `product:4`.)
    values.retain(|v| v.len() >= 8);
    assert!(values.len() >= 12, "{values:?}");
    for key in &keys {
        for v in &values {
            assert!(!key.contains(v.as_str()), "{key} holds {v}");
        }
    }
}
