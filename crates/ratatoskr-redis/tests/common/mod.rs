//! Shared test helpers: a store over the test Redis with a random key prefix of its own.
#![allow(dead_code)]

use std::time::Duration;

use ratatoskr_core::token::random_bytes;
use ratatoskr_redis::{RedisConfig, RedisStore};

/// The Redis the tests use: `RATATOSKR_TEST_REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("RATATOSKR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

/// A fresh prefix, so tests sharing one Redis never see each other's keys.
pub fn random_prefix() -> String {
    let b: [u8; 6] = random_bytes();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("rt-test:{hex}:")
}

/// A configuration for tests: the test Redis, the given prefix, generous timeouts for a loaded
/// machine, and revocation markers that outlive a test but not by much.
pub fn config(prefix: &str) -> RedisConfig {
    RedisConfig {
        url: redis_url(),
        key_prefix: prefix.to_owned(),
        response_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        revocation_ttl: Duration::from_secs(120),
        ..RedisConfig::default()
    }
}

/// A store over the test Redis with the given prefix.
pub async fn store(prefix: &str) -> RedisStore {
    RedisStore::connect(config(prefix))
        .await
        .expect("the test Redis is reachable (set RATATOSKR_TEST_REDIS_URL)")
}

/// A plain connection to the test Redis, for looking under the hood.
pub async fn raw_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}
