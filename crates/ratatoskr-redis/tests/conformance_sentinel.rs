//! The shared conformance suite against a Sentinel-managed master of the test's own (1 master,
//! 2 replicas, 3 sentinels; one group for the whole binary, each test under its own key
//! prefix), reached through the `redis+sentinel://` URL form, with and without tracking.

mod common;

use common::harness::RedisHarness;
use ratatoskr_redis::RedisConfig;
use ratatoskr_testkit::RedisSentinel;

async fn config() -> RedisConfig {
    let group = tokio::task::spawn_blocking(RedisSentinel::shared)
        .await
        .unwrap();
    RedisConfig {
        url: group.url(),
        ..common::config("")
    }
}

async fn harness() -> RedisHarness {
    RedisHarness::new(config().await).await
}

ratatoskr_conformance::store_conformance!(harness);

/// The same suite in tracking mode: the tracked connection goes to the master the Sentinels
/// name.
mod tracked {
    use super::*;

    async fn harness() -> RedisHarness {
        let mut config = config().await;
        config.tracking = true;
        RedisHarness::new(config).await
    }

    ratatoskr_conformance::store_conformance!(harness);
}
