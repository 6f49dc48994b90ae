//! The durable writes, written once for both dialects, and the transactions that carry them.
//!
//! Each write runs on a connection inside a transaction (`BEGIN IMMEDIATE` on SQLite) or, for
//! the single-statement ones, on its own. Each checks before it writes, so a write refused for
//! its own reasons has written nothing and its batch goes on (see `docs/sql.md`). Where the
//! dialects really differ (locks, statements over arrays), the write asks its [`Dialect`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use sqlx::pool::Pool;
use tokio::sync::{Mutex, MutexGuard};

use ratatoskr_core::codec::Limits;
use ratatoskr_core::{Meta, Millis, Record, SessionKey, StoreError, StoreResult, now_ms};

use crate::common::{self, len_from_db};
use crate::dialect::Dialect;
use crate::driver::{Col, Row, begin, counting, stmt};
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
    /// [`touch`](Self::touch) over a set of `(k, at)` rows; returns the keys it touched.
    pub touch_set: String,
    /// Meta length and attribute sizes of a set of live sessions `(k)`, with the key first.
    /// It locks nothing: its rows must be locked by an earlier statement (see
    /// [`apply_run`]).
    pub sizes_set: String,
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
            touch_set: format!(
                "WITH t (k, at) AS ({{rows}})
                 UPDATE ratatoskr_sessions AS s SET
                     last_seen = {greatest}(s.last_seen, t.at),
                     expires_at = CASE
                         WHEN s.idle_timeout >= s.absolute_deadline - {greatest}(s.last_seen, t.at)
                             THEN s.absolute_deadline
                         ELSE {greatest}(s.last_seen, t.at) + s.idle_timeout
                     END
                 FROM t
                 WHERE s.session_key = t.k AND s.expires_at > $1
                 RETURNING session_key"
            ),
            sizes_set: String::from(
                "WITH t (k) AS ({rows})
                 SELECT s.session_key, CAST(length(s.meta) AS BIGINT),
                     a.name, CAST(length(a.value) AS BIGINT)
                 FROM ratatoskr_sessions s
                 LEFT JOIN ratatoskr_session_attrs a ON a.session_key = s.session_key
                 WHERE s.session_key IN (SELECT k FROM t) AND s.expires_at > $1",
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

/// Run `sql` over a set of rows: its `{rows}` is replaced by the dialect's row source of
/// `cols` ([`Backend::rows`](crate::dialect::Backend::rows)), which the statement names in a
/// `WITH t (…) AS ({rows})`. `$1` is `now` when given. One statement, or as many as the
/// dialect's parameter limit needs (each on consecutive rows, so rows sorted by key are locked
/// in key order); every row they return.
pub async fn with_rows<D: Dialect>(
    c: &mut D::Connection,
    sql: &str,
    now: Option<Millis>,
    mut cols: Vec<Col<'_>>,
) -> Result<Vec<Row<D>>, sqlx::Error> {
    let n = cols.first().map_or(0, Col::len);
    if n == 0 {
        return Ok(Vec::new());
    }
    let first = if now.is_some() { 2 } else { 1 };
    let per = (D::MAX_ROW_PARAMS / cols.len()).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let end = n.min(start.saturating_add(per));
        let part = if start == 0 && end == n {
            std::mem::take(&mut cols)
        } else {
            cols.iter().map(|col| col.part(start..end)).collect()
        };
        let text = sql.replace("{rows}", &D::rows(&part, first));
        let mut q = stmt::<D>(&text);
        if let Some(now) = now {
            q = q.bind(now);
        }
        out.extend(q.map(|q| D::bind_rows(q, part)).fetch_all(c).await?);
        start = end;
    }
    Ok(out)
}

fn key_col(key: &SessionKey) -> &[u8] {
    &key.as_bytes()[..]
}

/// Set attributes: `(session key, name, value)` rows, at most one per (key, name).
async fn upsert_attrs<D: Dialect>(
    c: &mut D::Connection,
    keys: Vec<&[u8]>,
    names: Vec<Option<&str>>,
    values: Vec<&[u8]>,
) -> OpResult<()> {
    with_rows::<D>(
        c,
        "WITH t (k, n, v) AS ({rows})
         INSERT INTO ratatoskr_session_attrs (session_key, name, value)
         SELECT k, n, v FROM t WHERE true
         ON CONFLICT (session_key, name) DO UPDATE SET value = excluded.value",
        None,
        vec![Col::Blob(keys), Col::Text(names), Col::Blob(values)],
    )
    .await?;
    Ok(())
}

/// Remove attributes: `(session key, name)` rows.
async fn remove_attrs<D: Dialect>(
    c: &mut D::Connection,
    keys: Vec<&[u8]>,
    names: Vec<Option<&str>>,
) -> OpResult<()> {
    with_rows::<D>(
        c,
        "WITH t (k, n) AS ({rows})
         DELETE FROM ratatoskr_session_attrs WHERE (session_key, name) IN (SELECT k, n FROM t)",
        None,
        vec![Col::Blob(keys), Col::Text(names)],
    )
    .await?;
    Ok(())
}

