//! Group commit: durable writes that wait at the same time share one transaction.
//!
//! Every write a store makes on behalf of a session (create, restore, apply, touch, rotate,
//! destroy, and the outage journal's appends and acknowledgements) is an [`Op`]: owned data, so
//! it can be handed to another task. A [`Writer`] either runs each op at once in the caller's
//! task (group commit off: one transaction per write, as before), or queues it for its *lanes*:
//! tasks that each take whatever is queued (up to [`GroupCommit::max_batch`] ops), run it all in
//! one transaction, commit once, and answer every caller through its own oneshot channel. An
//! idle lane takes the next op at once, so a lone write waits for nothing; under load the queue
//! fills while a batch runs and the next batch carries everything that arrived meanwhile.
//!
//! Each caller still gets its own exact result: an op refused for its own reasons (`Collision`,
//! `NotFound`, `Revoked`, `TooLarge`) writes nothing and does not disturb its neighbours, since
//! every op checks before it writes (no savepoints needed; see `docs/sql.md`). If the database
//! rejects a statement (a database error, such as a detected deadlock), the batch is rolled back
//! and its ops are run again one transaction each, so the failure lands on the op that caused it.
//! A connection-level failure (I/O, pool timeout) fails the whole batch. A caller's future
//! resolves only after the transaction holding its op committed; a caller that gave up (its
//! future was dropped) before its batch began is skipped, as its transaction would have been
//! rolled back before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::{Semaphore, mpsc, oneshot};

use ratatoskr_core::{
    JournalTarget, Limits, Meta, Millis, Record, SessionKey, StoreError, StoreResult,
};

use crate::common::Normalized;

/// Group-commit settings (part of [`crate::SqlOptions`]).
///
/// ```
/// use ratatoskr_sql::{GroupCommit, SqlOptions};
///
/// let options = SqlOptions { group_commit: GroupCommit { max_batch: 32, lanes: 2 },
///                            ..SqlOptions::default() };
/// let off = SqlOptions { group_commit: GroupCommit::off(), ..SqlOptions::default() };
/// # let _ = (options, off);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupCommit {
    /// Most writes committed in one transaction; `1` (or `0`) turns group commit off, so every
    /// write runs in its caller's task in a transaction of its own.
    pub max_batch: usize,
    /// PostgreSQL: how many batches may run at once, each on one pooled connection (clamped to
    /// the pool size). SQLite has one writer per file and always uses one lane.
    pub lanes: usize,
}

impl GroupCommit {
    /// Group commit off: one transaction per write.
    pub fn off() -> Self {
        GroupCommit {
            max_batch: 1,
            lanes: 1,
        }
    }

    /// Whether writes are grouped.
    pub fn is_on(&self) -> bool {
        self.max_batch > 1
    }
}

impl Default for GroupCommit {
    /// On: up to 64 writes per transaction; on PostgreSQL up to 8 lanes (as many as the default
    /// pool has connections).
    fn default() -> Self {
        GroupCommit {
            max_batch: 64,
            lanes: 8,
        }
    }
}

/// Counters of a store's durable writes (see `SqliteStore::write_stats` / `PgStore::write_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed (a single-statement write without a transaction counts as one).
    pub transactions: u64,
    /// Writes those transactions carried (a write refused for its own reasons, such as
    /// `NotFound`, counts too). `operations / transactions` is the mean batch size.
    pub operations: u64,
    /// Statements those transactions sent, not counting `BEGIN` and `COMMIT`: on PostgreSQL
    /// each is a round trip, on SQLite a hop to the connection's thread. A batch makes each
    /// kind of write in a fixed number of statements however many writes it carries.
    pub statements: u64,
}

#[derive(Default)]
pub(crate) struct Stats {
    transactions: AtomicU64,
    operations: AtomicU64,
    statements: AtomicU64,
}

