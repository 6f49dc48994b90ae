//! The durable writes, written once for both dialects, and the transactions that carry them.
//!
//! Each write runs on a connection inside a transaction (`BEGIN IMMEDIATE` on SQLite) or, for
//! the single-statement ones, on its own. Each checks before it writes, so a write refused for
//! its own reasons has written nothing and its batch goes on (see `docs/sql.md`). Where the
//! dialects really differ (locks, statements over arrays), the write asks its [`Dialect`].

use async_trait::async_trait;
use sqlx::pool::Pool;
use tokio::sync::{Mutex, MutexGuard};

use ratatoskr_core::codec::Limits;
use ratatoskr_core::{Meta, Millis, Record, SessionKey, StoreError, StoreResult, now_ms};

use crate::common::{self, Normalized, len_from_db};
use crate::dialect::Dialect;
use crate::driver::{begin, stmt};
use crate::group::{Attempt, Batcher, Fail, Op, OpResult, Stats, log_rerun};

/// The statements that carry dialect fragments, built once per dialect
/// ([`Dialect::statements`](crate::dialect::Backend::statements)).
pub struct Statements {
    /// `touch`: the deadline is computed from the stored idle timeout and absolute deadline,
    /// never from the caller's copy; `last_seen` never moves backwards (a slow request's late
    /// touch), and only a live row is touched.
    pub touch: String,
    /// A live session's meta length and every attribute's (name, value length), its row locked
    /// where the dialect locks rows (so concurrent deltas on one session queue, and the size
    /// limit holds for their sum).
    pub sizes: String,
    /// Record a revoke-all of a user, never moving the time backwards.
    pub revoke: String,
    /// Delete one batch of expired sessions (cascading to their attributes).
    pub reap: String,
}

impl Statements {
    /// The statements in dialect `D`.
    pub fn new<D: Dialect>() -> Self {
        let greatest = D::GREATEST;
        Statements {
            touch: format!(
                "UPDATE ratatoskr_sessions SET
                     last_seen = {greatest}(last_seen, $2),
                     expires_at = CASE
                         WHEN idle_timeout >= absolute_deadline - {greatest}(last_seen, $2)
                             THEN absolute_deadline
                         ELSE {greatest}(last_seen, $2) + idle_timeout
                     END
                 WHERE session_key = $1 AND expires_at > $3"
            ),
            sizes: format!(
                "SELECT CAST(length(s.meta) AS BIGINT), a.name, CAST(length(a.value) AS BIGINT)
                 FROM ratatoskr_sessions s
                 LEFT JOIN ratatoskr_session_attrs a ON a.session_key = s.session_key
                 WHERE s.session_key = $1 AND s.expires_at > $2
                 {}",
                D::LOCK_SESSION_ROW
            ),
            revoke: format!(
                "INSERT INTO ratatoskr_user_revocations (user_id, revoked_at) VALUES ($1, $2)
                 ON CONFLICT (user_id) DO UPDATE SET revoked_at =
                     {greatest}(ratatoskr_user_revocations.revoked_at, excluded.revoked_at)"
            ),
            reap: format!(
                "DELETE FROM ratatoskr_sessions WHERE session_key IN (
                     SELECT session_key FROM ratatoskr_sessions WHERE expires_at <= $1
                     LIMIT $2 {})",
                D::SKIP_LOCKED
            ),
        }
    }
}

/// Delete expired rows under `key` or belonging to `user`, so a create may replace an expired
/// session and the user's index never outgrows the live sessions. (Deleting expired rows is
/// harmless even when the write it precedes is refused.)
async fn prune<D: Dialect>(
    c: &mut D::Connection,
    key: &SessionKey,
    user: Option<&str>,
    now: Millis,
) -> OpResult<()> {
    stmt::<D>(
        "DELETE FROM ratatoskr_sessions
         WHERE expires_at <= $1 AND (session_key = $2 OR ($3 IS NOT NULL AND user_id = $3))",
    )
    .bind(now)
    .bind(key)
    .bind(user)
    .execute(c)
    .await?;
    Ok(())
}

/// Whether `user`'s sessions were revoked at or after `at`.
async fn revoked_since<D: Dialect>(
    c: &mut D::Connection,
    user: Option<&str>,
    at: Millis,
) -> OpResult<bool> {
    let Some(user) = user else { return Ok(false) };
    let row = stmt::<D>("SELECT revoked_at FROM ratatoskr_user_revocations WHERE user_id = $1")
        .bind(user)
        .fetch_optional(c)
        .await?;
    Ok(match row {
        Some(row) => row.get::<i64>(0)? >= at,
        None => false,
    })
}

