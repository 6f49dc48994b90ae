//! The shared conformance suite against a Redis Cluster of the test's own (3 masters, 3
//! replicas, from `redis-server` on loopback ports; one cluster for the whole binary, each
//! test under its own key prefix): every store operation works when the session, its user's
//! index and the fences live in different slots on different masters.

mod common;

use common::harness::RedisHarness;
use ratatoskr_redis::RedisConfig;
use ratatoskr_testkit::RedisCluster;

async fn harness() -> RedisHarness {
    let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .unwrap();
    let base = common::config("");
    let config = RedisConfig {
        cluster_nodes: cluster.addrs(),
        ..base
    };
    RedisHarness::new(config).await
}

ratatoskr_conformance::store_conformance!(harness);

/// The same suite in tracking mode: each `load` runs on the tracked connection to the master
/// serving its key's slot.
mod tracked {
    use super::*;

    async fn harness() -> RedisHarness {
        let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
            .await
            .unwrap();
        let config = RedisConfig {
            cluster_nodes: cluster.addrs(),
            tracking: true,
            ..common::config("")
        };
        RedisHarness::new(config).await
    }

    ratatoskr_conformance::store_conformance!(harness);
}
