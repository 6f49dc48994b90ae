//! The SQLite session store: the embedded default.
//!
//! One file next to the application, nothing to run beside it. The database is opened in WAL
//! mode (readers never block the writer and the writer never blocks readers) with
//! `synchronous=NORMAL` (durable at every checkpoint, fast commits), foreign keys on, and a busy
//! timeout. Every read-then-write operation runs in a `BEGIN IMMEDIATE` transaction, which takes
//! the database's single write lock up front, so two writers can never deadlock upgrading a read
//! lock; within one store instance writers also queue on an in-process lock, so they wait in
//! order instead of polling SQLite's busy handler. With group commit on (the default), the
//! writes queued meanwhile are made by one writer task in one transaction per turn (see
//! [`GroupCommit`]).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection};
use tokio::sync::Mutex;

use ratatoskr_core::codec::{self, Limits};
use ratatoskr_core::{
    Delta, Handle, JournalTarget, Meta, Millis, Record, SessionKey, SessionStore, SessionSummary,
    StoreError, StoreResult, now_ms,
};

use crate::SqlOptions;
use crate::audit::SqlAudit;
use crate::common::{self, Normalized, len_from_db};
use crate::group::{
    Attempt, Batcher, Fail, GroupCommit, Op, OpResult, Stats, WriteStats, Writer, log_rerun,
};
use crate::journal::SqlJournal;

const BACKEND: &str = "sqlite";

fn be(e: sqlx::Error) -> StoreError {
    common::map_err(BACKEND, e)
}

/// Sessions in a SQLite database file.
///
/// Cheap to clone (clones share the pool, the writer queue and the group-commit writer).
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
    core: Arc<Core>,
    writer: Writer,
}

/// The database side of the writes: the pool, this instance's writer turn, and the counters.
struct Core {
    pool: SqlitePool,
    /// This instance's writers queue here (FIFO) before they take SQLite's write lock.
    turn: Mutex<()>,
    stats: Stats,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("limits", &self.limits)
            .field("group_commit", &self.writer.config())
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
            .with_limits(options.limits.clone())
            .with_group_commit(options.group_commit.clone()))
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
        let core = Arc::new(Core {
            pool: pool.clone(),
            turn: Mutex::new(()),
            stats: Stats::default(),
        });
        let writer = Writer::new(BACKEND, core.clone(), &GroupCommit::default(), 1);
        Ok(SqliteStore {
            pool,
            limits: Limits::default(),
            core,
            writer,
        })
    }

    /// Group writes with these settings instead of [`GroupCommit::default`]
    /// ([`GroupCommit::off`] for one transaction per write). SQLite always uses one lane: the
    /// file has one writer at a time.
    pub fn with_group_commit(mut self, config: GroupCommit) -> Self {
        self.writer = Writer::new(BACKEND, self.core.clone(), &config, 1);
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
        SqlJournal::sqlite(self.pool.clone(), self.writer.clone())
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
}

// ---------------------------------------------------------------------------------------------
// The writes, each on a connection that is inside a `BEGIN IMMEDIATE` transaction (or, for the
// single-statement ones, on its own). Each checks before it writes, so a write refused for its
// own reasons has written nothing and its batch goes on.

fn key_bytes(key: &SessionKey) -> &[u8] {
    &key.as_bytes()[..]
}

/// Delete expired rows under `key` or belonging to `user`, so a create may replace an expired
/// session and the user's index never outgrows the live sessions. (Deleting expired rows is
/// harmless even when the write it precedes is refused.)
async fn prune(
    c: &mut SqliteConnection,
    key: &SessionKey,
    user: Option<&str>,
    now: Millis,
) -> OpResult<()> {
    sqlx::query(
        "DELETE FROM ratatoskr_sessions
         WHERE expires_at <= ?1 AND (session_key = ?2 OR (?3 IS NOT NULL AND user_id = ?3))",
    )
    .bind(now)
    .bind(key_bytes(key))
    .bind(user)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Whether `user`'s sessions were revoked at or after `at`.
async fn revoked_since(c: &mut SqliteConnection, user: Option<&str>, at: Millis) -> OpResult<bool> {
    let Some(user) = user else { return Ok(false) };
    let revoked: Option<i64> =
        sqlx::query_scalar("SELECT revoked_at FROM ratatoskr_user_revocations WHERE user_id = ?1")
            .bind(user)
            .fetch_optional(&mut *c)
            .await?;
    Ok(revoked.is_some_and(|t| t >= at))
}

/// Whether a row exists under `key` (after `prune`, a live one).
async fn exists(c: &mut SqliteConnection, key: &SessionKey) -> OpResult<bool> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM ratatoskr_sessions WHERE session_key = ?1")
            .bind(key_bytes(key))
            .fetch_optional(&mut *c)
            .await?;
    Ok(found.is_some())
}

