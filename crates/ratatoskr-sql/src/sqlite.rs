//! The SQLite session store: the embedded default.
//!
//! One file next to the application, nothing to run beside it. The database is opened in WAL
//! mode (readers never block the writer and the writer never blocks readers) with
//! `synchronous=NORMAL` (durable at every checkpoint, fast commits), foreign keys on, and a busy
//! timeout. Every read-then-write operation runs in a `BEGIN IMMEDIATE` transaction, which takes
//! the database's single write lock up front, so two writers can never deadlock upgrading a read
//! lock; within one store instance writers also queue on an in-process lock, so they wait in
//! order instead of polling SQLite's busy handler.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use ratatoskr_core::codec::{self, Limits};
use ratatoskr_core::{
    Delta, Handle, Meta, Millis, Record, SessionKey, SessionStore, SessionSummary, StoreError,
    StoreResult, now_ms,
};

use crate::SqlOptions;
use crate::audit::SqlAudit;
use crate::common::{self, len_from_db};

const BACKEND: &str = "sqlite";

fn be(e: sqlx::Error) -> StoreError {
    common::map_err(BACKEND, e)
}

/// Sessions in a SQLite database file.
///
/// Cheap to clone (clones share the pool and the writer queue).
///
/// ```no_run
/// # async fn demo() -> Result<(), ratatoskr_core::StoreError> {
/// use ratatoskr_sql::SqliteStore;
///
/// // Creates the file and its directory if missing, and applies migrations.
/// let store = SqliteStore::connect("sqlite://data/sessions.db").await?;
/// // The application's own tables can live in the same file.
/// sqlx::query("CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY)")
///     .execute(store.pool())
///     .await
///     .map_err(|e| ratatoskr_core::StoreError::backend("sqlite", e))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    limits: Limits,
    writer: Arc<Mutex<()>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Open (creating if missing) the database at `url` with default [`SqlOptions`].
    ///
    /// `url` is `sqlite://path/to/file.db`, `sqlite:file.db`, or `sqlite::memory:` (a private
    /// in-memory database held by one connection: for tests and demos only).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, &SqlOptions::default()).await
    }

    /// Open (creating if missing) the database at `url` with the given options.
    pub async fn connect_with(url: &str, options: &SqlOptions) -> StoreResult<Self> {
        let connect = SqliteConnectOptions::from_str(url).map_err(be)?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        Self::connect_with_options(connect, in_memory, options).await
    }

    /// Open the database described by sqlx connect options. Ratatoskr's settings (WAL,
    /// `synchronous=NORMAL`, foreign keys, busy timeout, create if missing) are applied on top.
    /// Set `in_memory` for an in-memory database, which then gets a single, never-recycled
    /// connection (its data lives only as long as that connection).
    pub async fn connect_with_options(
        connect: SqliteConnectOptions,
        in_memory: bool,
        options: &SqlOptions,
    ) -> StoreResult<Self> {
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
        let pool = pool_options.connect_with(connect).await.map_err(be)?;
        Ok(Self::from_pool(pool)
            .await?
            .with_limits(options.limits.clone()))
    }

    /// Use an existing pool (the application's): switches the file to WAL mode if it is not
    /// already, and applies migrations.
    ///
    /// For the recommended per-connection settings build the pool's options with
    /// `foreign_keys(true)` (sqlx's default, and required: attributes are deleted with their
    /// session by a foreign key), `synchronous(SqliteSynchronous::Normal)` and a busy timeout.
    pub async fn from_pool(pool: SqlitePool) -> StoreResult<Self> {
        enable_wal(&pool).await?;
        crate::migrate::sqlite(&pool).await?;
        Ok(SqliteStore {
            pool,
            limits: Limits::default(),
            writer: Arc::new(Mutex::new(())),
        })
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
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// An audit sink writing to this database's `ratatoskr_audit` table.
    pub fn audit(&self) -> SqlAudit {
        SqlAudit::from_sqlite_migrated(self.pool.clone())
    }

    /// Find a live session by its public handle (for administration pages).
    pub async fn find_by_handle(&self, handle: &Handle) -> StoreResult<Option<SessionSummary>> {
        let rows = sqlx::query(
            "SELECT session_key, meta, last_seen FROM ratatoskr_sessions
             WHERE handle = ?1 AND expires_at > ?2",
        )
        .bind(handle.to_string())
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(be)?;
        for row in rows {
            let key: Vec<u8> = row.try_get(0).map_err(be)?;
            let meta: Vec<u8> = row.try_get(1).map_err(be)?;
            let last_seen: i64 = row.try_get(2).map_err(be)?;
            if let Some(s) = common::summary(BACKEND, &key, &meta, last_seen)
                && s.handle == *handle
            {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// The journal mode the database is in: `"wal"` for a file once a store has opened it
    /// (`"memory"` for an in-memory database).
    pub async fn journal_mode(&self) -> StoreResult<String> {
        sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&self.pool)
            .await
            .map_err(be)
    }

    /// Start a write transaction: wait for this instance's writer turn, then take the
    /// database's write lock (`BEGIN IMMEDIATE`).
    async fn write(&self) -> StoreResult<(MutexGuard<'_, ()>, Transaction<'static, Sqlite>)> {
        let guard = self.writer.lock().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(be)?;
        Ok((guard, tx))
    }

    /// Delete expired rows under `key` or belonging to `user`, so a create may replace an
    /// expired session and the user's index never outgrows the live sessions.
    async fn prune(
        tx: &mut Transaction<'static, Sqlite>,
        key: &SessionKey,
        user: Option<&str>,
        now: Millis,
    ) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM ratatoskr_sessions
             WHERE expires_at <= ?1 AND (session_key = ?2 OR (?3 IS NOT NULL AND user_id = ?3))",
        )
        .bind(now)
        .bind(&key.as_bytes()[..])
        .bind(user)
        .execute(&mut **tx)
        .await
        .map_err(be)?;
        Ok(())
    }

    async fn check_revoked(
        tx: &mut Transaction<'static, Sqlite>,
        user: Option<&str>,
        at: Millis,
    ) -> StoreResult<()> {
        let Some(user) = user else { return Ok(()) };
        let revoked: Option<i64> = sqlx::query_scalar(
            "SELECT revoked_at FROM ratatoskr_user_revocations WHERE user_id = ?1",
        )
        .bind(user)
        .fetch_optional(&mut **tx)
        .await
        .map_err(be)?;
        match revoked {
            Some(t) if t >= at => Err(StoreError::Revoked),
            _ => Ok(()),
        }
    }

    /// Insert a session row; `false` if a row with this key exists.
    async fn insert_session(
        tx: &mut Transaction<'static, Sqlite>,
        key: &SessionKey,
        meta: &Meta,
        meta_blob: &[u8],
        last_seen: Millis,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO ratatoskr_sessions (session_key, handle, user_id, created_at, last_seen,
                 idle_timeout, absolute_deadline, expires_at, meta)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (session_key) DO NOTHING",
        )
        .bind(&key.as_bytes()[..])
        .bind(key.handle().to_string())
        .bind(meta.user_id.as_deref())
        .bind(meta.created_at)
        .bind(last_seen)
        .bind(meta.idle_timeout)
        .bind(meta.absolute_deadline)
        .bind(meta.idle_deadline(last_seen))
        .bind(meta_blob)
        .execute(&mut **tx)
        .await
        .map_err(be)?;
        Ok(done.rows_affected() == 1)
    }

    async fn upsert_attr(
        tx: &mut Transaction<'static, Sqlite>,
        key: &SessionKey,
        name: &str,
        value: &[u8],
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO ratatoskr_session_attrs (session_key, name, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (session_key, name) DO UPDATE SET value = excluded.value",
        )
        .bind(&key.as_bytes()[..])
        .bind(name)
        .bind(value)
        .execute(&mut **tx)
        .await
        .map_err(be)?;
        Ok(())
    }

    /// Meta length and (name, value length) of every attribute of a live session, or `None`.
    async fn sizes(
        tx: &mut Transaction<'static, Sqlite>,
        key: &SessionKey,
        now: Millis,
    ) -> StoreResult<Option<(usize, Vec<(String, usize)>)>> {
        let rows = sqlx::query(
            "SELECT length(s.meta), a.name, length(a.value)
             FROM ratatoskr_sessions s
             LEFT JOIN ratatoskr_session_attrs a ON a.session_key = s.session_key
             WHERE s.session_key = ?1 AND s.expires_at > ?2",
        )
        .bind(&key.as_bytes()[..])
        .bind(now)
        .fetch_all(&mut **tx)
        .await
        .map_err(be)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let meta_len = len_from_db(BACKEND, first.try_get::<i64, _>(0).map_err(be)?)?;
        let mut attrs = Vec::with_capacity(rows.len());
        for row in &rows {
            let name: Option<String> = row.try_get(1).map_err(be)?;
            if let Some(name) = name {
                let len: i64 = row.try_get(2).map_err(be)?;
                attrs.push((name, len_from_db(BACKEND, len)?));
            }
        }
        Ok(Some((meta_len, attrs)))
    }
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
        .is_some_and(|code| {
            // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with or without an extended code.
            code.parse::<i32>()
                .is_ok_and(|c| c & 0xff == 5 || c & 0xff == 6)
        })
}

