//! The store conformance suite against PostgreSQL, each case in a fresh schema: once with group
//! commit (the default) and once with one transaction per write.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::PgSchema;
use ratatoskr_conformance::Harness;
use ratatoskr_core::{SessionKey, SessionStore};
use ratatoskr_sql::{GroupCommit, PgStore, SqlOptions};

struct Postgres {
    store: PgStore,
    group_commit: GroupCommit,
    // Declared last: dropped after the store.
    schema: PgSchema,
}

#[async_trait]
impl Harness for Postgres {
    fn store(&self) -> Arc<dyn SessionStore> {
        Arc::new(self.store.clone())
    }

    async fn other_instance(&self) -> Arc<dyn SessionStore> {
        // A second pool over the same schema, as a second application instance would have.
        Arc::new(open(&self.schema, &self.group_commit).await)
    }

    async fn corrupt(&self, key: &SessionKey) {
        sqlx::query(
            "UPDATE ratatoskr_sessions SET meta = '\\x01ffff'::bytea WHERE session_key = $1",
        )
        .bind(&key.as_bytes()[..])
        .execute(self.store.pool())
        .await
        .expect("corrupt");
    }

    async fn index_entries(&self, user_id: &str) -> usize {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ratatoskr_sessions WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(self.store.pool())
                .await
                .expect("count index entries");
        n as usize
    }
}

async fn open(schema: &PgSchema, group_commit: &GroupCommit) -> PgStore {
    let options = SqlOptions {
        group_commit: group_commit.clone(),
        ..SqlOptions::default()
    };
    PgStore::connect_with_options(schema.connect_options(), &options)
        .await
        .expect("open postgres store")
}

async fn harness_with(group_commit: GroupCommit) -> Postgres {
    let schema = PgSchema::new().await;
    let store = open(&schema, &group_commit).await;
    assert_eq!(store.group_commit().max_batch, group_commit.max_batch);
    Postgres {
        store,
        group_commit,
        schema,
    }
}

async fn harness() -> Postgres {
    harness_with(GroupCommit::default()).await
}

ratatoskr_conformance::store_conformance!(harness);

/// The same cases with group commit off.
mod one_transaction_per_write {
    use super::*;

    async fn harness() -> Postgres {
        harness_with(GroupCommit::off()).await
    }

    ratatoskr_conformance::store_conformance!(harness);
}
