//! A real six-node Redis Cluster (three masters, three replicas) on
//! loopback, each node in its own directory without persistence; killed on
//! drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `redis-server --cluster-enabled yes`.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// Six nodes joined by `redis-cli --cluster create`.
pub struct Cluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

/// One cluster node on `port`, keeping its files in `dir` (its output in
/// `dir/redis.log`).
fn spawn(port: u16, dir: &std::path::Path) -> Child {
    let log = dir.join("redis.log");
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", "nodes.conf"])
        .args(["--cluster-node-timeout", "1000"])
        .args(["--save", "", "--appendonly", "no"])
        // Replicas copy their master at once, not after 5 s.
        .args(["--repl-diskless-sync", "yes"])
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir)
        .stdout(log_to(&log))
        .stderr(log_to(&log))
        .spawn()
        .expect("redis-server must be installed (the README's test command installs it)")
}

/// `n` distinct free ports whose cluster bus ports (+10000) are free too.
/// Each is held until all are chosen, so no two nodes get the same one.
fn cluster_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let any = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        // Ephemeral ports are often above 55536: move one well below.
        let port = 20_000 + any.local_addr().expect("addr").port() % 30_000;
        drop(any);
        if let (Ok(a), Ok(b)) = (
            std::net::TcpListener::bind(("127.0.0.1", port)),
            std::net::TcpListener::bind(("127.0.0.1", port + 10_000)),
        ) {
            held.push((a, b));
            ports.push(port);
        }
    }
    ports
}

