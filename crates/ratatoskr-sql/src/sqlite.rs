//! SQLite, the embedded default: its connection settings and its side of the dialect seam.
//!
//! One file next to the application, nothing to run beside it. The database is opened in WAL
//! mode (readers never block the writer and the writer never blocks readers) with
//! `synchronous=NORMAL` (durable at every checkpoint, fast commits), foreign keys on, and a busy
//! timeout. Every read-then-write operation runs in a `BEGIN IMMEDIATE` transaction, which takes
//! the database's single write lock up front, so two writers can never deadlock upgrading a read
//! lock (and no row locks or user locks are needed); within one store instance writers also
//! queue on an in-process lock, so they wait in order instead of polling SQLite's busy handler.
//! With group commit on (the default), the writes queued meanwhile are made by one writer task
//! in one transaction per turn (see [`GroupCommit`](crate::GroupCommit)), each run of writes of
//! one kind in a few statements over a `VALUES` list: every statement is a hop to sqlx's
//! connection thread and back, which under load costs more than the statement itself.

use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use ratatoskr_core::{StoreError, StoreResult};

use crate::dialect::{AnyPool, Backend};
use crate::driver::{Col, SqlxQuery, stmt};
use crate::group::OpResult;
use crate::migrate::Migration;
use crate::write::Statements;
use crate::{SqlOptions, SqliteStore};

const BACKEND: &str = "sqlite";

fn be(e: sqlx::Error) -> StoreError {
    crate::common::map_err(BACKEND, e)
}

impl Backend for Sqlite {
    const BACKEND: &'static str = BACKEND;
    const GREATEST: &'static str = "max";
    const LOCK_SESSION_ROW: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const BEGIN: Option<&'static str> = Some("BEGIN IMMEDIATE");
    const ONE_WRITER: bool = true;
    const MIGRATIONS_TABLE: &'static str =
        "CREATE TABLE IF NOT EXISTS ratatoskr_schema_migrations (
    version     INTEGER NOT NULL PRIMARY KEY,
    description TEXT    NOT NULL,
    checksum    INTEGER NOT NULL,
    applied_at  INTEGER NOT NULL
) STRICT";

    // SQLite's limit is 32,766 host parameters (the bundled build's default).
    const MAX_ROW_PARAMS: usize = 30_000;

    fn migration_sql(m: &Migration) -> &'static str {
        m.sqlite
    }

    /// A `VALUES` list with a parameter per value: SQLite has no arrays. A statement is one
    /// call into sqlx's connection thread, so one statement per set, not per row.
    fn rows(cols: &[Col<'_>], first: usize) -> String {
        let width = cols.len();
        let n = cols.first().map_or(0, Col::len);
        let mut sql = String::with_capacity(8 + n * width * 8);
        sql.push_str("VALUES ");
        for r in 0..n {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            for c in 0..width {
                if c > 0 {
                    sql.push_str(", ");
                }
                let _ = write!(sql, "${}", first + r * width + c);
            }
            sql.push(')');
        }
        sql
    }

    /// Row by row, as [`rows`](Backend::rows) numbered them. The text differs with the number
    /// of rows, so the statement is not kept in the connection's cache, where it would push
    /// out the store's fixed statements.
    fn bind_rows<'q>(q: SqlxQuery<'q, Sqlite>, cols: Vec<Col<'q>>) -> SqlxQuery<'q, Sqlite> {
        let n = cols.first().map_or(0, Col::len);
        let mut q = q.persistent(false);
        for r in 0..n {
            for col in &cols {
                q = match col {
                    Col::Blob(v) => q.bind(v[r]),
                    Col::OptBlob(v) => q.bind(v[r]),
                    Col::Text(v) => q.bind(v[r]),
                    Col::Int(v) => q.bind(v[r]),
                };
            }
        }
        q
    }

    fn statements() -> &'static Statements {
        static STATEMENTS: OnceLock<Statements> = OnceLock::new();
        STATEMENTS.get_or_init(Statements::new::<Self>)
    }

    fn any_pool(pool: SqlitePool) -> AnyPool {
        AnyPool::Sqlite(pool)
    }

    /// The file has one writer at a time: one lane.
    fn max_lanes(_: &SqlitePool) -> usize {
        1
    }

    async fn open(url: &str, options: &SqlOptions) -> StoreResult<SqlitePool> {
        let connect = SqliteConnectOptions::from_str(url).map_err(be)?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        pool(connect, in_memory, options).await
    }

    async fn prepare(pool: &SqlitePool) -> StoreResult<()> {
        enable_wal(pool).await
    }

    /// The ids as a JSON array: one parameter however many there are.
    async fn journal_ack(c: &mut Self::Connection, ids: &[i64]) -> OpResult<()> {
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let json = format!("[{list}]");
        stmt::<Self>(
            "DELETE FROM ratatoskr_redis_journal WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(json.as_str())
        .execute(c)
        .await?;
        Ok(())
    }
}

