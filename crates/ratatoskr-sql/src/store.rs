//! [`Store`]: the session store, one implementation for both dialects.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::pool::Pool;

use ratatoskr_core::codec::{self, Limits};
use ratatoskr_core::{
    Delta, Handle, Meta, Millis, Record, SessionKey, SessionStore, SessionSummary, StoreError,
    StoreResult, now_ms,
};

use crate::SqlOptions;
use crate::audit::SqlAudit;
use crate::common;
use crate::dialect::Dialect;
use crate::driver::{Row, begin, stmt};
use crate::group::{GroupCommit, Op, WriteStats, Writer};
use crate::journal::SqlJournal;
use crate::write::Core;

/// Sessions in a SQL database: [`SqliteStore`](crate::SqliteStore) (`Store<Sqlite>`, the
/// embedded default) or [`PgStore`](crate::PgStore) (`Store<Postgres>`, for several instances
/// sharing one database, in the connection's current schema).
///
/// Every operation is the same code on both; the [`Dialect`] supplies what differs (see
/// `docs/sql.md` for how each operation maps to SQL). Cheap to clone: clones share the pool
/// and the group-commit writer.
///
/// Code for either backend is generic over the dialect:
///
/// ```
/// use ratatoskr_core::SessionStore;
/// use ratatoskr_sql::{Dialect, SqliteStore, Store};
///
/// async fn live_sessions<D: Dialect>(store: &Store<D>) -> u64 {
///     store.count().await.unwrap_or(0)
/// }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
/// assert_eq!(live_sessions(&store).await, 0);
/// # });
/// ```
pub struct Store<D: Dialect> {
    pool: Pool<D>,
    limits: Limits,
    core: Arc<Core<D>>,
    writer: Writer,
}

impl<D: Dialect> Clone for Store<D> {
    fn clone(&self) -> Self {
        Store {
            pool: self.pool.clone(),
            limits: self.limits.clone(),
            core: self.core.clone(),
            writer: self.writer.clone(),
        }
    }
}

impl<D: Dialect> std::fmt::Debug for Store<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &D::BACKEND)
            .field("limits", &self.limits)
            .field("group_commit", &self.writer.config())
            .finish_non_exhaustive()
    }
}

fn be<D: Dialect>(e: sqlx::Error) -> StoreError {
    common::map_err(D::BACKEND, e)
}

