//! The PostgreSQL session store: for several application instances sharing one database.
//!
//! Pooled connections (`PgPoolOptions`) with a bounded acquire timeout, so a database that is
//! down is an error within seconds, not a hang. Transactions run at READ COMMITTED; what needs
//! more is locked explicitly:
//!
//! - **apply** locks the session row (`SELECT … FOR UPDATE`) before it checks the size and
//!   writes, so concurrent deltas on one session queue up (each still writes only its own
//!   attribute rows) and the size limit holds for their sum;
//! - **create**, **restore**, **rotate** and **destroy_user** take a transaction-scoped advisory
//!   lock per user (`pg_advisory_xact_lock(ns, hashtext(user_id))`), so a create racing a
//!   revoke-all lands either wholly before it (and is deleted by it) or wholly after it (and sees
//!   the revocation).
//!
//! With group commit on (the default), writes waiting at the same time are made by a few writer
//! lanes, one transaction per batch (see [`GroupCommit`]). Each write still takes its own locks
//! as above; a batch of several also takes all its user locks and then all its session rows
//! first, each set in one sorted order, so batches on different connections and instances
//! queue behind each other instead of deadlocking.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, Row, Transaction};

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

const BACKEND: &str = "postgres";

/// Advisory-lock namespace for per-user locks (the first key of the two-key form), so they
/// cannot collide with the application's own single-key advisory locks.
const USER_LOCK_NS: i32 = 0x5241_5401; // "RAT\x01"

fn be(e: sqlx::Error) -> StoreError {
    common::map_err(BACKEND, e)
}

/// Sessions in a PostgreSQL database (in the connection's current schema).
///
/// Cheap to clone (clones share the pool and the group-commit writer).
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
    core: Arc<Core>,
    writer: Writer,
}

/// The database side of the writes: the pool and the counters.
struct Core {
    pool: PgPool,
    stats: Stats,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("limits", &self.limits)
            .field("group_commit", &self.writer.config())
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
    ///
    /// [`SqlOptions::pg_statement_timeout`] is added to the connections' startup options unless
    /// `connect` already sets `statement_timeout`.
    pub async fn connect_with_options(
        connect: PgConnectOptions,
        options: &SqlOptions,
    ) -> StoreResult<Self> {
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
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(be)?;
        Ok(Self::from_pool(pool)
            .await?
            .with_limits(options.limits.clone())
            .with_group_commit(options.group_commit.clone()))
    }

    /// Use an existing pool (the application's) and apply migrations.
    pub async fn from_pool(pool: PgPool) -> StoreResult<Self> {
        crate::migrate::postgres(&pool).await?;
        let core = Arc::new(Core {
            pool: pool.clone(),
            stats: Stats::default(),
        });
        let writer = Writer::new(
            BACKEND,
            core.clone(),
            &GroupCommit::default(),
            max_lanes(&pool),
        );
        Ok(PgStore {
            pool,
            limits: Limits::default(),
            core,
            writer,
        })
    }