/// A refusal, unless the key is taken: a collision is reported first, as if the insert had
/// been tried.
async fn refuse(c: &mut SqliteConnection, key: &SessionKey, refusal: StoreError) -> Fail {
    match exists(c, key).await {
        Ok(true) => Fail::Refused(StoreError::Collision),
        Ok(false) => Fail::Refused(refusal),
        Err(e) => e,
    }
}

/// Insert a session row; `false` if a row with this key exists.
async fn insert_session(
    c: &mut SqliteConnection,
    key: &SessionKey,
    meta: &Meta,
    meta_blob: &[u8],
    last_seen: Millis,
) -> OpResult<bool> {
    let done = sqlx::query(
        "INSERT INTO ratatoskr_sessions (session_key, handle, user_id, created_at, last_seen,
             idle_timeout, absolute_deadline, expires_at, meta)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (session_key) DO NOTHING",
    )
    .bind(key_bytes(key))
    .bind(key.handle().to_string())
    .bind(meta.user_id.as_deref())
    .bind(meta.created_at)
    .bind(last_seen)
    .bind(meta.idle_timeout)
    .bind(meta.absolute_deadline)
    .bind(meta.idle_deadline(last_seen))
    .bind(meta_blob)
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() == 1)
}

async fn upsert_attr(
    c: &mut SqliteConnection,
    key: &SessionKey,
    name: &str,
    value: &[u8],
) -> OpResult<()> {
    sqlx::query(
        "INSERT INTO ratatoskr_session_attrs (session_key, name, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (session_key, name) DO UPDATE SET value = excluded.value",
    )
    .bind(key_bytes(key))
    .bind(name)
    .bind(value)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Meta length and (name, value length) of every attribute of a live session, or `None`.
async fn sizes(
    c: &mut SqliteConnection,
    key: &SessionKey,
    now: Millis,
) -> OpResult<Option<(usize, Vec<(String, usize)>)>> {
    let rows = sqlx::query(
        "SELECT length(s.meta), a.name, length(a.value)
         FROM ratatoskr_sessions s
         LEFT JOIN ratatoskr_session_attrs a ON a.session_key = s.session_key
         WHERE s.session_key = ?1 AND s.expires_at > ?2",
    )
    .bind(key_bytes(key))
    .bind(now)
    .fetch_all(&mut *c)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let meta_len = len_from_db(BACKEND, first.try_get::<i64, _>(0)?)?;
    let mut attrs = Vec::with_capacity(rows.len());
    for row in &rows {
        let name: Option<String> = row.try_get(1)?;
        if let Some(name) = name {
            let len: i64 = row.try_get(2)?;
            attrs.push((name, len_from_db(BACKEND, len)?));
        }
    }
    Ok(Some((meta_len, attrs)))
}

async fn create(
    c: &mut SqliteConnection,
    key: &SessionKey,
    record: &Record,
    meta_blob: &[u8],
) -> OpResult<()> {
    let user = record.meta.user_id.as_deref();
    prune(c, key, user, now_ms()).await?;
    if revoked_since(c, user, record.meta.created_at).await? {
        return Err(refuse(c, key, StoreError::Revoked).await);
    }
    if !insert_session(c, key, &record.meta, meta_blob, record.last_seen).await? {
        return Err(StoreError::Collision.into());
    }
    for (name, value) in &record.attrs {
        upsert_attr(c, key, name, value).await?;
    }
    Ok(())
}

async fn restore(
    c: &mut SqliteConnection,
    key: &SessionKey,
    record: &Record,
    meta_blob: &[u8],
) -> OpResult<bool> {
    let now = now_ms();
    if record.is_expired(now) {
        return Ok(false);
    }
    prune(c, key, record.meta.user_id.as_deref(), now).await?;
    if !insert_session(c, key, &record.meta, meta_blob, record.last_seen).await? {
        return Ok(false);
    }
    for (name, value) in &record.attrs {
        upsert_attr(c, key, name, value).await?;
    }
    Ok(true)
}

async fn apply(
    c: &mut SqliteConnection,
    key: &SessionKey,
    delta: &Normalized,
    limits: &Limits,
) -> OpResult<()> {
    let (meta_len, current) = sizes(c, key, now_ms()).await?.ok_or(StoreError::NotFound)?;
    common::check_size_after(meta_len, current, delta, limits)?;
    for name in &delta.remove {
        sqlx::query("DELETE FROM ratatoskr_session_attrs WHERE session_key = ?1 AND name = ?2")
            .bind(key_bytes(key))
            .bind(name)
            .execute(&mut *c)
            .await?;
    }
    for (name, value) in &delta.set {
        upsert_attr(c, key, name, value).await?;
    }
    Ok(())
}

/// The deadline is computed from the stored idle timeout and absolute deadline, never from the
/// caller's copy; last_seen never moves backwards (a slow request's late touch).
async fn touch(c: &mut SqliteConnection, key: &SessionKey, last_seen: Millis) -> OpResult<bool> {
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
    .bind(key_bytes(key))
    .bind(last_seen)
    .bind(now_ms())
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() > 0)
}

