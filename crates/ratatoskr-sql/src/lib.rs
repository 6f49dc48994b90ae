//! # ratatoskr-sql
//!
//! Session stores for Ratatoskr on a relational database, through sqlx: [`SqliteStore`] (the
//! embedded default) and [`PgStore`], both implementing [`SessionStore`] and both passing the
//! same `ratatoskr-conformance` suite as every other backend. Also here: [`SqlJournal`], the
//! durable outage journal the Redis+database tiers share, [`SqlAudit`], a durable audit trail,
//! and [`spawn_reaper`], which deletes expired rows in the background.
//!
//! The two stores are one implementation: [`Store<D>`](Store) over a [`Dialect`] (`Sqlite` or
//! `Postgres`). Every statement is written once; the dialect supplies only what really differs
//! (`max` / `GREATEST`, row locks, `BEGIN IMMEDIATE`, PostgreSQL's advisory locks and its
//! statements over arrays, connection settings, the migration files). [`SqlStore`] picks one
//! by URL at run time.
//!
//! ## Which backend?
//!
//! - **SQLite** when the application runs as one instance (or several processes on one host):
//!   nothing to operate, one file, microsecond reads. Writes are serialized by SQLite's single
//!   write lock; at session-store write rates (logins, attribute changes, rate-limited touches)
//!   that is rarely the limit.
//! - **PostgreSQL** when several instances on several hosts share the sessions, or the
//!   application's data already lives there. Every operation is one short transaction, or part
//!   of one shared with the writes made at the same moment (group commit).
//!
//! ## Group commit
//!
//! Durable writes (create, restore, delta, touch, rotate, destroy, journal) that wait at the
//! same time share one transaction and one commit ([`GroupCommit`], on by default), so under
//! load the database commits batches instead of single writes; a lone write goes straight to
//! the database in its caller's task. Every caller still gets its own result (`NotFound`,
//! `TooLarge`, … for its write alone), and its future resolves only once its write is
//! committed. [`SqliteStore::write_stats`] / [`PgStore::write_stats`] count transactions and
//! writes. See `docs/sql.md` for the design and measurements.
//!
//! Either way the application keeps its own tables (users, …) in the same database: get the
//! pool with [`SqliteStore::pool`] / [`PgStore::pool`]. Ratatoskr's tables all start with
//! `ratatoskr_`, and its migrations are tracked in its own table, so they never interfere with
//! the application's migrations.
//!
//! ## The schema
//!
//! Created and upgraded automatically on connect (see `docs/sql.md` for every column):
//!
//! | table | one row per | what for |
//! |---|---|---|
//! | `ratatoskr_sessions` | session | the key (SHA-256 of the token, never the token), public handle, user, times, and the encoded fixed part (`Meta`) |
//! | `ratatoskr_session_attrs` | attribute | a delta writes only the rows it changes, so parallel requests never clobber each other |
//! | `ratatoskr_user_revocations` | user revoked at least once | "log out everywhere" also refuses sessions whose creation began before it |
//! | `ratatoskr_audit` | audit event | the trail behind [`SqlAudit`] |
//! | `ratatoskr_redis_journal` | Redis invalidation still owed | the outage journal behind [`SqlJournal`] |
//! | `ratatoskr_schema_migrations` | migration | which schema versions are applied |
//!
//! `user_id` on the sessions table is the per-user index: listing and revoking a user's
//! sessions is an index lookup, and a user's expired rows are deleted whenever that user gets a
//! new session, so the index never outgrows the live sessions even if the reaper never runs.
//! Expiry is a stored column (`expires_at`, the nearer of the idle and absolute deadlines), so
//! an expired row is invisible to every read the moment it expires; the reaper only reclaims
//! space.
//!
//! ## Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use ratatoskr_core::{Record, SessionStore, Token, now_ms};
//! use ratatoskr_sql::{SqlOptions, SqlStore, spawn_reaper};
//!
//! # async fn demo() -> Result<(), ratatoskr_core::StoreError> {
//! // "sqlite://data/sessions.db" or "postgres://app@db/app", e.g. from configuration.
//! let url = std::env::var("DATABASE_URL").unwrap_or("sqlite://data/sessions.db".into());
//! let sql = SqlStore::connect_with(&url, &SqlOptions::default()).await?;
//! let store: Arc<dyn SessionStore> = sql.store();
//! let audit = sql.audit();
//! let reaper = spawn_reaper(store.clone(), Duration::from_secs(300));
//!
//! let token = Token::generate(); // goes into the cookie; the store only sees its key
//! let record = Record::new(Some("42".into()), now_ms(), Duration::from_secs(1800),
//!                          Duration::from_secs(86_400));
//! store.create(&token.key(), &record).await?;
//! assert!(store.load(&token.key()).await?.is_some());
//! # drop((audit, reaper)); Ok(()) }
//! ```
//!
//! An in-memory SQLite database is handy in tests (one connection; gone when the store is):
//!
//! ```
//! use std::time::Duration;
//! use ratatoskr_core::{Delta, Record, SessionStore, Token, now_ms};
//! use ratatoskr_sql::SqliteStore;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = SqliteStore::connect("sqlite::memory:").await?;
//! let key = Token::generate().key();
//! let record = Record::new(None, now_ms(), Duration::from_secs(60), Duration::from_secs(600));
//! store.create(&key, &record).await?;
//! store.apply(&key, &Delta::default().set("theme", b"dark".to_vec())).await?;
//! assert_eq!(store.load(&key).await?.unwrap().attrs["theme"], b"dark");
//! # Ok::<(), ratatoskr_core::StoreError>(())
//! # }).unwrap();
//! ```
//!
//! ## Errors
//!
//! Database failures are [`StoreError::Backend`] naming the backend (`"sqlite"` or
//! `"postgres"`); connecting is bounded by [`SqlOptions::acquire_timeout`], so a database that
//! is down is an error within seconds, not a hang. Times are the application's clock
//! ([`now_ms`]); instances sharing a PostgreSQL database should keep their clocks in sync (NTP),
//! as a skew of `s` milliseconds moves expiry by up to `s`.
#![warn(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use ratatoskr_core::{Limits, SessionStore, StoreError, StoreResult};