/// Set the attributes of one session (a create's, a restore's): one statement.
async fn set_attrs<D: Dialect>(
    c: &mut D::Connection,
    key: &SessionKey,
    attrs: &BTreeMap<String, Vec<u8>>,
) -> OpResult<()> {
    upsert_attrs::<D>(
        c,
        vec![key_col(key); attrs.len()],
        attrs.keys().map(|n| Some(n.as_str())).collect(),
        attrs.values().map(Vec::as_slice).collect(),
    )
    .await
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
    prelocked: bool,
    key: &SessionKey,
    record: &Record,
    meta_blob: &[u8],
) -> OpResult<()> {
    let user = record.meta.user_id.as_deref();
    if !prelocked {
        D::lock_user(c, user).await?;
    }
    prune::<D>(c, key, user, now_ms()).await?;
    if revoked_since::<D>(c, user, record.meta.created_at).await? {
        return Err(refuse::<D>(c, key, StoreError::Revoked).await);
    }
    if !insert_session::<D>(c, key, &record.meta, meta_blob, record.last_seen).await? {
        return Err(StoreError::Collision.into());
    }
    set_attrs::<D>(c, key, &record.attrs).await
}

async fn restore<D: Dialect>(
    c: &mut D::Connection,
    prelocked: bool,
    key: &SessionKey,
    record: &Record,
    meta_blob: &[u8],
) -> OpResult<bool> {
    if record.is_expired(now_ms()) {
        return Ok(false);
    }
    let user = record.meta.user_id.as_deref();
    if !prelocked {
        D::lock_user(c, user).await?;
    }
    prune::<D>(c, key, user, now_ms()).await?;
    if !insert_session::<D>(c, key, &record.meta, meta_blob, record.last_seen).await? {
        return Ok(false);
    }
    set_attrs::<D>(c, key, &record.attrs).await?;
    Ok(true)
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
    prelocked: bool,
    old: &SessionKey,
    new: &SessionKey,
    meta: &Meta,
    meta_blob: &[u8],
    now: Millis,
    limits: &Limits,
) -> OpResult<()> {
    let user = meta.user_id.as_deref();
    // The user lock first, row locks after: the same order as create and destroy_user.
    // The row locked by a statement of its own, so that the sizes are read with a snapshot
    // taken once it is held (see `apply_run`).
    if !prelocked {
        D::lock_user(c, user).await?;
        D::lock_keys(c, vec![key_col(old)]).await?;
    }
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

/// Run one write. `prelocked`: the batch's pre-locks hold every user lock and session row it
/// locks (taking them again would cost a round trip each on PostgreSQL).
pub async fn run_op<D: Dialect>(c: &mut D::Connection, op: &Op, prelocked: bool) -> OpResult<bool> {
    match op {
        Op::Create {
            key,
            record,
            meta_blob,
        } => create::<D>(c, prelocked, key, record, meta_blob)
            .await
            .map(|()| true),
        Op::Restore {
            key,
            record,
            meta_blob,
        } => restore::<D>(c, prelocked, key, record, meta_blob).await,
        Op::Apply { .. } => match apply_run::<D>(c, &[op], prelocked).await?.pop() {
            Some(result) => result.map_err(Fail::Refused),
            None => Err(StoreError::backend(D::BACKEND, "a delta got no answer").into()),
        },
        Op::Touch { key, last_seen } => touch::<D>(c, key, *last_seen).await,
        Op::TouchMany(touches) => D::touch_many(c, touches).await.map(|()| true),
        Op::Rotate {
            old,
            new,
            meta,
            meta_blob,
            now,
            limits,
        } => rotate::<D>(c, prelocked, old, new, meta, meta_blob, *now, limits)
            .await
            .map(|()| true),
        Op::Destroy(key) => destroy::<D>(c, key).await,
        Op::JournalAppend(_) => journal_append_run::<D>(c, &[op]).await.map(|_| true),
        Op::JournalAck(ids) => D::journal_ack(c, ids).await.map(|()| true),
    }
}

/// How many of the ops at `order` (indices into `ops`, sorted by kind) are made together as
/// one run: consecutive writes of one kind, except `touch_many` (one op is its own run).
/// Creates and restores only while their keys differ (a repeated key is a collision, resp. a
/// restore that finds its key taken, that the next run reports, as running them one after
/// another would). Rotations only while no rotation's new key is the old key of an earlier
/// one in the run: the run never deletes and inserts one key (see [`rotate_run`]).
pub(crate) fn run_len(ops: &[Op], order: &[usize]) -> usize {
    let Some(&first) = order.first() else {
        return 0;
    };
    if matches!(ops[first], Op::TouchMany(_)) {
        return 1;
    }
    let kind = ops[first].kind();
    let mut keys = BTreeSet::new();
    order
        .iter()
        .take_while(|&&i| {
            ops[i].kind() == kind
                && match &ops[i] {
                    Op::Create { key, .. } | Op::Restore { key, .. } => keys.insert(*key),
                    Op::Rotate { old, new, .. } => {
                        let fresh = !keys.contains(new);
                        keys.insert(*old);
                        fresh
                    }
                    _ => true,
                }
        })
        .count()
}

/// A run of writes of one kind (see [`run_len`]), answered per write, equivalent to making
/// them one after another: a write refused for its own reasons gets its refusal and the
/// others go on. `Err` only for a database error (the transaction is then rolled back).
/// `prelocked`: the batch's pre-locks hold every row and user lock the run needs.
pub async fn run_ops<D: Dialect>(
    c: &mut D::Connection,
    run: &[&Op],
    prelocked: bool,
) -> OpResult<Vec<StoreResult<bool>>> {
    match run {
        [Op::Apply { .. }, ..] => apply_run::<D>(c, run, prelocked).await,
        [Op::Touch { .. }, _, ..] => touch_run::<D>(c, run).await,
        [Op::Destroy(_), _, ..] => destroy_run::<D>(c, run).await,
        [Op::Create { .. }, _, ..] => create_run::<D>(c, run).await,
        // A lone rotation or restore takes its own locks; a run relies on the batch's.
        [Op::Restore { .. }, _, ..] if prelocked => restore_run::<D>(c, run).await,
        [Op::Rotate { .. }, _, ..] if prelocked => rotate_run::<D>(c, run).await,
        [Op::JournalAppend(_), ..] => journal_append_run::<D>(c, run).await,
        [Op::JournalAck(_), _, ..] => journal_ack_run::<D>(c, run).await,
        _ => {
            let mut out = Vec::with_capacity(run.len());
            for op in run {
                match run_op::<D>(c, op, prelocked).await {
                    Ok(v) => out.push(Ok(v)),
                    Err(Fail::Refused(e)) => out.push(Err(e)),
                    Err(Fail::Db(e)) => return Err(Fail::Db(e)),
                }
            }
            Ok(out)
        }
    }
}

/// Per live session: meta length and attribute sizes.
type Sizes = HashMap<Vec<u8>, (usize, BTreeMap<String, usize>)>;

/// The sizes of the sessions under `keys` (sorted, distinct) live at `now`, in one statement
/// ([`Statements::sizes_set`]: the rows must be locked already where the dialect locks rows).
async fn read_sizes<D: Dialect>(
    c: &mut D::Connection,
    keys: Vec<&[u8]>,
    now: Millis,
) -> OpResult<Sizes> {
    let rows = with_rows::<D>(
        c,
        &D::statements().sizes_set,
        Some(now),
        vec![Col::Blob(keys)],
    )
    .await?;
    let mut sizes = Sizes::with_capacity(rows.len());
    for row in &rows {
        let key: Vec<u8> = row.get(0)?;
        let meta_len = len_from_db(D::BACKEND, row.get(1)?)?;
        let entry = sizes
            .entry(key)
            .or_insert_with(|| (meta_len, BTreeMap::new()));
        if let Some(name) = row.get::<Option<String>>(2)? {
            entry.1.insert(name, len_from_db(D::BACKEND, row.get(3)?)?);
        }
    }
    Ok(sizes)
}

/// Deltas, in a few statements however many: lock every session named (unless `prelocked`),
/// read their sizes, decide each delta in order against the sizes the earlier ones left
/// (`NotFound`, `TooLarge`, or accepted), then delete and upsert the final state of every
/// attribute the accepted deltas named. The lock (PostgreSQL `FOR UPDATE`, in key order;
/// SQLite's write lock) is held from before the read to the commit, so a concurrent delta on
/// the same session, in another batch or another instance, waits and then reads what this one
/// wrote: no update is lost and the size limit holds for their sum.
///
/// The lock and the read are two statements on purpose: at READ COMMITTED a statement reads
/// with the snapshot it started with, and a `SELECT … FOR UPDATE` that waited for the lock
/// rechecks only the locked row, not the attribute rows it joins, so one statement would
/// decide on sizes from before the delta it waited for (tested: the limit was exceeded
/// fourfold under concurrent deltas). The read that follows the lock sees every delta made
/// under it.
pub async fn apply_run<D: Dialect>(
    c: &mut D::Connection,
    ops: &[&Op],
    prelocked: bool,
) -> OpResult<Vec<StoreResult<bool>>> {
    let mut keys: Vec<&[u8]> = ops.iter().flat_map(|op| op.keys()).map(key_col).collect();
    keys.sort_unstable();
    keys.dedup();
    if !prelocked {
        D::lock_keys(c, keys.clone()).await?;
    }
    let mut sizes = read_sizes::<D>(c, keys, now_ms()).await?;
    // What each attribute ends up as: set to a value, or removed.
    let mut last: BTreeMap<(&[u8], &str), Option<&[u8]>> = BTreeMap::new();
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let Op::Apply { key, delta, limits } = op else {
            results.push(Err(StoreError::backend(D::BACKEND, "not a delta")));
            continue;
        };
        let Some((meta_len, attrs)) = sizes.get_mut(key_col(key)) else {
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
            last.insert((key_col(key), name.as_str()), None);
        }
        for (name, value) in &delta.set {
            attrs.insert(name.clone(), value.len());
            last.insert((key_col(key), name.as_str()), Some(value.as_slice()));
        }
        results.push(Ok(true));
    }
    let (mut del_keys, mut del_names) = (Vec::new(), Vec::new());
    let (mut set_keys, mut set_names, mut set_values) = (Vec::new(), Vec::new(), Vec::new());
    for ((key, name), value) in last {
        match value {
            None => {
                del_keys.push(key);
                del_names.push(Some(name));
            }
            Some(value) => {
                set_keys.push(key);
                set_names.push(Some(name));
                set_values.push(value);
            }
        }
    }
    remove_attrs::<D>(c, del_keys, del_names).await?;
    upsert_attrs::<D>(c, set_keys, set_names, set_values).await?;
    Ok(results)
}