impl<D: Dialect> Store<D> {
    /// Connect to `url` with default [`SqlOptions`] and apply migrations.
    ///
    /// SQLite: `sqlite://path/to/file.db` or `sqlite:file.db` (created, with its directory, if
    /// missing), or `sqlite::memory:` (a private in-memory database held by one connection:
    /// for tests and demos only). PostgreSQL: `postgres://user@host:port/database`; to keep
    /// Ratatoskr's tables in their own schema, add `?options=-c%20search_path%3Dsessions` (the
    /// schema must exist).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, &SqlOptions::default()).await
    }

    /// Connect to `url` with the given options and apply migrations.
    pub async fn connect_with(url: &str, options: &SqlOptions) -> StoreResult<Self> {
        let pool = D::open(url, options).await?;
        Self::configured(pool, options).await
    }

    /// A store on a pool this crate opened: migrated, with the options' limits and group
    /// commit.
    pub(crate) async fn configured(pool: Pool<D>, options: &SqlOptions) -> StoreResult<Self> {
        Ok(Self::from_pool(pool)
            .await?
            .with_limits(options.limits.clone())
            .with_group_commit(options.group_commit.clone()))
    }

    /// Use an existing pool (the application's) and apply migrations (group commit on, default
    /// limits). On SQLite, also switches the file to WAL mode if it is not already.
    ///
    /// For the recommended SQLite per-connection settings build the pool's options with
    /// `foreign_keys(true)` (sqlx's default, and required: attributes are deleted with their
    /// session by a foreign key), `synchronous(SqliteSynchronous::Normal)` and a busy timeout.
    pub async fn from_pool(pool: Pool<D>) -> StoreResult<Self> {
        D::prepare(&pool).await?;
        crate::migrate::migrate(&pool).await?;
        let core = Arc::new(Core::new(pool.clone()));
        let writer = Writer::new(
            D::BACKEND,
            core.clone(),
            &GroupCommit::default(),
            D::max_lanes(&pool),
        );
        Ok(Store {
            pool,
            limits: Limits::default(),
            core,
            writer,
        })
    }

    /// Group writes with these settings instead of [`GroupCommit::default`]
    /// ([`GroupCommit::off`] for one transaction per write). Lanes are clamped to the pool size
    /// on PostgreSQL; SQLite always uses one lane (the file has one writer at a time).
    pub fn with_group_commit(mut self, config: GroupCommit) -> Self {
        self.writer = Writer::new(
            D::BACKEND,
            self.core.clone(),
            &config,
            D::max_lanes(&self.pool),
        );
        self
    }

    /// The group-commit settings in effect.
    pub fn group_commit(&self) -> GroupCommit {
        self.writer.config()
    }

    /// How many write transactions this store (all its clones) committed, and how many writes
    /// they carried.
    pub fn write_stats(&self) -> WriteStats {
        self.core.stats.snapshot()
    }

    /// The outage journal in this database (`ratatoskr_redis_journal`), sharing this store's
    /// pool and writer (its appends are group-committed with the session writes).
    pub fn journal(&self) -> SqlJournal {
        SqlJournal::new(D::any_pool(self.pool.clone()), self.writer.clone())
    }

    /// Enforce these limits instead of [`Limits::default`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits this store enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The connection pool, for the application's own tables in the same database.
    pub fn pool(&self) -> &Pool<D> {
        &self.pool
    }

    /// An audit sink writing to this database's `ratatoskr_audit` table.
    pub fn audit(&self) -> SqlAudit {
        SqlAudit::migrated(D::any_pool(self.pool.clone()))
    }

    /// Find a live session by its public handle (for administration pages).
    pub async fn find_by_handle(&self, handle: &Handle) -> StoreResult<Option<SessionSummary>> {
        let text = handle.to_string();
        let rows = stmt::<D>(
            "SELECT session_key, meta, last_seen FROM ratatoskr_sessions
             WHERE handle = $1 AND expires_at > $2",
        )
        .bind(text.as_str())
        .bind(now_ms())
        .fetch_all_in(&self.pool)
        .await
        .map_err(be::<D>)?;
        for row in &rows {
            if let Some(s) = summary(row)?
                && s.handle == *handle
            {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }
}

/// A `(session_key, meta, last_seen)` row as a list line, if it decodes.
fn summary<D: Dialect>(row: &Row<D>) -> StoreResult<Option<SessionSummary>> {
    let key: Vec<u8> = row.get(0).map_err(be::<D>)?;
    let meta: Vec<u8> = row.get(1).map_err(be::<D>)?;
    let last_seen: i64 = row.get(2).map_err(be::<D>)?;
    Ok(common::summary(D::BACKEND, &key, &meta, last_seen))
}

/// End a transaction: commit on success; on failure roll back at once (releasing its locks
/// now rather than when the pool next tests the connection) and return the original error.
async fn finish<D: Dialect, T>(
    tx: sqlx::Transaction<'static, D>,
    result: StoreResult<T>,
) -> StoreResult<T> {
    match result {
        Ok(value) => {
            tx.commit().await.map_err(be::<D>)?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(backend = D::BACKEND, error = %rollback, "rollback failed");
            }
            Err(e)
        }
    }
}

#[async_trait]
impl<D: Dialect> SessionStore for Store<D> {
    fn backend_name(&self) -> &'static str {
        D::BACKEND
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> StoreResult<()> {
        let meta_blob = codec::encode_meta(&record.meta, &self.limits)?;
        codec::check_record(record, &self.limits)?;
        self.writer
            .submit(Op::Create {
                key: *key,
                record: record.clone(),
                meta_blob,
            })
            .await
            .map(drop)
    }

    async fn restore(&self, key: &SessionKey, record: &Record) -> StoreResult<bool> {
        let meta_blob = codec::encode_meta(&record.meta, &self.limits)?;
        codec::check_record(record, &self.limits)?;
        self.writer
            .submit(Op::Restore {
                key: *key,
                record: record.clone(),
                meta_blob,
            })
            .await
    }

    async fn load(&self, key: &SessionKey) -> StoreResult<Option<Record>> {
        let rows = stmt::<D>(
            "SELECT s.meta, s.last_seen, a.name, a.value
             FROM ratatoskr_sessions s
             LEFT JOIN ratatoskr_session_attrs a ON a.session_key = s.session_key
             WHERE s.session_key = $1 AND s.expires_at > $2",
        )
        .bind(key)
        .bind(now_ms())
        .fetch_all_in(&self.pool)
        .await
        .map_err(be::<D>)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let blob: Vec<u8> = first.get(0).map_err(be::<D>)?;
        let last_seen: i64 = first.get(1).map_err(be::<D>)?;
        let Some(meta) = common::decode_meta(D::BACKEND, key, &blob) else {
            return Ok(None);
        };
        let mut record = Record {
            meta,
            last_seen,
            attrs: Default::default(),
        };
        for row in &rows {
            if let Some(name) = row.get::<Option<String>>(2).map_err(be::<D>)? {
                let value: Vec<u8> = row.get(3).map_err(be::<D>)?;
                record.attrs.insert(name, value);
            }
        }
        Ok(Some(record))
    }

