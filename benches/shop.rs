//! The load of a shop day, compressed into minutes, for `bench/shop.sh`.
//!
//! Virtual shoppers (one per connection) make visits: a random user of
//! `--users` loads 5 to 15 pages, each reading the session and then one of
//! a product (Zipf over the catalog, 50 %), a category listing (Zipf over
//! pages, 20 %), the cart (10 %), a cart write (3 %), a login (1 %),
//! recommendations (8 %) or an inventory count (8 %). A
//! back-office feed updates products (Zipf) at `--feed` per second through
//! the first target. Requests alternate between the targets, as a load
//! balancer would.
//!
//! Prints minute by minute (`--interval`): backend requests (read off the
//! demo backend's `X-Backend-Request` counter), the share of cacheable
//! reads answered without the backend, the product and listing hit ratios
//! and p50/p99 at the client; then, per rule, requests, hit ratio, p50/p99
//! and errors for the whole run and for its last minute (the steady
//! state). Markdown on stdout.
//!
//! Cacheable reads are the GETs of the caching rules (session, product,
//! listing, cart, recommendations). The backend requests they cost are
//! the backend's count less the writes (feed and cart), logins and
//! inventory reads (never cached), each sent once.
//!
//! ```text
//! cargo bench --bench shop -- --target http://127.0.0.1:18080 --target http://127.0.0.1:18081 \
//!     --backend http://127.0.0.1:13000 --seconds 60 --connections 64 --feed 20
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Command-line settings.
struct Args {
    targets: Vec<String>,
    backend: String,
    seconds: u64,
    connections: usize,
    feed: u64,
    products: u64,
    users: u64,
    label: String,
    interval: u64,
}

fn args() -> Args {
    let mut a = Args {
        targets: Vec::new(),
        backend: "http://127.0.0.1:13000".into(),
        seconds: 60,
        connections: 64,
        feed: 0,
        products: 100_000,
        users: 50_000,
        label: "run".into(),
        interval: 60,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_default();
        match flag.as_str() {
            "--target" => a.targets.push(value()),
            "--backend" => a.backend = value(),
            "--seconds" => a.seconds = value().parse().unwrap_or(60),
            "--connections" => a.connections = value().parse().unwrap_or(64),
            "--feed" => a.feed = value().parse().unwrap_or(0),
            "--products" => a.products = value().parse().unwrap_or(100_000),
            "--users" => a.users = value().parse().unwrap_or(50_000),
            "--label" => a.label = value(),
            "--interval" => a.interval = value().parse().unwrap_or(60).max(1),
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    if a.targets.is_empty() {
        a.targets.push(a.backend.clone());
    }
    a
}

/// A small xorshift generator: the load needs speed and repeatability, not
/// cryptographic quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Zipf (s = 1) over 1..=n by its cumulative distribution.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: u64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / k as f64;
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Self(cdf)
    }

    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.0.partition_point(|c| *c < u) as u64 + 1
    }
}

/// What one request was, for the report (named after the rules).
const RULES: [&str; 8] = [
    "session",
    "product",
    "category-products",
    "cart",
    "cart (write)",
    "login",
    "recommendations",
    "inventory",
];

/// Rules whose GETs the cache may answer.
const CACHEABLE: [&str; 5] = [
    "session",
    "product",
    "category-products",
    "cart",
    "recommendations",
];

/// One request: which minute it started in, its latency in µs, whether it
/// was a hit, whether it failed.
#[derive(Clone, Copy)]
struct Sample {
    minute: u32,
    micros: u32,
    hit: bool,
    error: bool,
}

