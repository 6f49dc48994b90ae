//! The conformance suite against the real tiers on a Redis Cluster of the test's own (3
//! masters, 3 replicas; one cluster for the binary, a fresh key prefix per case; tracking on,
//! one tracked connection per master, so the near cache is in play) in front of SQLite.

#[path = "support/tiers_harness.rs"]
mod tiers_harness;

use ratatoskr_redis::RedisConfig;
use ratatoskr_testkit::RedisCluster;
use tiers_harness::Tiers;

async fn harness() -> Tiers {
    let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .unwrap();
    let mut config = RedisConfig::cluster(cluster.addrs());
    config.tracking = true;
    Tiers::new(config).await
}

ratatoskr_conformance::store_conformance!(harness);