/// Runs `redis-cli -p port args...`; answers its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("redis-cli must be installed (the README's test command installs it)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Cluster {
    /// Starts six nodes, joins them, and waits until every slot is served
    /// and every replica has its master's data.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = Vec::new();
        for port in cluster_ports(6) {
            let node_dir: PathBuf = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            nodes.push(Node {
                port,
                child: Some(spawn(port, &node_dir)),
            });
        }
        let mut cluster = Self { nodes, dir };
        let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
        for port in ports {
            cluster.wait_answers(port);
        }
        // One that found its port taken exits (what answered was another).
        if cluster.exited().is_some() {
            cluster.fail("a node exited as the cluster started");
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli");
        if !created.success() {
            cluster.fail("redis-cli --cluster create failed");
        }
        cluster.wait_healthy();
        cluster
    }

    /// Waits until the node at `port` answers; fails with the end of its
    /// log if it exits first (a port taken meanwhile) or stays silent 30 s.
    fn wait_answers(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while cli(port, &["PING"]) != "PONG" {
            if Instant::now() >= deadline {
                self.fail(&format!("node {port} did not answer within 30 s"));
            }
            if self.exited().is_some() {
                self.fail(&format!("a node exited while node {port} started"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first node whose process has exited, with how it ended.
    fn exited(&mut self) -> Option<(u16, std::process::ExitStatus)> {
        self.nodes.iter_mut().find_map(|n| {
            let status = n.child.as_mut()?.try_wait().ok().flatten()?;
            Some((n.port, status))
        })
    }

    /// Fails the test with `what` and the end of the log of the node that
    /// exited (or, when none has, of every node).
    fn fail(&mut self, what: &str) -> ! {
        let mut text = what.to_owned();
        let ports: Vec<u16> = match self.exited() {
            Some((port, status)) => {
                text.push_str(&format!("; node {port} exited: {status}"));
                vec![port]
            }
            None => self.nodes.iter().map(|n| n.port).collect(),
        };
        for port in ports {
            let log = self.dir.path().join(port.to_string()).join("redis.log");
            let tail = log_tail(&log, 15);
            text.push_str(&format!("\n--- the end of {}:\n{tail}", log.display()));
        }
        panic!("{text}");
    }

    /// Waits until every live node says `cluster_state:ok`, there are three
    /// masters, and each has a replica in sync.
    pub fn wait_healthy(&self) {
        wait_for("the cluster is whole", || {
            self.live_ports()
                .all(|p| cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                && self.masters().len() == 3
                && self.masters().iter().all(|m| {
                    cli(*m, &["INFO", "replication"]).contains("connected_slaves:1")
                        && self.replica_of(*m).is_some_and(|r| {
                            cli(r, &["INFO", "replication"]).contains("master_link_status:up")
                        })
                })
        });
    }

    /// Waits until the live nodes agree the cluster serves every slot
    /// (a killed master's replica promoted).
    pub fn wait_ok(&self) {
        wait_for("every slot served again", || {
            self.live_ports()
                .all(|p| cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
    }

    fn live_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
    }

    /// The seed list for `redis: { cluster: [...] }`, as YAML.
    pub fn seeds_yaml(&self) -> String {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"redis://127.0.0.1:{}\"", n.port))
            .collect();
        format!("[{}]", urls.join(", "))
    }

    /// Live nodes that are masters, by port.
    pub fn masters(&self) -> Vec<u16> {
        self.live_ports()
            .filter(|p| cli(*p, &["ROLE"]).starts_with("master"))
            .collect()
    }

    /// The live replica of the master at `master`.
    pub fn replica_of(&self, master: u16) -> Option<u16> {
        let id = cli(master, &["CLUSTER", "MYID"]);
        self.live_ports().find(|p| {
            *p != master
                && cli(*p, &["CLUSTER", "NODES"])
                    .lines()
                    .any(|l| l.contains("myself") && l.contains(&format!("slave {id}")))
        })
    }

    /// The master that serves `key` now.
    pub fn master_of(&self, key: &str) -> u16 {
        let any = self.live_ports().next().expect("a live node");
        let slot: u16 = cli(any, &["CLUSTER", "KEYSLOT", key])
            .parse()
            .expect("a slot");
        *self
            .masters()
            .iter()
            .find(|m| owns(**m, slot))
            .expect("a master serves the slot")
    }

    /// `CLUSTER FAILOVER` on `replica`; waits until it is the master.
    pub fn failover(&self, replica: u16) {
        assert_eq!(cli(replica, &["CLUSTER", "FAILOVER"]), "OK");
        wait_for("the replica took over", || {
            cli(replica, &["ROLE"]).starts_with("master")
        });
        self.wait_ok();
    }

    /// Kills every node (their cluster config stays in their directories).
    pub fn kill_all(&mut self) {
        let ports: Vec<u16> = self.nodes.iter().map(|n| n.port).collect();
        for p in ports {
            self.kill(p);
        }
    }

    /// Starts every killed node again from its directory: the cluster
    /// comes back with the same slots, without data.
    pub fn restart_all(&mut self) {
        let mut started = Vec::new();
        for n in &mut self.nodes {
            if n.child.is_none() {
                n.child = Some(spawn(n.port, &self.dir.path().join(n.port.to_string())));
                started.push(n.port);
            }
        }
        for port in started {
            self.wait_answers(port);
        }
        self.wait_ok();
    }

    /// Kills the node at `port` and starts it again at once from its
    /// directory: back with its slots (within the node timeout, so its
    /// replica does not take over) and without its data.
    pub fn restart(&mut self, port: u16) {
        self.kill(port);
        let dir = self.dir.path().join(port.to_string());
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.child = Some(spawn(port, &dir));
        }
        self.wait_answers(port);
    }

    /// The first node in the seed list (where the purge bus subscribes first).
    pub fn first_seed(&self) -> u16 {
        self.nodes[0].port
    }

    /// Kills the node at `port` with SIGKILL.
    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port)
            && let Some(mut c) = n.child.take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the master at `port` with SIGKILL and waits until its replica
    /// has taken over and every slot is served again.
    pub fn kill_master(&mut self, port: u16) {
        let heir = self.replica_of(port).expect("the master has a replica");
        self.kill(port);
        wait_for("the replica of the killed master took over", || {
            cli(heir, &["ROLE"]).starts_with("master")
        });
        self.wait_ok();
    }

    /// Keys on the node at `port` that match `pattern`.
    pub fn keys(&self, port: u16, pattern: &str) -> Vec<String> {
        cli(port, &["--raw", "KEYS", pattern])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Whether the master at `port` serves `slot`, by its own view of itself
/// (the slot ranges on the "myself" line of `CLUSTER NODES`).
fn owns(port: u16, slot: u16) -> bool {
    let nodes = cli(port, &["CLUSTER", "NODES"]);
    let Some(me) = nodes.lines().find(|l| l.contains("myself")) else {
        return false;
    };
    me.split_whitespace().skip(8).any(|range| {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        match (lo.parse::<u16>(), hi.parse::<u16>()) {
            (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
            _ => false,
        }
    })
}

/// Polls `check` every 50 ms for up to 30 s.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A file (created, or appended to) for a server's stdout or stderr.
pub fn log_to(path: &std::path::Path) -> std::process::Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(std::process::Stdio::from)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The last `n` lines of the file at `path`, for a failure message.
pub fn log_tail(path: &std::path::Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(unreadable: {e})"),
    }
}
