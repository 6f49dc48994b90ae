//! The conformance harness for a [`RedisStore`] on any deployment (one server, a cluster,
//! Sentinel): it looks under the hood through the store's own connection.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ratatoskr_conformance::Harness;
use ratatoskr_core::{SessionKey, SessionStore};
use ratatoskr_redis::{META_FIELD, RedisConfig, RedisStore};

pub struct RedisHarness {
    pub store: Arc<RedisStore>,
    pub config: RedisConfig,
}

impl RedisHarness {
    /// A store for `config` (tracking as the config says), with a fresh key prefix.
    pub async fn new(mut config: RedisConfig) -> Self {
        config.key_prefix = super::random_prefix();
        let store = RedisStore::connect(config.clone())
            .await
            .expect("the test Redis answers");
        RedisHarness {
            store: Arc::new(store),
            config,
        }
    }
}

#[async_trait]
impl Harness for RedisHarness {
    fn store(&self) -> Arc<dyn SessionStore> {
        self.store.clone()
    }

    async fn other_instance(&self) -> Arc<dyn SessionStore> {
        // Its own connections, as a second application instance would have.
        Arc::new(RedisStore::connect(self.config.clone()).await.unwrap())
    }

    async fn corrupt(&self, key: &SessionKey) {
        let _: () = self
            .store
            .raw_command(
                redis::cmd("HSET")
                    .arg(self.store.session_key_name(key))
                    .arg(META_FIELD)
                    .arg(&[1u8, 0xff, 0xff][..]),
            )
            .await
            .unwrap();
    }

    fn index_lag(&self) -> Duration {
        // Index scores are whole seconds, rounded up.
        Duration::from_secs(1)
    }

    async fn index_entries(&self, user_id: &str) -> usize {
        self.store
            .raw_command(redis::cmd("ZCARD").arg(self.store.user_index_key_name(user_id)))
            .await
            .unwrap()
    }
}
