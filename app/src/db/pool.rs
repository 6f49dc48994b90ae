//! The pool of whichever backend is configured, one-statement helpers over it, and the
//! application's migrations.

use ratatoskr_sql::{PgPool, SqlStore, SqlitePool};

/// The application database: the pool of the configured SQL store.
#[derive(Clone, Debug)]
pub enum Db {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// Run one statement on whichever pool, for its number of affected rows:
/// `q!(db, method, "SQL", binds…)` (where [`Db`] is in scope).
macro_rules! q {
    ($db:expr, $m:ident, $sql:expr $(, $b:expr)* $(,)?) => {
        match $db {
            Db::Sqlite(p) => {
                sqlx::query($sql)$(.bind($b))*.$m(p).await.map(|r| r.rows_affected())
            }
            Db::Postgres(p) => {
                sqlx::query($sql)$(.bind($b))*.$m(p).await.map(|r| r.rows_affected())
            }
        }
    };
}
/// Run one query on whichever pool, for rows of type `T`: `qa!(db, method, T, "SQL", binds…)`.
macro_rules! qa {
    ($db:expr, $m:ident, $t:ty, $sql:expr $(, $b:expr)* $(,)?) => {
        match $db {
            Db::Sqlite(p) => sqlx::query_as::<_, $t>($sql)$(.bind($b))*.$m(p).await,
            Db::Postgres(p) => sqlx::query_as::<_, $t>($sql)$(.bind($b))*.$m(p).await,
        }
    };
}
pub(crate) use {q, qa};

/// The result of an insert that may hit a uniqueness constraint.
pub enum Inserted<T> {
    /// Inserted.
    Ok(T),
    /// A row with the same unique key exists.
    Duplicate,
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// An insert's result, with a uniqueness violation as [`Inserted::Duplicate`].
pub(super) fn inserted<T>(r: Result<T, sqlx::Error>) -> Result<Inserted<T>, sqlx::Error> {
    match r {
        Ok(v) => Ok(Inserted::Ok(v)),
        Err(e) if is_unique_violation(&e) => Ok(Inserted::Duplicate),
        Err(e) => Err(e),
    }
}

/// The application's migrations for SQLite (`app/migrations/sqlite`).
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
/// The application's migrations for PostgreSQL (`app/migrations/postgres`).
static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// The pool of an opened SQL store.
    pub fn of(sql: &SqlStore) -> Self {
        match sql {
            SqlStore::Sqlite(s) => Db::Sqlite(s.pool().clone()),
            SqlStore::Postgres(s) => Db::Postgres(s.pool().clone()),
        }
    }

    /// Apply the application's migrations that are missing.
    ///
    /// A database created before there were migrations has the tables but no
    /// `_sqlx_migrations`: the first migration is that same DDL with `IF NOT EXISTS`, so there it
    /// only records itself. On PostgreSQL sqlx serializes migrators with an advisory lock. On
    /// SQLite it takes none: two processes opening a new file at once can both try to record
    /// the first migration, and the loser fails on the version's primary key; it tries once
    /// more, and then finds the migration applied.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Db::Sqlite(p) => match SQLITE_MIGRATIONS.run(p).await {
                Ok(()) => Ok(()),
                Err(first) => {
                    tracing::debug!(error = %first, "migrating again (another process was at it)");
                    SQLITE_MIGRATIONS.run(p).await
                }
            },
            Db::Postgres(p) => PG_MIGRATIONS.run(p).await,
        }
    }
}
