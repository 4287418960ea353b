//! demo-backend: a small, deliberately slow e-commerce API to run sidecache in front of.
//!
//! It plays the "legacy backend" of the design: products and category listings,
//! sessions, carts, login, recommendations and inventory, all JSON and all held in
//! memory (lost on exit). Every GET first waits `--delay-ms`, so a cache hit is
//! visibly faster than a trip here, and every response carries
//! `X-Backend-Request: N`, a count of the requests that reached this process: when a
//! response through sidecache repeats an N already seen, the backend never saw it.
//!
//! ```text
//! demo-backend --listen 127.0.0.1:3000 --delay-ms 50 --products 1000
//! curl -i http://127.0.0.1:3000/        # lists the routes
//! ```
//!
//! Longer than most files because the whole demo shop (routes, catalog,
//! carts, sessions) is one self-contained program.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::{conn::auto, graceful::GracefulShutdown};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::json;
use tokio::net::TcpListener;

/// Products per page of a category listing.
const PAGE_SIZE: usize = 20;
/// Largest request body read; a bigger one gets 413.
const MAX_BODY: usize = 64 * 1024;
/// How long open connections get to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(5);
/// The request counter header.
const X_BACKEND_REQUEST: HeaderName = HeaderName::from_static("x-backend-request");
/// Filler that brings a product's JSON to about 2 KB, the size of a real catalog entry.
const FILLER: &str = "Sturdy, well made and easy to care for; tested in our workshop \
                      and backed by a two-year warranty. ";
/// What `GET /` answers.
const ROUTES: [&str; 8] = [
    "GET /products/{id}, PUT|PATCH|DELETE /products/{id}",
    "GET /categories/{id}/products?page=N",
    "GET /session (cookie session_id)",
    "GET|PUT|POST|DELETE /cart/{user_id}",
    "POST /login",
    "GET /recommendations/{user_id}",
    "GET /inventory/{product_id} (never the same twice)",
    "every response: X-Backend-Request: N",
];

/// Every response this server builds.
type Resp = Response<Full<Bytes>>;
/// How a cart write applies its (checked) lines to the cart.
type CartChange = fn(&mut Vec<CartItem>, Vec<CartItem>);

/// Command-line options; each can also come from the environment.
#[derive(Debug, Parser)]
#[command(version, about = "Demo e-commerce backend to run behind sidecache")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "DEMO_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Artificial delay before answering every GET, in milliseconds.
    #[arg(long, env = "DEMO_DELAY_MS", default_value_t = 50)]
    delay_ms: u64,
    /// Number of products in the catalog (ids 1..=N).
    #[arg(long, env = "DEMO_PRODUCTS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    products: u64,
    /// Name what each answer holds in an `xkey` header, and what each write
    /// changed in `xkey-purge`, for a Varnish with the xkey vmod (which
    /// cannot read JSON bodies as sidecache does).
    #[arg(long, env = "DEMO_XKEY")]
    xkey: bool,
}

/// A catalog entry, as the API shows it.
#[derive(Serialize)]
struct Product {
    id: u64,
    name: String,
    price: f64,
    category_id: u64,
    description: String,
}

/// Body of a product PUT or PATCH: absent fields are left alone, unknown ones ignored.
#[derive(Deserialize)]
struct ProductPatch {
    name: Option<String>,
    price: Option<f64>,
    category_id: Option<u64>,
    description: Option<String>,
}

/// One line of a cart; also the body of `POST /cart/{user_id}`.
#[derive(Clone, Serialize, Deserialize)]
struct CartItem {
    product_id: u64,
    qty: u32,
}

/// A user's cart; `updated_at` (Unix seconds) is None until its first write.
#[derive(Clone, Default)]
struct Cart {
    items: Vec<CartItem>,
    updated_at: Option<u64>,
}

/// Body of `PUT /cart/{user_id}`.
#[derive(Deserialize)]
struct CartBody {
    items: Vec<CartItem>,
}

/// Body of `POST /login`.
#[derive(Deserialize)]
struct Login {
    user_id: u64,
}

/// Everything the backend stores. A BTreeMap keeps category listings in id order.
#[derive(Default)]
struct State {
    products: BTreeMap<u64, Product>,
    carts: HashMap<u64, Cart>,
    stock: HashMap<u64, u64>,
}

