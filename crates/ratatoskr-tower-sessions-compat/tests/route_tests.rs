//! tower-sessions' own route tests — the 13 cases of `route_tests!` in the published crate's
//! `tests/common/mod.rs` (the release in `Cargo.lock`, found by `build.rs`) — over
//! `RatatoskrStore`, on every Ratatoskr store: memory, SQLite, Redis, and the tiered store
//! (Redis with its near cache, in front of SQLite or PostgreSQL).

#[macro_use]
mod common {
    include!(env!("TOWER_SESSIONS_ROUTE_TESTS"));
}

use std::sync::atomic::{AtomicU64, Ordering};

use ratatoskr_tower_sessions::RatatoskrStore;

fn redis_url() -> String {
    std::env::var("RATATOSKR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn pg_url() -> String {
    std::env::var("RATATOSKR_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A key prefix of its own for each test's Redis data.
fn prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "rt-ts-{}-{nanos}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What the upstream `memory_store_tests` do with `MemoryStore`, with the adapter instead.
fn app_over(
    store: RatatoskrStore,
    max_age: Option<time::Duration>,
    domain: Option<String>,
) -> axum::Router {
    let session_manager = tower_sessions::SessionManagerLayer::new(store).with_secure(true);
    common::build_app(session_manager, max_age, domain)
}

async fn sqlite() -> ratatoskr_sql::SqlStore {
    ratatoskr_sql::SqlStore::builder("sqlite::memory:")
        .without_reaper()
        .connect()
        .await
        .unwrap()
}

async fn tiered(database: ratatoskr_sql::SqlStore) -> ratatoskr_tiered::TieredStore {
    let redis = ratatoskr_redis::RedisStore::builder(redis_url())
        .key_prefix(prefix())
        .connect()
        .await
        .unwrap();
    let store = ratatoskr_tiered::TieredStore::builder(redis, database)
        .start()
        .await
        .unwrap();
    assert!(store.health().near_cache.is_some(), "the near cache is on");
    store
}

mod memory {
    async fn app(max_age: Option<time::Duration>, domain: Option<String>) -> axum::Router {
        let store = super::RatatoskrStore::new(ratatoskr_core::MemoryStore::default());
        super::app_over(store, max_age, domain)
    }
    route_tests!(app);
}

mod sqlite {
    async fn app(max_age: Option<time::Duration>, domain: Option<String>) -> axum::Router {
        let store = super::RatatoskrStore::from_arc(super::sqlite().await.store());
        super::app_over(store, max_age, domain)
    }
    route_tests!(app);
}

mod redis {
    async fn app(max_age: Option<time::Duration>, domain: Option<String>) -> axum::Router {
        let redis = ratatoskr_redis::RedisStore::builder(super::redis_url())
            .key_prefix(super::prefix())
            .tracking(false)
            .connect()
            .await
            .unwrap();
        super::app_over(super::RatatoskrStore::new(redis), max_age, domain)
    }
    route_tests!(app);
}

mod tiered_sqlite {
    async fn app(max_age: Option<time::Duration>, domain: Option<String>) -> axum::Router {
        let store = super::tiered(super::sqlite().await).await;
        super::app_over(super::RatatoskrStore::new(store), max_age, domain)
    }
    route_tests!(app);
}

mod tiered_postgres {
    async fn app(max_age: Option<time::Duration>, domain: Option<String>) -> axum::Router {
        let pg = ratatoskr_sql::SqlStore::builder(super::pg_url())
            .without_reaper()
            .max_connections(2)
            .connect()
            .await
            .unwrap();
        super::app_over(
            super::RatatoskrStore::new(super::tiered(pg).await),
            max_age,
            domain,
        )
    }
    route_tests!(app);
}
