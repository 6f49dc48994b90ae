//! [`RedisConfig`]: where Redis is (one server, a Cluster, or the master Sentinels name) and
//! what the store enforces.

use std::fmt;
use std::time::Duration;

use ratatoskr_core::codec::Limits;
use redis::RedisResult;

use crate::conn::{self, SENTINEL_SCHEME, Topology};

/// How [`RedisStore`](crate::RedisStore) connects and what it enforces.
#[derive(Clone)]
pub struct RedisConfig {
    /// Where Redis is: `redis://[:password@]host:port/[db]` for one server, or
    /// `redis+sentinel://[[user]:password@]host:port[,host:port…]/<master-name>[/db]` for the
    /// master a group of Sentinels names (see [`RedisConfig::sentinel`]). Ignored when
    /// [`cluster_nodes`](Self::cluster_nodes) is not empty.
    pub url: String,
    /// Redis Cluster mode when not empty: seed nodes, each `host:port` or
    /// `redis://[:password@]host:port` (see [`RedisConfig::cluster`]). Default empty.
    pub cluster_nodes: Vec<String>,
    /// Prepended to every key this store writes, so several applications (or tests) can share
    /// one Redis. Default `rt:`; keep it short, it is part of every session key.
    pub key_prefix: String,
    /// The longest any one store operation may take, connection re-establishment included,
    /// before it fails with [`StoreError::Backend`](ratatoskr_core::StoreError::Backend). Default 500 ms.
    pub response_timeout: Duration,
    /// The longest [`RedisStore::connect`](crate::RedisStore::connect) waits for the first connection (and each later
    /// reconnection attempt may take). Default 2 s.
    pub connect_timeout: Duration,
    /// How long a user's revocation marker is kept at least. It must be at least the longest
    /// absolute timeout you give sessions: a session created before a revoke-all is refused for
    /// this long, after which it would have expired anyway. Default 24 h (the manager's default
    /// absolute timeout).
    pub revocation_ttl: Duration,
    /// Size limits on records, attribute names and user ids.
    pub limits: Limits,
    /// Client-side caching support (default off): `load` then runs on a connection of its own
    /// with RESP3 `CLIENT TRACKING ON`, and every change to a session read through it is
    /// announced on [`RedisStore::subscribe_invalidations`](crate::RedisStore::subscribe_invalidations). See [`RedisStore::connect_tracked`](crate::RedisStore::connect_tracked).
    pub tracking: bool,
    /// How often the tracked connection is pinged (tracking mode only; zero: never). A ping
    /// that fails or takes longer than [`response_timeout`](Self::response_timeout) declares
    /// the connection lost (and sends [`Invalidation::All`](ratatoskr_core::Invalidation::All)): this bounds how long a silently
    /// broken link can hide missed notices. Default 1 s.
    pub tracking_heartbeat: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/".into(),
            cluster_nodes: Vec::new(),
            key_prefix: "rt:".into(),
            response_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            revocation_ttl: Duration::from_secs(24 * 3600),
            limits: Limits::default(),
            tracking: false,
            tracking_heartbeat: Duration::from_secs(1),
        }
    }
}

impl RedisConfig {
    /// The defaults, for the Redis at `url`: one server (`redis://…`) or a Sentinel-managed
    /// master (`redis+sentinel://h:p,h:p/<master-name>`).
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        }
    }

    /// The defaults, for a Redis Cluster reached through `nodes` (seed nodes, each `host:port`
    /// or `redis://[:password@]host:port`; any few of the cluster's nodes will do, the client
    /// learns the rest). Environment form: [`RedisConfig::cluster_from_list`].
    pub fn cluster<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> Self {
        RedisConfig {
            cluster_nodes: nodes.into_iter().map(Into::into).collect(),
            ..RedisConfig::default()
        }
    }

    /// [`RedisConfig::cluster`] from a comma-separated list (`REDIS_CLUSTER_NODES`):
    /// `host:port,host:port,…`; blanks around entries are ignored, empty entries skipped.
    pub fn cluster_from_list(list: &str) -> Self {
        Self::cluster(
            list.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        )
    }

    /// The defaults, for the master the Sentinels at `sentinels` (`host:port` each) know as
    /// `master_name`: the same as [`RedisConfig::new`] with
    /// `redis+sentinel://host:port,host:port/<master_name>`. The store asks the Sentinels
    /// for the master when it connects and again after a connection is lost or the server it
    /// reaches has become a replica (a failover).
    pub fn sentinel<S: AsRef<str>>(
        sentinels: impl IntoIterator<Item = S>,
        master_name: &str,
    ) -> Self {
        let hosts: Vec<String> = sentinels
            .into_iter()
            .map(|s| s.as_ref().trim().to_owned())
            .collect();
        Self::new(format!(
            "{SENTINEL_SCHEME}{}/{master_name}",
            hosts.join(",")
        ))
    }

    /// Which kind of deployment this configuration names.
    pub(crate) fn topology(&self) -> RedisResult<Topology> {
        if !self.cluster_nodes.is_empty() {
            Ok(Topology::Cluster(
                self.cluster_nodes
                    .iter()
                    .map(|n| {
                        if n.contains("://") {
                            n.clone()
                        } else {
                            format!("redis://{n}")
                        }
                    })
                    .collect(),
            ))
        } else if self.url.starts_with(SENTINEL_SCHEME) {
            conn::parse_sentinel_url(&self.url)
        } else {
            Ok(Topology::Single(self.url.clone()))
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field(
                "cluster_nodes",
                &self
                    .cluster_nodes
                    .iter()
                    .map(|n| redact_url(n))
                    .collect::<Vec<_>>(),
            )
            .field("key_prefix", &self.key_prefix)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("revocation_ttl", &self.revocation_ttl)
            .field("limits", &self.limits)
            .field("tracking", &self.tracking)
            .field("tracking_heartbeat", &self.tracking_heartbeat)
            .finish()
    }
}

/// The URL without its credentials, for logs.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://<redacted>@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_node_list_skips_blanks_and_empty_entries() {
        let c =
            RedisConfig::cluster_from_list(" 127.0.0.1:7000, ,127.0.0.1:7001,,\t127.0.0.1:7002 ,");
        assert_eq!(
            c.cluster_nodes,
            ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
        );
        assert!(
            RedisConfig::cluster_from_list(" , ")
                .cluster_nodes
                .is_empty()
        );
    }

    #[test]
    fn a_sentinel_config_names_the_sentinels_and_the_master_in_its_url() {
        let c = RedisConfig::sentinel([" 127.0.0.1:26379", "127.0.0.1:26380 "], "mymaster");
        assert_eq!(
            c.url,
            "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster"
        );
        assert!(c.cluster_nodes.is_empty());
        assert_eq!(c.key_prefix, RedisConfig::default().key_prefix);
    }
}
