//! The store conformance suite against PostgreSQL, each case in a fresh schema.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::PgSchema;
use ratatoskr_conformance::Harness;
use ratatoskr_core::{SessionKey, SessionStore};
use ratatoskr_sql::PgStore;

struct Postgres {
    store: PgStore,
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
        Arc::new(self.schema.store().await)
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

async fn harness() -> Postgres {
    let schema = PgSchema::new().await;
    let store = schema.store().await;
    Postgres { store, schema }
}

ratatoskr_conformance::store_conformance!(harness);
