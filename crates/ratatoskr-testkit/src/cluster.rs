//! A test-owned Redis Cluster: six `redis-server` processes on free loopback ports (3 masters,
//! 3 replicas), each in its own temp dir, killed and deleted on drop.
//!
//! ```no_run
//! use ratatoskr_testkit::{RedisCluster, key_slot};
//!
//! let mut cluster = RedisCluster::start();
//! let nodes = cluster.addrs(); // ["127.0.0.1:PORT", …] for the client (REDIS_CLUSTER_NODES)
//! let victim = cluster.master_of_key(b"rt:{u:42}");
//! cluster.kill(victim); // SIGKILL
//! let promoted = cluster.wait_failover(victim); // its replica now serves its slots
//! assert_ne!(promoted, victim);
//! assert_eq!(cluster.master_of_slot(key_slot(b"rt:{u:42}")), promoted);
//! ```
//!
//! Failure detection uses `cluster-node-timeout` = [`NODE_TIMEOUT_MS`]; a SIGKILLed master is
//! replaced by its replica typically within 2–3 s. The waits are blocking (they poll
//! `redis-cli`): from async code call them in `tokio::task::spawn_blocking` if other tasks
//! must keep running meanwhile.

use std::collections::HashMap;
use std::time::Duration;

use crate::node::{Node, cli, poll};
use crate::procs::free_port;

/// `cluster-node-timeout` of the test cluster, in ms: how long a silent node takes to be
/// declared failed (and its replica promoted).
pub const NODE_TIMEOUT_MS: u64 = 1500;

/// How long a starter or a wait may take on a loaded machine before it fails the test.
const WAIT: Duration = Duration::from_secs(60);

/// The Redis Cluster hash slot of `key` (CRC16/XMODEM mod 16384 of the key, or of its hash tag:
/// the part between the first `{` and the next `}`, if not empty).
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % 16384
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// One line of `CLUSTER NODES`, as a running node sees it.
#[derive(Clone, Debug)]
struct Seen {
    port: u16,
    master: bool,
    failed: bool,
    slots: Vec<(u16, u16)>,
}

fn parse_nodes(text: &str) -> Vec<Seen> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let addr = f[1].split('@').next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let flags = f[2];
            let slots = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(Seen {
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                slots,
            })
        })
        .collect()
}

/// Six `redis-server` processes forming a Redis Cluster (3 masters with one replica each).
/// Dropped: every node is killed and its directory deleted.
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// The slots each node served when it was last killed or frozen (for `wait_failover`).
    held: HashMap<usize, Vec<(u16, u16)>>,
}