/// A refusal, unless the key is taken: a collision is reported first, as if the insert had
/// been tried.
async fn refuse<D: Dialect>(c: &mut D::Connection, key: &SessionKey, refusal: StoreError) -> Fail {
    let found = stmt::<D>("SELECT 1 FROM ratatoskr_sessions WHERE session_key = $1")
        .bind(key)
        .fetch_optional(c)
        .await;
    match found {
        Ok(Some(_)) => Fail::Refused(StoreError::Collision),
        Ok(None) => Fail::Refused(refusal),
        Err(e) => Fail::Db(e),
    }
}

/// Insert a session row; `false` if a row with this key exists.
async fn insert_session<D: Dialect>(
    c: &mut D::Connection,
    key: &SessionKey,
    meta: &Meta,
    meta_blob: &[u8],
    last_seen: Millis,
) -> OpResult<bool> {
    let handle = key.handle().to_string();
    let inserted = stmt::<D>(
        "INSERT INTO ratatoskr_sessions (session_key, handle, user_id, created_at, last_seen,
             idle_timeout, absolute_deadline, expires_at, meta)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (session_key) DO NOTHING",
    )
    .bind(key)
    .bind(handle.as_str())
    .bind(meta.user_id.as_deref())
    .bind(meta.created_at)
    .bind(last_seen)
    .bind(meta.idle_timeout)
    .bind(meta.absolute_deadline)
    .bind(meta.idle_deadline(last_seen))
    .bind(meta_blob)
    .execute(c)
    .await?;
    Ok(inserted == 1)
}

/// Set one attribute (the dialects' row-by-row [`upsert_attrs`](crate::dialect::Backend::upsert_attrs)).
pub async fn upsert_attr<D: Dialect>(
    c: &mut D::Connection,
    key: &SessionKey,
    name: &str,
    value: &[u8],
) -> OpResult<()> {
    stmt::<D>(
        "INSERT INTO ratatoskr_session_attrs (session_key, name, value) VALUES ($1, $2, $3)
         ON CONFLICT (session_key, name) DO UPDATE SET value = excluded.value",
    )
    .bind(key)
    .bind(name)
    .bind(value)
    .execute(c)
    .await?;
    Ok(())
}

/// Remove one attribute (the dialects' row-by-row [`remove_attrs`](crate::dialect::Backend::remove_attrs)).
pub async fn remove_attr<D: Dialect>(
    c: &mut D::Connection,
    key: &SessionKey,
    name: &str,
) -> OpResult<()> {
    stmt::<D>("DELETE FROM ratatoskr_session_attrs WHERE session_key = $1 AND name = $2")
        .bind(key)
        .bind(name)
        .execute(c)
        .await?;
    Ok(())
}

/// Meta length and (name, value length) of every attribute of a live session, or `None`; the
/// row is locked where the dialect locks rows.
async fn sizes<D: Dialect>(
    c: &mut D::Connection,
    key: &SessionKey,
    now: Millis,
) -> OpResult<Option<(usize, Vec<(String, usize)>)>> {
    let rows = stmt::<D>(&D::statements().sizes)
        .bind(key)
        .bind(now)
        .fetch_all(c)
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let meta_len = len_from_db(D::BACKEND, first.get(0)?)?;
    let mut attrs = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(name) = row.get::<Option<String>>(1)? {
            attrs.push((name, len_from_db(D::BACKEND, row.get(2)?)?));
        }
    }
    Ok(Some((meta_len, attrs)))
}

async fn create<D: Dialect>(
    c: &mut D::Connection,
    key: &SessionKey,
    record: &Record,
    meta_blob: &[u8],
) -> OpResult<()> {
    let user = record.meta.user_id.as_deref();
    D::lock_user(c, user).await?;
    prune::<D>(c, key, user, now_ms()).await?;
    if revoked_since::<D>(c, user, record.meta.created_at).await? {
        return Err(refuse::<D>(c, key, StoreError::Revoked).await);
    }
    if !insert_session::<D>(c, key, &record.meta, meta_blob, record.last_seen).await? {
        return Err(StoreError::Collision.into());
    }
    D::upsert_attrs(c, key, &record.attrs).await
}

async fn restore<D: Dialect>(
    c: &mut D::Connection,
    key: &SessionKey,
    record: &Record,
    meta_blob: &[u8],
) -> OpResult<bool> {
    if record.is_expired(now_ms()) {
        return Ok(false);
    }
    let user = record.meta.user_id.as_deref();
    D::lock_user(c, user).await?;
    prune::<D>(c, key, user, now_ms()).await?;
    if !insert_session::<D>(c, key, &record.meta, meta_blob, record.last_seen).await? {
        return Ok(false);
    }
    D::upsert_attrs(c, key, &record.attrs).await?;
    Ok(true)
}

