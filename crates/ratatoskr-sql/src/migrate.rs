//! Versioned schema migrations, applied automatically when a store connects.
//!
//! Ratatoskr keeps its own migrations table, `ratatoskr_schema_migrations`, rather than sqlx's
//! `_sqlx_migrations`: the application keeps its own tables in the same database and may well
//! run its own sqlx migrations there, and two migrators sharing one table would each see the
//! other's versions as unknown and refuse to start.
//!
//! Each migration runs in one transaction together with the row that records it, under a lock
//! that serializes migrators: `BEGIN IMMEDIATE` on SQLite (one writer per database file), and a
//! transaction-scoped advisory lock per schema on PostgreSQL. Two instances starting at once
//! therefore apply each migration exactly once; the second finds it done.
//!
//! A migration that was applied with different text than this build carries is refused (edit a
//! released migration and you get an error, not a silently diverging schema). A database with
//! versions newer than this build knows is accepted with a warning (an older instance during a
//! rolling deploy), since migrations are written to be additive.

use sqlx::{Executor, PgPool, Row, SqlitePool};

use ratatoskr_core::{StoreError, StoreResult, now_ms};

/// One schema change, with the SQL for each backend.
pub(crate) struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Every migration this build knows, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "sessions, attributes and user revocations",
        sqlite: include_str!("../migrations/sqlite/0001_sessions.sql"),
        postgres: include_str!("../migrations/postgres/0001_sessions.sql"),
    },
    Migration {
        version: 2,
        description: "audit trail",
        sqlite: include_str!("../migrations/sqlite/0002_audit.sql"),
        postgres: include_str!("../migrations/postgres/0002_audit.sql"),
    },
    Migration {
        version: 3,
        description: "outage journal of Redis invalidations",
        sqlite: include_str!("../migrations/sqlite/0003_redis_journal.sql"),
        postgres: include_str!("../migrations/postgres/0003_redis_journal.sql"),
    },
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 3;

const CREATE_TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS ratatoskr_schema_migrations (
    version     INTEGER NOT NULL PRIMARY KEY,
    description TEXT    NOT NULL,
    checksum    INTEGER NOT NULL,
    applied_at  INTEGER NOT NULL
) STRICT";

const CREATE_TABLE_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS ratatoskr_schema_migrations (
    version     BIGINT NOT NULL PRIMARY KEY,
    description TEXT   NOT NULL,
    checksum    BIGINT NOT NULL,
    applied_at  BIGINT NOT NULL
)";

/// Advisory-lock namespace for migrations (the first key of the two-key form).
const PG_MIGRATION_LOCK_NS: i32 = 0x5241_5400; // "RAT\0"

/// FNV-1a, 64 bits: enough to notice an edited migration, no dependency.
fn checksum(sql: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

fn check_applied(
    backend: &'static str,
    applied: &[(i64, i64)],
    pick: impl Fn(&Migration) -> &'static str,
) -> StoreResult<()> {
    for (version, sum) in applied {
        match MIGRATIONS.iter().find(|m| m.version == *version) {
            Some(m) if checksum(pick(m)) != *sum => {
                return Err(StoreError::backend(
                    backend,
                    format!(
                        "schema migration {version} ({}) was applied with different SQL than this \
                         build carries; released migrations must not be edited",
                        m.description
                    ),
                ));
            }
            Some(_) => {}
            None => tracing::warn!(
                backend,
                version,
                known = SCHEMA_VERSION,
                "the database has a newer Ratatoskr schema than this build knows; continuing"
            ),
        }
    }
    Ok(())
}

// Multi-statement SQL goes through `Executor::execute(raw_sql(..))`, not `raw_sql(..).execute(..)`:
// the latter is a generic async fn whose future rustc cannot prove `Send` for every lifetime
// (rust-lang/rust#100013), which would make `SqliteStore::connect` unusable in `async_trait`
// methods.

/// Apply every missing migration to a SQLite database.
pub(crate) async fn sqlite(pool: &SqlitePool) -> StoreResult<()> {
    const B: &str = "sqlite";
    let be = |e: sqlx::Error| StoreError::backend(B, format!("migration failed: {e}"));
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(be)?;
    (&mut *tx)
        .execute(sqlx::raw_sql(CREATE_TABLE_SQLITE))
        .await
        .map_err(be)?;
    let applied = applied(
        sqlx::query("SELECT version, checksum FROM ratatoskr_schema_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(be)?,
    )
    .map_err(be)?;
    check_applied(B, &applied, |m| m.sqlite)?;
    for m in MIGRATIONS {
        if applied.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        (&mut *tx)
            .execute(sqlx::raw_sql(m.sqlite))
            .await
            .map_err(be)?;
        sqlx::query(
            "INSERT INTO ratatoskr_schema_migrations (version, description, checksum, applied_at)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(m.version)
        .bind(m.description)
        .bind(checksum(m.sqlite))
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(be)?;
        tracing::info!(backend = B, version = m.version, "applied schema migration");
    }
    tx.commit().await.map_err(be)
}

/// Apply every missing migration to the current schema of a PostgreSQL database.
pub(crate) async fn postgres(pool: &PgPool) -> StoreResult<()> {
    const B: &str = "postgres";
    let be = |e: sqlx::Error| StoreError::backend(B, format!("migration failed: {e}"));
    let mut tx = pool.begin().await.map_err(be)?;
    // Migrations may legitimately run (or wait for a twin) longer than the statement timeout
    // the store's connections carry for ordinary operations.
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await
        .map_err(be)?;
    // One migrator per schema at a time; CREATE TABLE IF NOT EXISTS is not safe against a
    // concurrent twin without it.
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))")
        .bind(PG_MIGRATION_LOCK_NS)
        .execute(&mut *tx)
        .await
        .map_err(be)?;
    (&mut *tx)
        .execute(sqlx::raw_sql(CREATE_TABLE_POSTGRES))
        .await
        .map_err(be)?;
    let applied = applied(
        sqlx::query("SELECT version, checksum FROM ratatoskr_schema_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(be)?,
    )
    .map_err(be)?;
    check_applied(B, &applied, |m| m.postgres)?;
    for m in MIGRATIONS {
        if applied.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        (&mut *tx)
            .execute(sqlx::raw_sql(m.postgres))
            .await
            .map_err(be)?;
        sqlx::query(
            "INSERT INTO ratatoskr_schema_migrations (version, description, checksum, applied_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(m.version)
        .bind(m.description)
        .bind(checksum(m.postgres))
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(be)?;
        tracing::info!(backend = B, version = m.version, "applied schema migration");
    }
    tx.commit().await.map_err(be)
}

fn applied<R: Row>(rows: Vec<R>) -> Result<Vec<(i64, i64)>, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    rows.iter()
        .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_end_at_the_schema_version() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
        }
        assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(SCHEMA_VERSION));
    }

    #[test]
    fn checksum_notices_a_change() {
        assert_ne!(checksum("a"), checksum("b"));
        assert_eq!(checksum("abc"), checksum("abc"));
    }
}