impl SqliteStore {
    /// Open the database described by sqlx connect options. Ratatoskr's settings (WAL,
    /// `synchronous=NORMAL`, foreign keys, busy timeout, create if missing) are applied on top.
    /// Set `in_memory` for an in-memory database, which then gets a single, never-recycled
    /// connection (its data lives only as long as that connection).
    pub async fn connect_with_options(
        connect: SqliteConnectOptions,
        in_memory: bool,
        options: &SqlOptions,
    ) -> StoreResult<Self> {
        Self::configured(pool(connect, in_memory, options).await?, options).await
    }

    /// The journal mode the database is in: `"wal"` for a file once a store has opened it
    /// (`"memory"` for an in-memory database).
    pub async fn journal_mode(&self) -> StoreResult<String> {
        sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(self.pool())
            .await
            .map_err(be)
    }
}

async fn pool(
    connect: SqliteConnectOptions,
    in_memory: bool,
    options: &SqlOptions,
) -> StoreResult<SqlitePool> {
    let connect = connect
        .create_if_missing(true)
        .foreign_keys(true)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(options.sqlite_busy_timeout);
    let pool_options = SqlitePoolOptions::new().acquire_timeout(options.acquire_timeout);
    let pool_options = if in_memory {
        pool_options
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        create_parent_dir(connect.get_filename())?;
        pool_options.max_connections(options.max_connections.max(1))
    };
    pool_options.connect_with(connect).await.map_err(be)
}

fn create_parent_dir(file: &Path) -> StoreResult<()> {
    if let Some(dir) = file.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::backend(
                BACKEND,
                format!("cannot create the directory {}: {e}", dir.display()),
            )
        })?;
    }
    Ok(())
}

/// Switch the database to WAL mode. The switch needs an exclusive lock that SQLite's busy
/// timeout does not wait for, so a racing twin (another instance starting at the same moment)
/// is retried here for a few seconds. WAL is persistent: once any connection switched the file,
/// every later connection finds it in WAL mode.
async fn enable_wal(pool: &SqlitePool) -> StoreResult<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut delay = Duration::from_millis(5);
    loop {
        let result: Result<String, sqlx::Error> = sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(pool)
            .await;
        match result {
            Ok(mode) => {
                if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
                    tracing::warn!(
                        backend = BACKEND,
                        mode,
                        "the SQLite database did not switch to WAL mode"
                    );
                }
                return Ok(());
            }
            Err(e) if is_busy(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(200));
            }
            Err(e) => return Err(be(e)),
        }
    }
}

fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| is_busy_code(&code))
}

/// SQLITE_BUSY (5) and SQLITE_LOCKED (6), with or without an extended code in the high bits.
fn is_busy_code(code: &str) -> bool {
    code.parse::<i32>()
        .is_ok_and(|c| c & 0xff == 5 || c & 0xff == 6)
}

#[cfg(test)]
mod tests {
    use super::is_busy_code;

    #[test]
    fn busy_and_locked_codes_are_retried_with_or_without_an_extended_code() {
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_BUSY_RECOVERY (261), SQLITE_BUSY_SNAPSHOT (517),
        // SQLITE_LOCKED_SHAREDCACHE (262).
        for code in ["5", "6", "261", "517", "262"] {
            assert!(is_busy_code(code), "{code}");
        }
        // SQLITE_ERROR, SQLITE_CONSTRAINT_UNIQUE (2067), SQLITE_READONLY, garbage.
        for code in ["1", "2067", "8", "", "busy", "7"] {
            assert!(!is_busy_code(code), "{code}");
        }
    }
}
