//! The conformance suite against Redis alone with a near cache in front
//! ([`NearCachedStore`]): the shared Redis, a fresh key prefix per case, tracking on. The second
//! instance has a near cache of its own, so the cross-instance cases check that notices keep
//! both caches right.

// The tracked connect future (Cluster and Sentinel modes) is deeper than the default limit.
#![recursion_limit = "256"]

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use ratatoskr_conformance::Harness;
use ratatoskr_core::{SessionKey, SessionStore, Token};
use ratatoskr_redis::{RedisConfig, RedisStore};
use ratatoskr_tiered::NearCachedStore;
use ratatoskr_tiered::near_cache::NearCacheConfig;

fn redis_url() -> String {
    std::env::var("RATATOSKR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

struct Cached {
    redis: RedisStore,
    store: Arc<NearCachedStore>,
}

async fn cached(config: RedisConfig) -> (RedisStore, Arc<NearCachedStore>) {
    let (redis, notices) = RedisStore::connect_tracked(config)
        .await
        .expect("Redis reachable");
    let store = NearCachedStore::new(
        Arc::new(redis.clone()),
        notices,
        &NearCacheConfig::default(),
    );
    (redis, Arc::new(store))
}

#[async_trait]
impl Harness for Cached {
    fn store(&self) -> Arc<dyn SessionStore> {
        self.store.clone()
    }

    async fn other_instance(&self) -> Arc<dyn SessionStore> {
        cached(self.redis.config().clone()).await.1
    }

    async fn corrupt(&self, key: &SessionKey) {
        support::corrupt_redis_meta(&self.redis, key).await;
    }

    fn index_lag(&self) -> std::time::Duration {
        // The Redis index's scores are whole seconds, rounded up (docs/redis.md).
        std::time::Duration::from_secs(1)
    }

    async fn index_entries(&self, user_id: &str) -> usize {
        let mut con = redis::Client::open(redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("Redis reachable");
        redis::cmd("ZCARD")
            .arg(self.redis.user_index_key_name(user_id))
            .query_async(&mut con)
            .await
            .unwrap()
    }
}

async fn harness() -> Cached {
    let mut config = RedisConfig::new(redis_url());
    config.key_prefix = format!("nc:{}:", Token::generate().key().handle());
    let (redis, store) = cached(config).await;
    Cached { redis, store }
}

ratatoskr_conformance::store_conformance!(harness);

/// Warm reads are served in process; a change through another instance reaches this one's
/// cache through the notice.
#[tokio::test]
async fn warm_reads_stay_in_process_and_another_instance_s_change_reaches_them() {
    use ratatoskr_core::{Delta, Record, now_ms};
    use std::time::Duration;
    let h = harness().await;
    let other = h.other_instance().await;
    let key = Token::generate().key();
    let r = Record::new(
        Some("ada".into()),
        now_ms(),
        Duration::from_secs(60),
        Duration::from_secs(600),
    );
    h.store.create(&key, &r).await.unwrap();
    assert!(h.store.load(&key).await.unwrap().is_some());
    assert_eq!(h.store.usage().0, 1, "cached after the first read");
    other
        .apply(&key, &Delta::default().set("x", b"1".to_vec()))
        .await
        .unwrap();
    h.redis.sync_invalidations().await.unwrap();
    let seen = h.store.load(&key).await.unwrap().unwrap();
    assert_eq!(seen.attrs.get("x").map(Vec::as_slice), Some(&b"1"[..]));
    other.destroy(&key).await.unwrap();
    h.redis.sync_invalidations().await.unwrap();
    assert!(h.store.load(&key).await.unwrap().is_none());
}
