//! Test support: a real `redis-server` per test, an in-process backend that
//! counts what it gets, and the proxy itself on port 0.
#![allow(dead_code)]

pub mod cluster;
pub mod regions;
pub mod relay;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A `redis-server` on a unix socket in its own temp dir, killed on drop.
pub struct Redis {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: Option<u16>,
    /// Serves TLS on `port` (with a CA made for it), plain on the socket.
    tls: bool,
}

impl Redis {
    /// Starts a server listening on a unix socket only.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut r = Self {
            child: None,
            dir,
            port: None,
            tls: false,
        };
        r.spawn();
        r
    }

    /// Starts a server speaking TLS on a free TCP port, with a certificate
    /// for `127.0.0.1` and `localhost` signed by a CA made for it
    /// ([`Redis::ca`]); the unix socket stays plain, for looking inside.
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        make_certificates(dir.path());
        let mut r = Self {
            child: None,
            dir,
            port: Some(free_port()),
            tls: true,
        };
        r.spawn();
        r
    }

    /// The PEM file of the CA that signed a TLS server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Starts a server on a free TCP port (for tests that restart it).
    pub fn start_tcp() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut r = Self {
            child: None,
            dir,
            port: Some(port),
            tls: false,
        };
        r.spawn();
        r
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let port = self.port.map_or("0".to_owned(), |p| p.to_string());
        let mut cmd = Command::new("redis-server");
        if self.tls {
            let file = |name: &str| self.dir.path().join(name);
            cmd.args([
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(file("server.pem"))
            .arg("--tls-key-file")
            .arg(file("server.key"))
            .arg("--tls-ca-cert-file")
            .arg(file("ca.pem"));
        } else {
            cmd.args(["--port", &port]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--unixsocket"])
            .arg(self.socket())
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .stdout(log_to(&self.log()))
            .stderr(log_to(&self.log()))
            .spawn()
            .expect("redis-server must be installed (the README's test command installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.socket().exists() {
            // A server that cannot listen (a port taken meanwhile) exits at
            // once and says why in its log; the guard kills one that hangs.
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                let how = exited.map_or("no socket within 10 s".to_owned(), |s| s.to_string());
                panic!(
                    "redis-server did not start ({how}); the end of {}:\n{}",
                    self.log().display(),
                    log_tail(&self.log(), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Where the server's output goes (a restart appends to it).
    fn log(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The TCP address, for a server started with [`Redis::start_tcp`].
    pub fn addr(&self) -> Option<SocketAddr> {
        self.port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
    }

    /// The URL the proxy connects with.
    pub fn url(&self) -> String {
        match self.port {
            Some(p) if self.tls => format!("rediss://127.0.0.1:{p}/0"),
            Some(p) => format!("redis://127.0.0.1:{p}/0"),
            None => format!("redis+unix://{}", self.socket().display()),
        }
    }

    /// A direct connection, for looking at or tampering with what is stored.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let url = match self.tls {
            true => format!("redis+unix://{}", self.socket().display()),
            false => self.url(),
        };
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Kills the server (the data goes with it).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again at the same address.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

pub use cluster::{log_tail, log_to};

/// A CA (`ca.pem`), a server certificate it signed for `127.0.0.1` and
/// `localhost` (`server.pem`, `server.key`) and a client certificate
/// (`client.pem`, `client.key`) in `dir`, made with openssl.
pub fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl must be installed (the README's test command installs it)");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "openssl {args:?}: {err}");
    };
    // An EC key and a request (or, for the CA, a self-signed certificate).
    let new_key = |first: &[&str], name: &str, subject: &str| {
        let (key, out) = (
            format!("{name}.key"),
            format!("{name}.{}", if first.len() > 1 { "pem" } else { "csr" }),
        );
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let rest = [
            "-keyout", &key, "-out", &out, "-days", "2", "-subj", subject,
        ];
        run(&[first, &ec[..], &rest[..]].concat());
    };
    // A certificate for `name`'s request, signed by the CA, with `ext`.
    let sign = |name: &str, ext: &str| {
        let (csr, pem, cnf) = (
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.cnf"),
        );
        std::fs::write(dir.join(&cnf), ext).unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &cnf,
        ]);
    };
    new_key(&["req", "-x509"], "ca", "/CN=sidecache test CA");
    new_key(&["req"], "server", "/CN=localhost");
    sign(
        "server",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    new_key(&["req"], "client", "/CN=sidecache");
    sign(
        "client",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
}

/// What the backend answers: status, headers, body.
pub type Reply = (StatusCode, Vec<(&'static str, String)>, Bytes);
/// A request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}
type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// An in-process HTTP backend that records every request.
pub struct Backend {
    pub addr: SocketAddr,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    seen: Arc<Mutex<Vec<Seen>>>,
    count: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Backend {
    /// Starts a backend answering with `handler`, after `delay`.
    pub async fn start(
        delay: Duration,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let handler: Arc<Handler> = Arc::new(handler);
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(delay.as_millis() as u64));
        let (s, c, st, dm) = (seen.clone(), count.clone(), stop.clone(), delay_ms.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    () = st.cancelled() => break,
                };
                let (s, c, h, dm, stop) = (
                    s.clone(),
                    c.clone(),
                    handler.clone(),
                    dm.clone(),
                    st.clone(),
                );
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (s, c, h) = (s.clone(), c.clone(), h.clone());
                        let delay = Duration::from_millis(dm.load(Ordering::SeqCst));
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method,
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            };
                            c.fetch_add(1, Ordering::SeqCst);
                            s.lock().unwrap().push(seen.clone());
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let (status, headers, body) = h(&seen);
                            let mut res = Response::new(Full::new(body));
                            *res.status_mut() = status;
                            for (k, v) in headers {
                                res.headers_mut().append(k, v.parse().unwrap());
                            }
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    // A stopped backend also drops its open connections.
                    tokio::select! {
                        _ = conn => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
        Self {
            addr,
            delay_ms,
            seen,
            count,
            stop,
        }
    }

    /// Stops accepting and closes every open connection.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Changes the delay before every answer.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// A backend whose every answer names its path and how many reads it
    /// has served before (`/products/1 read 7`), so a refetch shows.
    pub async fn counting() -> Self {
        let reads = Arc::new(AtomicUsize::new(0));
        Backend::start(Duration::ZERO, move |s| {
            let n = reads.fetch_add(1, Ordering::SeqCst);
            let body = format!("{} read {n}", s.uri);
            (StatusCode::OK, vec![], Bytes::from(body))
        })
        .await
    }

    /// A backend answering `200 {"uri": ...}` JSON, with the given extra headers.
    pub async fn json(headers: Vec<(&'static str, String)>) -> Self {
        Self::start(Duration::ZERO, move |s| {
            let mut h = headers.clone();
            h.push(("content-type", "application/json".into()));
            (
                StatusCode::OK,
                h,
                Bytes::from(format!("{{\"uri\":\"{}\",\"n\":{}}}", s.uri, rand_n())),
            )
        })
        .await
    }

    /// A backend answering `lang=<Accept-Language>` with
    /// `Vary: Accept-Language`, after `delay`.
    pub async fn vary_language(delay: Duration) -> Self {
        Self::start(delay, |s| {
            let lang = s
                .headers
                .get("accept-language")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (
                StatusCode::OK,
                vec![("vary", "Accept-Language".into())],
                Bytes::from(format!("lang={lang}")),
            )
        })
        .await
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Requests received for a path (with query).
    pub fn hits_for(&self, uri: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.uri == uri)
            .count()
    }

    /// Everything received.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn rand_n() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst) as u64
}

/// A running proxy on port 0; stopped on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: CancellationToken,
    pub app: Arc<sidecache::proxy::Proxy>,
}

impl Proxy {
    /// Starts a proxy for `yaml`, in which `UPSTREAM` and `REDIS` are replaced.
    pub async fn start(yaml: &str, backend: &str, redis: Option<&str>) -> Self {
        let text = yaml
            .replace("UPSTREAM", backend)
            .replace("REDIS", redis.unwrap_or(""));
        let loaded = sidecache::Config::from_yaml(&text, Path::new("test.yaml"), &|_| None)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        Self::launch(loaded.config).await
    }

    /// Starts a proxy from a config file (so reloads read it again), with
    /// the file watch off: a test that writes the file reloads when it says.
    pub async fn start_file(path: &Path) -> Self {
        let loaded =
            sidecache::Config::load(path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        Self::launch_with(loaded.config, false).await
    }

    /// Like [`start_file`](Self::start_file), with the file watch on.
    pub async fn start_file_watched(path: &Path) -> Self {
        let loaded =
            sidecache::Config::load(path).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        Self::launch_with(loaded.config, true).await
    }

    async fn launch(config: sidecache::Config) -> Self {
        Self::launch_with(config, false).await
    }

    async fn launch_with(config: sidecache::Config, watch_config: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin) = (
            listener.local_addr().unwrap(),
            admin_listener.local_addr().unwrap(),
        );
        let mut app = sidecache::App::build(config).unwrap();
        app.watch_config = watch_config;
        let proxy = app.proxy.clone();
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move { app.run(listener, admin_listener, token).await });
        // As a deployment does, traffic once ready: with Redis, once the
        // heartbeat has read the floor below which L2 entries are not
        // served (a Redis that does not answer: on its own time).
        if proxy.redis().is_some() {
            let start = std::time::Instant::now();
            while !proxy.invalidator().knows_mark() && start.elapsed() < Duration::from_secs(3) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Self {
            addr,
            admin,
            stop,
            app: proxy,
        }
    }

    /// `http://addr` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    /// The Cache-Status header, or "".
    pub fn cache_status(&self) -> String {
        self.header("cache-status")
    }

    /// A header as a string, or "".
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    /// Whether Cache-Status says it was a hit.
    pub fn is_hit(&self) -> bool {
        self.cache_status().contains("; hit")
    }
}

/// Sends a request through a fresh client.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Got {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let res = client.request(req).await.expect("request failed");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body failed").to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// GET through `client`, within 5 s; an error instead of a panic, for load
/// that counts failures.
pub async fn try_get(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
) -> Result<Got, String> {
    let req = Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        let res = client.request(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Got {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    })
    .await;
    answer.unwrap_or_else(|_| Err("no answer within 5 s".to_owned()))
}

/// A client for [`try_get`].
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET with headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Got {
    send("GET", url, headers, "").await
}

/// `POST /purge` on a proxy's admin listener, with `token` as bearer token.
pub async fn admin_purge(proxy: &Proxy, body: &str, token: Option<&str>) -> Got {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    send(
        "POST",
        &format!("http://{}/purge", proxy.admin),
        &headers,
        body,
    )
    .await
}

/// Waits until GET `url` with `headers` is answered from cache (the fill
/// job stores just after the answer), and answers that hit; fails after 5 s.
pub async fn await_hit(url: &str, headers: &[(&str, &str)]) -> Got {
    let give_up = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = get(url, headers).await;
        if got.is_hit() {
            return got;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "{url} never answered from cache: {}",
            got.cache_status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `check` every 10 ms until it holds, failing after 5 s.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_within(Duration::from_secs(5), what, check).await;
}

/// Polls `check` every 10 ms until it holds, failing after `limit`.
pub async fn eventually_within<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The sum of the samples of `metric` whose labels start with `labels`
/// (`""` for all) on `proxy`'s `/metrics`; fails when there is none (a
/// metric never recorded is not a zero: see [`metric_sum_or_none`]).
pub async fn metric_sum(proxy: &Proxy, metric: &str, labels: &str) -> u64 {
    metric_sum_or_none(proxy, metric, labels)
        .await
        .unwrap_or_else(|| panic!("no sample of {metric}{{{labels}...}} on /metrics"))
}

/// Like [`metric_sum`], `None` when `proxy` has no such sample.
pub async fn metric_sum_or_none(proxy: &Proxy, metric: &str, labels: &str) -> Option<u64> {
    let text = get(&format!("http://{}/metrics", proxy.admin), &[]).await;
    let prefix = format!("{metric}{{{labels}");
    let samples: Vec<f64> = String::from_utf8_lossy(&text.body)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("unreadable sample: {l}"))
        })
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum::<f64>() as u64)
}

/// Redis round trips `proxy` made for entry reads (`GET` or a gathered
/// `MGET`), from its duration histogram's count.
/// None yet is 0 (the histogram is registered on the first).
pub async fn entry_read_round_trips(proxy: &Proxy) -> u64 {
    metric_sum_or_none(
        proxy,
        "sidecache_redis_duration_seconds_count",
        r#"command="GET"}"#,
    )
    .await
    .unwrap_or(0)
}

/// The next message on `sub`, as JSON (within 5 s): a write-through event.
pub async fn next_event(sub: &mut redis::aio::PubSub) -> serde_json::Value {
    let msg = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut sub.on_message()),
    )
    .await
    .expect("no event within 5 s")
    .expect("the subscription ended");
    serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap()
}

/// Counts of requests by path, for assertions on many paths at once.
pub fn by_uri(seen: &[Seen]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for s in seen {
        *m.entry(s.uri.clone()).or_default() += 1;
    }
    m
}

/// Whether the Redis key exists (an error of Redis fails the test: it is
/// not an answer).
pub async fn redis_has(redis: &Redis, key: &str) -> bool {
    let mut c = redis.conn().await;
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<u64>(&mut c)
        .await
        .unwrap_or_else(|e| panic!("EXISTS {key}: {e}"))
        > 0
}

/// Writes `sidecache.yaml` into `dir` for the real binary: listening on
/// `port`, admin on `admin` (with `admin_extra` inside its braces, e.g.
/// `, token: "t"`), then `rest` (upstream, rules...).
pub fn binary_config(
    dir: &tempfile::TempDir,
    port: u16,
    admin: u16,
    admin_extra: &str,
    rest: &str,
) -> PathBuf {
    let path = dir.path().join("sidecache.yaml");
    let text = format!(
        "listen: 127.0.0.1:{port}\nadmin: {{ listen: \"127.0.0.1:{admin}\"{admin_extra} }}\n{rest}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A loopback port free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A spawned process, killed and reaped when dropped: a test that fails
/// or panics leaves none running.
pub struct Spawned(Option<Child>);

impl Spawned {
    /// Takes the process out of the guard (it is then the caller's to end).
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("the process is held until taken")
    }
}

impl From<Child> for Spawned {
    fn from(child: Child) -> Self {
        Self(Some(child))
    }
}

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("the process is held until taken")
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("the process is held until taken")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The real `sidecache run --config <config>` with `args` and `env`,
/// returned once its admin port (`admin`) accepts connections, killed
/// when the guard drops.
pub async fn start_binary(
    config: &Path,
    admin: u16,
    args: &[&str],
    env: &[(&str, &str)],
    stderr: Stdio,
) -> Spawned {
    let child = Command::new(env!("CARGO_BIN_EXE_sidecache"))
        .args(["run", "--config"])
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let child = Spawned(Some(child));
    eventually("sidecache ready", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", admin))
            .await
            .is_ok()
    })
    .await;
    child
}

/// Waits for `child` to exit and answers its output; kills it and fails
/// the test if it is still running after `limit`.
pub async fn exit_output(child: Spawned, limit: Duration) -> std::process::Output {
    let child = child.into_inner();
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(limit, waiting).await {
        Ok(out) => out.unwrap().unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the process did not exit within {limit:?}");
        }
    }
}

/// Sends `signal` (`TERM`, `HUP`) to `child`.
pub fn signal(child: &Child, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal} failed");
}
