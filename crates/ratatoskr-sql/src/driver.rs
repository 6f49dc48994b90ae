//! The typed sqlx calls, written once for both drivers.
//!
//! sqlx's query API is generic over the database, but only under a long list of bounds (`i64:
//! Encode<'q, DB>`, `for<'c> &'c mut DB::Connection: Executor<'c>`, …) that Rust does not imply
//! from a trait bound, so every generic function would have to repeat them. Instead, [`Driver`]
//! offers the handful of typed calls the store makes (bind an integer, a blob or a text; run a
//! statement; read a column), implemented for `sqlx::Sqlite` and `sqlx::Postgres` by one macro,
//! where the concrete types satisfy those bounds. Generic code then uses [`Stmt`] and [`Row`],
//! which read like sqlx's own `query(…).bind(…).fetch_all(…)` and `row.try_get(…)`, and compile
//! to the same calls: nothing is boxed or copied on the way.

use std::future::Future;

use sqlx::pool::Pool;
use sqlx::query::Query;
use sqlx::{Database, Executor, Transaction};

use ratatoskr_core::SessionKey;

/// A sqlx query on database `D` with its argument buffer.
pub type SqlxQuery<'q, D> = Query<'q, D, <D as Database>::Arguments<'q>>;

/// The typed calls the store makes, for one sqlx driver (see the module documentation).
pub trait Driver: Database {
    /// Bind an integer.
    fn bind_int(q: SqlxQuery<'_, Self>, v: i64) -> SqlxQuery<'_, Self>;
    /// Bind a blob, or NULL.
    fn bind_blob<'q>(q: SqlxQuery<'q, Self>, v: Option<&'q [u8]>) -> SqlxQuery<'q, Self>;
    /// Bind a text, or NULL.
    fn bind_text<'q>(q: SqlxQuery<'q, Self>, v: Option<&'q str>) -> SqlxQuery<'q, Self>;
    /// Run a statement; how many rows it changed.
    fn execute(
        q: SqlxQuery<'_, Self>,
        c: &mut Self::Connection,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
    /// Run a query; every row.
    fn fetch_all(
        q: SqlxQuery<'_, Self>,
        c: &mut Self::Connection,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;
    /// Run a query; its first row, if any.
    fn fetch_optional(
        q: SqlxQuery<'_, Self>,
        c: &mut Self::Connection,
    ) -> impl Future<Output = Result<Option<Self::Row>, sqlx::Error>> + Send;
    /// Run several statements without parameters (a migration).
    fn execute_script(
        c: &mut Self::Connection,
        sql: &str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    /// Column `i` as an integer (`None` for NULL).
    fn int(row: &Self::Row, i: usize) -> Result<Option<i64>, sqlx::Error>;
    /// Column `i` as a blob (`None` for NULL).
    fn blob(row: &Self::Row, i: usize) -> Result<Option<Vec<u8>>, sqlx::Error>;
    /// Column `i` as a text (`None` for NULL).
    fn text(row: &Self::Row, i: usize) -> Result<Option<String>, sqlx::Error>;
}

tokio::task_local! {
    /// Statements sent by the task running [`counting`], if it is.
    static SENT: std::cell::Cell<u64>;
}

/// Count one statement sent to the database, if the task is [`counting`]. Every call of the
/// [`Driver`] that runs a statement counts itself; statements the dialects send through sqlx
/// directly call this.
pub fn sent() {
    let _ = SENT.try_with(|n| n.set(n.get() + 1));
}

/// Run `work`, counting the statements it sends ([`sent`]); `BEGIN` and `COMMIT` are not.
pub async fn counting<T>(work: impl Future<Output = T>) -> (T, u64) {
    SENT.scope(std::cell::Cell::new(0), async {
        let out = work.await;
        (out, SENT.with(std::cell::Cell::get))
    })
    .await
}

macro_rules! driver {
    ($db:ty) => {
        impl Driver for $db {
            fn bind_int(q: SqlxQuery<'_, Self>, v: i64) -> SqlxQuery<'_, Self> {
                q.bind(v)
            }
            fn bind_blob<'q>(q: SqlxQuery<'q, Self>, v: Option<&'q [u8]>) -> SqlxQuery<'q, Self> {
                q.bind(v)
            }
            fn bind_text<'q>(q: SqlxQuery<'q, Self>, v: Option<&'q str>) -> SqlxQuery<'q, Self> {
                q.bind(v)
            }
            async fn execute(
                q: SqlxQuery<'_, Self>,
                c: &mut Self::Connection,
            ) -> Result<u64, sqlx::Error> {
                sent();
                Ok(q.execute(c).await?.rows_affected())
            }
            async fn fetch_all(
                q: SqlxQuery<'_, Self>,
                c: &mut Self::Connection,
            ) -> Result<Vec<Self::Row>, sqlx::Error> {
                sent();
                q.fetch_all(c).await
            }
            async fn fetch_optional(
                q: SqlxQuery<'_, Self>,
                c: &mut Self::Connection,
            ) -> Result<Option<Self::Row>, sqlx::Error> {
                sent();
                q.fetch_optional(c).await
            }
            // `Executor::execute(raw_sql(..))`, not `raw_sql(..).execute(..)`: the latter is a
            // generic async fn whose future rustc cannot prove `Send` for every lifetime
            // (rust-lang/rust#100013).
            async fn execute_script(
                c: &mut Self::Connection,
                sql: &str,
            ) -> Result<(), sqlx::Error> {
                c.execute(sqlx::raw_sql(sql)).await.map(drop)
            }
            fn int(row: &Self::Row, i: usize) -> Result<Option<i64>, sqlx::Error> {
                sqlx::Row::try_get(row, i)
            }
            fn blob(row: &Self::Row, i: usize) -> Result<Option<Vec<u8>>, sqlx::Error> {
                sqlx::Row::try_get(row, i)
            }
            fn text(row: &Self::Row, i: usize) -> Result<Option<String>, sqlx::Error> {
                sqlx::Row::try_get(row, i)
            }
        }
    };
}

driver!(sqlx::Sqlite);
driver!(sqlx::Postgres);

/// A value a statement can bind.
pub trait Param<'q> {
    /// Bind it as the query's next parameter.
    fn bind_to<D: Driver>(self, q: SqlxQuery<'q, D>) -> SqlxQuery<'q, D>;
}

impl<'q> Param<'q> for i64 {
    fn bind_to<D: Driver>(self, q: SqlxQuery<'q, D>) -> SqlxQuery<'q, D> {
        D::bind_int(q, self)
    }
}

impl<'q> Param<'q> for Option<&'q [u8]> {
    fn bind_to<D: Driver>(self, q: SqlxQuery<'q, D>) -> SqlxQuery<'q, D> {
        D::bind_blob(q, self)
    }
}

impl<'q> Param<'q> for &'q [u8] {
    fn bind_to<D: Driver>(self, q: SqlxQuery<'q, D>) -> SqlxQuery<'q, D> {
        D::bind_blob(q, Some(self))
    }
}

/// A session key binds as its 32 bytes.
impl<'q> Param<'q> for &'q SessionKey {
    fn bind_to<D: Driver>(self, q: SqlxQuery<'q, D>) -> SqlxQuery<'q, D> {
        D::bind_blob(q, Some(&self.as_bytes()[..]))
    }
}

impl<'q> Param<'q> for Option<&'q SessionKey> {
    fn bind_to<D: Driver>(self, q: SqlxQuery<'q, D>) -> SqlxQuery<'q, D> {
        D::bind_blob(q, self.map(|k| &k.as_bytes()[..]))
    }
}

impl<'q> Param<'q> for Option<&'q str> {
    fn bind_to<D: Driver>(self, q: SqlxQuery<'q, D>) -> SqlxQuery<'q, D> {
        D::bind_text(q, self)
    }
}

impl<'q> Param<'q> for &'q str {
    fn bind_to<D: Driver>(self, q: SqlxQuery<'q, D>) -> SqlxQuery<'q, D> {
        D::bind_text(q, Some(self))
    }
}

/// One column of a set of rows a statement writes or looks up in one go (see
/// [`Backend::rows`](crate::dialect::Backend::rows)): every column of a set has one entry per
/// row.
pub enum Col<'a> {
    Blob(Vec<&'a [u8]>),
    /// Blob, or NULL.
    OptBlob(Vec<Option<&'a [u8]>>),
    /// Text, or NULL.
    Text(Vec<Option<&'a str>>),
    Int(Vec<i64>),
}

impl<'a> Col<'a> {
    /// How many rows.
    pub fn len(&self) -> usize {
        match self {
            Col::Blob(v) => v.len(),
            Col::OptBlob(v) => v.len(),
            Col::Text(v) => v.len(),
            Col::Int(v) => v.len(),
        }
    }

    /// Rows `range` of the column.
    pub fn part(&self, range: std::ops::Range<usize>) -> Col<'a> {
        match self {
            Col::Blob(v) => Col::Blob(v[range].to_vec()),
            Col::OptBlob(v) => Col::OptBlob(v[range].to_vec()),
            Col::Text(v) => Col::Text(v[range].to_vec()),
            Col::Int(v) => Col::Int(v[range].to_vec()),
        }
    }
}

/// A value a column can be read as. A NULL read as a non-`Option` type is an error, as in sqlx.
pub trait Value: Sized {
    /// Column `i` of `row`.
    fn read<D: Driver>(row: &D::Row, i: usize) -> Result<Self, sqlx::Error>;
}

fn not_null<T>(value: Option<T>, index: usize) -> Result<T, sqlx::Error> {
    value.ok_or_else(|| sqlx::Error::ColumnDecode {
        index: index.to_string(),
        source: Box::new(sqlx::error::UnexpectedNullError),
    })
}

macro_rules! value {
    ($t:ty, $get:ident) => {
        impl Value for Option<$t> {
            fn read<D: Driver>(row: &D::Row, i: usize) -> Result<Self, sqlx::Error> {
                D::$get(row, i)
            }
        }
        impl Value for $t {
            fn read<D: Driver>(row: &D::Row, i: usize) -> Result<Self, sqlx::Error> {
                not_null(D::$get(row, i)?, i)
            }
        }
    };
}

value!(i64, int);
value!(Vec<u8>, blob);
value!(String, text);

/// A row read as a tuple of columns, like sqlx's `query_as` into a tuple.
pub trait Columns: Sized {
    /// The row's first columns, in order.
    fn read<Db: Driver>(row: &Row<Db>) -> Result<Self, sqlx::Error>;
}

macro_rules! columns {
    ($($t:ident $i:tt),+) => {
        impl<$($t: Value),+> Columns for ($($t,)+) {
            fn read<Db: Driver>(row: &Row<Db>) -> Result<Self, sqlx::Error> {
                Ok(($(row.get::<$t>($i)?,)+))
            }
        }
    };
}

columns!(A 0, B 1, C 2);
columns!(A 0, B 1, C 2, D 3, E 4);

/// One statement with its parameters: `stmt::<D>(sql).bind(a).bind(b).execute(c)`.
pub struct Stmt<'q, D: Driver>(SqlxQuery<'q, D>);

/// A statement of `sql` (parameters written `$1`, `$2`, … in both dialects: sqlx numbers
/// SQLite's `$N` parameters as PostgreSQL does).
pub fn stmt<D: Driver>(sql: &str) -> Stmt<'_, D> {
    Stmt(sqlx::query(sql))
}

impl<'q, D: Driver> Stmt<'q, D> {
    /// Bind the next parameter.
    pub fn bind(self, value: impl Param<'q>) -> Self {
        Stmt(value.bind_to(self.0))
    }

    /// Change the underlying sqlx query (bind a set of rows).
    pub fn map(self, f: impl FnOnce(SqlxQuery<'q, D>) -> SqlxQuery<'q, D>) -> Self {
        Stmt(f(self.0))
    }

    /// Run it on a connection; how many rows it changed.
    pub async fn execute(self, c: &mut D::Connection) -> Result<u64, sqlx::Error> {
        D::execute(self.0, c).await
    }

    /// Run it on a connection; every row.
    pub async fn fetch_all(self, c: &mut D::Connection) -> Result<Vec<Row<D>>, sqlx::Error> {
        Ok(D::fetch_all(self.0, c)
            .await?
            .into_iter()
            .map(Row)
            .collect())
    }

    /// Run it on a connection; the first row, if any.
    pub async fn fetch_optional(
        self,
        c: &mut D::Connection,
    ) -> Result<Option<Row<D>>, sqlx::Error> {
        Ok(D::fetch_optional(self.0, c).await?.map(Row))
    }

    /// Run it on a pooled connection; how many rows it changed.
    pub async fn execute_in(self, pool: &Pool<D>) -> Result<u64, sqlx::Error> {
        let mut c = pool.acquire().await?;
        self.execute(&mut c).await
    }

    /// Run it on a pooled connection; every row.
    pub async fn fetch_all_in(self, pool: &Pool<D>) -> Result<Vec<Row<D>>, sqlx::Error> {
        let mut c = pool.acquire().await?;
        self.fetch_all(&mut c).await
    }

    /// Run it on a pooled connection; every row as a tuple.
    pub async fn fetch_tuples_in<T: Columns>(self, pool: &Pool<D>) -> Result<Vec<T>, sqlx::Error> {
        self.fetch_all_in(pool).await?.iter().map(T::read).collect()
    }

    /// Run it on a pooled connection; the first row (none is `RowNotFound`, as in sqlx).
    pub async fn fetch_one_in(self, pool: &Pool<D>) -> Result<Row<D>, sqlx::Error> {
        let mut c = pool.acquire().await?;
        self.fetch_optional(&mut c)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }
}

/// A row a [`Stmt`] returned.
pub struct Row<D: Driver>(D::Row);

impl<D: Driver> Row<D> {
    /// Column `i`, like sqlx's `try_get`.
    pub fn get<T: Value>(&self, i: usize) -> Result<T, sqlx::Error> {
        T::read::<D>(&self.0, i)
    }
}

/// Begin a transaction with `begin` (`BEGIN IMMEDIATE` on SQLite), or the driver's default.
pub async fn begin<D: Driver>(
    pool: &Pool<D>,
    begin: Option<&'static str>,
) -> Result<Transaction<'static, D>, sqlx::Error> {
    match begin {
        Some(statement) => pool.begin_with(statement).await,
        None => pool.begin().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared statements number parameters `$1`, `$2`, … and may use them out of order
    /// (`touch` uses `$2` before `$1`): sqlx binds SQLite's `$N` by its number, as PostgreSQL
    /// does, not by order of appearance.
    #[tokio::test]
    async fn sqlite_binds_dollar_parameters_by_number() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let row: (i64, String, i64) = stmt::<sqlx::Sqlite>("SELECT $3, $2, $1 + $3")
            .bind(1)
            .bind("two")
            .bind(3)
            .fetch_tuples_in(&pool)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(row, (3, "two".to_owned(), 4));
    }

    #[tokio::test]
    async fn null_reads_as_none_or_an_error() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let row = stmt::<sqlx::Sqlite>("SELECT NULL")
            .fetch_one_in(&pool)
            .await
            .unwrap();
        assert_eq!(row.get::<Option<i64>>(0).unwrap(), None);
        assert!(row.get::<i64>(0).is_err());
    }
}
