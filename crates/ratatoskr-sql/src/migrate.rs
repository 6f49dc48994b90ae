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

use sqlx::pool::Pool;

use ratatoskr_core::{StoreError, StoreResult, now_ms};

use crate::dialect::Dialect;
use crate::driver::{begin, stmt};

/// One schema change, with the SQL for each backend (column types differ).
pub struct Migration {
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

/// FNV-1a, 64 bits: enough to notice an edited migration, no dependency.
fn checksum(sql: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

fn check_applied<D: Dialect>(applied: &[(i64, i64)]) -> StoreResult<()> {
    for (version, sum) in applied {
        match MIGRATIONS.iter().find(|m| m.version == *version) {
            Some(m) if checksum(D::migration_sql(m)) != *sum => {
                return Err(StoreError::backend(
                    D::BACKEND,
                    format!(
                        "schema migration {version} ({}) was applied with different SQL than this \
                         build carries; released migrations must not be edited",
                        m.description
                    ),
                ));
            }
            Some(_) => {}
            None => tracing::warn!(
                backend = D::BACKEND,
                version,
                known = SCHEMA_VERSION,
                "the database has a newer Ratatoskr schema than this build knows; continuing"
            ),
        }
    }
    Ok(())
}

/// Apply every missing migration (on PostgreSQL, to the connection's current schema).
pub(crate) async fn migrate<D: Dialect>(pool: &Pool<D>) -> StoreResult<()> {
    let be = |e: sqlx::Error| StoreError::backend(D::BACKEND, format!("migration failed: {e}"));
    let mut tx = begin(pool, D::BEGIN).await.map_err(be)?;
    D::lock_migrations(&mut tx).await.map_err(be)?;
    D::execute_script(&mut tx, D::MIGRATIONS_TABLE)
        .await
        .map_err(be)?;
    let mut applied = Vec::new();
    for row in stmt::<D>("SELECT version, checksum FROM ratatoskr_schema_migrations")
        .fetch_all(&mut tx)
        .await
        .map_err(be)?
    {
        applied.push((
            row.get::<i64>(0).map_err(be)?,
            row.get::<i64>(1).map_err(be)?,
        ));
    }
    check_applied::<D>(&applied)?;
    for m in MIGRATIONS {
        if applied.iter().any(|(v, _)| *v == m.version) {
            continue;
        }
        let sql = D::migration_sql(m);
        D::execute_script(&mut tx, sql).await.map_err(be)?;
        stmt::<D>(
            "INSERT INTO ratatoskr_schema_migrations (version, description, checksum, applied_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(m.version)
        .bind(m.description)
        .bind(checksum(sql))
        .bind(now_ms())
        .execute(&mut tx)
        .await
        .map_err(be)?;
        tracing::info!(
            backend = D::BACKEND,
            version = m.version,
            "applied schema migration"
        );
    }
    tx.commit().await.map_err(be)
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
