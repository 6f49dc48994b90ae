//! The PostgreSQL session store: for several application instances sharing one database.
//!
//! Pooled connections (`PgPoolOptions`) with a bounded acquire timeout, so a database that is
//! down is an error within seconds, not a hang. Transactions run at READ COMMITTED; what needs
//! more is locked explicitly:
//!
//! - **apply** locks the session row (`SELECT … FOR UPDATE`) before it checks the size and
//!   writes, so concurrent deltas on one session queue up (each still writes only its own
//!   attribute rows) and the size limit holds for their sum;
//! - **create**, **rotate** and **destroy_user** take a transaction-scoped advisory lock per user
//!   (`pg_advisory_xact_lock(ns, hashtext(user_id))`), so a create racing a revoke-all lands
//!   either wholly before it (and is deleted by it) or wholly after it (and sees the revocation).

use std::str::FromStr;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use ratatoskr_core::codec::{self, Limits};
use ratatoskr_core::{
    Delta, Handle, Meta, Millis, Record, SessionKey, SessionStore, SessionSummary, StoreError,
    StoreResult, now_ms,
};

use crate::SqlOptions;
use crate::audit::SqlAudit;
use crate::common::{self, len_from_db};

const BACKEND: &str = "postgres";

/// Advisory-lock namespace for per-user locks (the first key of the two-key form), so they
/// cannot collide with the application's own single-key advisory locks.
const USER_LOCK_NS: i32 = 0x5241_5401; // "RAT\x01"

fn be(e: sqlx::Error) -> StoreError {
    common::map_err(BACKEND, e)
}

