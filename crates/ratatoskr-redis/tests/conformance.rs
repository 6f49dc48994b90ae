//! The shared conformance suite against a real Redis.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use ratatoskr_conformance::Harness;
use ratatoskr_core::{SessionKey, SessionStore};
use ratatoskr_redis::{META_FIELD, RedisStore};

struct RedisHarness {
    store: Arc<RedisStore>,
    prefix: String,
}

#[async_trait]
impl Harness for RedisHarness {
    fn store(&self) -> Arc<dyn SessionStore> {
        self.store.clone()
    }

    async fn other_instance(&self) -> Arc<dyn SessionStore> {
        // Its own connections, as a second application instance would have.
        let mut config = common::config(&self.prefix);
        config.tracking = self.store.tracking_connections().is_some();
        Arc::new(RedisStore::connect(config).await.unwrap())
    }

    async fn corrupt(&self, key: &SessionKey) {
        let mut con = common::raw_connection().await;
        let _: () = redis::cmd("HSET")
            .arg(self.store.session_key_name(key))
            .arg(META_FIELD)
            .arg(&[1u8, 0xff, 0xff][..])
            .query_async(&mut con)
            .await
            .unwrap();
    }

    async fn index_entries(&self, user_id: &str) -> usize {
        let mut con = common::raw_connection().await;
        redis::cmd("ZCARD")
            .arg(self.store.user_index_key_name(user_id))
            .query_async(&mut con)
            .await
            .unwrap()
    }
}

async fn harness() -> RedisHarness {
    let prefix = common::random_prefix();
    RedisHarness {
        store: Arc::new(common::store(&prefix).await),
        prefix,
    }
}

ratatoskr_conformance::store_conformance!(harness);

/// The same suite in tracking mode: `load` then runs on the tracked RESP3 connection.
mod tracked {
    use super::*;

    async fn harness() -> RedisHarness {
        let prefix = common::random_prefix();
        let (store, _rx) = RedisStore::connect_tracked(common::config(&prefix))
            .await
            .expect("the test Redis is reachable");
        RedisHarness {
            store: Arc::new(store),
            prefix,
        }
    }

    ratatoskr_conformance::store_conformance!(harness);
}