/// Touch a set of sessions (at most one touch per key) in one statement; the keys it touched:
/// those live when the statement ran.
pub async fn touch_set<D: Dialect>(
    c: &mut D::Connection,
    touches: &[(SessionKey, Millis)],
) -> OpResult<BTreeSet<SessionKey>> {
    let rows = with_rows::<D>(
        c,
        &D::statements().touch_set,
        Some(now_ms()),
        vec![
            Col::Blob(touches.iter().map(|(k, _)| key_col(k)).collect()),
            Col::Int(touches.iter().map(|(_, t)| *t).collect()),
        ],
    )
    .await?;
    let mut touched = BTreeSet::new();
    for row in &rows {
        let bytes: Vec<u8> = row.get(0)?;
        touched.extend(common::key_from_db(D::BACKEND, &bytes));
    }
    Ok(touched)
}

/// Touches in one statement. Touches of one key are merged into the latest: one after another
/// they would leave the same row, and each would find the session live exactly when the first
/// did.
async fn touch_run<D: Dialect>(
    c: &mut D::Connection,
    ops: &[&Op],
) -> OpResult<Vec<StoreResult<bool>>> {
    let mut latest: BTreeMap<SessionKey, Millis> = BTreeMap::new();
    for op in ops {
        if let Op::Touch { key, last_seen } = op {
            let at = latest.entry(*key).or_insert(*last_seen);
            *at = (*at).max(*last_seen);
        }
    }
    let latest: Vec<_> = latest.into_iter().collect();
    let touched = touch_set::<D>(c, &latest).await?;
    Ok(ops
        .iter()
        .map(|op| match op {
            Op::Touch { key, .. } => Ok(touched.contains(key)),
            _ => Err(StoreError::backend(D::BACKEND, "not a touch")),
        })
        .collect())
}