    /// Group writes with these settings instead of [`GroupCommit::default`]
    /// ([`GroupCommit::off`] for one transaction per write). Lanes are clamped to the pool size.
    pub fn with_group_commit(mut self, config: GroupCommit) -> Self {
        self.writer = Writer::new(BACKEND, self.core.clone(), &config, max_lanes(&self.pool));
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
        SqlJournal::postgres(self.pool.clone(), self.writer.clone())
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
}

/// Lanes may use at most the whole pool.
fn max_lanes(pool: &PgPool) -> usize {
    pool.options().get_max_connections() as usize
}

// ---------------------------------------------------------------------------------------------
// The writes, each on a connection inside a transaction (or, for the single-statement ones, on
// its own). Each checks before it writes, so a write refused for its own reasons has written
// nothing and its batch goes on.

fn key_bytes(key: &SessionKey) -> &[u8] {
    &key.as_bytes()[..]
}

/// Serialize this transaction with every other create, restore, rotate and revoke-all of
/// `user`.
async fn lock_user(c: &mut PgConnection, user: Option<&str>) -> OpResult<()> {
    if let Some(user) = user {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(USER_LOCK_NS)
            .bind(user)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// Before the writes of a batch of several: take every user lock they need, then every session
/// row they name, each set in one global order (the locks' keys, the rows' keys), so two
/// batches on different connections never wait for each other in a cycle. Each write then
/// takes its locks again, which costs nothing once held.
async fn prelock(c: &mut PgConnection, ops: &[Op]) -> Result<(), sqlx::Error> {
    let users: Vec<&str> = ops.iter().filter_map(Op::locked_user).collect();
    if !users.is_empty() {
        // A volatile function in the select list is evaluated after the ORDER BY sort.
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

/// Lock the session rows under `keys` in key order (rows are locked after the sort).
async fn lock_rows(c: &mut PgConnection, keys: Vec<&[u8]>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT 1 FROM ratatoskr_sessions WHERE session_key = ANY($1::bytea[])
         ORDER BY session_key FOR UPDATE",
    )
    .bind(keys)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Delete expired rows under `key` or belonging to `user`, so a create may replace an expired
/// session and the user's index never outgrows the live sessions. (Deleting expired rows is
/// harmless even when the write it precedes is refused.)
async fn prune(
    c: &mut PgConnection,
    key: &SessionKey,
    user: Option<&str>,
    now: Millis,
) -> OpResult<()> {
    sqlx::query(
        "DELETE FROM ratatoskr_sessions
         WHERE expires_at <= $1
           AND (session_key = $2 OR ($3::text IS NOT NULL AND user_id = $3::text))",
    )
    .bind(now)
    .bind(key_bytes(key))
    .bind(user)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Whether `user`'s sessions were revoked at or after `at`.
async fn revoked_since(c: &mut PgConnection, user: Option<&str>, at: Millis) -> OpResult<bool> {
    let Some(user) = user else { return Ok(false) };
    let revoked: Option<i64> =
        sqlx::query_scalar("SELECT revoked_at FROM ratatoskr_user_revocations WHERE user_id = $1")
            .bind(user)
            .fetch_optional(&mut *c)
            .await?;
    Ok(revoked.is_some_and(|t| t >= at))
}

/// A refusal, unless the key is taken: a collision is reported first, as if the insert had
/// been tried.
async fn refuse(c: &mut PgConnection, key: &SessionKey, refusal: StoreError) -> Fail {
    let found: Result<Option<i32>, _> =
        sqlx::query_scalar("SELECT 1 FROM ratatoskr_sessions WHERE session_key = $1")
            .bind(key_bytes(key))
            .fetch_optional(&mut *c)
            .await;
    match found {
        Ok(Some(_)) => Fail::Refused(StoreError::Collision),
        Ok(None) => Fail::Refused(refusal),
        Err(e) => Fail::Db(e),
    }
}

/// Insert a session row; `false` if a row with this key exists.
async fn insert_session(
    c: &mut PgConnection,
    key: &SessionKey,
    meta: &Meta,
    meta_blob: &[u8],
    last_seen: Millis,
) -> OpResult<bool> {
    let done = sqlx::query(
        "INSERT INTO ratatoskr_sessions (session_key, handle, user_id, created_at, last_seen,
             idle_timeout, absolute_deadline, expires_at, meta)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
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

/// Set attributes in one statement.
async fn upsert_attrs<'a>(
    c: &mut PgConnection,
    key: &SessionKey,
    attrs: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> OpResult<()> {
    let (names, values): (Vec<&str>, Vec<&[u8]>) = attrs.unzip();
    if names.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO ratatoskr_session_attrs (session_key, name, value)
         SELECT $1, n, v FROM UNNEST($2::text[], $3::bytea[]) AS t (n, v)
         ON CONFLICT (session_key, name) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(key_bytes(key))
    .bind(names)
    .bind(values)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Lock a live session's row and return its meta length and every attribute's
/// (name, value length), or `None` if it is missing or expired.
async fn lock_sizes(
    c: &mut PgConnection,
    key: &SessionKey,
    now: Millis,
) -> OpResult<Option<(usize, Vec<(String, usize)>)>> {
    let rows = sqlx::query(
        "SELECT octet_length(s.meta)::bigint, a.name, octet_length(a.value)::bigint
         FROM ratatoskr_sessions s
         LEFT JOIN ratatoskr_session_attrs a ON a.session_key = s.session_key
         WHERE s.session_key = $1 AND s.expires_at > $2
         FOR UPDATE OF s",
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

fn attr_pairs(record: &Record) -> impl Iterator<Item = (&str, &[u8])> {
    record.attrs.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
}

async fn create(
    c: &mut PgConnection,
    key: &SessionKey,
    record: &Record,
    meta_blob: &[u8],
) -> OpResult<()> {
    let user = record.meta.user_id.as_deref();
    lock_user(c, user).await?;
    prune(c, key, user, now_ms()).await?;
    if revoked_since(c, user, record.meta.created_at).await? {
        return Err(refuse(c, key, StoreError::Revoked).await);
    }
    if !insert_session(c, key, &record.meta, meta_blob, record.last_seen).await? {
        return Err(StoreError::Collision.into());
    }
    upsert_attrs(c, key, attr_pairs(record)).await
}

async fn restore(
    c: &mut PgConnection,
    key: &SessionKey,
    record: &Record,
    meta_blob: &[u8],
) -> OpResult<bool> {
    if record.is_expired(now_ms()) {
        return Ok(false);
    }
    let user = record.meta.user_id.as_deref();
    lock_user(c, user).await?;
    prune(c, key, user, now_ms()).await?;
    if !insert_session(c, key, &record.meta, meta_blob, record.last_seen).await? {
        return Ok(false);
    }
    upsert_attrs(c, key, attr_pairs(record)).await?;
    Ok(true)
}

async fn apply(
    c: &mut PgConnection,
    key: &SessionKey,
    delta: &Normalized,
    limits: &Limits,
) -> OpResult<()> {
    let (meta_len, current) = lock_sizes(c, key, now_ms())
        .await?
        .ok_or(StoreError::NotFound)?;
    common::check_size_after(meta_len, current, delta, limits)?;
    if !delta.remove.is_empty() {
        sqlx::query(
            "DELETE FROM ratatoskr_session_attrs WHERE session_key = $1 AND name = ANY($2::text[])",
        )
        .bind(key_bytes(key))
        .bind(&delta.remove)
        .execute(&mut *c)
        .await?;
    }
    upsert_attrs(
        c,
        key,
        delta.set.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
    )
    .await
}

/// The deadline is computed from the stored idle timeout and absolute deadline, never from the
/// caller's copy; last_seen never moves backwards (a slow request's late touch).
async fn touch(c: &mut PgConnection, key: &SessionKey, last_seen: Millis) -> OpResult<bool> {
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
    .bind(key_bytes(key))
    .bind(last_seen)
    .bind(now_ms())
    .execute(&mut *c)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Touches deduplicated and sorted by key: rows locked in key order, then one multi-row update
/// per chunk.
async fn touch_many(c: &mut PgConnection, touches: &[(SessionKey, Millis)]) -> OpResult<()> {
    const CHUNK: usize = 2_000;
    for chunk in touches.chunks(CHUNK) {
        let keys: Vec<&[u8]> = chunk.iter().map(|(k, _)| key_bytes(k)).collect();
        let times: Vec<i64> = chunk.iter().map(|(_, t)| *t).collect();
        lock_rows(c, keys.clone()).await?;
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

#[allow(clippy::too_many_arguments)]
async fn rotate(
    c: &mut PgConnection,
    old: &SessionKey,
    new: &SessionKey,
    meta: &Meta,
    meta_blob: &[u8],
    now: Millis,
    limits: &Limits,
) -> OpResult<()> {
    let user = meta.user_id.as_deref();
    // The user lock first, row locks after: the same order as create and destroy_user.
    lock_user(c, user).await?;
    let clock = now_ms();
    let (_, attrs) = lock_sizes(c, old, clock)
        .await?
        .ok_or(StoreError::NotFound)?;
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
         SELECT $1, name, value FROM ratatoskr_session_attrs WHERE session_key = $2",
    )
    .bind(key_bytes(new))
    .bind(key_bytes(old))
    .execute(&mut *c)
    .await?;
    sqlx::query("DELETE FROM ratatoskr_sessions WHERE session_key = $1")
        .bind(key_bytes(old))
        .execute(&mut *c)
        .await?;
    Ok(())
}

async fn destroy(c: &mut PgConnection, key: &SessionKey) -> OpResult<bool> {
    let expires: Option<i64> = sqlx::query_scalar(
        "DELETE FROM ratatoskr_sessions WHERE session_key = $1 RETURNING expires_at",
    )
    .bind(key_bytes(key))
    .fetch_optional(&mut *c)
    .await?;
    Ok(expires.is_some_and(|t| t > now_ms()))
}

async fn journal_append(c: &mut PgConnection, targets: &[JournalTarget]) -> OpResult<()> {
    let mut kinds = Vec::with_capacity(targets.len());
    let mut keys = Vec::with_capacity(targets.len());
    let mut users = Vec::with_capacity(targets.len());
    for target in targets {
        let (kind, key, user) = crate::journal::columns(target);
        kinds.push(kind);
        keys.push(key);
        users.push(user);
    }
    // Ids are drawn in the targets' order.
    sqlx::query(
        "INSERT INTO ratatoskr_redis_journal (at, kind, session_key, user_id)
         SELECT $1, k, s, u
         FROM UNNEST($2::text[], $3::bytea[], $4::text[]) WITH ORDINALITY AS t (k, s, u, n)
         ORDER BY n",
    )
    .bind(now_ms())
    .bind(kinds)
    .bind(keys)
    .bind(users)
    .execute(&mut *c)
    .await?;
    Ok(())
}

async fn journal_ack(c: &mut PgConnection, ids: &[i64]) -> OpResult<()> {
    sqlx::query("DELETE FROM ratatoskr_redis_journal WHERE id = ANY($1::bigint[])")
        .bind(ids)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// A run of two or more consecutive deltas in a batch, in three statements whatever its length:
/// lock every session of the run and read its sizes (in key order), decide each delta in order
/// against the sizes as the earlier ones left them (`NotFound`, `TooLarge`, or written), then
/// delete and upsert the final state of every attribute the accepted deltas named. Equivalent to
/// applying them one after another.
async fn apply_run(c: &mut PgConnection, ops: &[Op]) -> OpResult<Vec<StoreResult<bool>>> {
    use std::collections::{BTreeMap, HashMap};
    let keys: Vec<&[u8]> = ops.iter().flat_map(Op::keys).map(key_bytes).collect();
    let rows = sqlx::query(
        "SELECT s.session_key, octet_length(s.meta)::bigint, a.name, octet_length(a.value)::bigint
         FROM ratatoskr_sessions s
         LEFT JOIN ratatoskr_session_attrs a ON a.session_key = s.session_key
         WHERE s.session_key = ANY($1::bytea[]) AND s.expires_at > $2
         ORDER BY s.session_key
         FOR UPDATE OF s",
    )
    .bind(keys)
    .bind(now_ms())
    .fetch_all(&mut *c)
    .await?;
    // Per live session: meta length and attribute sizes.
    let mut sizes: HashMap<Vec<u8>, (usize, BTreeMap<String, usize>)> = HashMap::new();
    for row in &rows {
        let key: Vec<u8> = row.try_get(0)?;
        let meta_len = len_from_db(BACKEND, row.try_get::<i64, _>(1)?)?;
        let entry = sizes
            .entry(key)
            .or_insert_with(|| (meta_len, BTreeMap::new()));
        let name: Option<String> = row.try_get(2)?;
        if let Some(name) = name {
            let len: i64 = row.try_get(3)?;
            entry.1.insert(name, len_from_db(BACKEND, len)?);
        }
    }
    // What each attribute ends up as: set to a value, or removed.
    let mut last: BTreeMap<(&[u8], &str), Option<&[u8]>> = BTreeMap::new();
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let Op::Apply { key, delta, limits } = op else {
            results.push(Err(StoreError::backend(BACKEND, "not a delta")));
            continue;
        };
        let Some((meta_len, attrs)) = sizes.get_mut(key_bytes(key)) else {
            results.push(Err(StoreError::NotFound));
            continue;
        };
        let current = attrs.iter().map(|(n, l)| (n.clone(), *l));
        if let Err(e) = common::check_size_after(*meta_len, current, delta, limits) {
            results.push(Err(StoreError::Codec(e)));
            continue;
        }
        for name in &delta.remove {
            attrs.remove(name);
            last.insert((key_bytes(key), name.as_str()), None);
        }
        for (name, value) in &delta.set {
            attrs.insert(name.clone(), value.len());
            last.insert((key_bytes(key), name.as_str()), Some(value.as_slice()));
        }
        results.push(Ok(true));
    }
    let (mut del_keys, mut del_names) = (Vec::new(), Vec::new());
    let (mut set_keys, mut set_names, mut set_values) = (Vec::new(), Vec::new(), Vec::new());
    for ((key, name), value) in last {
        match value {
            None => {
                del_keys.push(key);
                del_names.push(name);
            }
            Some(value) => {
                set_keys.push(key);
                set_names.push(name);
                set_values.push(value);
            }
        }
    }
    if !del_keys.is_empty() {
        sqlx::query(
            "DELETE FROM ratatoskr_session_attrs
             WHERE (session_key, name) IN (SELECT * FROM UNNEST($1::bytea[], $2::text[]))",
        )
        .bind(del_keys)
        .bind(del_names)
        .execute(&mut *c)
        .await?;
    }
    if !set_keys.is_empty() {
        sqlx::query(
            "INSERT INTO ratatoskr_session_attrs (session_key, name, value)
             SELECT k, n, v FROM UNNEST($1::bytea[], $2::text[], $3::bytea[]) AS t (k, n, v)
             ON CONFLICT (session_key, name) DO UPDATE SET value = EXCLUDED.value",
        )
        .bind(set_keys)
        .bind(set_names)
        .bind(set_values)
        .execute(&mut *c)
        .await?;
    }
    Ok(results)
}

async fn run_op(c: &mut PgConnection, op: &Op) -> OpResult<bool> {
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
        Op::TouchMany(touches) => touch_many(c, touches).await.map(|()| true),
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

    /// `ops` in one transaction.
    async fn attempt(&self, ops: &[Op]) -> Attempt {
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(e) => return Attempt::Failed(e),
        };
        let mut results = Vec::with_capacity(ops.len());
        let mut failure = None;
        // A batch of deltas only is one run, which locks its rows in key order by itself.
        if ops.len() > 1
            && !ops.iter().all(|op| matches!(op, Op::Apply { .. }))
            && let Err(e) = prelock(&mut tx, ops).await
        {
            failure = Some(e);
        }
        let mut rest = ops;
        while failure.is_none()
            && let Some(op) = rest.first()
        {
            // Consecutive deltas are made together; anything else one at a time.
            let run = rest
                .iter()
                .take_while(|op| matches!(op, Op::Apply { .. }))
                .count();
            let (now, later) = rest.split_at(run.max(1));
            rest = later;
            let outcome = if run > 1 {
                apply_run(&mut tx, now).await
            } else {
                run_op(&mut tx, op).await.map(|v| vec![Ok(v)])
            };
            match outcome {
                Ok(r) => results.extend(r),
                Err(Fail::Refused(e)) => {
                    // Only a lone op refuses as a whole; a run answers per delta and fails
                    // like this only on data it cannot read: every delta of it fails.
                    let message = e.to_string();
                    results.push(Err(e));
                    results.extend(
                        (1..now.len()).map(|_| Err(StoreError::backend(BACKEND, &message))),
                    );
                }
                Err(Fail::Db(e)) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(backend = BACKEND, error = %rollback, "rollback failed");
            }
            return Attempt::from_error(e);
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
        if let [op] = ops
            && (op.is_single_statement() || matches!(op, Op::JournalAppend(_)))
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
        let mut tx = self.pool.begin().await.map_err(be)?;
        let result = async {
            lock_user(&mut tx, Some(user_id))
                .await
                .map_err(|f| f.into_store(BACKEND))?;
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