/// One delta: sizes read (and the row locked), the result checked against the limit, then
/// removals and sets.
pub async fn apply<D: Dialect>(
    c: &mut D::Connection,
    key: &SessionKey,
    delta: &Normalized,
    limits: &Limits,
) -> OpResult<()> {
    let (meta_len, current) = sizes::<D>(c, key, now_ms())
        .await?
        .ok_or(StoreError::NotFound)?;
    common::check_size_after(meta_len, current, delta, limits)?;
    D::remove_attrs(c, key, &delta.remove).await?;
    D::upsert_attrs(c, key, &delta.set).await
}

/// Touch one session; whether it was live (at the time the statement ran) and so touched.
pub async fn touch<D: Dialect>(
    c: &mut D::Connection,
    key: &SessionKey,
    last_seen: Millis,
) -> OpResult<bool> {
    let touched = stmt::<D>(&D::statements().touch)
        .bind(key)
        .bind(last_seen)
        .bind(now_ms())
        .execute(c)
        .await?;
    Ok(touched > 0)
}

#[allow(clippy::too_many_arguments)]
async fn rotate<D: Dialect>(
    c: &mut D::Connection,
    old: &SessionKey,
    new: &SessionKey,
    meta: &Meta,
    meta_blob: &[u8],
    now: Millis,
    limits: &Limits,
) -> OpResult<()> {
    let user = meta.user_id.as_deref();
    // The user lock first, row locks after: the same order as create and destroy_user.
    D::lock_user(c, user).await?;
    let clock = now_ms();
    let (_, attrs) = sizes::<D>(c, old, clock)
        .await?
        .ok_or(StoreError::NotFound)?;
    prune::<D>(c, new, user, clock).await?;
    let refusal = if revoked_since::<D>(c, user, now).await? {
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
        return Err(refuse::<D>(c, new, refusal).await);
    }
    if !insert_session::<D>(c, new, meta, meta_blob, now).await? {
        return Err(StoreError::Collision.into());
    }
    stmt::<D>(
        "INSERT INTO ratatoskr_session_attrs (session_key, name, value)
         SELECT $1, name, value FROM ratatoskr_session_attrs WHERE session_key = $2",
    )
    .bind(new)
    .bind(old)
    .execute(c)
    .await?;
    stmt::<D>("DELETE FROM ratatoskr_sessions WHERE session_key = $1")
        .bind(old)
        .execute(c)
        .await?;
    Ok(())
}

async fn destroy<D: Dialect>(c: &mut D::Connection, key: &SessionKey) -> OpResult<bool> {
    let row =
        stmt::<D>("DELETE FROM ratatoskr_sessions WHERE session_key = $1 RETURNING expires_at")
            .bind(key)
            .fetch_optional(c)
            .await?;
    Ok(match row {
        Some(row) => row.get::<i64>(0)? > now_ms(),
        None => false,
    })
}

/// Append one journal entry (the dialects' row-by-row
/// [`journal_append`](crate::dialect::Backend::journal_append)).
pub async fn journal_append_one<D: Dialect>(
    c: &mut D::Connection,
    at: Millis,
    target: &ratatoskr_core::JournalTarget,
) -> OpResult<()> {
    let (kind, key, user) = crate::journal::columns(target);
    stmt::<D>(
        "INSERT INTO ratatoskr_redis_journal (at, kind, session_key, user_id)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(at)
    .bind(kind)
    .bind(key)
    .bind(user)
    .execute(c)
    .await?;
    Ok(())
}

/// Run one write.
pub async fn run_op<D: Dialect>(c: &mut D::Connection, op: &Op) -> OpResult<bool> {
    match op {
        Op::Create {
            key,
            record,
            meta_blob,
        } => create::<D>(c, key, record, meta_blob).await.map(|()| true),
        Op::Restore {
            key,
            record,
            meta_blob,
        } => restore::<D>(c, key, record, meta_blob).await,
        Op::Apply { key, delta, limits } => apply::<D>(c, key, delta, limits).await.map(|()| true),
        Op::Touch { key, last_seen } => touch::<D>(c, key, *last_seen).await,
        Op::TouchMany(touches) => D::touch_many(c, touches).await.map(|()| true),
        Op::Rotate {
            old,
            new,
            meta,
            meta_blob,
            now,
            limits,
        } => rotate::<D>(c, old, new, meta, meta_blob, *now, limits)
            .await
            .map(|()| true),
        Op::Destroy(key) => destroy::<D>(c, key).await,
        Op::JournalAppend(targets) => D::journal_append(c, targets).await.map(|()| true),
        Op::JournalAck(ids) => D::journal_ack(c, ids).await.map(|()| true),
    }
}

/// Deltas one after another, each answered on its own (the row-by-row
/// [`apply_run`](crate::dialect::Backend::apply_run)).
pub async fn apply_each<D: Dialect>(
    c: &mut D::Connection,
    ops: &[Op],
) -> OpResult<Vec<StoreResult<bool>>> {
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        match run_op::<D>(c, op).await {
            Ok(v) => results.push(Ok(v)),
            Err(Fail::Refused(e)) => results.push(Err(e)),
            Err(Fail::Db(e)) => return Err(Fail::Db(e)),
        }
    }
    Ok(results)
}

