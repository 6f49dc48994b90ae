//! # ratatoskr
//!
//! Server-side web sessions for axum and tower: Redis in front, SQLite or PostgreSQL behind as
//! a fallback that really falls back, a per-process near cache kept fresh by Redis, CSRF
//! defences, per-user listing and revocation. This crate is the entry point: it re-exports what
//! an application needs from the `ratatoskr-*` crates, chosen by feature.
//!
//! | feature | default | brings |
//! |---|---|---|
//! | `axum` | yes | [`SessionLayer`], [`Session`], [`AuthUser`], [`CsrfToken`], refusal hooks ([`axum`] module) |
//! | `tiered` | yes | [`TieredStore`] (Redis + database) and [`connect`]; implies `redis` |
//! | `sqlite` | yes | [`SqlStore`], [`SqliteStore`] ([`sql`] module) |
//! | `redis` | via `tiered` | [`RedisStore`] ([`redis`] module) |
//! | `postgres` | no | [`PgStore`] (with `SqlStore`; the SQL crate builds both drivers today) |
//! | `tower-sessions` | no | [`RatatoskrStore`], a tower-sessions `SessionStore` (for axum-login too) |
//!
//! ## Redis + database in a dozen lines
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use ratatoskr::{RedisStore, Session, SessionError, SqlStore, TieredStore};
//!
//! async fn counter(session: Session) -> Result<String, SessionError> {
//!     let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
//!     session.insert("n", &n).await?;
//!     Ok(format!("{n} visits"))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let redis = RedisStore::builder("redis://127.0.0.1:6379/").connect_lazy()?;
//!     let database = SqlStore::builder("sqlite://data/sessions.db").connect().await?;
//!     let store = TieredStore::builder(redis, database).start().await?;
//!     let app = Router::new().route("/", get(counter)).layer(ratatoskr::layer(store));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! Examples, one idea each, are in `crates/ratatoskr/examples/`: Redis alone, tiered with SQLite,
//! tiered with PostgreSQL, a custom refusal page, typed session data, axum-login over the
//! tower-sessions adapter. Coming from tower-sessions: `docs/migrating.md`.
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;

pub use ratatoskr_core as core;
pub use ratatoskr_core::{
    AuditSink, Delta, Handle, ManagerConfig, MemoryStore, Record, SessionKey, SessionManager,
    SessionStore, StoreError, StoreResult, Token,
};

/// The Redis store: everything of `ratatoskr-redis`.
#[cfg(feature = "redis")]
pub mod redis {
    pub use ratatoskr_redis::*;
}
#[cfg(feature = "redis")]
pub use ratatoskr_redis::{RedisConfig, RedisStore, RedisStoreBuilder};

/// The SQL stores: everything of `ratatoskr-sql`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql {
    pub use ratatoskr_sql::*;
}
#[cfg(feature = "postgres")]
pub use ratatoskr_sql::PgStore;
#[cfg(feature = "sqlite")]
pub use ratatoskr_sql::SqliteStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use ratatoskr_sql::{SqlAudit, SqlOptions, SqlStore, SqlStoreBuilder};

/// Redis + database as one store: everything of `ratatoskr-tiered`.
#[cfg(feature = "tiered")]
pub mod tiered {
    pub use ratatoskr_tiered::*;
}
#[cfg(feature = "tiered")]
pub use ratatoskr_tiered::{TieredBuildError, TieredBuilder, TieredConfig, TieredStore};

/// The axum/tower layer: everything of `ratatoskr-axum`.
#[cfg(feature = "axum")]
pub mod axum {
    pub use ratatoskr_axum::*;
}
#[cfg(feature = "axum")]
pub use ratatoskr_axum::{
    AuthUser, CsrfConfig, CsrfToken, RefusalKind, RefusalRequest, RefusalResponder, Session,
    SessionConfig, SessionControl, SessionError, SessionLayer, SessionRefusal, SessionValue,
};

/// The tower-sessions adapter: everything of `ratatoskr-tower-sessions`.
#[cfg(feature = "tower-sessions")]
pub mod tower_sessions {
    pub use ratatoskr_tower_sessions::*;
}
#[cfg(feature = "tower-sessions")]
pub use ratatoskr_tower_sessions::RatatoskrStore;

/// A session layer over `store` with the default policy ([`ManagerConfig::default`]: 2 h idle,
/// 24 h absolute, 5 sessions per user) and the default, secure configuration
/// ([`SessionConfig::default`]: a `__Host-` cookie, CSRF defences on). For anything else, build
/// a [`SessionManager`] and call [`SessionLayer::new`].
///
/// ```
/// use axum::{Router, routing::get};
///
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(ratatoskr::layer(ratatoskr::MemoryStore::default()));
/// ```
#[cfg(feature = "axum")]
pub fn layer(store: impl SessionStore) -> SessionLayer {
    let manager = SessionManager::new(Arc::new(store), ManagerConfig::default());
    SessionLayer::new(manager, SessionConfig::default())
        .expect("the default session configuration is valid")
}

/// What [`connect`] could not do.
#[cfg(all(feature = "tiered", any(feature = "sqlite", feature = "postgres")))]
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The Redis URL or the database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The tiered store refused its configuration.
    #[error(transparent)]
    Build(#[from] TieredBuildError),
}

/// Redis at `redis_url` in front of the database at `database_url` (`sqlite://…` or
/// `postgres://…`), every setting at its default: Redis in tracking mode with the near cache
/// on, the outage journal in the database, a background reaper. The Redis connection is lazy:
/// the application starts (and serves from the database) while Redis is down.
///
/// The builders ([`RedisStore::builder`], [`SqlStore::builder`], [`TieredStore::builder`])
/// say what each default is and change any of them.
///
/// ```no_run
/// # async fn demo() -> Result<(), ratatoskr::ConnectError> {
/// let store = ratatoskr::connect("redis://127.0.0.1:6379/", "sqlite://data/sessions.db").await?;
/// # let _ = store; Ok(()) }
/// ```
#[cfg(all(feature = "tiered", any(feature = "sqlite", feature = "postgres")))]
pub async fn connect(redis_url: &str, database_url: &str) -> Result<TieredStore, ConnectError> {
    let redis = RedisStore::builder(redis_url).connect_lazy()?;
    let database = SqlStore::builder(database_url).connect().await?;
    Ok(TieredStore::builder(redis, database).start().await?)
}

#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeSnippets;