impl RedisCluster {
    /// Start six nodes, join them (`redis-cli --cluster create … --cluster-replicas 1`), and
    /// return once every node reports `cluster_state:ok`, knows all six, and every replica is
    /// in sync with its master.
    pub fn start() -> Self {
        let mut nodes: Vec<Node> = (0..6).map(|_| Node::new("cluster")).collect();
        for node in &mut nodes {
            let mut args = node.base_args();
            args.extend(
                [
                    "--cluster-port",
                    &free_port().to_string(),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &node.path("nodes.conf"),
                    "--cluster-node-timeout",
                    &NODE_TIMEOUT_MS.to_string(),
                    // A replica is promoted however long ago it last heard from its master.
                    "--cluster-replica-validity-factor",
                    "0",
                ]
                .map(str::to_owned),
            );
            node.start(args);
        }
        let cluster = RedisCluster {
            nodes,
            held: HashMap::new(),
        };
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(cluster.addrs());
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(str::to_owned));
        let out = std::process::Command::new("redis-cli")
            .args(&create)
            .output()
            .expect(crate::REDIS_SERVER_MISSING);
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_healthy();
        cluster
    }

    /// One cluster for the whole test binary, started on first use and killed when the
    /// process exits: for suites of many tests that only read and write (no node is killed).
    pub fn shared() -> &'static RedisCluster {
        static SHARED: std::sync::OnceLock<RedisCluster> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = RedisCluster::start();
            cluster.nodes.iter().for_each(Node::kill_at_exit);
            cluster
        })
    }

    /// How many nodes (6).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: a cluster has six nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s port.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// `127.0.0.1:PORT` of every node (the seed list a cluster client takes).
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(Node::addr).collect()
    }

    /// The comma-separated seed list, as `REDIS_CLUSTER_NODES` takes it.
    pub fn nodes_env(&self) -> String {
        self.addrs().join(",")
    }

    /// `redis://127.0.0.1:PORT/` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect()
    }

    fn index_of(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port == port)
    }

    /// The cluster as a running, answering node sees it.
    fn view(&self) -> Option<Vec<Seen>> {
        self.nodes
            .iter()
            .find_map(|n| n.cli(&["CLUSTER", "NODES"]))
            .map(|t| parse_nodes(&t))
    }

    /// The nodes that serve slots now (as a live node sees it), in node order.
    pub fn masters(&self) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .view()
            .expect("a cluster node answers")
            .iter()
            .filter(|s| s.master && !s.failed && !s.slots.is_empty())
            .filter_map(|s| self.index_of(s.port))
            .collect();
        out.sort_unstable();
        out
    }

    /// The running nodes that are replicas now, in node order.
    pub fn replicas(&self) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .view()
            .expect("a cluster node answers")
            .iter()
            .filter(|s| !s.master && !s.failed)
            .filter_map(|s| self.index_of(s.port))
            .filter(|&i| self.nodes[i].running())
            .collect();
        out.sort_unstable();
        out
    }

    /// The node serving `slot` now, as a live node sees it.
    pub fn master_of_slot(&self, slot: u16) -> usize {
        self.view()
            .expect("a cluster node answers")
            .iter()
            .filter(|s| s.master && !s.failed)
            .find(|s| s.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .and_then(|s| self.index_of(s.port))
            .expect("every slot has a master")
    }

    /// The node serving the slot of `key` now (hash tags respected).
    pub fn master_of_key(&self, key: &[u8]) -> usize {
        self.master_of_slot(key_slot(key))
    }

    fn remember_slots(&mut self, i: usize) {
        if let Some(view) = self.view() {
            let port = self.nodes[i].port;
            if let Some(s) = view.iter().find(|s| s.port == port && !s.slots.is_empty()) {
                self.held.insert(i, s.slots.clone());
            }
        }
    }

    /// SIGKILL node `i` (no chance to save or to tell anyone).
    pub fn kill(&mut self, i: usize) {
        self.remember_slots(i);
        self.nodes[i].kill();
    }

    /// SIGSTOP node `i`: it holds its sockets open and answers nothing.
    pub fn freeze(&mut self, i: usize) {
        self.remember_slots(i);
        self.nodes[i].freeze();
    }

    /// SIGCONT node `i`.
    pub fn thaw(&mut self, i: usize) {
        self.nodes[i].thaw();
    }

    /// Start a killed node again on its port with its `nodes.conf`: it rejoins the cluster
    /// (as a replica of whoever took its slots), empty, since nothing is saved to disk.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].restart();
    }

    /// Wait until the slots node `i` served (when it was killed or frozen) are served by
    /// another node that every running node agrees on, and every running node reports
    /// `cluster_state:ok`. Returns that node. Panics after 60 s.
    pub fn wait_failover(&self, i: usize) -> usize {
        let slot = self
            .held
            .get(&i)
            .and_then(|s| s.first())
            .map(|&(a, _)| a)
            .expect("wait_failover is for a master that was killed or frozen");
        poll(
            WAIT,
            "the cluster failed over",
            || {
                let mut holder = None;
                for n in self.live() {
                    let view = parse_nodes(&n.cli(&["CLUSTER", "NODES"])?);
                    let h = view
                        .iter()
                        .find(|s| {
                            s.master
                                && !s.failed
                                && s.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
                        })?
                        .port;
                    if holder.is_some_and(|p| p != h) || h == self.nodes[i].port {
                        return None;
                    }
                    holder = Some(h);
                }
                self.all_ok().then_some(())?;
                holder.and_then(|p| self.index_of(p))
            },
            || self.describe(),
        )
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.running() && !n.frozen())
    }

    fn all_ok(&self) -> bool {
        self.live().all(|n| {
            n.cli(&["CLUSTER", "INFO"])
                .is_some_and(|i| i.contains("cluster_state:ok"))
        })
    }

    /// Wait until every running node reports `cluster_state:ok`, all 16384 slots are served by
    /// running masters, and every running replica's link to its master is up and synced.
    pub fn wait_healthy(&self) {
        poll(
            WAIT,
            "the cluster is healthy",
            || {
                if !self.all_ok() {
                    return None;
                }
                let view = self.view()?;
                let covered: u32 = view
                    .iter()
                    .filter(|s| s.master && !s.failed)
                    .filter(|s| {
                        self.index_of(s.port)
                            .is_some_and(|i| self.nodes[i].running())
                    })
                    .flat_map(|s| s.slots.iter())
                    .map(|&(a, b)| u32::from(b - a) + 1)
                    .sum();
                if covered != 16384 {
                    return None;
                }
                for n in self.live() {
                    let info = n.info("replication")?;
                    let get = |k: &str| info.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                    if get("role") == Some("slave")
                        && (get("master_link_status") != Some("up")
                            || get("master_sync_in_progress") != Some("0"))
                    {
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
        for (i, n) in self.nodes.iter().enumerate() {
            out.push_str(&format!(
                "node {i} port {} running {} frozen {}\n{}\n",
                n.port,
                n.running(),
                n.frozen(),
                n.cli(&["CLUSTER", "NODES"]).unwrap_or_default()
            ));
        }
        if let Some(n) = self.nodes.first() {
            out.push_str(&n.log_tail());
        }
        out
    }

    /// `redis-cli` against node `i` (None if it does not answer within 2 s), for tests that
    /// look at a node directly.
    pub fn cli(&self, i: usize, args: &[&str]) -> Option<String> {
        cli(self.nodes[i].port, args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_match_the_cluster_spec_examples() {
        // From the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }
}
