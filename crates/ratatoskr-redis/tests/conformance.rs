//! The shared conformance suite against a real Redis (the test command's shared server).

mod common;

use common::harness::RedisHarness;

async fn harness() -> RedisHarness {
    RedisHarness::new(common::config("")).await
}

ratatoskr_conformance::store_conformance!(harness);

/// The same suite in tracking mode: `load` then runs on the tracked RESP3 connection.
mod tracked {
    use super::*;

    async fn harness() -> RedisHarness {
        let mut config = common::config("");
        config.tracking = true;
        RedisHarness::new(config).await
    }

    ratatoskr_conformance::store_conformance!(harness);
}