#[derive(Default)]
struct Stats {
    /// Per rule, every request.
    samples: BTreeMap<&'static str, Vec<Sample>>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        for (k, v) in other.samples {
            self.samples.entry(k).or_default().extend(v);
        }
    }

    /// A rule's samples in `minute` (all of them for `None`).
    fn of(&self, rule: &str, minute: Option<u32>) -> Vec<Sample> {
        self.samples
            .get(rule)
            .map(|v| {
                v.iter()
                    .filter(|s| minute.is_none_or(|m| s.minute == m))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Requests, hits, errors, p50 and p99 (ms) of `samples`.
fn summary(samples: &[Sample]) -> (u64, u64, u64, f64, f64) {
    let mut lat: Vec<u32> = samples.iter().map(|s| s.micros).collect();
    lat.sort_unstable();
    let hits = samples.iter().filter(|s| s.hit).count() as u64;
    let errors = samples.iter().filter(|s| s.error).count() as u64;
    (
        samples.len() as u64,
        hits,
        errors,
        quantile(&lat, 0.5),
        quantile(&lat, 0.99),
    )
}

async fn send(
    client: &HttpClient,
    method: Method,
    url: String,
    user: u64,
    body: Option<String>,
) -> Result<(u16, bool), String> {
    let mut req = Request::builder()
        .method(method)
        .uri(url)
        .header("cookie", format!("session_id=u{user}"))
        .header("x-shopper", user.to_string());
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let res = client.request(req).await.map_err(|e| e.to_string())?;
    let hit = res
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("; hit"));
    let status = res.status().as_u16();
    res.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok((status, hit))
}

/// The demo backend's request count so far (this call counts as one).
async fn backend_count(client: &HttpClient, backend: &str) -> u64 {
    let req = Request::get(format!("{backend}/"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    match client.request(req).await {
        Ok(res) => res
            .headers()
            .get("x-backend-request")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

async fn shopper(
    args: Arc<Args>,
    client: HttpClient,
    zipf: Arc<(Zipf, Zipf)>,
    seed: u64,
    (started, until): (Instant, Instant),
) -> Stats {
    let mut rng = Rng(seed | 1);
    let mut stats = Stats::default();
    let mut n = seed as usize;
    // A visit: one user, 5 to 15 pages, each reading the session and then
    // doing one thing.
    let mut user = 0;
    let mut pages_left = 0;
    let mut session_next = true;
    while Instant::now() < until {
        if pages_left == 0 {
            user = rng.below(args.users) + 1;
            pages_left = 5 + rng.below(11);
        }
        let mut pick_target = || {
            n += 1;
            args.targets[n % args.targets.len()].clone()
        };
        let (rule, method, path, body) = if session_next {
            ("session", Method::GET, "/session".to_owned(), None)
        } else {
            pages_left -= 1;
            let r = rng.unit();
            if r < 0.50 {
                let id = zipf.0.sample(&mut rng);
                ("product", Method::GET, format!("/products/{id}"), None)
            } else if r < 0.70 {
                let cat = rng.below(20) + 1;
                let page = zipf.1.sample(&mut rng);
                let path = format!("/categories/{cat}/products?page={page}");
                ("category-products", Method::GET, path, None)
            } else if r < 0.80 {
                ("cart", Method::GET, format!("/cart/{user}"), None)
            } else if r < 0.83 {
                let item = rng.below(args.products) + 1;
                let body = format!("{{\"items\":[{{\"product_id\":{item},\"qty\":1}}]}}");
                (
                    "cart (write)",
                    Method::PUT,
                    format!("/cart/{user}"),
                    Some(body),
                )
            } else if r < 0.84 {
                let body = format!("{{\"user_id\":{user}}}");
                ("login", Method::POST, "/login".to_owned(), Some(body))
            } else if r < 0.92 {
                let path = format!("/recommendations/{user}");
                ("recommendations", Method::GET, path, None)
            } else {
                let id = rng.below(args.products) + 1;
                ("inventory", Method::GET, format!("/inventory/{id}"), None)
            }
        };
        session_next = !session_next;
        let url = format!("{}{path}", pick_target());
        let start = Instant::now();
        let result = send(&client, method, url, user, body).await;
        let micros = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
        let minute = (start.duration_since(started).as_secs() / args.interval) as u32;
        let (hit, error) = match result {
            Ok((status, hit)) if status < 500 && status != 429 => (hit, false),
            _ => (false, true),
        };
        stats.samples.entry(rule).or_default().push(Sample {
            minute,
            micros,
            hit,
            error,
        });
    }
    stats
}

/// Product updates from a back-office tool, `per_sec` a second, through
/// the first target; answers how many were made.
async fn feed(args: Arc<Args>, client: HttpClient, zipf: Arc<(Zipf, Zipf)>, until: Instant) -> u64 {
    if args.feed == 0 {
        return 0;
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / args.feed));
    let made = AtomicU64::new(0);
    while Instant::now() < until {
        tick.tick().await;
        let id = zipf.0.sample(&mut rng);
        let price = 1.0 + rng.below(10_000) as f64 / 100.0;
        let url = format!("{}/products/{id}", args.targets[0]);
        let body = format!("{{\"price\":{price}}}");
        if send(&client, Method::PUT, url, 0, Some(body)).await.is_ok() {
            made.fetch_add(1, Ordering::Relaxed);
        }
    }
    made.load(Ordering::Relaxed)
}

fn quantile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// The backend's count at the end of each interval until `until` (each
/// read counts as one request).
async fn sample_backend(args: Arc<Args>, client: HttpClient, until: Instant) -> Vec<u64> {
    let mut counts = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(args.interval));
    tick.tick().await;
    loop {
        tick.tick().await;
        counts.push(backend_count(&client, &args.backend).await);
        if Instant::now() + Duration::from_millis(500) >= until {
            return counts;
        }
    }
}

#[tokio::main]
async fn main() {
    let args = Arc::new(args());
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.connections * 2)
        .build(connector);
    let zipf = Arc::new((Zipf::new(args.products), Zipf::new(250)));
    let before = backend_count(&client, &args.backend).await;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let feeder = tokio::spawn(feed(args.clone(), client.clone(), zipf.clone(), until));
    let sampler = tokio::spawn(sample_backend(args.clone(), client.clone(), until));
    let shoppers: Vec<_> = (0..args.connections)
        .map(|i| {
            let seed = 0x2545_f491_4f6c_dd1d_u64.wrapping_mul(i as u64 + 1);
            tokio::spawn(shopper(
                args.clone(),
                client.clone(),
                zipf.clone(),
                seed,
                (started, until),
            ))
        })
        .collect();
    let mut stats = Stats::default();
    for s in shoppers {
        if let Ok(s) = s.await {
            stats.merge(s);
        }
    }
    let feeds = feeder.await.unwrap_or(0);
    let counts = sampler.await.unwrap_or_default();
    let elapsed = started.elapsed().as_secs_f64();
    let after = backend_count(&client, &args.backend).await;
    // Less the counter reads and the feed's writes.
    let reads = counts.len() as u64 + 1;
    let backend = after.saturating_sub(before).saturating_sub(reads + feeds);

    println!(
        "#### {} ({:.0} s, {} connections, feed {}/s)\n",
        args.label, elapsed, args.connections, args.feed
    );
    // Minute by minute: the feed's writes are spread evenly.
    let minutes = counts.len() as u32;
    if minutes > 0 {
        let per_minute_feed = feeds / u64::from(minutes.max(1));
        println!(
            "| {}s | backend requests | cacheable reads without the backend | product hits | listing hits | listing p50 / p99 ms | all p50 / p99 ms |",
            args.interval
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        let mut last = before;
        for (m, count) in counts.iter().enumerate() {
            let m = m as u32;
            let seen = count
                .saturating_sub(last)
                .saturating_sub(1 + per_minute_feed);
            last = *count;
            let uncached: u64 = ["cart (write)", "login", "inventory"]
                .iter()
                .map(|r| stats.of(r, Some(m)).len() as u64)
                .sum();
            let cacheable: u64 = CACHEABLE
                .iter()
                .map(|r| stats.of(r, Some(m)).len() as u64)
                .sum();
            let for_reads = seen.saturating_sub(uncached);
            let (_, ph, _, _, _) = summary(&stats.of("product", Some(m)));
            let pn = stats.of("product", Some(m)).len().max(1) as f64;
            let listing = stats.of("category-products", Some(m));
            let (ln, lh, _, l50, l99) = summary(&listing);
            let mut all: Vec<Sample> = Vec::new();
            for r in RULES {
                all.extend(stats.of(r, Some(m)));
            }
            let (_, _, _, a50, a99) = summary(&all);
            println!(
                "| {} | {seen} | {:.1} % | {:.1} % | {:.1} % | {l50:.2} / {l99:.2} | {a50:.2} / {a99:.2} |",
                m + 1,
                100.0 * (1.0 - for_reads as f64 / cacheable.max(1) as f64),
                100.0 * ph as f64 / pn,
                100.0 * lh as f64 / ln.max(1) as f64,
            );
        }
        println!();
    }
    let last_minute = minutes.checked_sub(1);
    println!(
        "| rule | requests | hit ratio | p50 ms | p99 ms | errors | last {}s: hit ratio | p50 ms | p99 ms |",
        args.interval
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut total = 0u64;
    let mut hits_total = 0u64;
    for rule in RULES {
        let all = stats.of(rule, None);
        if all.is_empty() {
            continue;
        }
        let (n, hits, errors, p50, p99) = summary(&all);
        let (ln, lh, _, l50, l99) = summary(
            &last_minute
                .map(|m| stats.of(rule, Some(m)))
                .unwrap_or_default(),
        );
        total += n;
        hits_total += hits;
        println!(
            "| {rule} | {n} | {:.1} % | {p50:.2} | {p99:.2} | {errors} | {:.1} % | {l50:.2} | {l99:.2} |",
            100.0 * hits as f64 / n.max(1) as f64,
            100.0 * lh as f64 / ln.max(1) as f64,
        );
    }
    println!(
        "\n{total} requests ({:.0}/s), {hits_total} answered from cache; the backend saw {backend} \
         of them (plus {feeds} feed writes): backend offload {:.1} %.\n",
        total as f64 / elapsed,
        100.0 * (1.0 - backend as f64 / total.max(1) as f64),
    );
}
