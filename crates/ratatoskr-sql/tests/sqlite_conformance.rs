//! The store conformance suite against SQLite, each case on a fresh database file: once with
//! group commit (the default) and once with one transaction per write.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::TempDb;
use ratatoskr_conformance::Harness;
use ratatoskr_core::{SessionKey, SessionStore};
use ratatoskr_sql::{GroupCommit, SqlOptions, SqliteStore};

struct Sqlite {
    store: SqliteStore,
    group_commit: GroupCommit,
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
        Arc::new(open(&self.db, &self.group_commit).await)
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

async fn open(db: &TempDb, group_commit: &GroupCommit) -> SqliteStore {
    let options = SqlOptions {
        group_commit: group_commit.clone(),
        ..SqlOptions::default()
    };
    SqliteStore::connect_with(&db.url(), &options)
        .await
        .expect("open sqlite store")
}

async fn harness_with(group_commit: GroupCommit) -> Sqlite {
    let db = TempDb::new();
    let store = open(&db, &group_commit).await;
    assert_eq!(store.group_commit().max_batch, group_commit.max_batch);
    Sqlite {
        store,
        group_commit,
        db,
    }
}

async fn harness() -> Sqlite {
    harness_with(GroupCommit::default()).await
}

ratatoskr_conformance::store_conformance!(harness);

/// The same cases with group commit off.
mod one_transaction_per_write {
    use super::*;

    async fn harness() -> Sqlite {
        harness_with(GroupCommit::off()).await
    }

    ratatoskr_conformance::store_conformance!(harness);
}