/// The database side of a store's writes: the pool, the writer turn, and the counters.
pub struct Core<D: Dialect> {
    pub pool: Pool<D>,
    /// Where the dialect has one writer per database (SQLite), this instance's writers queue
    /// here (FIFO) before they take its write lock, so they wait in order instead of polling
    /// SQLite's busy handler.
    turn: Mutex<()>,
    pub stats: Stats,
}

impl<D: Dialect> Core<D> {
    pub fn new(pool: Pool<D>) -> Self {
        Core {
            pool,
            turn: Mutex::new(()),
            stats: Stats::default(),
        }
    }

    /// This instance's writer turn, where the dialect has one writer per database.
    pub async fn turn(&self) -> Option<MutexGuard<'_, ()>> {
        if D::ONE_WRITER {
            Some(self.turn.lock().await)
        } else {
            None
        }
    }

    /// One op that is one statement: no transaction around it.
    async fn autocommit(&self, op: &Op) -> StoreResult<bool> {
        let result = async {
            let mut c = self.pool.acquire().await?;
            run_op::<D>(&mut c, op).await
        }
        .await;
        if result.is_ok() {
            self.stats.committed(1);
        }
        result.map_err(|f| f.into_store(D::BACKEND))
    }

    /// `ops` in one transaction.
    async fn attempt(&self, ops: &[Op]) -> Attempt {
        let mut tx = match begin(&self.pool, D::BEGIN).await {
            Ok(tx) => tx,
            Err(e) => return Attempt::Failed(e),
        };
        let mut results = Vec::with_capacity(ops.len());
        let mut failure = None;
        // A batch of deltas only is one run, which locks its rows in key order by itself.
        if ops.len() > 1
            && !ops.iter().all(|op| matches!(op, Op::Apply { .. }))
            && let Err(e) = D::prelock(&mut tx, ops).await
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
                D::apply_run(&mut tx, now).await
            } else {
                run_op::<D>(&mut tx, op).await.map(|v| vec![Ok(v)])
            };
            match outcome {
                Ok(r) => results.extend(r),
                Err(Fail::Refused(e)) => {
                    // Only a lone op refuses as a whole; a run answers per delta and fails
                    // like this only on data it cannot read: every delta of it fails.
                    let message = e.to_string();
                    results.push(Err(e));
                    results.extend(
                        (1..now.len()).map(|_| Err(StoreError::backend(D::BACKEND, &message))),
                    );
                }
                Err(Fail::Db(e)) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(backend = D::BACKEND, error = %rollback, "rollback failed");
            }
            return Attempt::from_error(e);
        }
        match tx.commit().await {
            Ok(()) => {
                self.stats.committed(ops.len());
                Attempt::Done(results)
            }
            Err(e) => Attempt::commit_failed(D::BACKEND, results, &e),
        }
    }
}

#[async_trait]
impl<D: Dialect> Batcher for Core<D> {
    async fn run_batch(&self, ops: &[Op]) -> Vec<StoreResult<bool>> {
        let _turn = self.turn().await;
        if let [op] = ops
            && op.is_single_statement()
        {
            return vec![self.autocommit(op).await];
        }
        match self.attempt(ops).await {
            Attempt::Rejected(e) if ops.len() > 1 => {
                log_rerun(D::BACKEND, &e, ops.len());
                let mut out = Vec::with_capacity(ops.len());
                for op in ops {
                    out.extend(
                        self.attempt(std::slice::from_ref(op))
                            .await
                            .into_results(D::BACKEND, 1),
                    );
                }
                out
            }
            attempt => attempt.into_results(D::BACKEND, ops.len()),
        }
    }
}