impl Stats {
    /// A transaction of `ops` writes, which sent `statements` statements, committed.
    pub(crate) fn committed(&self, ops: usize, statements: u64) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.operations.fetch_add(ops as u64, Ordering::Relaxed);
        self.statements.fetch_add(statements, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> WriteStats {
        WriteStats {
            transactions: self.transactions.load(Ordering::Relaxed),
            operations: self.operations.load(Ordering::Relaxed),
            statements: self.statements.load(Ordering::Relaxed),
        }
    }
}

/// One durable write, with everything it needs (already encoded and checked where that needs no
/// database). Every op answers `bool`: whether it wrote (`restore`), whether the session existed
/// (`touch`, `destroy`), `true` otherwise.
///
/// `pub` only because the sealed dialect trait names it; the module is private.
pub enum Op {
    Create {
        key: SessionKey,
        record: Record,
        meta_blob: Vec<u8>,
    },
    Restore {
        key: SessionKey,
        record: Record,
        meta_blob: Vec<u8>,
    },
    Apply {
        key: SessionKey,
        delta: Normalized,
        limits: Limits,
    },
    Touch {
        key: SessionKey,
        last_seen: Millis,
    },
    /// Deduplicated (latest `last_seen` per key) and sorted by key.
    TouchMany(Vec<(SessionKey, Millis)>),
    Rotate {
        old: SessionKey,
        new: SessionKey,
        meta: Meta,
        meta_blob: Vec<u8>,
        now: Millis,
        limits: Limits,
    },
    Destroy(SessionKey),
    JournalAppend(Vec<JournalTarget>),
    JournalAck(Vec<i64>),
}

impl Op {
    /// Ops that are one statement, so that alone they need no explicit transaction.
    pub(crate) fn is_single_statement(&self) -> bool {
        match self {
            // A journal append is one statement over its targets, unless there are so many
            // that SQLite's parameter limit splits it (four parameters a target): then it
            // needs its transaction to be all or nothing.
            Op::JournalAppend(targets) => targets.len() <= 1_000,
            _ => matches!(self, Op::Touch { .. } | Op::Destroy(_) | Op::JournalAck(_)),
        }
    }

    /// The op's kind, as the order in which a batch makes its runs (any order is valid: the
    /// ops of a batch were all in flight at once).
    pub(crate) fn kind(&self) -> u8 {
        match self {
            Op::Create { .. } => 0,
            Op::Restore { .. } => 1,
            Op::Rotate { .. } => 2,
            Op::Apply { .. } => 3,
            Op::Touch { .. } => 4,
            Op::TouchMany(_) => 5,
            Op::Destroy(_) => 6,
            Op::JournalAppend(_) => 7,
            Op::JournalAck(_) => 8,
        }
    }

    /// The user whose per-user lock the op takes (PostgreSQL).
    pub(crate) fn locked_user(&self) -> Option<&str> {
        match self {
            Op::Create { record, .. } | Op::Restore { record, .. } => {
                record.meta.user_id.as_deref()
            }
            Op::Rotate { meta, .. } => meta.user_id.as_deref(),
            _ => None,
        }
    }

    /// Every session row the op may lock.
    pub(crate) fn keys(&self) -> Vec<&SessionKey> {
        match self {
            Op::Create { key, .. }
            | Op::Restore { key, .. }
            | Op::Apply { key, .. }
            | Op::Touch { key, .. }
            | Op::Destroy(key) => vec![key],
            Op::Rotate { old, new, .. } => vec![old, new],
            Op::TouchMany(touches) => touches.iter().map(|(k, _)| k).collect(),
            Op::JournalAppend(_) | Op::JournalAck(_) => Vec::new(),
        }
    }
}

/// Deduplicate touches (latest `last_seen` per key) and sort them by key, the order in which
/// their rows are locked.
pub(crate) fn dedup_touches(touches: &[(SessionKey, Meta, Millis)]) -> Vec<(SessionKey, Millis)> {
    let mut latest = std::collections::BTreeMap::new();
    for (key, _, at) in touches {
        latest
            .entry(*key)
            .and_modify(|t: &mut Millis| *t = (*t).max(*at))
            .or_insert(*at);
    }
    latest.into_iter().collect()
}

/// What a store's database side provides to run ops.
#[async_trait]
pub(crate) trait Batcher: Send + Sync + 'static {
    /// Run `ops` (one transaction if possible) and answer each, in order.
    async fn run_batch(&self, ops: &[Op]) -> Vec<StoreResult<bool>>;
}

/// The error an op fails with inside a batch: refused by the store's rules (the op wrote
/// nothing), or a database error (the transaction is unusable and must be rolled back).
pub enum Fail {
    Refused(StoreError),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Refused(e)
    }
}

impl From<ratatoskr_core::CodecError> for Fail {
    fn from(e: ratatoskr_core::CodecError) -> Self {
        Fail::Refused(StoreError::Codec(e))
    }
}

impl Fail {
    pub(crate) fn into_store(self, backend: &'static str) -> StoreError {
        match self {
            Fail::Refused(e) => e,
            Fail::Db(e) => crate::common::map_err(backend, e),
        }
    }
}

pub type OpResult<T> = Result<T, Fail>;

/// How one attempt at a batch ended.
pub(crate) enum Attempt {
    /// Committed (or, for the results that are `Ok`, failed at commit and turned into errors).
    Done(Vec<StoreResult<bool>>),
    /// A statement was rejected by the database; everything was rolled back. Worth running the
    /// ops one by one.
    Rejected(sqlx::Error),
    /// The connection failed (or the transaction could not start); rolled back or gone.
    Failed(sqlx::Error),
}

