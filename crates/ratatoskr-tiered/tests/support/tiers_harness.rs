//! The conformance harness for the real tiers over any Redis deployment (one server, a
//! cluster, Sentinel) in front of SQLite (a fresh file per case): it reaches Redis through the
//! store's own connection, so the same harness serves every topology.

use std::sync::Arc;

use async_trait::async_trait;
use ratatoskr_conformance::Harness;
use ratatoskr_core::{MemoryJournal, SessionKey, SessionStore, Token};
use ratatoskr_redis::{RedisConfig, RedisStore};
use ratatoskr_sql::SqliteStore;
use ratatoskr_tiered::{TieredConfig, TieredStore};

pub struct Tiers {
    redis: RedisStore,
    sql: SqliteStore,
    journal: Arc<MemoryJournal>,
    store: TieredStore,
    dir: std::path::PathBuf,
}

impl Drop for Tiers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn tiered(redis: &RedisStore, sql: &SqliteStore, journal: Arc<MemoryJournal>) -> TieredStore {
    let t = TieredStore::new(
        Arc::new(redis.clone()),
        Arc::new(sql.clone()),
        journal,
        redis.subscribe_invalidations(),
        TieredConfig::default(),
    );
    assert!(t.recover_now().await);
    t
}

impl Tiers {
    /// Tiers over the Redis `config` names (with a fresh key prefix) and a new SQLite file.
    pub async fn new(mut config: RedisConfig) -> Tiers {
        let dir = std::env::temp_dir().join(format!(
            "ratatoskr-tiers-{}",
            Token::generate().key().handle()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        config.key_prefix = format!("t:{}:", Token::generate().key().handle());
        let redis = RedisStore::connect(config).await.expect("Redis reachable");
        let sql = SqliteStore::connect(&format!("sqlite://{}", dir.join("s.db").display()))
            .await
            .expect("sqlite");
        let journal = Arc::new(MemoryJournal::default());
        let store = tiered(&redis, &sql, journal.clone()).await;
        Tiers {
            redis,
            sql,
            journal,
            store,
            dir,
        }
    }
}

#[async_trait]
impl Harness for Tiers {
    fn store(&self) -> Arc<dyn SessionStore> {
        Arc::new(self.store.clone())
    }

    async fn other_instance(&self) -> Arc<dyn SessionStore> {
        let redis = RedisStore::connect(self.redis.config().clone())
            .await
            .expect("redis");
        let sql = SqliteStore::connect(&format!("sqlite://{}", self.dir.join("s.db").display()))
            .await
            .expect("sqlite");
        Arc::new(tiered(&redis, &sql, self.journal.clone()).await)
    }

    async fn corrupt(&self, key: &SessionKey) {
        let _: () = self
            .redis
            .raw_command(
                redis::cmd("HSET")
                    .arg(self.redis.session_key_name(key))
                    .arg(ratatoskr_redis::META_FIELD)
                    .arg(&[1u8, 0xff, 0xff][..]),
            )
            .await
            .expect("corrupt the Redis copy");
        // The notice barrier (see `support::corrupt_redis_meta`).
        self.redis.ping().await.expect("the notice barrier");
        sqlx::query("UPDATE ratatoskr_sessions SET meta = X'01FFFF' WHERE session_key = ?1")
            .bind(&key.as_bytes()[..])
            .execute(self.sql.pool())
            .await
            .expect("corrupt");
    }

    async fn index_entries(&self, user_id: &str) -> usize {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ratatoskr_sessions WHERE user_id = ?1")
                .bind(user_id)
                .fetch_one(self.sql.pool())
                .await
                .expect("count");
        n as usize
    }
}
