//! A test-owned Sentinel group: one master, two replicas and three sentinels (quorum 2), each a
//! `redis-server` on a free loopback port in its own temp dir, killed and deleted on drop.
//!
//! ```no_run
//! use ratatoskr_testkit::RedisSentinel;
//!
//! let mut group = RedisSentinel::start();
//! let url = group.url(); // redis+sentinel://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C/ratatoskr
//! let old = group.master();
//! group.kill(old); // SIGKILL the master
//! let new = group.wait_failover(old); // a replica promoted, every sentinel agrees
//! assert_ne!(new, old);
//! ```
//!
//! `down-after-milliseconds` is [`DOWN_AFTER_MS`] and `failover-timeout` 3 s, so a SIGKILLed
//! master is replaced typically within 2–4 s. The waits are blocking (they poll `redis-cli`).

use std::time::Duration;

use crate::node::{Node, poll};

/// The name the sentinels monitor the master under.
pub const MASTER_NAME: &str = "ratatoskr";

/// `sentinel down-after-milliseconds` of the test group.
pub const DOWN_AFTER_MS: u64 = 1000;

const WAIT: Duration = Duration::from_secs(60);

fn server_args(node: &Node, replica_of: Option<u16>) -> Vec<String> {
    let mut args = node.base_args();
    if let Some(port) = replica_of {
        args.extend(["--replicaof".into(), "127.0.0.1".into(), port.to_string()]);
    }
    args
}

/// A master, two replicas and three sentinels watching them as [`MASTER_NAME`].
pub struct RedisSentinel {
    servers: Vec<Node>,
    sentinels: Vec<Node>,
}

