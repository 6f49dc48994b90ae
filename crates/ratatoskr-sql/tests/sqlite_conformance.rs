//! The store conformance suite against SQLite, each case on a fresh database file.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::TempDb;
use ratatoskr_conformance::Harness;
use ratatoskr_core::{SessionKey, SessionStore};
use ratatoskr_sql::SqliteStore;

struct Sqlite {
    store: SqliteStore,
    // Declared last: dropped after the store.
    db: TempDb,
}

#[async_trait]
impl Harness for Sqlite {
    fn store(&self) -> Arc<dyn SessionStore> {
        Arc::new(self.store.clone())
    }

    async fn other_instance(&self) -> Arc<dyn SessionStore> {
        // A second pool (and writer queue) over the same file, as a second process would have.
        Arc::new(self.db.store().await)
    }

    async fn corrupt(&self, key: &SessionKey) {
        sqlx::query("UPDATE ratatoskr_sessions SET meta = X'01FFFF' WHERE session_key = ?1")
            .bind(&key.as_bytes()[..])
            .execute(self.store.pool())
            .await
            .expect("corrupt");
    }

    async fn index_entries(&self, user_id: &str) -> usize {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ratatoskr_sessions WHERE user_id = ?1")
                .bind(user_id)
                .fetch_one(self.store.pool())
                .await
                .expect("count index entries");
        n as usize
    }
}

async fn harness() -> Sqlite {
    let db = TempDb::new();
    let store = db.store().await;
    Sqlite { store, db }
}

ratatoskr_conformance::store_conformance!(harness);
