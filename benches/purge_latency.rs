//! Purge-by-tag latency across three replicas.
//!
//! Starts a real `redis-server` (unix socket, temp dir), or with `cluster`
//! a six-node Redis Cluster (three masters, three replicas, over TCP), and
//! three sidecache replicas in this process. For N tagged entries (1,
//! 1,000, 100,000; each in every replica's L1 and in Redis), it sends
//! `POST /purge {"tags": [...]}` to one replica and measures the purge's
//! answer, and from the answer to the moment the last of the three refuses
//! a tagged entry (polled over HTTP). Prints the medians and the maximum
//! over the rounds.
//!
//!     cargo bench --bench purge_latency
//!     cargo bench --bench purge_latency -- cluster

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sidecache::cache::Tier;
use sidecache::cache::{CachedResponse, Entry, Payload, StoredHeaders};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[allow(dead_code)]
#[path = "../tests/support/cluster.rs"]
mod cluster;

/// The server and its directory; both go when dropped.
struct RedisGuard(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for RedisGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> (RedisGuard, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("redis.sock");
    let child = Command::new("redis-server")
        .args(["--port", "0", "--unixsocket"])
        .arg(&sock)
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let url = format!("redis+unix://{}", sock.display());
    (RedisGuard(child, dir), url)
}

const CONFIG: &str = r#"
upstream: { url: "http://127.0.0.1:1" }
admin: { token: "bench" }
redis: REDIS
rules:
  - name: bulk
    match: { path: "/bulk/{id}" }
    key: "bulk:{id}"
    ttl: 1h
"#;

struct Replica {
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    proxy: Arc<sidecache::proxy::Proxy>,
}

async fn replica(redis_url: &str, stop: &CancellationToken) -> Replica {
    let text = CONFIG.replace("REDIS", redis_url);
    let cfg = sidecache::Config::from_yaml(&text, Path::new("bench.yaml"), &|_| None)
        .expect("config")
        .config;
    let (l, a) = (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let (addr, admin) = (l.local_addr().unwrap(), a.local_addr().unwrap());
    let app = sidecache::App::build(cfg).expect("app");
    let proxy = app.proxy.clone();
    tokio::spawn(app.run(l, a, stop.clone()));
    Replica { addr, admin, proxy }
}

/// Puts `n` entries tagged `tag` into every replica's L1 and once into Redis.
async fn fill(replicas: &[Replica], n: usize, tag: &str) {
    for (i, r) in replicas.iter().enumerate() {
        let tags = vec![tag.to_owned()];
        let fetched = r.proxy.invalidator().fetch_started();
        for k in 0..n {
            let entry = Arc::new(Entry {
                stored_at: SystemTime::now(),
                ttl: Duration::from_secs(3600),
                grace: Duration::ZERO,
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                fetched_ms: fetched,
                payload: Payload::Response(CachedResponse {
                    status: StatusCode::OK,
                    headers: StoredHeaders::default(),
                    body: Bytes::from(format!("entry {k}")),
                    tags: tags.clone(),
                }),
            });
            let tier = if i == 0 { Tier::Both } else { Tier::Memory };
            r.proxy
                .cache()
                .put_now(&format!("bulk:{k}"), entry, tier)
                .await;
        }
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn is_hit(client: &HttpClient, r: &Replica, k: usize) -> bool {
    let res = client
        .get(format!("http://{}/bulk/{k}", r.addr).parse().unwrap())
        .await
        .unwrap();
    let hit = res
        .headers()
        .get("cache-status")
        .is_some_and(|v| v.to_str().unwrap_or("").contains("; hit"));
    let _ = res.into_body().collect().await;
    hit
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let on_cluster = std::env::args().any(|a| a == "cluster");
    let (_guard, _cluster, redis_yaml) = if on_cluster {
        let c = cluster::Cluster::start();
        let yaml = format!("{{ cluster: {}, key_prefix: \"bench:\" }}", c.seeds_yaml());
        (None, Some(c), yaml)
    } else {
        let (guard, url) = redis();
        let yaml = format!("{{ url: \"{url}\", key_prefix: \"bench:\" }}");
        (Some(guard), None, yaml)
    };
    println!(
        "Redis: {}",
        if on_cluster {
            "a six-node cluster (3 masters, 3 replicas), TCP"
        } else {
            "one server, unix socket"
        }
    );
    let stop = CancellationToken::new();
    let replicas = vec![
        replica(&redis_yaml, &stop).await,
        replica(&redis_yaml, &stop).await,
        replica(&redis_yaml, &stop).await,
    ];
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    // Let the buses subscribe and the clocks sync.
    for r in &replicas {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !r.proxy.invalidator().clock_synced() {
            assert!(Instant::now() < deadline, "a replica never reached Redis");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!(
        "{:>8} {:>6} {:>14} {:>14} {:>12}",
        "entries", "rounds", "answer med ms", "refused med ms", "refused max"
    );
    for (n, rounds) in [(1usize, 20usize), (1_000, 10), (100_000, 3)] {
        let mut lat = Vec::new();
        let mut answered = Vec::new();
        for round in 0..rounds {
            let tag = format!("t{n}-{round}");
            fill(&replicas, n, &tag).await;
            let probe = n - 1;
            for r in &replicas {
                assert!(
                    is_hit(&client, r, probe).await,
                    "entry not served before the purge"
                );
            }
            let body = format!("{{\"tags\": [\"{tag}\"]}}");
            let req = Request::post(format!("http://{}/purge", replicas[0].admin))
                .header("authorization", "Bearer bench")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let sent = Instant::now();
            let res = client.request(req).await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let _ = res.into_body().collect().await;
            answered.push(sent.elapsed().as_secs_f64() * 1000.0);
            let t0 = Instant::now();
            for r in &replicas {
                while is_hit(&client, r, probe).await {
                    assert!(
                        t0.elapsed() < Duration::from_secs(10),
                        "purge never arrived"
                    );
                }
            }
            lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        let max = lat.iter().copied().fold(0.0, f64::max);
        println!(
            "{n:>8} {rounds:>6} {:>14.3} {:>14.3} {max:>12.3}",
            median(&mut answered),
            median(&mut lat)
        );
    }
    stop.cancel();
}
