//! The conformance suite against the tiers as production runs them on PostgreSQL: Redis (shared
//! server, a fresh key prefix per case, tracking on so the near cache is in play) in front of
//! PostgreSQL (a fresh schema per case), with the outage journal in that database.

mod support;

use std::sync::Arc;

use async_trait::async_trait;
use ratatoskr_conformance::Harness;
use ratatoskr_core::{SessionKey, SessionStore, Token};
use ratatoskr_redis::{RedisConfig, RedisStore};
use ratatoskr_sql::SqlStore;
use ratatoskr_tiered::{TieredConfig, TieredStore};

fn redis_url() -> String {
    std::env::var("RATATOSKR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn pg_url() -> String {
    std::env::var("RATATOSKR_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

struct Tiers {
    redis: RedisStore,
    sql: SqlStore,
    url: String,
    store: TieredStore,
}

async fn tiered(redis: &RedisStore, sql: &SqlStore) -> TieredStore {
    let t = TieredStore::new(
        Arc::new(redis.clone()),
        sql.store(),
        Arc::new(sql.journal()),
        redis.subscribe_invalidations(),
        TieredConfig::default(),
    );
    assert!(t.recover_now().await);
    t
}

#[async_trait]
impl Harness for Tiers {
    fn store(&self) -> Arc<dyn SessionStore> {
        Arc::new(self.store.clone())
    }

    async fn other_instance(&self) -> Arc<dyn SessionStore> {
        let mut config = self.redis.config().clone();
        config.tracking = true;
        let redis = RedisStore::connect(config).await.expect("redis");
        let sql = SqlStore::connect(&self.url).await.expect("postgres");
        Arc::new(tiered(&redis, &sql).await)
    }

    async fn corrupt(&self, key: &SessionKey) {
        support::corrupt_redis_meta(&self.redis, key).await;
        let SqlStore::Postgres(pg) = &self.sql else {
            unreachable!("a PostgreSQL harness")
        };
        sqlx::query("UPDATE ratatoskr_sessions SET meta = '\\x01ffff' WHERE session_key = $1")
            .bind(&key.as_bytes()[..])
            .execute(pg.pool())
            .await
            .expect("corrupt");
    }

    async fn index_entries(&self, user_id: &str) -> usize {
        let SqlStore::Postgres(pg) = &self.sql else {
            unreachable!("a PostgreSQL harness")
        };
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ratatoskr_sessions WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(pg.pool())
                .await
                .expect("count");
        n as usize
    }
}

async fn harness() -> Tiers {
    let schema = format!("tiers_{}", Token::generate().key().handle()).to_lowercase();
    let schema: String = schema
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let admin = sqlx::PgPool::connect(&pg_url())
        .await
        .expect("the test PostgreSQL server is reachable (scripts/test.sh starts it)");
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&admin)
        .await
        .expect("create schema");
    admin.close().await;
    let base = pg_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let mut config = RedisConfig::new(redis_url());
    config.key_prefix = format!("tp:{}:", Token::generate().key().handle());
    config.tracking = true;
    let redis = RedisStore::connect(config).await.expect("Redis reachable");
    let sql = SqlStore::connect(&url).await.expect("postgres");
    let store = tiered(&redis, &sql).await;
    Tiers {
        redis,
        sql,
        url,
        store,
    }
}

ratatoskr_conformance::store_conformance!(harness);
