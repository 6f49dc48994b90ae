//! The dialect seam: what really differs between SQLite and PostgreSQL, and nothing else.
//!
//! Every statement the store runs is written once (in `write.rs`, `store.rs`, `journal.rs`,
//! `audit.rs`, `migrate.rs`), with `$N` parameters, which both drivers accept. A [`Dialect`]
//! supplies only:
//!
//! - **fragments** spliced into a shared statement: the larger of two values (`max` /
//!   `GREATEST`), row locking (`FOR UPDATE OF s`, `FOR UPDATE SKIP LOCKED`: nothing on SQLite,
//!   whose transactions take the database's one write lock up front);
//! - **transactions and locks**: how a write transaction begins (`BEGIN IMMEDIATE` / `BEGIN`),
//!   whether writers take turns (SQLite's one writer), the per-user advisory lock and the
//!   batch pre-locks (PostgreSQL), the migration lock;
//! - **sets of rows**: how a statement carries many rows (one array per column and `UNNEST` on
//!   PostgreSQL, a `VALUES` list on SQLite), so that setting and removing attributes and the
//!   runs of a group-commit batch (creates, restores, rotations, deltas, touches, destroys,
//!   journal appends) are each a few statements written once for both; and PostgreSQL's own
//!   `touch_many` and journal acknowledgements over arrays (SQLite: a `VALUES` list, a JSON
//!   array);
//! - **connecting**: URL and pool settings, SQLite's WAL switch, PostgreSQL's statement timeout;
//! - **the schema**: each backend's migration files (column types differ).
//!
//! It is implemented for `sqlx::Sqlite` (`sqlite.rs`) and `sqlx::Postgres` (`postgres.rs`), and
//! sealed: the store is written against exactly these two.

use std::future::Future;

use sqlx::pool::Pool;
use sqlx::{PgPool, SqlitePool};

use ratatoskr_core::{Millis, SessionKey, StoreResult};

use crate::SqlOptions;
use crate::driver::{Col, Driver, SqlxQuery};
use crate::group::{Op, OpResult};
use crate::migrate::Migration;
use crate::write::{self, Statements};

/// A SQL dialect the store runs on: `sqlx::Sqlite` or `sqlx::Postgres` (re-exported as
/// [`crate::Sqlite`] and [`crate::Postgres`]). Sealed; see [`crate::Store`].
pub trait Dialect: Backend {}

impl<T: Backend> Dialect for T {}

pub(crate) use sealed::Backend;

mod sealed {
    use super::*;

    /// What differs between the dialects (see the module documentation). Every method with a
    /// default is the row-by-row way, which PostgreSQL replaces with one statement over arrays.
    pub trait Backend: Driver {
        /// `"sqlite"` or `"postgres"`: the backend name in errors and logs.
        const BACKEND: &'static str;
        /// The function giving the larger of two values.
        const GREATEST: &'static str;
        /// Ends a `SELECT … FROM ratatoskr_sessions s …` whose rows the transaction will write.
        const LOCK_SESSION_ROW: &'static str;
        /// Ends the select of expired rows a reaping batch deletes, so concurrent reapers take
        /// different rows instead of queueing.
        const SKIP_LOCKED: &'static str;
        /// The statement that begins a write transaction (`None`: the driver's `BEGIN`).
        const BEGIN: Option<&'static str>;
        /// One writer at a time per database: an instance's writers take turns
        /// ([`crate::write::Core::turn`]) and group commit has one lane.
        const ONE_WRITER: bool;
        /// The table recording applied migrations.
        const MIGRATIONS_TABLE: &'static str;
        /// Most parameters a statement over a set of rows may bind (the set is split beyond).
        const MAX_ROW_PARAMS: usize;