impl Attempt {
    /// Classify a database failure that aborted a batch.
    pub(crate) fn from_error(e: sqlx::Error) -> Self {
        if e.as_database_error().is_some() {
            Attempt::Rejected(e)
        } else {
            Attempt::Failed(e)
        }
    }

    /// The results after a commit that failed: the writes did not (or may not have) landed, so
    /// the ops that would have succeeded fail with the commit's error; refusals stay (they wrote
    /// nothing either way).
    pub(crate) fn commit_failed(
        backend: &'static str,
        results: Vec<StoreResult<bool>>,
        e: &sqlx::Error,
    ) -> Self {
        Attempt::Done(
            results
                .into_iter()
                .map(|r| {
                    r.and_then(|_| Err(StoreError::backend(backend, format!("commit failed: {e}"))))
                })
                .collect(),
        )
    }

    /// The results of an attempt that is not run again op by op: a failure lands on every op.
    pub(crate) fn into_results(self, backend: &'static str, n: usize) -> Vec<StoreResult<bool>> {
        match self {
            Attempt::Done(results) => results,
            Attempt::Rejected(e) | Attempt::Failed(e) => {
                let message = e.to_string();
                let mut out = Vec::with_capacity(n);
                out.push(Err(crate::common::map_err(backend, e)));
                out.extend((1..n).map(|_| Err(StoreError::backend(backend, message.as_str()))));
                out.truncate(n);
                out
            }
        }
    }
}

/// Log that a rejected batch is being run again op by op.
pub(crate) fn log_rerun(backend: &'static str, e: &sqlx::Error, ops: usize) {
    tracing::debug!(
        backend,
        error = %e,
        ops,
        "a grouped write was rejected; running the batch's writes one by one"
    );
}

struct Job {
    op: Op,
    reply: oneshot::Sender<StoreResult<bool>>,
}

/// Runs a store's writes, grouped or not. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer(Arc<WriterInner>);

struct WriterInner {
    backend: &'static str,
    runner: Arc<dyn Batcher>,
    max_batch: usize,
    lanes: usize,
    queue: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    /// One per lane: held by a lane while it runs a batch, or by a caller writing alone.
    busy: Arc<Semaphore>,
}

impl Writer {
    pub(crate) fn new(
        backend: &'static str,
        runner: Arc<dyn Batcher>,
        config: &GroupCommit,
        max_lanes: usize,
    ) -> Self {
        let lanes = config.lanes.clamp(1, max_lanes.max(1));
        Writer(Arc::new(WriterInner {
            backend,
            runner,
            max_batch: config.max_batch.max(1),
            lanes,
            queue: std::sync::Mutex::new(None),
            busy: Arc::new(Semaphore::new(lanes)),
        }))
    }

    /// The settings in effect.
    pub(crate) fn config(&self) -> GroupCommit {
        GroupCommit {
            max_batch: self.0.max_batch,
            lanes: self.0.lanes,
        }
    }

    /// Run one write and answer its result once it is committed.
    pub(crate) async fn submit(&self, op: Op) -> StoreResult<bool> {
        let inner = &self.0;
        if inner.max_batch <= 1 {
            return self.alone(op).await;
        }
        // Idle (nothing queued, a lane free): write in the caller's own task, sparing the hop
        // to a lane and back. Only this write is in that transaction, so a caller that gives
        // up rolls back nothing but its own write.
        if let Some(queue) = self.queue()
            && queue.capacity() == queue.max_capacity()
            && let Ok(_lane) = inner.busy.try_acquire()
        {
            return self.alone(op).await;
        }
        let (reply, answer) = oneshot::channel();
        let mut job = Job { op, reply };
        // A second try only if the lanes are gone (their runtime shut down): start new ones.
        for _ in 0..2 {
            let Some(queue) = self.queue() else { break };
            match queue.send(job).await {
                Ok(()) => {
                    return answer.await.unwrap_or_else(|_| {
                        Err(StoreError::backend(
                            inner.backend,
                            "the database writer stopped before the write was made",
                        ))
                    });
                }
                Err(mpsc::error::SendError(back)) => {
                    job = back;
                    let mut slot = inner.queue.lock().unwrap_or_else(|e| e.into_inner());
                    if slot.as_ref().is_some_and(|q| q.same_channel(&queue)) {
                        *slot = None;
                    }
                }
            }
        }
        // No Tokio runtime to run lanes on: write in the caller's task.
        self.alone(job.op).await
    }

    async fn alone(&self, op: Op) -> StoreResult<bool> {
        let mut results = self.0.runner.run_batch(std::slice::from_ref(&op)).await;
        results.pop().unwrap_or_else(|| {
            Err(StoreError::backend(
                self.0.backend,
                "the database writer gave no answer",
            ))
        })
    }