/// Destroys in one statement. Of several destroys of one key, the first answers whether the
/// session was live and the others `false`, as one after another.
async fn destroy_run<D: Dialect>(
    c: &mut D::Connection,
    ops: &[&Op],
) -> OpResult<Vec<StoreResult<bool>>> {
    let mut keys: Vec<&[u8]> = ops.iter().flat_map(|op| op.keys()).map(key_col).collect();
    keys.sort_unstable();
    keys.dedup();
    let rows = with_rows::<D>(
        c,
        "WITH t (k) AS ({rows})
         DELETE FROM ratatoskr_sessions WHERE session_key IN (SELECT k FROM t)
         RETURNING session_key, expires_at",
        None,
        vec![Col::Blob(keys)],
    )
    .await?;
    let now = now_ms();
    let mut live: HashMap<Vec<u8>, bool> = HashMap::new();
    for row in &rows {
        live.insert(row.get(0)?, row.get::<i64>(1)? > now);
    }
    Ok(ops
        .iter()
        .map(|op| match op {
            Op::Destroy(key) => Ok(live.remove(key_col(key)).unwrap_or(false)),
            _ => Err(StoreError::backend(D::BACKEND, "not a destroy")),
        })
        .collect())
}

/// A session row a run inserts.
struct NewRow<'a> {
    key: &'a SessionKey,
    meta: &'a Meta,
    meta_blob: &'a [u8],
    last_seen: Millis,
}

/// Delete the rows expired at `now` under `keys` or of `users` (one statement; see [`prune`]).
async fn prune_set<D: Dialect>(
    c: &mut D::Connection,
    keys: Vec<&[u8]>,
    users: Vec<Option<&str>>,
    now: Millis,
) -> OpResult<()> {
    with_rows::<D>(
        c,
        "WITH t (k, u) AS ({rows})
         DELETE FROM ratatoskr_sessions
         WHERE expires_at <= $1
             AND (session_key IN (SELECT k FROM t) OR user_id IN (SELECT u FROM t))",
        Some(now),
        vec![Col::Blob(keys), Col::Text(users)],
    )
    .await?;
    Ok(())
}