/// What every connection shares.
struct App {
    /// One std (not tokio) mutex over all state: a handler holds it for a few map
    /// operations and never across an `.await`, the case std's lock is made for
    /// (cheaper, and a guard held over an await would not be `Send`, so won't compile).
    state: Mutex<State>,
    requests: AtomicU64,
    delay: Duration,
    catalog_size: u64,
    /// `--xkey`.
    xkey: bool,
}

/// A failed request: its status and the message for the JSON error body.
struct ApiError(StatusCode, String);

impl App {
    /// With `--xkey`, `resp` carries `value` in `name` (`xkey` or `xkey-purge`).
    fn xkey(&self, mut resp: Resp, name: &'static str, value: String) -> Resp {
        if self.xkey
            && let Ok(v) = HeaderValue::from_str(&value)
        {
            resp.headers_mut().insert(name, v);
        }
        resp
    }

    /// Every update is a few assignments that cannot panic half-way, so a lock
    /// poisoned by a panic elsewhere still guards consistent data: keep using it.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let args = Args::parse();
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(listen = %args.listen, %error, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    let products = (1..=args.products).map(|id| (id, product(id))).collect();
    let app = Arc::new(App {
        state: Mutex::new(State {
            products,
            ..State::default()
        }),
        requests: AtomicU64::new(0),
        delay: Duration::from_millis(args.delay_ms),
        catalog_size: args.products,
        xkey: args.xkey,
    });
    let (listen, delay_ms) = (args.listen, args.delay_ms);
    tracing::info!(%listen, delay_ms, products = args.products, "demo-backend ready");
    serve(listener, app).await;
    ExitCode::SUCCESS
}

/// Accepts connections until Ctrl-C or SIGTERM, then drains them for at most [`GRACE`].
async fn serve(listener: TcpListener, app: Arc<App>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are small single writes; with Nagle on, delayed ACKs can add tens of
        // milliseconds to keep-alive requests and blur the delay this server shows.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let app = Arc::clone(&app);
        let service = service_fn(move |req| handle(Arc::clone(&app), req));
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%peer, %error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(GRACE) => tracing::warn!("grace period over, exiting"),
    }
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what `docker stop` and Kubernetes send).
/// A signal that cannot be watched just never fires.
async fn shutdown_signal() {
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => drop(term.recv().await),
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        Ok(()) = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

/// Answers one request: counts it, waits the GET delay, routes it, stamps the count.
async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let n = app.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    if method == Method::GET || method == Method::HEAD {
        tokio::time::sleep(app.delay).await;
    }
    let mut resp = match dispatch(&app, req).await {
        Ok(resp) => resp,
        Err(ApiError(status, error)) => json(status, &json!({ "error": error })),
    };
    resp.headers_mut()
        .insert(X_BACKEND_REQUEST, HeaderValue::from(n));
    tracing::info!(%method, %path, status = resp.status().as_u16(), n, "request");
    Ok(resp)
}

