//! Shared test helpers: a store over the test Redis with a random key prefix of its own.
#![allow(dead_code)]

pub mod harness;

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

/// A free port (nothing listens on it once this returns).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The test kit's message (`ratatoskr_testkit::REDIS_SERVER_MISSING`) for a `redis-server` that
/// cannot be started: the test fails, it never passes by skipping.
pub const REDIS_SERVER_MISSING: &str = "redis-server is installed (scripts/test.sh installs it)";

/// A child `redis-server` on a free port, killed when dropped.
pub struct OwnRedis {
    pub child: std::process::Child,
    pub port: u16,
}

impl OwnRedis {
    /// Start it; panics with [`REDIS_SERVER_MISSING`] if `redis-server` cannot be run.
    pub fn start(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect(REDIS_SERVER_MISSING);
        OwnRedis { child, port }
    }

    pub async fn wait_ready(&self) {
        let url = format!("redis://127.0.0.1:{}/", self.port);
        for _ in 0..100 {
            if let Ok(client) = redis::Client::open(url.as_str())
                && let Ok(mut con) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING").query_async::<()>(&mut con).await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Send the server a signal (`KILL`, `STOP`, `CONT`).
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} failed");
    }

    /// `kill -9` and reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
