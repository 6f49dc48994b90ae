//! Persistence: the application's own tables (users, platform connections, login throttling,
//! analytics), in the same database as the sessions, one module per table family.
//!
//! One SQL text serves both backends: sqlx's SQLite driver accepts PostgreSQL's `$N`
//! placeholders, integers are 64-bit on both sides (`INTEGER` / `BIGINT`), booleans are stored
//! as 0/1 and blobs are `BLOB` / `BYTEA`. Only the DDL differs: it lives in `app/migrations/`,
//! one directory per backend, applied by `sqlx::migrate!`. Tables start with `app_`, so they
//! never meet Ratatoskr's `ratatoskr_` tables (whose migrations the library tracks in its own
//! table, leaving sqlx's `_sqlx_migrations` to the application).

mod analytics;
mod platforms;
mod pool;
mod throttle;
mod users;

pub use analytics::{AuditCount, LoginCount, LoginResult, Sample};
pub use pool::{Db, Inserted};
pub use throttle::Attempt;