/// When each of `users` was last revoked, for those ever revoked (one statement, none if
/// `users` is empty).
async fn revocations<D: Dialect>(
    c: &mut D::Connection,
    users: BTreeSet<&str>,
) -> OpResult<HashMap<String, Millis>> {
    let rows = with_rows::<D>(
        c,
        "WITH t (u) AS ({rows})
         SELECT user_id, revoked_at FROM ratatoskr_user_revocations
         WHERE user_id IN (SELECT u FROM t)",
        None,
        vec![Col::Text(users.into_iter().map(Some).collect())],
    )
    .await?;
    let mut revoked_at = HashMap::with_capacity(rows.len());
    for row in &rows {
        revoked_at.insert(row.get(0)?, row.get(1)?);
    }
    Ok(revoked_at)
}

/// Insert session rows in one statement. `if_free`: a row whose key is taken is skipped
/// (`ON CONFLICT DO NOTHING`), and the keys inserted are returned; otherwise a taken key is a
/// database error (a unique violation), and nothing is returned.
async fn insert_sessions<D: Dialect>(
    c: &mut D::Connection,
    rows: &[NewRow<'_>],
    if_free: bool,
) -> OpResult<BTreeSet<Vec<u8>>> {
    let handles: Vec<String> = rows.iter().map(|r| r.key.handle().to_string()).collect();
    let sql = if if_free {
        "WITH t (k, h, u, c, l, i, a, e, m) AS ({rows})
         INSERT INTO ratatoskr_sessions (session_key, handle, user_id, created_at, last_seen,
             idle_timeout, absolute_deadline, expires_at, meta)
         SELECT k, h, u, c, l, i, a, e, m FROM t WHERE true
         ON CONFLICT (session_key) DO NOTHING
         RETURNING session_key"
    } else {
        "WITH t (k, h, u, c, l, i, a, e, m) AS ({rows})
         INSERT INTO ratatoskr_sessions (session_key, handle, user_id, created_at, last_seen,
             idle_timeout, absolute_deadline, expires_at, meta)
         SELECT k, h, u, c, l, i, a, e, m FROM t"
    };
    let returned = with_rows::<D>(
        c,
        sql,
        None,
        vec![
            Col::Blob(rows.iter().map(|r| key_col(r.key)).collect()),
            Col::Text(handles.iter().map(|h| Some(h.as_str())).collect()),
            Col::Text(rows.iter().map(|r| r.meta.user_id.as_deref()).collect()),
            Col::Int(rows.iter().map(|r| r.meta.created_at).collect()),
            Col::Int(rows.iter().map(|r| r.last_seen).collect()),
            Col::Int(rows.iter().map(|r| r.meta.idle_timeout).collect()),
            Col::Int(rows.iter().map(|r| r.meta.absolute_deadline).collect()),
            Col::Int(
                rows.iter()
                    .map(|r| r.meta.idle_deadline(r.last_seen))
                    .collect(),
            ),
            Col::Blob(rows.iter().map(|r| r.meta_blob).collect()),
        ],
    )
    .await?;
    let mut inserted = BTreeSet::new();
    for row in &returned {
        inserted.insert(row.get::<Vec<u8>>(0)?);
    }
    Ok(inserted)
}

/// Set the attributes of the sessions in `records` that were `inserted`: one statement.
async fn set_attrs_of<D: Dialect>(
    c: &mut D::Connection,
    records: &[(&SessionKey, &Record)],
    inserted: &BTreeSet<Vec<u8>>,
) -> OpResult<()> {
    let (mut keys, mut names, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (key, record) in records {
        if inserted.contains(key_col(key)) {
            for (name, value) in &record.attrs {
                keys.push(key_col(key));
                names.push(Some(name.as_str()));
                values.push(value.as_slice());
            }
        }
    }
    upsert_attrs::<D>(c, keys, names, values).await
}

/// Creates with distinct keys, in four statements however many (five if one is refused as
/// revoked): delete the expired rows under their keys or of their users, read their users'
/// revocations, insert every session not revoked (`ON CONFLICT DO NOTHING RETURNING`: a key
/// not returned is a `Collision`), and insert the attributes of those inserted. Each create
/// is refused or made on its own, as [`create`] would; the user locks a lone create takes
/// first were taken by the batch's pre-locks (a run has two writes or more, so its batch
/// has too).
async fn create_run<D: Dialect>(
    c: &mut D::Connection,
    ops: &[&Op],
) -> OpResult<Vec<StoreResult<bool>>> {
    let mut creates = Vec::with_capacity(ops.len());
    for op in ops {
        let Op::Create {
            key,
            record,
            meta_blob,
        } = op
        else {
            return Err(StoreError::backend(D::BACKEND, "not a create").into());
        };
        creates.push((key, record, meta_blob.as_slice()));
    }
    fn user(r: &Record) -> Option<&str> {
        r.meta.user_id.as_deref()
    }
    prune_set::<D>(
        c,
        creates.iter().map(|(k, _, _)| key_col(k)).collect(),
        creates.iter().map(|(_, r, _)| user(r)).collect(),
        now_ms(),
    )
    .await?;
    let revoked_at =
        revocations::<D>(c, creates.iter().filter_map(|(_, r, _)| user(r)).collect()).await?;
    let revoked = |r: &Record| {
        user(r)
            .and_then(|u| revoked_at.get(u))
            .is_some_and(|&at| at >= r.meta.created_at)
    };
    // A revoked create whose key is taken is reported as a collision, as `refuse` does.
    let refused: Vec<&[u8]> = creates
        .iter()
        .filter(|(_, r, _)| revoked(r))
        .map(|(k, _, _)| key_col(k))
        .collect();
    let mut taken = BTreeSet::new();
    if !refused.is_empty() {
        for row in &with_rows::<D>(
            c,
            "WITH t (k) AS ({rows})
             SELECT session_key FROM ratatoskr_sessions WHERE session_key IN (SELECT k FROM t)",
            None,
            vec![Col::Blob(refused)],
        )
        .await?
        {
            taken.insert(row.get::<Vec<u8>>(0)?);
        }
    }
    let writes: Vec<NewRow> = creates
        .iter()
        .filter(|(_, r, _)| !revoked(r))
        .map(|(key, r, meta_blob)| NewRow {
            key,
            meta: &r.meta,
            meta_blob,
            last_seen: r.last_seen,
        })
        .collect();
    let inserted = insert_sessions::<D>(c, &writes, true).await?;
    let records: Vec<_> = creates.iter().map(|(k, r, _)| (*k, *r)).collect();
    set_attrs_of::<D>(c, &records, &inserted).await?;
    Ok(creates
        .iter()
        .map(|(key, record, _)| {
            if revoked(record) {
                Err(if taken.contains(key_col(key)) {
                    StoreError::Collision
                } else {
                    StoreError::Revoked
                })
            } else if inserted.contains(key_col(key)) {
                Ok(true)
            } else {
                Err(StoreError::Collision)
            }
        })
        .collect())
}

/// Restores with distinct keys, in three statements however many: delete the expired rows
/// under their keys or of their users, insert every session whose record has not expired
/// (`ON CONFLICT DO NOTHING RETURNING`: a key not returned was taken), and insert the
/// attributes of those inserted. Each answers as [`restore`] would: `true` if written,
/// `false` if its key was taken or its record had expired (that one writes nothing). The
/// user locks were taken by the batch's pre-locks.
async fn restore_run<D: Dialect>(
    c: &mut D::Connection,
    ops: &[&Op],
) -> OpResult<Vec<StoreResult<bool>>> {
    let now = now_ms();
    let mut restores = Vec::with_capacity(ops.len());
    let mut records = Vec::with_capacity(ops.len());
    for op in ops {
        let Op::Restore {
            key,
            record,
            meta_blob,
        } = op
        else {
            return Err(StoreError::backend(D::BACKEND, "not a restore").into());
        };
        if !record.is_expired(now) {
            restores.push(NewRow {
                key,
                meta: &record.meta,
                meta_blob,
                last_seen: record.last_seen,
            });
            records.push((key, record));
        }
    }
    prune_set::<D>(
        c,
        restores.iter().map(|r| key_col(r.key)).collect(),
        restores.iter().map(|r| r.meta.user_id.as_deref()).collect(),
        now,
    )
    .await?;
    let inserted = insert_sessions::<D>(c, &restores, true).await?;
    set_attrs_of::<D>(c, &records, &inserted).await?;
    Ok(ops
        .iter()
        .map(|op| match op {
            Op::Restore { key, .. } => Ok(inserted.contains(key_col(key))),
            _ => Err(StoreError::backend(D::BACKEND, "not a restore")),
        })
        .collect())
}

/// Where a run of rotations stands with one session key, as [`rotate_run`] decides them.
#[derive(Clone, Copy)]
struct Slot<'a> {
    /// A session is there, live when the run began (a row) or made live by the run.
    live: bool,
    /// The row whose attributes the session has: the key itself for a row that was there,
    /// the first old key of the chain for a session the run made.
    attrs_of: &'a SessionKey,
    /// The rotation (index in the run) that made the session under this key, if the run did
    /// and it is still there.
    made_by: Option<usize>,
}

/// Rotations whose new keys are none of the earlier rotations' old keys ([`run_len`]), in at
/// most six statements however many: delete the expired rows under the new keys or of the
/// users, read the users' revocations, read the sizes of the sessions under every old and new
/// key (their rows locked by the batch's pre-locks, as are the users), then decide each
/// rotation in queue order, as [`rotate`] would one after another — `NotFound` if its old
/// session is not live (missing, expired, or rotated away by an earlier rotation of the run),
/// else `Collision` if its new key is taken (a live row, or a session an earlier rotation of
/// the run made), else `Revoked` (the user revoked at or after `now`) or `TooLarge` (its new
/// meta with the old session's attributes), else made — and write what they leave: one
/// `INSERT` of the sessions the run made that are still there (a chain `a → b → c` writes only
/// `c`, with `a`'s attributes), one `INSERT … SELECT` copying their attributes from the rows
/// they come from, and one `DELETE` of the rows rotated away.
///
/// The insert is a plain `INSERT`: a key found free but taken meanwhile (another instance's
/// create racing on PostgreSQL) is a unique violation, and the batch is run again write by
/// write, each rotation then answering `Collision` on its own.
async fn rotate_run<D: Dialect>(
    c: &mut D::Connection,
    ops: &[&Op],
) -> OpResult<Vec<StoreResult<bool>>> {
    struct Rotation<'a> {
        old: &'a SessionKey,
        new: &'a SessionKey,
        meta: &'a Meta,
        meta_blob: &'a [u8],
        now: Millis,
        limits: &'a Limits,
    }
    let mut rotations = Vec::with_capacity(ops.len());
    for op in ops {
        let Op::Rotate {
            old,
            new,
            meta,
            meta_blob,
            now,
            limits,
        } = op
        else {
            return Err(StoreError::backend(D::BACKEND, "not a rotation").into());
        };
        rotations.push(Rotation {
            old,
            new,
            meta,
            meta_blob,
            now: *now,
            limits,
        });
    }
    fn user<'a>(r: &Rotation<'a>) -> Option<&'a str> {
        r.meta.user_id.as_deref()
    }
    let clock = now_ms();
    prune_set::<D>(
        c,
        rotations.iter().map(|r| key_col(r.new)).collect(),
        rotations.iter().map(user).collect(),
        clock,
    )
    .await?;
    let revoked_at = revocations::<D>(c, rotations.iter().filter_map(user).collect()).await?;
    let mut keys: Vec<&[u8]> = rotations
        .iter()
        .flat_map(|r| [key_col(r.old), key_col(r.new)])
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let sizes = read_sizes::<D>(c, keys, clock).await?;

    let mut slots: HashMap<&SessionKey, Slot> = HashMap::with_capacity(2 * rotations.len());
    fn slot<'a>(
        slots: &HashMap<&SessionKey, Slot<'a>>,
        sizes: &Sizes,
        key: &'a SessionKey,
    ) -> Slot<'a> {
        match slots.get(key) {
            Some(slot) => *slot,
            None => Slot {
                live: sizes.contains_key(key_col(key)),
                attrs_of: key,
                made_by: None,
            },
        }
    }
    let mut gone: Vec<&[u8]> = Vec::new();
    let mut results = Vec::with_capacity(rotations.len());
    for (i, r) in rotations.iter().enumerate() {
        let from = slot(&slots, &sizes, r.old);
        let attrs = match sizes.get(key_col(from.attrs_of)) {
            Some((_, attrs)) if from.live => attrs,
            _ => {
                results.push(Err(StoreError::NotFound));
                continue;
            }
        };
        let to = slot(&slots, &sizes, r.new);
        let revoked = user(r)
            .and_then(|u| revoked_at.get(u))
            .is_some_and(|&at| at >= r.now);
        let refusal = if revoked {
            Some(StoreError::Revoked)
        } else {
            common::check_size(
                r.meta_blob.len(),
                attrs.iter().map(|(n, l)| (n.len(), *l)),
                r.limits,
            )
            .err()
            .map(StoreError::Codec)
        };
        match refusal {
            _ if to.live => {
                results.push(Err(StoreError::Collision));
                continue;
            }
            Some(refusal) => {
                results.push(Err(refusal));
                continue;
            }
            None => {}
        }
        if from.made_by.is_none() {
            gone.push(key_col(r.old));
        }
        slots.insert(
            r.old,
            Slot {
                live: false,
                made_by: None,
                ..from
            },
        );
        slots.insert(
            r.new,
            Slot {
                live: r.meta.idle_deadline(r.now) > clock,
                attrs_of: from.attrs_of,
                made_by: Some(i),
            },
        );
        results.push(Ok(true));
    }

    // What the run leaves: the sessions it made that are still there, in queue order.
    let mut made: Vec<(usize, &SessionKey, &SessionKey)> = slots
        .iter()
        .filter_map(|(key, slot)| slot.made_by.map(|i| (i, *key, slot.attrs_of)))
        .collect();
    made.sort_unstable_by_key(|(i, _, _)| *i);
    let rows: Vec<NewRow> = made
        .iter()
        .map(|&(i, key, _)| NewRow {
            key,
            meta: rotations[i].meta,
            meta_blob: rotations[i].meta_blob,
            last_seen: rotations[i].now,
        })
        .collect();
    insert_sessions::<D>(c, &rows, false).await?;
    let (copies, sources): (Vec<&[u8]>, Vec<&[u8]>) = made
        .iter()
        .filter(|(_, _, from)| {
            sizes
                .get(key_col(from))
                .is_some_and(|(_, attrs)| !attrs.is_empty())
        })
        .map(|(_, key, from)| (key_col(key), key_col(from)))
        .unzip();
    with_rows::<D>(
        c,
        "WITH t (n, o) AS ({rows})
         INSERT INTO ratatoskr_session_attrs (session_key, name, value)
         SELECT t.n, a.name, a.value
         FROM t JOIN ratatoskr_session_attrs a ON a.session_key = t.o",
        None,
        vec![Col::Blob(copies), Col::Blob(sources)],
    )
    .await?;
    gone.sort_unstable();
    with_rows::<D>(
        c,
        "WITH t (k) AS ({rows})
         DELETE FROM ratatoskr_sessions WHERE session_key IN (SELECT k FROM t)",
        None,
        vec![Col::Blob(gone)],
    )
    .await?;
    Ok(results)
}