    async fn apply(&self, key: &SessionKey, delta: &Delta) -> StoreResult<()> {
        common::check_names(delta, &self.limits)?;
        self.writer
            .submit(Op::Apply {
                key: *key,
                delta: common::normalize(delta),
                limits: self.limits.clone(),
            })
            .await
            .map(drop)
    }

    async fn touch(&self, key: &SessionKey, _meta: &Meta, last_seen: Millis) -> StoreResult<bool> {
        self.writer
            .submit(Op::Touch {
                key: *key,
                last_seen,
            })
            .await
    }

    async fn touch_many(&self, touches: &[(SessionKey, Meta, Millis)]) -> StoreResult<()> {
        if touches.is_empty() {
            return Ok(());
        }
        self.writer
            .submit(Op::TouchMany(crate::group::dedup_touches(touches)))
            .await
            .map(drop)
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        meta: &Meta,
        now: Millis,
    ) -> StoreResult<()> {
        let meta_blob = codec::encode_meta(meta, &self.limits)?;
        self.writer
            .submit(Op::Rotate {
                old: *old,
                new: *new,
                meta: meta.clone(),
                meta_blob,
                now,
                limits: self.limits.clone(),
            })
            .await
            .map(drop)
    }

    async fn destroy(&self, key: &SessionKey) -> StoreResult<bool> {
        self.writer.submit(Op::Destroy(*key)).await
    }

    async fn list_user(&self, user_id: &str) -> StoreResult<Vec<SessionSummary>> {
        let rows = stmt::<D>(
            "SELECT session_key, meta, last_seen FROM ratatoskr_sessions
             WHERE user_id = $1 AND expires_at > $2
             ORDER BY created_at",
        )
        .bind(user_id)
        .bind(now_ms())
        .fetch_all_in(&self.pool)
        .await
        .map_err(be::<D>)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.extend(summary(row)?);
        }
        common::sort_summaries(&mut out);
        Ok(out)
    }

    async fn destroy_user(&self, user_id: &str, except: Option<&SessionKey>) -> StoreResult<u64> {
        let _turn = self.core.turn().await;
        let mut tx = begin(&self.pool, D::BEGIN).await.map_err(be::<D>)?;
        let result = async {
            D::lock_user(&mut tx, Some(user_id))
                .await
                .map_err(|f| f.into_store(D::BACKEND))?;
            let now = now_ms();
            stmt::<D>(&D::statements().revoke)
                .bind(user_id)
                .bind(now)
                .execute(&mut tx)
                .await
                .map_err(be::<D>)?;
            let deleted = stmt::<D>(
                "DELETE FROM ratatoskr_sessions
                 WHERE user_id = $1 AND ($2 IS NULL OR session_key <> $2)
                 RETURNING expires_at",
            )
            .bind(user_id)
            .bind(except)
            .fetch_all(&mut tx)
            .await
            .map_err(be::<D>)?;
            let mut live = 0;
            for row in &deleted {
                if row.get::<i64>(0).map_err(be::<D>)? > now {
                    live += 1;
                }
            }
            Ok(live)
        }
        .await;
        finish(tx, result).await
    }

    async fn count(&self) -> StoreResult<u64> {
        let n: i64 = stmt::<D>("SELECT count(*) FROM ratatoskr_sessions WHERE expires_at > $1")
            .bind(now_ms())
            .fetch_one_in(&self.pool)
            .await
            .and_then(|row| row.get(0))
            .map_err(be::<D>)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn reap(&self) -> StoreResult<u64> {
        // In batches, so no statement holds the write lock (SQLite) or many row locks
        // (PostgreSQL) for long, and writers interleave.
        let now = now_ms();
        let mut total = 0;
        loop {
            let _turn = self.core.turn().await;
            let deleted = stmt::<D>(&D::statements().reap)
                .bind(now)
                .bind(crate::REAP_BATCH)
                .execute_in(&self.pool)
                .await
                .map_err(be::<D>)?;
            total += deleted;
            if deleted < crate::REAP_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        stmt::<D>("SELECT 1")
            .execute_in(&self.pool)
            .await
            .map_err(be::<D>)?;
        Ok(())
    }
}