/// Routes on method and path segments; HEAD is answered as GET (hyper drops the body).
async fn dispatch(app: &App, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let method = if req.method() == Method::HEAD {
        "GET"
    } else {
        req.method().as_str()
    };
    match (method, segments.as_slice()) {
        ("GET", [""]) => Ok(ok(&json!({ "routes": ROUTES }))),
        ("GET", ["products", id]) => get_product(app, number("id", id)?),
        ("PUT" | "PATCH", ["products", id]) => {
            let id = number("id", id)?;
            update_product(app, id, read_json(req).await?)
        }
        ("DELETE", ["products", id]) => {
            let id = number("id", id)?;
            let gone = app
                .state()
                .products
                .remove(&id)
                .ok_or_else(|| unknown_product(id))?;
            let mut resp = Response::new(Full::default());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            let changed = format!("p{id} listing-{}", gone.category_id);
            Ok(app.xkey(resp, "xkey-purge", changed))
        }
        ("GET", ["categories", id, "products"]) => {
            let id = number("category id", id)?;
            Ok(category(app, id, page(req.uri().query())?))
        }
        ("GET", ["session"]) => session(req.headers()),
        ("GET", ["cart", user_id]) => {
            let user_id = number("user_id", user_id)?;
            let cart = app.state().carts.get(&user_id).cloned().unwrap_or_default();
            Ok(app.xkey(cart_json(user_id, &cart), "xkey", format!("cart-{user_id}")))
        }
        ("PUT", ["cart", user_id]) => {
            let user_id = number("user_id", user_id)?;
            let CartBody { items } = read_json(req).await?;
            write_cart(app, user_id, items, |lines, items| *lines = items)
        }
        ("POST", ["cart", user_id]) => {
            let user_id = number("user_id", user_id)?;
            let item: CartItem = read_json(req).await?;
            write_cart(app, user_id, vec![item], add_lines)
        }
        ("DELETE", ["cart", user_id]) => {
            write_cart(app, number("user_id", user_id)?, vec![], |lines, _| {
                lines.clear()
            })
        }
        ("POST", ["login"]) => {
            let Login { user_id } = read_json(req).await?;
            let seed = format!("{user_id}:{:?}", unix_now());
            let token = format!("{user_id}.{:016x}", fnv(seed.as_bytes()));
            Ok(ok(&json!({ "user_id": user_id, "token": token })))
        }
        ("GET", ["recommendations", user_id]) => {
            let user_id = number("user_id", user_id)?;
            let seed = fnv(&user_id.to_le_bytes());
            let pick = |k: u64| seed.wrapping_add(k * 7919) % app.catalog_size + 1;
            let products: Vec<u64> = (0..5).map(pick).collect();
            Ok(ok(&json!({ "user_id": user_id, "products": products })))
        }
        ("GET", ["inventory", id]) => inventory(app, number("product_id", id)?),
        _ => {
            let message = format!("no route for {method} {path}");
            Err(ApiError(StatusCode::NOT_FOUND, message))
        }
    }
}

fn get_product(app: &App, id: u64) -> Result<Resp, ApiError> {
    let state = app.state();
    let product = state.products.get(&id).ok_or_else(|| unknown_product(id))?;
    let resp = cache_control(ok(product), "public, max-age=60");
    Ok(app.xkey(resp, "xkey", format!("p{id}")))
}

fn update_product(app: &App, id: u64, patch: ProductPatch) -> Result<Resp, ApiError> {
    let price_ok = patch
        .price
        .is_none_or(|price| price.is_finite() && price >= 0.0);
    if !price_ok {
        return Err(bad_request("price must be a number >= 0".into()));
    }
    let mut state = app.state();
    let product = state
        .products
        .get_mut(&id)
        .ok_or_else(|| unknown_product(id))?;
    let before = product.category_id;
    product.price = patch.price.unwrap_or(product.price);
    product.category_id = patch.category_id.unwrap_or(product.category_id);
    if let Some(name) = patch.name {
        product.name = name;
    }
    if let Some(description) = patch.description {
        product.description = description;
    }
    let mut changed = format!("p{id}");
    if product.category_id != before {
        changed += &format!(" listing-{before} listing-{}", product.category_id);
    }
    Ok(app.xkey(ok(product), "xkey-purge", changed))
}

fn category(app: &App, category_id: u64, page: usize) -> Resp {
    let state = app.state();
    let products: Vec<&Product> = state
        .products
        .values()
        .filter(|product| product.category_id == category_id)
        .skip((page - 1).saturating_mul(PAGE_SIZE))
        .take(PAGE_SIZE)
        .collect();
    let mut keys = format!("listing-{category_id}");
    for p in &products {
        keys += &format!(" p{}", p.id);
    }
    let resp = ok(&json!({ "category_id": category_id, "page": page, "products": products }));
    drop(state);
    app.xkey(resp, "xkey", keys)
}

/// The user comes from the `session_id` cookie: a token from `POST /login` starts with
/// it, and any other value maps to a stable made-up user, so `-b session_id=x` works.
fn session(headers: &HeaderMap) -> Result<Resp, ApiError> {
    let session_id = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(name, value)| (name == "session_id" && !value.is_empty()).then_some(value))
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "no session_id cookie".into()))?;
    let user_id = session_id
        .split_once('.')
        .and_then(|(user, _)| user.parse::<u64>().ok())
        .unwrap_or_else(|| fnv(session_id.as_bytes()) % 10_000 + 1);
    Ok(ok(
        &json!({ "session_id": session_id, "user_id": user_id, "expires_in": 1800 }),
    ))
}