        /// The row source of a set of rows with columns `cols` (parameters numbered from
        /// `$first`), for `WITH t (…) AS (<rows>)`: one array per column on PostgreSQL
        /// (`SELECT * FROM UNNEST($2::bytea[], …)`), a `VALUES ($2, $3), ($4, $5), …` list on
        /// SQLite.
        fn rows(cols: &[Col<'_>], first: usize) -> String;

        /// Bind a set of rows the way [`rows`](Backend::rows) numbered them.
        fn bind_rows<'q>(q: SqlxQuery<'q, Self>, cols: Vec<Col<'q>>) -> SqlxQuery<'q, Self>;

        /// This dialect's text of a migration.
        fn migration_sql(m: &Migration) -> &'static str;

        /// The statements carrying this dialect's fragments, built on first use.
        fn statements() -> &'static Statements;

        /// The pool as either backend's (for the audit log and the journal).
        fn any_pool(pool: Pool<Self>) -> AnyPool;

        /// How many group-commit lanes a pool allows.
        fn max_lanes(pool: &Pool<Self>) -> usize;

        /// A pool for `url` with `options`.
        fn open(
            url: &str,
            options: &SqlOptions,
        ) -> impl Future<Output = StoreResult<Pool<Self>>> + Send;

        /// Settings a pool needs before the store uses it (SQLite: WAL mode).
        fn prepare(pool: &Pool<Self>) -> impl Future<Output = StoreResult<()>> + Send {
            let _ = pool;
            async { Ok(()) }
        }

        /// Inside the migration transaction, before anything else: wait out other migrators.
        fn lock_migrations(
            c: &mut Self::Connection,
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
            let _ = c;
            async { Ok(()) }
        }

        /// Serialize this transaction with every other create, restore, rotate and revoke-all
        /// of `user` (SQLite's transactions are serialized already).
        fn lock_user(
            c: &mut Self::Connection,
            user: Option<&str>,
        ) -> impl Future<Output = OpResult<()>> + Send {
            let _ = (c, user);
            async { Ok(()) }
        }

        /// Lock the session rows under `keys` (sorted) until the transaction ends, in a
        /// statement of their own (SQLite's transactions hold the write lock already).
        fn lock_keys(
            c: &mut Self::Connection,
            keys: Vec<&[u8]>,
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
            let _ = (c, keys);
            async { Ok(()) }
        }

        /// Before the writes of a batch of several: take the locks they will take, in one
        /// global order, so batches on different connections cannot deadlock.
        fn prelock(
            c: &mut Self::Connection,
            ops: &[Op],
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
            let _ = (c, ops);
            async { Ok(()) }
        }

        /// Touch sessions (deduplicated, sorted by key); missing and expired ones are skipped.
        fn touch_many(
            c: &mut Self::Connection,
            touches: &[(SessionKey, Millis)],
        ) -> impl Future<Output = OpResult<()>> + Send {
            async move {
                write::touch_set::<Self>(c, touches).await?;
                Ok(())
            }
        }

        /// Delete journal entries by id (ids already gone are ignored).
        fn journal_ack(
            c: &mut Self::Connection,
            ids: &[i64],
        ) -> impl Future<Output = OpResult<()>> + Send;
    }
}

/// Evaluate `$body` with `$x` bound to the contents of whichever variant (`Sqlite` or
/// `Postgres`) of the enum `$ty` `$value` is: one body, compiled for each backend.
macro_rules! either {
    ($value:expr, $ty:ident, $x:ident => $body:expr) => {
        match $value {
            $ty::Sqlite($x) => $body,
            $ty::Postgres($x) => $body,
        }
    };
}
pub(crate) use either;

/// A pool of either backend, for the types that serve both without being generic (the audit
/// log, the journal).
#[derive(Clone)]
pub enum AnyPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl AnyPool {
    /// `"sqlite"` or `"postgres"`.
    pub(crate) fn backend(&self) -> &'static str {
        fn name<D: Dialect>(_: &Pool<D>) -> &'static str {
            D::BACKEND
        }
        either!(self, AnyPool, p => name(p))
    }
}
