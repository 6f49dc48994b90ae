//! The Redis a model sequence runs on: one test-owned `redis-server`, or a test-owned Redis
//! Cluster (3 masters, 3 replicas). The fault steps mean the closest thing each can do.

use ratatoskr_redis::RedisConfig;
use ratatoskr_testkit::{RedisCluster, RedisProcess};

/// One server or a cluster, with the model's fault steps.
pub enum Engine {
    Single(RedisProcess),
    Cluster {
        cluster: RedisCluster,
        /// Which master the next fault hits (they take turns).
        next: usize,
        frozen: Option<usize>,
    },
}

impl Engine {
    pub fn single() -> Engine {
        Engine::Single(RedisProcess::start())
    }

    pub fn cluster() -> Engine {
        Engine::Cluster {
            cluster: RedisCluster::start(),
            next: 0,
            frozen: None,
        }
    }

    /// A store configuration for this engine, tracking on (near caches in play).
    pub fn config(&self) -> RedisConfig {
        let mut c = match self {
            Engine::Single(p) => RedisConfig::new(p.url()),
            Engine::Cluster { cluster, .. } => RedisConfig::cluster(cluster.addrs()),
        };
        c.tracking = true;
        c
    }

    /// Empty every server, and forget any snapshot.
    pub fn flush_all(&self) {
        match self {
            Engine::Single(p) => {
                p.discard_snapshot();
                let c = redis::Client::open(p.url()).expect("url");
                let mut con = c.get_connection().expect("the test redis-server answers");
                let _: () = redis::cmd("FLUSHALL").query(&mut con).expect("FLUSHALL");
            }
            Engine::Cluster { cluster, .. } => {
                for m in cluster.masters() {
                    let out = cluster.cli(m, &["FLUSHALL"]).unwrap_or_default();
                    assert!(out.contains("OK"), "FLUSHALL on node {m}: {out}");
                }
            }
        }
    }

    /// A server loses everything: one server is SIGKILLed and restarted empty; on a cluster a
    /// master is SIGKILLed, its replica is promoted (with whatever it had replicated), and the
    /// killed node comes back empty as a replica.
    pub fn restart_empty(&mut self) {
        self.thaw();
        match self {
            Engine::Single(p) => {
                p.discard_snapshot();
                p.kill();
                p.restart();
            }
            Engine::Cluster { cluster, next, .. } => {
                let masters = cluster.masters();
                let victim = masters[*next % masters.len()];
                *next += 1;
                cluster.kill(victim);
                cluster.wait_failover(victim);
                cluster.restart(victim);
                cluster.wait_healthy();
            }
        }
    }

    /// One server saves a snapshot. Not modelled on a cluster (its nodes keep nothing on disk;
    /// a restart there is a failover, see [`restart_empty`](Self::restart_empty)).
    pub fn snapshot(&self) {
        if let Engine::Single(p) = self {
            p.snapshot();
        }
    }

    /// One server is SIGKILLed and restarts from its snapshot (older data, or none). On a
    /// cluster: as [`restart_empty`](Self::restart_empty) (a promoted replica is the
    /// cluster's way of coming back with older data).
    pub fn restart_from_snapshot(&mut self) {
        self.thaw();
        match self {
            Engine::Single(p) => {
                p.kill();
                p.restart();
            }
            Engine::Cluster { .. } => self.restart_empty(),
        }
    }

    /// SIGSTOP the server (on a cluster, a master: it may be failed over while frozen).
    pub fn freeze(&mut self) {
        match self {
            Engine::Single(p) => p.freeze(),
            Engine::Cluster {
                cluster,
                next,
                frozen,
            } => {
                let masters = cluster.masters();
                let victim = masters[*next % masters.len()];
                *next += 1;
                cluster.freeze(victim);
                *frozen = Some(victim);
            }
        }
    }

    /// SIGCONT what [`freeze`](Self::freeze) stopped (on a cluster, then wait until it is
    /// healthy again: the node may have rejoined as a replica).
    pub fn thaw(&mut self) {
        match self {
            Engine::Single(p) => p.thaw(),
            Engine::Cluster {
                cluster, frozen, ..
            } => {
                if let Some(i) = frozen.take() {
                    cluster.thaw(i);
                    cluster.wait_healthy();
                }
            }
        }
    }
}