mod audit;
mod builder;
mod common;
mod dialect;
mod driver;
mod group;
mod journal;
mod migrate;
mod postgres;
mod sqlite;
mod store;
mod write;

pub use audit::{HOUR_MS, HourlyCount, SqlAudit};
pub use builder::{DEFAULT_REAP_EVERY, SqlStoreBuilder};
pub use dialect::Dialect;
pub use group::{GroupCommit, WriteStats};
pub use journal::SqlJournal;
pub use migrate::SCHEMA_VERSION;
pub use store::Store;

use dialect::either;

/// The SQLite session store: the embedded default (see [`Store`]; SQLite specifics:
/// `connect_with_options`, `journal_mode`).
///
/// ```no_run
/// # async fn demo() -> Result<(), ratatoskr_core::StoreError> {
/// use ratatoskr_sql::SqliteStore;
///
/// // Creates the file and its directory if missing, and applies migrations.
/// let store = SqliteStore::connect("sqlite://data/sessions.db").await?;
/// // The application's own tables can live in the same file.
/// sqlx::query("CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY)")
///     .execute(store.pool())
///     .await
///     .map_err(|e| ratatoskr_core::StoreError::backend("sqlite", e))?;
/// # Ok(()) }
/// ```
pub type SqliteStore = Store<Sqlite>;

/// The PostgreSQL session store, in the connection's current schema (see [`Store`];
/// PostgreSQL specifics: `connect_with_options`).
///
/// ```no_run
/// # async fn demo() -> Result<(), ratatoskr_core::StoreError> {
/// use ratatoskr_sql::PgStore;
///
/// let store = PgStore::connect("postgres://app@db.internal/app").await?;
/// // The application's own tables live in the same database.
/// let users: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables")
///     .fetch_one(store.pool())
///     .await
///     .map_err(|e| ratatoskr_core::StoreError::backend("postgres", e))?;
/// # let _ = users; Ok(()) }
/// ```
pub type PgStore = Store<Postgres>;

#[doc(no_inline)]
pub use ratatoskr_core::now_ms;
#[doc(no_inline)]
pub use sqlx::{PgPool, Postgres, Sqlite, SqlitePool};

/// How many expired rows one reaping statement deletes.
const REAP_BATCH: i64 = 1_000;

/// Connection and size settings shared by both stores.
///
/// ```
/// use std::time::Duration;
/// use ratatoskr_sql::SqlOptions;
///
/// let options = SqlOptions { max_connections: 4, acquire_timeout: Duration::from_secs(2),
///                            ..SqlOptions::default() };
/// # let _ = options;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlOptions {
    /// Size limits enforced on what the store is asked to keep.
    pub limits: Limits,
    /// Most connections in the pool (an in-memory SQLite database always uses one).
    pub max_connections: u32,
    /// How long connecting, or waiting for a pooled connection, may take before the operation
    /// fails with [`StoreError::Backend`].
    pub acquire_timeout: Duration,
    /// SQLite only: how long a writer waits for another process's write lock.
    pub sqlite_busy_timeout: Duration,
    /// Group commit: durable writes waiting at the same time share one transaction (on by
    /// default; [`GroupCommit::off`] for one transaction per write).
    pub group_commit: GroupCommit,
    /// PostgreSQL only: the server cancels any statement running longer than this
    /// (`statement_timeout`, set when each connection starts), so a server that accepts
    /// connections but stops getting work done fails operations within this bound instead of
    /// holding them. `None` keeps the server's setting. Not applied to pools passed to
    /// `from_pool`.
    pub pg_statement_timeout: Option<Duration>,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            limits: Limits::default(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(5),
            group_commit: GroupCommit::default(),
            pg_statement_timeout: Some(Duration::from_secs(5)),
        }
    }
}

