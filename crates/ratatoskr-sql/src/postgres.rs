//! PostgreSQL, for several application instances sharing one database: its connection settings
//! and its side of the dialect seam.
//!
//! Pooled connections (`PgPoolOptions`) with a bounded acquire timeout, so a database that is
//! down is an error within seconds, not a hang, and a server-side `statement_timeout`.
//! Transactions run at READ COMMITTED; what needs more is locked explicitly:
//!
//! - **apply** locks the session row (`SELECT … FOR UPDATE`) before it checks the size and
//!   writes, so concurrent deltas on one session queue up (each still writes only its own
//!   attribute rows) and the size limit holds for their sum. The lock is a statement of its
//!   own and the sizes are read by the next, whose snapshot is taken once the lock is held (a
//!   statement that waited for a row lock still reads the other rows as they were when it
//!   began: see `write::apply_run`);
//! - **create**, **restore**, **rotate** and **destroy_user** take a transaction-scoped advisory
//!   lock per user (`pg_advisory_xact_lock(ns, hashtext(user_id))`), so a create racing a
//!   revoke-all lands either wholly before it (and is deleted by it) or wholly after it (and sees
//!   the revocation).
//!
//! With group commit on (the default), writes waiting at the same time are made by a few writer
//! lanes, one transaction per batch (see [`GroupCommit`](crate::GroupCommit)). Each write still
//! takes its own locks as above; a batch of several also takes all its user locks and then all
//! its session rows first, each set in one sorted order, so batches on different connections
//! and instances queue behind each other instead of deadlocking. Since every statement costs a
//! round trip here, writes over many rows are one statement over arrays (`UNNEST`, `= ANY`),
//! and so are the runs of a batch (its creates, restores, rotations, deltas, touches, destroys
//! and journal writes).

use std::str::FromStr;
use std::sync::OnceLock;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres};

use ratatoskr_core::{Millis, SessionKey, StoreError, StoreResult, now_ms};

use crate::common;
use crate::dialect::{AnyPool, Backend};
use crate::driver::{Col, SqlxQuery};
use crate::group::{Op, OpResult};
use crate::migrate::Migration;
use crate::write::Statements;
use crate::{PgStore, SqlOptions};

const BACKEND: &str = "postgres";

/// Advisory-lock namespace for per-user locks (the first key of the two-key form), so they
/// cannot collide with the application's own single-key advisory locks.
const USER_LOCK_NS: i32 = 0x5241_5401; // "RAT\x01"

/// Advisory-lock namespace for migrations (the first key of the two-key form).
const MIGRATION_LOCK_NS: i32 = 0x5241_5400; // "RAT\0"

fn be(e: sqlx::Error) -> StoreError {
    common::map_err(BACKEND, e)
}

fn key_bytes(key: &SessionKey) -> &[u8] {
    &key.as_bytes()[..]
}