#[allow(clippy::too_many_arguments)]
async fn rotate(
    c: &mut SqliteConnection,
    old: &SessionKey,
    new: &SessionKey,
    meta: &Meta,
    meta_blob: &[u8],
    now: Millis,
    limits: &Limits,
) -> OpResult<()> {
    let user = meta.user_id.as_deref();
    let clock = now_ms();
    let (_, attrs) = sizes(c, old, clock).await?.ok_or(StoreError::NotFound)?;
    prune(c, new, user, clock).await?;
    let refusal = if revoked_since(c, user, now).await? {
        Some(StoreError::Revoked)
    } else {
        common::check_size(
            meta_blob.len(),
            attrs.iter().map(|(n, l)| (n.len(), *l)),
            limits,
        )
        .err()
        .map(StoreError::Codec)
    };
    if let Some(refusal) = refusal {
        return Err(refuse(c, new, refusal).await);
    }
    if !insert_session(c, new, meta, meta_blob, now).await? {
        return Err(StoreError::Collision.into());
    }
    sqlx::query(
        "INSERT INTO ratatoskr_session_attrs (session_key, name, value)
         SELECT ?1, name, value FROM ratatoskr_session_attrs WHERE session_key = ?2",
    )
    .bind(key_bytes(new))
    .bind(key_bytes(old))
    .execute(&mut *c)
    .await?;
    sqlx::query("DELETE FROM ratatoskr_sessions WHERE session_key = ?1")
        .bind(key_bytes(old))
        .execute(&mut *c)
        .await?;
    Ok(())
}

async fn destroy(c: &mut SqliteConnection, key: &SessionKey) -> OpResult<bool> {
    let expires: Option<i64> = sqlx::query_scalar(
        "DELETE FROM ratatoskr_sessions WHERE session_key = ?1 RETURNING expires_at",
    )
    .bind(key_bytes(key))
    .fetch_optional(&mut *c)
    .await?;
    Ok(expires.is_some_and(|t| t > now_ms()))
}

