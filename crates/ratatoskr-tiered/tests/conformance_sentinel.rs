//! The conformance suite against the real tiers on a Sentinel-managed Redis of the test's own
//! (1 master, 2 replicas, 3 sentinels; reached through its `redis+sentinel://` URL, tracking
//! on so the near cache is in play) in front of SQLite.

#[path = "support/tiers_harness.rs"]
mod tiers_harness;

use ratatoskr_redis::RedisConfig;
use ratatoskr_testkit::RedisSentinel;
use tiers_harness::Tiers;

async fn harness() -> Tiers {
    let group = tokio::task::spawn_blocking(RedisSentinel::shared)
        .await
        .unwrap();
    let mut config = RedisConfig::new(group.url());
    config.tracking = true;
    Tiers::new(config).await
}

ratatoskr_conformance::store_conformance!(harness);