/// Journal appends in one statement however many (ids drawn in queue order, and in each
/// append in its targets' order).
async fn journal_append_run<D: Dialect>(
    c: &mut D::Connection,
    ops: &[&Op],
) -> OpResult<Vec<StoreResult<bool>>> {
    let (mut order, mut kinds, mut keys, mut users) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for op in ops {
        let Op::JournalAppend(targets) = op else {
            return Err(StoreError::backend(D::BACKEND, "not a journal append").into());
        };
        for target in targets {
            let (kind, key, user) = crate::journal::columns(target);
            order.push(order.len() as i64);
            kinds.push(Some(kind));
            keys.push(key);
            users.push(user);
        }
    }
    with_rows::<D>(
        c,
        "WITH t (n, k, s, u) AS ({rows})
         INSERT INTO ratatoskr_redis_journal (at, kind, session_key, user_id)
         SELECT $1, k, s, u FROM t ORDER BY n",
        Some(now_ms()),
        vec![
            Col::Int(order),
            Col::Text(kinds),
            Col::OptBlob(keys),
            Col::Text(users),
        ],
    )
    .await?;
    Ok(ops.iter().map(|_| Ok(true)).collect())
}

/// Journal acknowledgements in one statement however many.
async fn journal_ack_run<D: Dialect>(
    c: &mut D::Connection,
    ops: &[&Op],
) -> OpResult<Vec<StoreResult<bool>>> {
    let mut ids = Vec::new();
    for op in ops {
        let Op::JournalAck(more) = op else {
            return Err(StoreError::backend(D::BACKEND, "not a journal acknowledgement").into());
        };
        ids.extend_from_slice(more);
    }
    D::journal_ack(c, &ids).await?;
    Ok(ops.iter().map(|_| Ok(true)).collect())
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
        let (result, statements) = counting(async {
            let mut c = self.pool.acquire().await?;
            run_op::<D>(&mut c, op, false).await
        })
        .await;
        if result.is_ok() {
            self.stats.committed(1, statements);
        }
        result.map_err(|f| f.into_store(D::BACKEND))
    }

    /// `ops` in one transaction.
    async fn attempt(&self, ops: &[Op]) -> Attempt {
        let mut tx = match begin(&self.pool, D::BEGIN).await {
            Ok(tx) => tx,
            Err(e) => return Attempt::Failed(e),
        };
        let ((results, failure), statements) = counting(async {
            let mut results: Vec<Option<StoreResult<bool>>> = ops.iter().map(|_| None).collect();
            let mut failure = None;
            let prelocked = ops.len() > 1;
            if prelocked && let Err(e) = D::prelock(&mut tx, ops).await {
                failure = Some(e);
            }
            // Every write of a batch was in flight at the same time as the others, so any
            // order of them is a valid one: writes of one kind are made together, each kind's
            // run in a few statements however long it is.
            let mut order: Vec<usize> = (0..ops.len()).collect();
            order.sort_by_key(|&i| ops[i].kind());
            let mut rest = &order[..];
            while failure.is_none() && !rest.is_empty() {
                let (now, later) = rest.split_at(run_len(ops, rest).max(1));
                rest = later;
                let run: Vec<&Op> = now.iter().map(|&i| &ops[i]).collect();
                match run_ops::<D>(&mut tx, &run, prelocked).await {
                    Ok(answers) => {
                        for (&i, answer) in now.iter().zip(answers) {
                            results[i] = Some(answer);
                        }
                    }
                    Err(Fail::Refused(e)) => {
                        // Runs answer per write and fail like this only on data they cannot
                        // read: every write of the run fails.
                        let message = e.to_string();
                        results[now[0]] = Some(Err(e));
                        for &i in &now[1..] {
                            results[i] = Some(Err(StoreError::backend(D::BACKEND, &message)));
                        }
                    }
                    Err(Fail::Db(e)) => failure = Some(e),
                }
            }
            (results, failure)
        })
        .await;
        if let Some(e) = failure {
            if let Err(rollback) = tx.rollback().await {
                tracing::debug!(backend = D::BACKEND, error = %rollback, "rollback failed");
            }
            return Attempt::from_error(e);
        }
        let results = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(StoreError::backend(D::BACKEND, "a write got no answer")))
            })
            .collect();
        match tx.commit().await {
            Ok(()) => {
                self.stats.committed(ops.len(), statements);
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

#[cfg(test)]
#[path = "write_tests.rs"]
mod tests;