async fn journal_append(c: &mut SqliteConnection, targets: &[JournalTarget]) -> OpResult<()> {
    let at = now_ms();
    for target in targets {
        let (kind, key, user) = crate::journal::columns(target);
        sqlx::query(
            "INSERT INTO ratatoskr_redis_journal (at, kind, session_key, user_id)
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(at)
        .bind(kind)
        .bind(key)
        .bind(user)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

async fn journal_ack(c: &mut SqliteConnection, ids: &[i64]) -> OpResult<()> {
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    sqlx::query(
        "DELETE FROM ratatoskr_redis_journal WHERE id IN (SELECT value FROM json_each(?1))",
    )
    .bind(format!("[{list}]"))
    .execute(&mut *c)
    .await?;
    Ok(())
}

async fn run_op(c: &mut SqliteConnection, op: &Op) -> OpResult<bool> {
    match op {
        Op::Create {
            key,
            record,
            meta_blob,
        } => create(c, key, record, meta_blob).await.map(|()| true),
        Op::Restore {
            key,
            record,
            meta_blob,
        } => restore(c, key, record, meta_blob).await,
        Op::Apply { key, delta, limits } => apply(c, key, delta, limits).await.map(|()| true),
        Op::Touch { key, last_seen } => touch(c, key, *last_seen).await,
        Op::TouchMany(touches) => {
            for (key, last_seen) in touches {
                touch(c, key, *last_seen).await?;
            }
            Ok(true)
        }
        Op::Rotate {
            old,
            new,
            meta,
            meta_blob,
            now,
            limits,
        } => rotate(c, old, new, meta, meta_blob, *now, limits)
            .await
            .map(|()| true),
        Op::Destroy(key) => destroy(c, key).await,
        Op::JournalAppend(targets) => journal_append(c, targets).await.map(|()| true),
        Op::JournalAck(ids) => journal_ack(c, ids).await.map(|()| true),
    }
}

impl Core {
    /// One op that is one statement: no transaction around it.
    async fn autocommit(&self, op: &Op) -> StoreResult<bool> {
        let result = async {
            let mut c = self.pool.acquire().await?;
            run_op(&mut c, op).await
        }
        .await;
        if result.is_ok() {
            self.stats.committed(1);
        }
        result.map_err(|f| f.into_store(BACKEND))
    }

    /// `ops` in one `BEGIN IMMEDIATE` transaction.
    async fn attempt(&self, ops: &[Op]) -> Attempt {
        let mut tx = match self.pool.begin_with("BEGIN IMMEDIATE").await {
            Ok(tx) => tx,
            Err(e) => return Attempt::Failed(e),
        };
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            match run_op(&mut tx, op).await {
                Ok(v) => results.push(Ok(v)),
                Err(Fail::Refused(e)) => results.push(Err(e)),
                Err(Fail::Db(e)) => {
                    if let Err(rollback) = tx.rollback().await {
                        tracing::debug!(backend = BACKEND, error = %rollback, "rollback failed");
                    }
                    return Attempt::from_error(e);
                }
            }
        }
        match tx.commit().await {
            Ok(()) => {
                self.stats.committed(ops.len());
                Attempt::Done(results)
            }
            Err(e) => Attempt::commit_failed(BACKEND, results, &e),
        }
    }
}

#[async_trait]
impl Batcher for Core {
    async fn run_batch(&self, ops: &[Op]) -> Vec<StoreResult<bool>> {
        let _turn = self.turn.lock().await;
        if let [op] = ops
            && op.is_single_statement()
        {
            return vec![self.autocommit(op).await];
        }
        match self.attempt(ops).await {
            Attempt::Rejected(e) if ops.len() > 1 => {
                log_rerun(BACKEND, &e, ops.len());
                let mut out = Vec::with_capacity(ops.len());
                for op in ops {
                    out.extend(
                        self.attempt(std::slice::from_ref(op))
                            .await
                            .into_results(BACKEND, 1),
                    );
                }
                out
            }
            attempt => attempt.into_results(BACKEND, ops.len()),
        }
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

#[async_trait]
impl SessionStore for SqliteStore {
    fn backend_name(&self) -> &'static str {
        BACKEND
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
        let rows = sqlx::query(
            "SELECT s.meta, s.last_seen, a.name, a.value
             FROM ratatoskr_sessions s
             LEFT JOIN ratatoskr_session_attrs a ON a.session_key = s.session_key
             WHERE s.session_key = ?1 AND s.expires_at > ?2",
        )
        .bind(key_bytes(key))
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
        let _turn = self.core.turn.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(be)?;
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
            .bind(except.map(key_bytes))
            .fetch_all(&mut *tx)
            .await
            .map_err(be)?;
            Ok(deleted.iter().filter(|&&t| t > now).count() as u64)
        }
        .await;
        match result {
            Ok(n) => {
                tx.commit().await.map_err(be)?;
                Ok(n)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(backend = BACKEND, error = %rollback, "rollback failed");
                }
                Err(e)
            }
        }
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
            let _turn = self.core.turn.lock().await;
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