/// End a transaction: commit on success; on failure roll back at once (releasing its locks
/// now rather than when the pool next tests the connection) and return the original error.
async fn finish<T>(tx: Transaction<'static, Sqlite>, result: StoreResult<T>) -> StoreResult<T> {
    match result {
        Ok(value) => {
            tx.commit().await.map_err(be)?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(backend = BACKEND, error = %rollback, "rollback failed");
            }
            Err(e)
        }
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> StoreResult<()> {
        let meta_blob = codec::encode_meta(&record.meta, &self.limits)?;
        codec::check_record(record, &self.limits)?;
        let user = record.meta.user_id.as_deref();
        let now = now_ms();
        let (_turn, mut tx) = self.write().await?;
        let result = async {
            Self::prune(&mut tx, key, user, now).await?;
            if !Self::insert_session(&mut tx, key, &record.meta, &meta_blob, record.last_seen)
                .await?
            {
                return Err(StoreError::Collision);
            }
            Self::check_revoked(&mut tx, user, record.meta.created_at).await?;
            for (name, value) in &record.attrs {
                Self::upsert_attr(&mut tx, key, name, value).await?;
            }
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn load(&self, key: &SessionKey) -> StoreResult<Option<Record>> {
        let rows = sqlx::query(
            "SELECT s.meta, s.last_seen, a.name, a.value
             FROM ratatoskr_sessions s
             LEFT JOIN ratatoskr_session_attrs a ON a.session_key = s.session_key
             WHERE s.session_key = ?1 AND s.expires_at > ?2",
        )
        .bind(&key.as_bytes()[..])
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(be)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let blob: Vec<u8> = first.try_get(0).map_err(be)?;
        let last_seen: i64 = first.try_get(1).map_err(be)?;
        let Some(meta) = common::decode_meta(BACKEND, key, &blob) else {
            return Ok(None);
        };
        let mut record = Record {
            meta,
            last_seen,
            attrs: Default::default(),
        };
        for row in &rows {
            let name: Option<String> = row.try_get(2).map_err(be)?;
            if let Some(name) = name {
                let value: Vec<u8> = row.try_get(3).map_err(be)?;
                record.attrs.insert(name, value);
            }
        }
        Ok(Some(record))
    }

    async fn apply(&self, key: &SessionKey, delta: &Delta) -> StoreResult<()> {
        common::check_names(delta, &self.limits)?;
        let delta = common::normalize(delta);
        let now = now_ms();
        let (_turn, mut tx) = self.write().await?;
        let result = async {
            let (meta_len, current) = Self::sizes(&mut tx, key, now)
                .await?
                .ok_or(StoreError::NotFound)?;
            common::check_size_after(meta_len, current, &delta, &self.limits)?;
            for name in &delta.remove {
                sqlx::query(
                    "DELETE FROM ratatoskr_session_attrs WHERE session_key = ?1 AND name = ?2",
                )
                .bind(&key.as_bytes()[..])
                .bind(*name)
                .execute(&mut *tx)
                .await
                .map_err(be)?;
            }
            for (name, value) in &delta.set {
                Self::upsert_attr(&mut tx, key, name, value).await?;
            }
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn touch(&self, key: &SessionKey, _meta: &Meta, last_seen: Millis) -> StoreResult<bool> {
        // The deadline is computed from the stored idle timeout and absolute deadline, never
        // from the caller's copy; last_seen never moves backwards (a slow request's late touch).
        let _turn = self.writer.lock().await;
        let done = sqlx::query(
            "UPDATE ratatoskr_sessions SET
                 last_seen = max(last_seen, ?2),
                 expires_at = CASE
                     WHEN idle_timeout >= absolute_deadline - max(last_seen, ?2)
                         THEN absolute_deadline
                     ELSE max(last_seen, ?2) + idle_timeout
                 END
             WHERE session_key = ?1 AND expires_at > ?3",
        )
        .bind(&key.as_bytes()[..])
        .bind(last_seen)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(be)?;
        Ok(done.rows_affected() > 0)
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        meta: &Meta,
        now: Millis,
    ) -> StoreResult<()> {
        let meta_blob = codec::encode_meta(meta, &self.limits)?;
        let user = meta.user_id.as_deref();
        let clock = now_ms();
        let (_turn, mut tx) = self.write().await?;
        let result = async {
            let (_, attrs) = Self::sizes(&mut tx, old, clock)
                .await?
                .ok_or(StoreError::NotFound)?;
            Self::prune(&mut tx, new, user, clock).await?;
            if !Self::insert_session(&mut tx, new, meta, &meta_blob, now).await? {
                return Err(StoreError::Collision);
            }
            Self::check_revoked(&mut tx, user, now).await?;
            common::check_size(
                meta_blob.len(),
                attrs.iter().map(|(n, l)| (n.len(), *l)),
                &self.limits,
            )?;
            sqlx::query(
                "INSERT INTO ratatoskr_session_attrs (session_key, name, value)
                 SELECT ?1, name, value FROM ratatoskr_session_attrs WHERE session_key = ?2",
            )
            .bind(&new.as_bytes()[..])
            .bind(&old.as_bytes()[..])
            .execute(&mut *tx)
            .await
            .map_err(be)?;
            sqlx::query("DELETE FROM ratatoskr_sessions WHERE session_key = ?1")
                .bind(&old.as_bytes()[..])
                .execute(&mut *tx)
                .await
                .map_err(be)?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn destroy(&self, key: &SessionKey) -> StoreResult<bool> {
        let _turn = self.writer.lock().await;
        let expires: Option<i64> = sqlx::query_scalar(
            "DELETE FROM ratatoskr_sessions WHERE session_key = ?1 RETURNING expires_at",
        )
        .bind(&key.as_bytes()[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(be)?;
        Ok(expires.is_some_and(|t| t > now_ms()))
    }

    async fn list_user(&self, user_id: &str) -> StoreResult<Vec<SessionSummary>> {
        let rows = sqlx::query(
            "SELECT session_key, meta, last_seen FROM ratatoskr_sessions
             WHERE user_id = ?1 AND expires_at > ?2
             ORDER BY created_at",
        )
        .bind(user_id)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(be)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let key: Vec<u8> = row.try_get(0).map_err(be)?;
            let meta: Vec<u8> = row.try_get(1).map_err(be)?;
            let last_seen: i64 = row.try_get(2).map_err(be)?;
            out.extend(common::summary(BACKEND, &key, &meta, last_seen));
        }
        common::sort_summaries(&mut out);
        Ok(out)
    }

    async fn destroy_user(&self, user_id: &str, except: Option<&SessionKey>) -> StoreResult<u64> {
        let (_turn, mut tx) = self.write().await?;
        let result = async {
            let now = now_ms();
            sqlx::query(
                "INSERT INTO ratatoskr_user_revocations (user_id, revoked_at) VALUES (?1, ?2)
                 ON CONFLICT (user_id) DO UPDATE SET revoked_at = max(revoked_at, excluded.revoked_at)",
            )
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(be)?;
            let deleted: Vec<i64> = sqlx::query_scalar(
                "DELETE FROM ratatoskr_sessions
                 WHERE user_id = ?1 AND (?2 IS NULL OR session_key <> ?2)
                 RETURNING expires_at",
            )
            .bind(user_id)
            .bind(except.map(|k| &k.as_bytes()[..]))
            .fetch_all(&mut *tx)
            .await
            .map_err(be)?;
            Ok(deleted.iter().filter(|&&t| t > now).count() as u64)
        }
        .await;
        finish(tx, result).await
    }

    async fn count(&self) -> StoreResult<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ratatoskr_sessions WHERE expires_at > ?1")
                .bind(now_ms())
                .fetch_one(&self.pool)
                .await
                .map_err(be)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn reap(&self) -> StoreResult<u64> {
        // In batches, so the write lock is never held for long and writers interleave.
        let now = now_ms();
        let mut total = 0;
        loop {
            let _turn = self.writer.lock().await;
            let done = sqlx::query(
                "DELETE FROM ratatoskr_sessions WHERE session_key IN (
                     SELECT session_key FROM ratatoskr_sessions WHERE expires_at <= ?1 LIMIT ?2)",
            )
            .bind(now)
            .bind(crate::REAP_BATCH)
            .execute(&self.pool)
            .await
            .map_err(be)?;
            total += done.rows_affected();
            if done.rows_affected() < crate::REAP_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(be)?;
        Ok(())
    }
}