impl RedisSentinel {
    /// Start the group and return once every sentinel names server 0 as the master, knows both
    /// replicas and the two other sentinels, and both replicas are in sync.
    pub fn start() -> Self {
        let mut servers: Vec<Node> = (0..3).map(|_| Node::new("sentinel-data")).collect();
        let master_port = servers[0].port;
        for (i, node) in servers.iter_mut().enumerate() {
            let args = server_args(node, (i > 0).then_some(master_port));
            node.start(args);
        }
        let mut sentinels: Vec<Node> = (0..3).map(|_| Node::new("sentinel")).collect();
        for s in &mut sentinels {
            // Sentinel rewrites its configuration file, so it gets one of its own.
            let conf = format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {MASTER_NAME} 3000\n\
                 sentinel parallel-syncs {MASTER_NAME} 2\n",
                port = s.port,
                dir = s.path(""),
            );
            let path = s.path("sentinel.conf");
            std::fs::write(&path, conf).expect("sentinel.conf");
            s.start(vec![path, "--sentinel".into()]);
        }
        let group = RedisSentinel { servers, sentinels };
        group.wait_healthy();
        group
    }

    /// One group for the whole test binary, started on first use and killed when the process
    /// exits: for suites of many tests that only read and write (no server is killed).
    pub fn shared() -> &'static RedisSentinel {
        static SHARED: std::sync::OnceLock<RedisSentinel> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let group = RedisSentinel::start();
            group
                .servers
                .iter()
                .chain(&group.sentinels)
                .for_each(Node::kill_at_exit);
            group
        })
    }

    /// `127.0.0.1:PORT` of each sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(Node::addr).collect()
    }

    /// The name the master is monitored under ([`MASTER_NAME`]).
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// `redis+sentinel://127.0.0.1:A,127.0.0.1:B,127.0.0.1:C/ratatoskr`: the sentinels and the
    /// master name, in the form `REDIS_SENTINEL` and `ratatoskr_redis::RedisConfig::from_url`
    /// take.
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://{}/{MASTER_NAME}",
            self.sentinel_addrs().join(",")
        )
    }

    /// Data server `i`'s port (0 is the first master; 1 and 2 its first replicas).
    pub fn server_port(&self, i: usize) -> u16 {
        self.servers[i].port
    }

    /// `redis://127.0.0.1:PORT/` of data server `i`.
    pub fn server_url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}/", self.servers[i].port)
    }

    fn index_of(&self, port: u16) -> Option<usize> {
        self.servers.iter().position(|n| n.port == port)
    }

    /// What sentinel `s` names as the master, as a data-server index.
    fn named_by(&self, s: &Node) -> Option<usize> {
        let out = s.cli(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME])?;
        let port = out.lines().nth(1)?.trim().parse().ok()?;
        self.index_of(port)
    }

    /// The data server the sentinels name as master now (asking each until one answers).
    pub fn master(&self) -> usize {
        self.sentinels
            .iter()
            .find_map(|s| self.named_by(s))
            .expect("a sentinel names a master")
    }

    /// SIGKILL data server `i`.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// SIGSTOP data server `i`.
    pub fn freeze(&mut self, i: usize) {
        self.servers[i].freeze();
    }

    /// SIGCONT data server `i`.
    pub fn thaw(&mut self, i: usize) {
        self.servers[i].thaw();
    }

    /// Start a killed data server again (empty: nothing is saved). It comes back with its old
    /// role; the sentinels turn a returning old master into a replica of the new one.
    pub fn restart(&mut self, i: usize) {
        self.servers[i].restart();
    }

    /// SIGKILL sentinel `i` (0..3); two are still a quorum.
    pub fn kill_sentinel(&mut self, i: usize) {
        self.sentinels[i].kill();
    }

    /// Wait until every running sentinel names the same master other than `old`, and that
    /// server reports `role:master`. Returns it. Panics after 60 s.
    pub fn wait_failover(&self, old: usize) -> usize {
        poll(
            WAIT,
            "the sentinels failed over",
            || {
                let new = self.agreed()?;
                (new != old).then_some(new)
            },
            || self.describe(),
        )
    }

    /// The master every running sentinel names, if they agree and it says `role:master`.
    fn agreed(&self) -> Option<usize> {
        let mut named = None;
        for s in self.sentinels.iter().filter(|s| s.running()) {
            let m = self.named_by(s)?;
            if named.is_some_and(|n| n != m) {
                return None;
            }
            named = Some(m);
        }
        let m = named?;
        (self.servers[m].info_field("replication", "role").as_deref() == Some("master"))
            .then_some(m)
    }

    /// Wait until the sentinels agree on a master that says so, each knows the two other
    /// sentinels and every running replica, and every running replica is in sync.
    pub fn wait_healthy(&self) {
        poll(
            WAIT,
            "the sentinel group is healthy",
            || {
                let m = self.agreed()?;
                let running = self.servers.iter().filter(|n| n.running()).count() as u64;
                for s in self.sentinels.iter().filter(|s| s.running()) {
                    let info = s.info("sentinel")?;
                    let line = info.iter().find(|(k, _)| k == "master0")?.1.clone();
                    let want_sentinels = self.sentinels.iter().filter(|s| s.running()).count();
                    if !line.contains(&format!("slaves={}", running - 1))
                        || !line.contains(&format!("sentinels={want_sentinels}"))
                        || !line.contains("status=ok")
                    {
                        return None;
                    }
                }
                for (i, n) in self.servers.iter().enumerate() {
                    if i == m || !n.running() {
                        continue;
                    }
                    let link = n.info_field("replication", "master_link_status")?;
                    let syncing = n.info_field("replication", "master_sync_in_progress")?;
                    let port = n.info_field("replication", "master_port")?;
                    if link != "up" || syncing != "0" || port != self.servers[m].port.to_string() {
                        return None;
                    }
                }
                Some(())
            },
            || self.describe(),
        )
    }

    fn describe(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.servers.iter().enumerate() {
            out.push_str(&format!(
                "server {i} port {} running {}: {:?}\n",
                n.port,
                n.running(),
                n.info_field("replication", "role")
            ));
        }
        for s in &self.sentinels {
            out.push_str(&format!(
                "sentinel {} says {:?}\n{}\n",
                s.port,
                s.info_field("sentinel", "master0"),
                s.log_tail()
            ));
        }
        out
    }
}