/// Either SQL store, chosen by URL scheme at run time.
#[derive(Clone, Debug)]
pub enum SqlStore {
    /// A SQLite database.
    Sqlite(SqliteStore),
    /// A PostgreSQL database.
    Postgres(PgStore),
}

/// Which backend a database URL names, or an error naming only its scheme (the URL may carry
/// a password).
fn scheme(url: &str) -> StoreResult<&'static str> {
    let lower = url.trim_start().to_ascii_lowercase();
    if lower.starts_with("sqlite:") {
        Ok("sqlite")
    } else if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        Ok("postgres")
    } else {
        let shown: String = lower
            .split(':')
            .next()
            .filter(|s| lower.contains(':') && !s.is_empty())
            .map(|s| s.chars().take(20).collect())
            .unwrap_or_else(|| "(none)".into());
        Err(StoreError::Backend {
            backend: "sql",
            message: format!(
                "unsupported database URL scheme `{shown}`: use `sqlite:` (e.g. \
                 sqlite://data/sessions.db) or `postgres://`"
            ),
        })
    }
}

impl SqlStore {
    /// Connect to `url` with default options: `sqlite:…` opens (creating if missing) a SQLite
    /// database, `postgres://…` or `postgresql://…` connects to PostgreSQL; anything else is an
    /// error. Migrations are applied.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, &SqlOptions::default()).await
    }

    /// [`SqlStore::connect`] with options.
    pub async fn connect_with(url: &str, options: &SqlOptions) -> StoreResult<Self> {
        match scheme(url)? {
            "sqlite" => Ok(SqlStore::Sqlite(
                SqliteStore::connect_with(url, options).await?,
            )),
            _ => Ok(SqlStore::Postgres(
                PgStore::connect_with(url, options).await?,
            )),
        }
    }

    /// The store, to hand to a session manager.
    pub fn store(&self) -> Arc<dyn SessionStore> {
        either!(self, SqlStore, s => Arc::new(s.clone()))
    }

    /// An audit sink in the same database.
    pub fn audit(&self) -> SqlAudit {
        either!(self, SqlStore, s => s.audit())
    }

    /// The outage journal in the same database, for the tiered store (its writes share the
    /// store's group-commit writer).
    pub fn journal(&self) -> SqlJournal {
        either!(self, SqlStore, s => s.journal())
    }

    /// Write transactions committed and writes carried (see [`WriteStats`]).
    pub fn write_stats(&self) -> WriteStats {
        either!(self, SqlStore, s => s.write_stats())
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        either!(self, SqlStore, s => s.backend_name())
    }

    /// Find a live session by its public handle (see [`Store::find_by_handle`]).
    pub async fn find_by_handle(
        &self,
        handle: &ratatoskr_core::Handle,
    ) -> StoreResult<Option<ratatoskr_core::SessionSummary>> {
        either!(self, SqlStore, s => s.find_by_handle(handle).await)
    }
}

/// Connect to the database at `url` (`sqlite:…` or `postgres://…`) and return it as a session
/// store; any other scheme is a [`StoreError::Backend`] naming it. See [`SqlStore::connect`].
pub async fn connect_any(url: &str) -> StoreResult<Arc<dyn SessionStore>> {
    Ok(SqlStore::connect(url).await?.store())
}

/// Reap expired sessions every `every` in a background task, logging how many rows each round
/// removed. Reaping only reclaims space: expired sessions are already invisible. Abort the
/// returned handle to stop it.
///
/// Must be called within a Tokio runtime.
pub fn spawn_reaper(store: Arc<dyn SessionStore>, every: Duration) -> tokio::task::JoinHandle<()> {
    let every = every.max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate: let the application start first
        loop {
            ticks.tick().await;
            let backend = store.backend_name();
            match store.reap().await {
                Ok(0) => tracing::debug!(backend, "reaper: no expired sessions"),
                Ok(removed) => tracing::info!(backend, removed, "reaper removed expired sessions"),
                Err(error) => tracing::warn!(backend, %error, "reaper failed; will retry"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_recognised_and_others_refused_without_echoing_the_url() {
        assert_eq!(scheme("sqlite://x.db").ok(), Some("sqlite"));
        assert_eq!(scheme("sqlite::memory:").ok(), Some("sqlite"));
        assert_eq!(scheme("postgres://u@h/d").ok(), Some("postgres"));
        assert_eq!(scheme("PostgreSQL://u@h/d").ok(), Some("postgres"));
        let err = scheme("mysql://user:hunter2@host/db").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`mysql`"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(err.is_backend());
        assert!(scheme("").is_err());
        assert!(
            scheme("just-a-path.db")
                .unwrap_err()
                .to_string()
                .contains("(none)")
        );
    }
}