/// Sessions in a PostgreSQL database (in the connection's current schema).
///
/// Cheap to clone (clones share the pool).
///
/// ```no_run
/// # async fn demo() -> Result<(), ratatoskr_core::StoreError> {
/// use ratatoskr_sql::PgStore;
///
/// let store = PgStore::connect("postgres://app@db.internal/app").await?;
/// // The application's own tables live in the same database.
/// let users: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables")
///     .fetch_one(store.pool())
///     .await
///     .map_err(|e| ratatoskr_core::StoreError::backend("postgres", e))?;
/// # let _ = users; Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    limits: Limits,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connect to `url` (`postgres://user@host:port/database`) with default [`SqlOptions`] and
    /// apply migrations. To keep Ratatoskr's tables in their own schema, add
    /// `?options=-c%20search_path%3Dsessions` (the schema must exist).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, &SqlOptions::default()).await
    }

    /// Connect to `url` with the given options and apply migrations.
    pub async fn connect_with(url: &str, options: &SqlOptions) -> StoreResult<Self> {
        let connect = PgConnectOptions::from_str(url).map_err(be)?;
        Self::connect_with_options(connect, options).await
    }

    /// Connect with sqlx connect options (for settings a URL cannot carry) and apply migrations.
    pub async fn connect_with_options(
        connect: PgConnectOptions,
        options: &SqlOptions,
    ) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(be)?;
        Ok(Self::from_pool(pool)
            .await?
            .with_limits(options.limits.clone()))
    }

    /// Use an existing pool (the application's) and apply migrations.
    pub async fn from_pool(pool: PgPool) -> StoreResult<Self> {
        crate::migrate::postgres(&pool).await?;
        Ok(PgStore {
            pool,
            limits: Limits::default(),
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
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// An audit sink writing to this database's `ratatoskr_audit` table.
    pub fn audit(&self) -> SqlAudit {
        SqlAudit::from_pg_migrated(self.pool.clone())
    }

    /// Find a live session by its public handle (for administration pages).
    pub async fn find_by_handle(&self, handle: &Handle) -> StoreResult<Option<SessionSummary>> {
        let rows = sqlx::query(
            "SELECT session_key, meta, last_seen FROM ratatoskr_sessions
             WHERE handle = $1 AND expires_at > $2",
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

    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(be)
    }

    /// Serialize this transaction with every other create, rotate and revoke-all of `user`.
    async fn lock_user(
        tx: &mut Transaction<'static, Postgres>,
        user: Option<&str>,
    ) -> StoreResult<()> {
        if let Some(user) = user {
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(USER_LOCK_NS)
                .bind(user)
                .execute(&mut **tx)
                .await
                .map_err(be)?;
        }
        Ok(())
    }

    /// Delete expired rows under `key` or belonging to `user`, so a create may replace an
    /// expired session and the user's index never outgrows the live sessions.
    async fn prune(
        tx: &mut Transaction<'static, Postgres>,
        key: &SessionKey,
        user: Option<&str>,
        now: Millis,
    ) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM ratatoskr_sessions
             WHERE expires_at <= $1
               AND (session_key = $2 OR ($3::text IS NOT NULL AND user_id = $3::text))",
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
        tx: &mut Transaction<'static, Postgres>,
        user: Option<&str>,
        at: Millis,
    ) -> StoreResult<()> {
        let Some(user) = user else { return Ok(()) };
        let revoked: Option<i64> = sqlx::query_scalar(
            "SELECT revoked_at FROM ratatoskr_user_revocations WHERE user_id = $1",
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
        tx: &mut Transaction<'static, Postgres>,
        key: &SessionKey,
        meta: &Meta,
        meta_blob: &[u8],
        last_seen: Millis,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO ratatoskr_sessions (session_key, handle, user_id, created_at, last_seen,
                 idle_timeout, absolute_deadline, expires_at, meta)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
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

    /// Set attributes in one statement.
    async fn upsert_attrs<'a>(
        tx: &mut Transaction<'static, Postgres>,
        key: &SessionKey,
        attrs: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> StoreResult<()> {
        let (names, values): (Vec<&str>, Vec<&[u8]>) = attrs.unzip();
        if names.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO ratatoskr_session_attrs (session_key, name, value)
             SELECT $1, n, v FROM UNNEST($2::text[], $3::bytea[]) AS t (n, v)
             ON CONFLICT (session_key, name) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(&key.as_bytes()[..])
        .bind(names)
        .bind(values)
        .execute(&mut **tx)
        .await
        .map_err(be)?;
        Ok(())
    }

    /// Lock a live session's row and return its meta length and every attribute's
    /// (name, value length), or `None` if it is missing or expired.
    async fn lock_sizes(
        tx: &mut Transaction<'static, Postgres>,
        key: &SessionKey,
        now: Millis,
    ) -> StoreResult<Option<(usize, Vec<(String, usize)>)>> {
        let rows = sqlx::query(
            "SELECT octet_length(s.meta)::bigint, a.name, octet_length(a.value)::bigint
             FROM ratatoskr_sessions s
             LEFT JOIN ratatoskr_session_attrs a ON a.session_key = s.session_key
             WHERE s.session_key = $1 AND s.expires_at > $2
             FOR UPDATE OF s",
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

/// End a transaction: commit on success; on failure roll back at once (releasing its locks
/// now rather than when the pool next tests the connection) and return the original error.
async fn finish<T>(tx: Transaction<'static, Postgres>, result: StoreResult<T>) -> StoreResult<T> {
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
impl SessionStore for PgStore {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> StoreResult<()> {
        let meta_blob = codec::encode_meta(&record.meta, &self.limits)?;
        codec::check_record(record, &self.limits)?;
        let user = record.meta.user_id.as_deref();
        let mut tx = self.begin().await?;
        let result = async {
            Self::lock_user(&mut tx, user).await?;
            let now = now_ms();
            Self::prune(&mut tx, key, user, now).await?;
            if !Self::insert_session(&mut tx, key, &record.meta, &meta_blob, record.last_seen)
                .await?
            {
                return Err(StoreError::Collision);
            }
            Self::check_revoked(&mut tx, user, record.meta.created_at).await?;
            Self::upsert_attrs(
                &mut tx,
                key,
                record.attrs.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
            )
            .await?;
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
             WHERE s.session_key = $1 AND s.expires_at > $2",
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
        let mut tx = self.begin().await?;
        let result = async {
            let (meta_len, current) = Self::lock_sizes(&mut tx, key, now_ms())
                .await?
                .ok_or(StoreError::NotFound)?;
            common::check_size_after(meta_len, current, &delta, &self.limits)?;
            if !delta.remove.is_empty() {
                sqlx::query(
                    "DELETE FROM ratatoskr_session_attrs WHERE session_key = $1 AND name = ANY($2::text[])",
                )
                .bind(&key.as_bytes()[..])
                .bind(&delta.remove)
                .execute(&mut *tx)
                .await
                .map_err(be)?;
            }
            Self::upsert_attrs(&mut tx, key, delta.set.iter().map(|(n, v)| (*n, *v))).await?;
            Ok(())
        }
        .await;
        finish(tx, result).await
    }

    async fn touch(&self, key: &SessionKey, _meta: &Meta, last_seen: Millis) -> StoreResult<bool> {
        // The deadline is computed from the stored idle timeout and absolute deadline, never
        // from the caller's copy; last_seen never moves backwards (a slow request's late touch).
        let done = sqlx::query(
            "UPDATE ratatoskr_sessions SET
                 last_seen = GREATEST(last_seen, $2),
                 expires_at = CASE
                     WHEN idle_timeout >= absolute_deadline - GREATEST(last_seen, $2)
                         THEN absolute_deadline
                     ELSE GREATEST(last_seen, $2) + idle_timeout
                 END
             WHERE session_key = $1 AND expires_at > $3",
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
        let mut tx = self.begin().await?;
        let result = async {
            // The user lock first, row locks after: the same order as create and destroy_user.
            Self::lock_user(&mut tx, user).await?;
            let clock = now_ms();
            let (_, attrs) = Self::lock_sizes(&mut tx, old, clock)
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
                 SELECT $1, name, value FROM ratatoskr_session_attrs WHERE session_key = $2",
            )
            .bind(&new.as_bytes()[..])
            .bind(&old.as_bytes()[..])
            .execute(&mut *tx)
            .await
            .map_err(be)?;
            sqlx::query("DELETE FROM ratatoskr_sessions WHERE session_key = $1")
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
        let expires: Option<i64> = sqlx::query_scalar(
            "DELETE FROM ratatoskr_sessions WHERE session_key = $1 RETURNING expires_at",
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
             WHERE user_id = $1 AND expires_at > $2
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
        let mut tx = self.begin().await?;
        let result = async {
            Self::lock_user(&mut tx, Some(user_id)).await?;
            let now = now_ms();
            sqlx::query(
                "INSERT INTO ratatoskr_user_revocations (user_id, revoked_at) VALUES ($1, $2)
                 ON CONFLICT (user_id) DO UPDATE
                     SET revoked_at = GREATEST(ratatoskr_user_revocations.revoked_at, EXCLUDED.revoked_at)",
            )
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(be)?;
            let deleted: Vec<i64> = sqlx::query_scalar(
                "DELETE FROM ratatoskr_sessions
                 WHERE user_id = $1 AND ($2::bytea IS NULL OR session_key <> $2::bytea)
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
            sqlx::query_scalar("SELECT count(*) FROM ratatoskr_sessions WHERE expires_at > $1")
                .bind(now_ms())
                .fetch_one(&self.pool)
                .await
                .map_err(be)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn reap(&self) -> StoreResult<u64> {
        // In batches, so no single statement holds many row locks for long.
        let now = now_ms();
        let mut total = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM ratatoskr_sessions WHERE session_key IN (
                     SELECT session_key FROM ratatoskr_sessions WHERE expires_at <= $1
                     LIMIT $2 FOR UPDATE SKIP LOCKED)",
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