/// Checks the `added` lines, lets `change` apply them to the cart, answers the new cart.
fn write_cart(
    app: &App,
    user_id: u64,
    added: Vec<CartItem>,
    change: CartChange,
) -> Result<Resp, ApiError> {
    let mut state = app.state();
    let valid = |item: &CartItem| item.qty > 0 && state.products.contains_key(&item.product_id);
    if let Some(bad) = added.iter().find(|item| !valid(item)) {
        let message = format!("product {} must exist and qty be >= 1", bad.product_id);
        return Err(bad_request(message));
    }
    let cart = state.carts.entry(user_id).or_default();
    change(&mut cart.items, added);
    cart.updated_at = Some(unix_now().as_secs());
    let resp = cart_json(user_id, cart);
    drop(state);
    Ok(app.xkey(resp, "xkey-purge", format!("cart-{user_id}")))
}

/// Adds quantities to lines already in the cart, appends the others.
fn add_lines(lines: &mut Vec<CartItem>, added: Vec<CartItem>) {
    for item in added {
        match lines
            .iter_mut()
            .find(|line| line.product_id == item.product_id)
        {
            Some(line) => line.qty = line.qty.saturating_add(item.qty),
            None => lines.push(item),
        }
    }
}

fn cart_json(user_id: u64, cart: &Cart) -> Resp {
    ok(&json!({ "user_id": user_id, "items": cart.items, "updated_at": cart.updated_at }))
}

/// Each read sells one unit and an empty shelf is restocked, so two reads never agree.
fn inventory(app: &App, product_id: u64) -> Result<Resp, ApiError> {
    let mut state = app.state();
    if !state.products.contains_key(&product_id) {
        return Err(unknown_product(product_id));
    }
    let stock = state
        .stock
        .entry(product_id)
        .or_insert(50 + product_id % 50);
    *stock = stock.checked_sub(1).unwrap_or(100);
    let body = json!({ "product_id": product_id, "in_stock": *stock });
    Ok(cache_control(ok(&body), "no-store"))
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes.
async fn read_json<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => {
            let message = format!("body is over {MAX_BODY} bytes");
            return Err(ApiError(StatusCode::PAYLOAD_TOO_LARGE, message));
        }
        Err(error) => return Err(bad_request(format!("cannot read body: {error}"))),
    };
    serde_json::from_slice(&body).map_err(|error| bad_request(format!("bad JSON body: {error}")))
}

/// The `page` query parameter: 1 when absent, else a whole number >= 1.
fn page(query: Option<&str>) -> Result<usize, ApiError> {
    let raw = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("page="));
    let Some(raw) = raw else { return Ok(1) };
    let page = raw.parse().ok().filter(|&page| page >= 1);
    page.ok_or_else(|| bad_request(format!("page must be 1 or more, not {raw:?}")))
}

/// A path parameter that must be a whole number.
fn number(name: &str, raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| bad_request(format!("{name} must be a whole number, not {raw:?}")))
}

/// The generated catalog entry for `id`: same id, same product, every run.
fn product(id: u64) -> Product {
    const NOUNS: [&str; 8] = [
        "Kettle", "Lamp", "Backpack", "Chair", "Mug", "Blender", "Desk", "Fan",
    ];
    let name = format!("{} {id}", NOUNS[(id % 8) as usize]);
    let description = format!("The {name}. {}", FILLER.repeat(20));
    let price = (id * 7919 % 20_000 + 99) as f64 / 100.0;
    Product {
        id,
        name,
        price,
        category_id: id % 20 + 1,
        description,
    }
}

/// A JSON response; a value that cannot be encoded becomes a 500, not a panic.
fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Resp {
    let (status, body) = match serde_json::to_vec(value) {
        Ok(body) => (status, Bytes::from(body)),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(b"{\"error\":\"encoding\"}"),
        ),
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A 200 JSON response.
fn ok<T: Serialize + ?Sized>(value: &T) -> Resp {
    json(StatusCode::OK, value)
}

fn cache_control(mut resp: Resp, value: &'static str) -> Resp {
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static(value));
    resp
}

fn bad_request(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

fn unknown_product(id: u64) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no product {id}"))
}

/// FNV-1a: a stable hash for made-up but repeatable data (no randomness needed).
fn fnv(bytes: &[u8]) -> u64 {
    let fold = |hash: u64, &byte: &u8| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, fold)
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
