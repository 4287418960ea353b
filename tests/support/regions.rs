//! Several regions on one machine: each its own `redis-server` (TCP) and
//! its replicas in this process; every link between two regions goes
//! through a [`Relay`] that delays each direction and can be cut.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::relay::{Delayed, Relay};
use super::{Proxy, Redis, get};

/// The rules every region serves: `/products/{id}`, tagged
/// `product:{id}` and purged by a PUT; `/carts/{user}`, written through.
pub const RULES: &str = r#"
rules:
  - name: product
    match: { path: "/products/{id}" }
    key: "product:{id}"
    ttl: 1h
    tags: ["product:{id}"]
    invalidate_on: ["PUT /products/{id}"]
  - name: cart
    match: { path: "/carts/{user}" }
    key: "cart:{user}"
    ttl: 1h
    write_through: { methods: [PUT] }
"#;

/// One region: its Redis and its replicas.
pub struct Region {
    pub name: String,
    pub redis: Redis,
    pub replicas: Vec<Proxy>,
}

/// Regions joined by delayed links.
pub struct World {
    pub regions: Vec<Region>,
    /// `(from, to)`: how `from`'s replicas reach `to`'s Redis.
    pub links: HashMap<(usize, usize), Relay>,
}

impl World {
    /// Starts `names.len()` regions of `replicas` replicas each in front
    /// of `backend`, `delay` apart one way, with `extra` added to each
    /// config (e.g. `invalidation: ...`).
    pub async fn start(
        names: &[&str],
        replicas: usize,
        delay: Duration,
        backend: &str,
        extra: &str,
    ) -> Self {
        let redises: Vec<Redis> = names.iter().map(|_| Redis::start_tcp()).collect();
        let mut links = HashMap::new();
        for from in 0..names.len() {
            for (to, redis) in redises.iter().enumerate() {
                if from != to {
                    let target = redis.addr().expect("a TCP Redis");
                    links.insert((from, to), Relay::start(target, delay, Delayed::All).await);
                }
            }
        }
        let mut regions = Vec::new();
        for (i, redis) in redises.into_iter().enumerate() {
            let yaml = config(names, i, &links, &redis.url(), backend, extra);
            let mut proxies = Vec::new();
            for _ in 0..replicas {
                proxies.push(Proxy::start(&yaml, backend, None).await);
            }
            regions.push(Region {
                name: names[i].to_owned(),
                redis,
                replicas: proxies,
            });
        }
        Self { regions, links }
    }

    /// Cuts both directions between regions `a` and `b`.
    pub fn cut(&self, a: usize, b: usize) {
        self.links[&(a, b)].cut();
        self.links[&(b, a)].cut();
    }

    /// Mends what [`World::cut`] cut.
    pub fn restore(&self, a: usize, b: usize) {
        self.links[&(a, b)].restore();
        self.links[&(b, a)].restore();
    }

    /// Waits until in every region some replica relays from every other
    /// region, over a link that is up.
    pub async fn wait_relaying(&self) {
        for region in &self.regions {
            let admins: Vec<SocketAddr> = region.replicas.iter().map(|p| p.admin).collect();
            wait_relaying(&admins, self.regions.len() - 1).await;
        }
    }
}

/// The config of region `i` of `names`: its Redis, and the others through
/// the links.
pub fn config(
    names: &[&str],
    i: usize,
    links: &HashMap<(usize, usize), Relay>,
    redis: &str,
    backend: &str,
    extra: &str,
) -> String {
    let mut yaml = format!(
        "upstream: {{ url: \"{backend}\" }}\nadmin: {{ token: \"t\" }}\nredis: {{ url: \"{redis}\", key_prefix: \"rg:\", timeout: 300ms, disconnect_grace: 2s }}\nregion: {}\nregions:\n",
        names[i]
    );
    for (j, name) in names.iter().enumerate() {
        if j != i {
            yaml.push_str(&format!(
                "  {name}: {{ redis: \"redis://{}\" }}\n",
                links[&(i, j)].addr
            ));
        }
    }
    yaml.push_str(extra);
    yaml.push('\n');
    yaml.push_str(RULES);
    yaml
}

/// `/readyz` of the replica whose admin listener is `admin`.
pub async fn readyz(admin: SocketAddr) -> serde_json::Value {
    let got = get(&format!("http://{admin}/readyz"), &[]).await;
    serde_json::from_slice(&got.body).unwrap_or_default()
}

/// What `/readyz` at `admin` says of region `name`.
pub async fn region_state(admin: SocketAddr, name: &str) -> serde_json::Value {
    let ready = readyz(admin).await;
    ready["regions"]
        .as_array()
        .and_then(|list| list.iter().find(|r| r["name"] == name).cloned())
        .unwrap_or_default()
}

/// Waits (up to 15 s) until, among the replicas at `admins`, each of the
/// `others` other regions is relayed by one over a link that is up.
pub async fn wait_relaying(admins: &[SocketAddr], others: usize) {
    super::eventually_within(Duration::from_secs(15), "every region relayed", || async {
        let mut relayed = std::collections::HashSet::new();
        for admin in admins {
            let ready = readyz(*admin).await;
            for r in ready["regions"].as_array().into_iter().flatten() {
                if r["relaying"] == true && r["link"] == "up" {
                    relayed.insert(r["name"].as_str().unwrap_or("").to_owned());
                }
            }
        }
        relayed.len() == others
    })
    .await;
}

/// Which of the replicas at `admins` relays region `from`'s purges.
pub async fn relayer(admins: &[SocketAddr], from: &str) -> Option<usize> {
    for (i, admin) in admins.iter().enumerate() {
        if region_state(*admin, from).await["relaying"] == true {
            return Some(i);
        }
    }
    None
}
