//! Fresh, isolated databases for the tests: a SQLite file in its own temporary directory, or a
//! PostgreSQL schema of its own (selected through `search_path`), each removed on drop on a
//! best-effort basis.
#![allow(dead_code)]

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ratatoskr_core::token::random_bytes;
use ratatoskr_sql::{PgStore, SqlOptions, SqliteStore};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

/// The PostgreSQL server the tests use.
pub fn pg_url() -> String {
    std::env::var("RATATOSKR_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A random lowercase name with a prefix.
pub fn random_name(prefix: &str) -> String {
    let bytes: [u8; 8] = random_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}

/// A temporary directory holding one SQLite database file.
pub struct TempDb {
    pub dir: PathBuf,
    pub file: PathBuf,
}

impl TempDb {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(random_name("ratatoskr_sql_test"));
        let file = dir.join("sessions.db");
        TempDb { dir, file }
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.file.display())
    }

    pub async fn store(&self) -> SqliteStore {
        SqliteStore::connect(&self.url())
            .await
            .expect("open sqlite store")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        // The database file and its -wal/-shm companions.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL schema of its own.
pub struct PgSchema {
    pub name: String,
}

impl PgSchema {
    pub async fn new() -> Self {
        let name = random_name("ratatoskr_test");
        let mut admin = PgConnectOptions::from_str(&pg_url())
            .expect("RATATOSKR_TEST_PG_URL")
            .connect()
            .await
            .expect("connect to the test PostgreSQL server");
        sqlx::query(&format!("CREATE SCHEMA \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create schema");
        let _ = admin.close().await;
        PgSchema { name }
    }

    /// Connect options whose connections use this schema.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&pg_url())
            .expect("RATATOSKR_TEST_PG_URL")
            .options([("search_path", self.name.as_str())])
    }

    /// A URL whose connections use this schema.
    pub fn url(&self) -> String {
        let url = pg_url();
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-c%20search_path%3D{}", self.name)
    }

    /// A new pool over this schema.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(self.connect_options())
            .await
            .expect("connect to the test schema")
    }

    /// A new store (its own pool) over this schema.
    pub async fn store(&self) -> PgStore {
        PgStore::connect_with_options(self.connect_options(), &SqlOptions::default())
            .await
            .expect("open postgres store")
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a Tokio runtime: do the async cleanup on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let work = async {
                    let mut admin = PgConnectOptions::from_str(&pg_url())
                        .ok()?
                        .connect()
                        .await
                        .ok()?;
                    let _ = sqlx::query("SET lock_timeout = '5s'")
                        .execute(&mut admin)
                        .await;
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                    Some(())
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), work).await;
            });
        });
        let _ = cleanup.join();
    }
}