impl Backend for Postgres {
    const BACKEND: &'static str = BACKEND;
    const GREATEST: &'static str = "GREATEST";
    const LOCK_SESSION_ROW: &'static str = "FOR UPDATE OF s";
    const SKIP_LOCKED: &'static str = "FOR UPDATE SKIP LOCKED";
    const BEGIN: Option<&'static str> = None;
    const ONE_WRITER: bool = false;
    const MIGRATIONS_TABLE: &'static str =
        "CREATE TABLE IF NOT EXISTS ratatoskr_schema_migrations (
    version     BIGINT NOT NULL PRIMARY KEY,
    description TEXT   NOT NULL,
    checksum    BIGINT NOT NULL,
    applied_at  BIGINT NOT NULL
)";

    const MAX_ROW_PARAMS: usize = usize::MAX;

    fn migration_sql(m: &Migration) -> &'static str {
        m.postgres
    }

    /// One array per column: the statement's text and plan are the same however many rows.
    fn rows(cols: &[Col<'_>], first: usize) -> String {
        let arrays: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, col)| {
                let ty = match col {
                    Col::Blob(_) | Col::OptBlob(_) => "bytea",
                    Col::Text(_) => "text",
                    Col::Int(_) => "bigint",
                };
                format!("${}::{ty}[]", first + i)
            })
            .collect();
        format!("SELECT * FROM UNNEST({})", arrays.join(", "))
    }

    fn bind_rows<'q>(q: SqlxQuery<'q, Postgres>, cols: Vec<Col<'q>>) -> SqlxQuery<'q, Postgres> {
        cols.into_iter().fold(q, |q, col| match col {
            Col::Blob(v) => q.bind(v),
            Col::OptBlob(v) => q.bind(v),
            Col::Text(v) => q.bind(v),
            Col::Int(v) => q.bind(v),
        })
    }

    fn statements() -> &'static Statements {
        static STATEMENTS: OnceLock<Statements> = OnceLock::new();
        STATEMENTS.get_or_init(Statements::new::<Self>)
    }

    fn any_pool(pool: PgPool) -> AnyPool {
        AnyPool::Postgres(pool)
    }

    /// Lanes may use at most the whole pool.
    fn max_lanes(pool: &PgPool) -> usize {
        pool.options().get_max_connections() as usize
    }

    async fn open(url: &str, options: &SqlOptions) -> StoreResult<PgPool> {
        pool(PgConnectOptions::from_str(url).map_err(be)?, options).await
    }

    async fn lock_migrations(c: &mut PgConnection) -> Result<(), sqlx::Error> {
        // Migrations may legitimately run (or wait for a twin) longer than the statement
        // timeout the store's connections carry for ordinary operations.
        crate::driver::sent();
        sqlx::query("SET LOCAL statement_timeout = 0")
            .execute(&mut *c)
            .await?;
        // One migrator per schema at a time; CREATE TABLE IF NOT EXISTS is not safe against a
        // concurrent twin without it.
        crate::driver::sent();
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))")
            .bind(MIGRATION_LOCK_NS)
            .execute(&mut *c)
            .await?;
        Ok(())
    }

    async fn lock_user(c: &mut PgConnection, user: Option<&str>) -> OpResult<()> {
        if let Some(user) = user {
            crate::driver::sent();
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(USER_LOCK_NS)
                .bind(user)
                .execute(&mut *c)
                .await?;
        }
        Ok(())
    }

    async fn lock_keys(c: &mut PgConnection, keys: Vec<&[u8]>) -> Result<(), sqlx::Error> {
        lock_rows(c, keys).await
    }

    /// Every user lock the batch needs, then every session row it names, each set in one
    /// global order (the locks' keys, the rows' keys). Each write then takes its locks again,
    /// which costs nothing once held.
    async fn prelock(c: &mut PgConnection, ops: &[Op]) -> Result<(), sqlx::Error> {
        let users: Vec<&str> = ops.iter().filter_map(Op::locked_user).collect();
        if !users.is_empty() {
            // A volatile function in the select list is evaluated after the ORDER BY sort.
            crate::driver::sent();
            sqlx::query(
                "SELECT pg_advisory_xact_lock($1, h)
                 FROM (SELECT DISTINCT hashtext(u) AS h FROM UNNEST($2::text[]) AS t (u)) AS l
                 ORDER BY h",
            )
            .bind(USER_LOCK_NS)
            .bind(users)
            .execute(&mut *c)
            .await?;
        }
        let keys: Vec<&[u8]> = ops.iter().flat_map(Op::keys).map(key_bytes).collect();
        if !keys.is_empty() {
            lock_rows(c, keys).await?;
        }
        Ok(())
    }

    /// Rows locked in key order, then one multi-row update, per chunk.
    async fn touch_many(c: &mut PgConnection, touches: &[(SessionKey, Millis)]) -> OpResult<()> {
        const CHUNK: usize = 2_000;
        for chunk in touches.chunks(CHUNK) {
            let keys: Vec<&[u8]> = chunk.iter().map(|(k, _)| key_bytes(k)).collect();
            let times: Vec<i64> = chunk.iter().map(|(_, t)| *t).collect();
            lock_rows(c, keys.clone()).await?;
            crate::driver::sent();
            sqlx::query(
                "UPDATE ratatoskr_sessions AS s SET
                     last_seen = GREATEST(s.last_seen, t.at),
                     expires_at = CASE
                         WHEN s.idle_timeout >= s.absolute_deadline - GREATEST(s.last_seen, t.at)
                             THEN s.absolute_deadline
                         ELSE GREATEST(s.last_seen, t.at) + s.idle_timeout
                     END
                 FROM UNNEST($1::bytea[], $2::bigint[]) AS t (k, at)
                 WHERE s.session_key = t.k AND s.expires_at > $3",
            )
            .bind(keys)
            .bind(times)
            .bind(now_ms())
            .execute(&mut *c)
            .await?;
        }
        Ok(())
    }

    async fn journal_ack(c: &mut PgConnection, ids: &[i64]) -> OpResult<()> {
        crate::driver::sent();
        sqlx::query("DELETE FROM ratatoskr_redis_journal WHERE id = ANY($1::bigint[])")
            .bind(ids)
            .execute(&mut *c)
            .await?;
        Ok(())
    }
}

impl PgStore {
    /// Connect with sqlx connect options (for settings a URL cannot carry) and apply migrations.
    ///
    /// [`SqlOptions::pg_statement_timeout`] is added to the connections' startup options unless
    /// `connect` already sets `statement_timeout`.
    pub async fn connect_with_options(
        connect: PgConnectOptions,
        options: &SqlOptions,
    ) -> StoreResult<Self> {
        Self::configured(pool(connect, options).await?, options).await
    }
}

async fn pool(connect: PgConnectOptions, options: &SqlOptions) -> StoreResult<PgPool> {
    let connect = match options.pg_statement_timeout {
        Some(limit)
            if !connect
                .get_options()
                .is_some_and(|o| o.contains("statement_timeout")) =>
        {
            connect.options([(
                "statement_timeout",
                format!("{}ms", limit.as_millis().max(1)),
            )])
        }
        _ => connect,
    };
    PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(be)
}

/// Lock the session rows under `keys` in key order (rows are locked after the sort).
async fn lock_rows(c: &mut PgConnection, keys: Vec<&[u8]>) -> Result<(), sqlx::Error> {
    crate::driver::sent();
    sqlx::query(
        "SELECT 1 FROM ratatoskr_sessions WHERE session_key = ANY($1::bytea[])
         ORDER BY session_key FOR UPDATE",
    )
    .bind(keys)
    .execute(&mut *c)
    .await?;
    Ok(())
}