    /// The lanes' queue, starting the lanes on first use.
    fn queue(&self) -> Option<mpsc::Sender<Job>> {
        let inner = &self.0;
        let mut slot = inner.queue.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(q) = slot.as_ref().filter(|q| !q.is_closed()) {
            return Some(q.clone());
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::channel(inner.max_batch * inner.lanes * 4);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..inner.lanes {
            runtime.spawn(lane(
                Arc::clone(&rx),
                Arc::clone(&inner.runner),
                Arc::clone(&inner.busy),
                inner.max_batch,
            ));
        }
        *slot = Some(tx.clone());
        Some(tx)
    }
}

/// One lane: take what is queued (at least one op, at most `max`), run it as one batch, answer,
/// repeat. Ends when every sender is gone (the store was dropped).
async fn lane(
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>,
    runner: Arc<dyn Batcher>,
    busy: Arc<Semaphore>,
    max: usize,
) {
    let mut jobs = Vec::with_capacity(max);
    loop {
        {
            let mut rx = rx.lock().await;
            if rx.recv_many(&mut jobs, max).await == 0 {
                return;
            }
        }
        // Wait for a free lane (callers writing alone hold some), then take along whatever
        // was queued meanwhile, unless another lane is collecting already.
        let Ok(_lane) = busy.acquire().await else {
            return;
        };
        if jobs.len() < max
            && let Ok(mut rx) = rx.try_lock()
        {
            while jobs.len() < max {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        // A caller that gave up before its batch began: its write is not made.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        let (ops, replies): (Vec<Op>, Vec<_>) = jobs.drain(..).map(|j| (j.op, j.reply)).unzip();
        let results = runner.run_batch(&ops).await;
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Records batch sizes; answers `NotFound` for touches at time 0, `true` otherwise.
    #[derive(Default)]
    struct Fake(Mutex<Vec<usize>>);

    #[async_trait]
    impl Batcher for Fake {
        async fn run_batch(&self, ops: &[Op]) -> Vec<StoreResult<bool>> {
            self.0.lock().unwrap().push(ops.len());
            tokio::time::sleep(Duration::from_millis(5)).await;
            ops.iter()
                .map(|op| match op {
                    Op::Touch { last_seen: 0, .. } => Err(StoreError::NotFound),
                    _ => Ok(true),
                })
                .collect()
        }
    }

    fn touch(at: Millis) -> Op {
        Op::Touch {
            key: SessionKey::from_bytes([at as u8; 32]),
            last_seen: at,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_batches_and_each_gets_its_answer() {
        let fake = Arc::new(Fake::default());
        let writer = Writer::new(
            "test",
            fake.clone(),
            &GroupCommit {
                max_batch: 16,
                lanes: 1,
            },
            8,
        );
        let calls: Vec<_> = (0..100)
            .map(|i| {
                let w = writer.clone();
                tokio::spawn(async move { (i, w.submit(touch(i % 10)).await) })
            })
            .collect();
        for c in calls {
            let (i, r) = c.await.unwrap();
            if i % 10 == 0 {
                assert!(matches!(r, Err(StoreError::NotFound)), "{i}: {r:?}");
            } else {
                assert!(r.unwrap(), "{i}");
            }
        }
        let sizes = fake.0.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(sizes.iter().all(|&n| n <= 16), "{sizes:?}");
        assert!(sizes.len() < 100, "writes were grouped: {sizes:?}");
    }

    #[tokio::test]
    async fn off_runs_each_write_alone() {
        let fake = Arc::new(Fake::default());
        let writer = Writer::new("test", fake.clone(), &GroupCommit::off(), 8);
        assert!(writer.submit(touch(3)).await.unwrap());
        assert!(writer.submit(touch(4)).await.unwrap());
        assert_eq!(*fake.0.lock().unwrap(), [1, 1]);
    }

    #[test]
    fn touches_are_deduplicated_to_the_latest_and_sorted() {
        let meta = Record::new(None, 0, Duration::from_secs(1), Duration::from_secs(2)).meta;
        let a = SessionKey::from_bytes([2; 32]);
        let b = SessionKey::from_bytes([1; 32]);
        let out = dedup_touches(&[
            (a, meta.clone(), 5),
            (b, meta.clone(), 7),
            (a, meta.clone(), 9),
            (a, meta, 3),
        ]);
        assert_eq!(out, [(b, 7), (a, 9)]);
    }

    #[test]
    fn lanes_are_clamped_to_the_pool() {
        let w = Writer::new(
            "test",
            Arc::new(Fake::default()),
            &GroupCommit {
                max_batch: 8,
                lanes: 50,
            },
            6,
        );
        assert_eq!(w.config().lanes, 6);
    }
}
