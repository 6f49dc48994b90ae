//! # ratatoskr-tiered
//!
//! Redis in front, the database behind, and a fallback that really falls back.
//!
//! [`TieredStore`] composes a **fast tier** (Redis) and a **durable tier** (SQLite or PostgreSQL)
//! into one [`SessionStore`]:
//!
//! | operation | path |
//! |---|---|
//! | create, delta, rotate, destroy, revoke-all | database first (the request is answered only after it), then Redis |
//! | touch (idle extension) | the database, then Redis: batched ([`TieredConfig::touch_flush_every`]) while the session has time to spare, written through near its deadline |
//! | load | near cache → Redis → database, repopulating Redis on the way back |
//! | list, count, reap | database (the source of truth) |
//!
//! **One truth.** The database decides whether a session exists; Redis and the near cache are
//! copies that never keep alive, extend or hide a session the database has ended: Redis is
//! extended only after the database took a touch, every write the database refuses or ends a
//! session with removes the copy, a recovery discards what a restarted Redis kept and fences off
//! writes that arrive late. The argument per operation is in `docs/architecture.md`; a
//! model-based test (`tests/model.rs`) checks it under generated sequences and faults.
//!
//! A [`Breaker`] stops waiting on a sick Redis: one failure or timeout opens it,
//! and while it is open requests go straight to the database. Durable changes that Redis could not
//! be told about go into an [`OutageJournal`] in the database. Whoever sees Redis answer again —
//! this instance or any other, since the journal is shared and every instance polls its length —
//! replays it (deletes those keys in Redis) before Redis is read again. So a Redis that comes back
//! empty logs nobody out (reads fall through to the database and repopulate), and a Redis that
//! comes back with old data cannot resurrect a revoked session.
//!
//! The [`NearCache`] keeps decoded sessions in process. It is filled only
//! from Redis reads and kept correct by the invalidation notices Redis sends (`CLIENT TRACKING`),
//! so a read-only request on a warm session makes no network round trip.
//!
//! Build one with [`TieredStore::builder`] (see [`builder`]): it takes the Redis and database
//! stores themselves and keeps the near cache whenever Redis is in tracking mode.
//! [`TieredStore::new`], below, is the underlying constructor.
//!
//! ```no_run
//! # async fn wire(redis: std::sync::Arc<dyn ratatoskr_core::SessionStore>,
//! #               sql: std::sync::Arc<dyn ratatoskr_core::SessionStore>,
//! #               journal: std::sync::Arc<dyn ratatoskr_core::OutageJournal>) {
//! use ratatoskr_tiered::{TieredConfig, TieredStore};
//!
//! let store = TieredStore::new(redis, sql, journal, None, TieredConfig::default());
//! // `store` is a SessionStore: hand it to a SessionManager.
//! # }
//! ```

#![warn(missing_docs)]

pub mod breaker;
pub mod builder;
pub mod cached;
pub mod near_cache;
mod touches;

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ratatoskr_core::{
    Delta, Invalidation, JournalTarget, Meta, Millis, OutageJournal, Record, SessionKey,
    SessionStore, SessionSummary, StoreError, StoreResult, now_ms, record::duration_ms,
};
use tokio::sync::broadcast;

use crate::breaker::{Breaker, BreakerState};
pub use crate::builder::{TieredBuildError, TieredBuilder};
pub use crate::cached::NearCachedStore;
use crate::near_cache::{NearCache, NearCacheConfig};
use crate::touches::TouchBatch;

/// Timeouts, windows and bounds of the tiered store.
#[derive(Clone, Debug)]
pub struct TieredConfig {
    /// Longest wait for Redis on any call before it counts as a failure.
    pub redis_timeout: Duration,
    /// How long the breaker stays open before one probe is let through.
    pub breaker_open_for: Duration,
    /// How often batched touches are written to the database.
    pub touch_flush_every: Duration,
    /// Most touches buffered for the database; a touch that finds the buffer full is written
    /// through at once.
    pub touch_buffer_max: usize,
    /// A touch of a session whose deadline is nearer than this is written to the database at
    /// once instead of waiting for the next batch: a batched touch that reached the database
    /// after the deadline would be refused there, and the session would end although it was in
    /// use. Keep it several times [`touch_flush_every`](Self::touch_flush_every).
    pub touch_sync_margin: Duration,
    /// How often every instance checks the shared journal for entries another instance wrote.
    pub journal_poll_every: Duration,
    /// Near-cache bounds (used only when invalidation notices are available).
    pub near_cache: NearCacheConfig,
}

impl Default for TieredConfig {
    fn default() -> Self {
        TieredConfig {
            redis_timeout: Duration::from_millis(250),
            breaker_open_for: Duration::from_secs(1),
            touch_flush_every: Duration::from_secs(1),
            touch_buffer_max: 100_000,
            touch_sync_margin: Duration::from_secs(10),
            journal_poll_every: Duration::from_secs(1),
            near_cache: NearCacheConfig::default(),
        }
    }
}

/// A snapshot for health pages and `/health/sessions`.
#[derive(Clone, Debug)]
pub struct TieredHealth {
    /// The breaker's state.
    pub breaker: BreakerState,
    /// Breaker transitions since start.
    pub breaker_transitions: u64,
    /// Journal entries still to replay (as of the last poll).
    pub journal_pending: u64,
    /// Reads and writes that went to the database because Redis was skipped or failed.
    pub fallbacks: u64,
    /// Near-cache entries and bytes (`None` when the near cache is off).
    pub near_cache: Option<(usize, usize)>,
    /// Touches waiting for the database.
    pub touches_pending: usize,
    /// Last observed Redis latency, microseconds.
    pub redis_latency_us: u64,
    /// Last observed database latency, microseconds.
    pub database_latency_us: u64,
}

struct Inner {
    fast: Arc<dyn SessionStore>,
    durable: Arc<dyn SessionStore>,
    journal: Arc<dyn OutageJournal>,
    breaker: Breaker,
    cache: Option<NearCache>,
    /// Notices from Redis, drained synchronously by every load (see [`Inner::drain`]).
    invalidations: Option<std::sync::Mutex<broadcast::Receiver<Invalidation>>>,
    touches: TouchBatch,
    config: TieredConfig,
    replaying: tokio::sync::Mutex<()>,
    counters: Counters,
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct Counters {
    fallbacks: std::sync::atomic::AtomicU64,
    journal_pending: std::sync::atomic::AtomicU64,
    redis_latency_us: std::sync::atomic::AtomicU64,
    database_latency_us: std::sync::atomic::AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// Redis + database as one store. Cheap to clone.
#[derive(Clone)]
pub struct TieredStore(Arc<Inner>);

enum FastOutcome<T> {
    /// Redis answered (possibly with a logical error such as `NotFound`).
    Answered(StoreResult<T>),
    /// Redis was skipped (breaker) or failed; the caller falls back.
    Unavailable,
}

use std::sync::atomic::Ordering::Relaxed;

impl TieredStore {
    /// Compose `fast` (Redis) and `durable` (SQL) with a shared `journal`. With `invalidations`
    /// (from the Redis store's tracking connection) a near cache is kept; without, none.
    ///
    /// The store starts in the recovering state: it replays the journal before it reads Redis,
    /// since it cannot know what changed while it was not running. Must be called inside a Tokio
    /// runtime (it spawns the touch flusher and the journal poller).
    pub fn new(
        fast: Arc<dyn SessionStore>,
        durable: Arc<dyn SessionStore>,
        journal: Arc<dyn OutageJournal>,
        invalidations: Option<broadcast::Receiver<Invalidation>>,
        config: TieredConfig,
    ) -> Self {
        let cache = invalidations
            .as_ref()
            .map(|_| NearCache::new(&config.near_cache));
        let invalidations = invalidations.map(std::sync::Mutex::new);
        let inner = Arc::new(Inner {
            fast,
            durable,
            journal,
            breaker: Breaker::recovering(config.breaker_open_for),
            cache,
            invalidations,
            touches: TouchBatch::new(config.touch_buffer_max),
            config,
            replaying: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
            tasks: std::sync::Mutex::new(Vec::new()),
        });
        let store = TieredStore(inner);
        let tasks = vec![
            tokio::spawn(flush_touches(Arc::downgrade(&store.0))),
            tokio::spawn(poll_journal(Arc::downgrade(&store.0))),
        ];
        *store.0.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        store.spawn_replay();
        store
    }

    /// State for health pages.
    pub fn health(&self) -> TieredHealth {
        let i = &self.0;
        TieredHealth {
            breaker: i.breaker.state(),
            breaker_transitions: i.breaker.transitions(),
            journal_pending: i.counters.journal_pending.load(Relaxed),
            fallbacks: i.counters.fallbacks.load(Relaxed),
            near_cache: i.cache.as_ref().map(NearCache::usage),
            touches_pending: i.touches.len(),
            redis_latency_us: i.counters.redis_latency_us.load(Relaxed),
            database_latency_us: i.counters.database_latency_us.load(Relaxed),
        }
    }

    /// The fast tier (for health checks).
    pub fn fast_tier(&self) -> &Arc<dyn SessionStore> {
        &self.0.fast
    }

    /// The durable tier (for health checks).
    pub fn durable_tier(&self) -> &Arc<dyn SessionStore> {
        &self.0.durable
    }

    /// Write every buffered touch to the database now (tests, shutdown).
    pub async fn flush_touches(&self) -> StoreResult<()> {
        self.0.flush_touches().await
    }

    /// Run one round of the journal poller now (it runs every
    /// [`journal_poll_every`](TieredConfig::journal_poll_every) anyway): an instance that did not
    /// see an outage itself learns here of what other instances journalled, and stops reading
    /// Redis until it is replayed. Tests call it to stand for the passing of a poll interval.
    pub async fn poll_journal_now(&self) {
        self.0.poll_once().await;
    }

    /// Probe Redis if the breaker allows and replay the journal now; returns whether the
    /// breaker is closed afterwards (tests, operators).
    pub async fn recover_now(&self) -> bool {
        if let Some(permit) = self.0.breaker.try_acquire() {
            if permit.probe {
                self.0.probe(permit).await;
            } else {
                // Closed already: nothing to recover.
                return true;
            }
        }
        self.0.replay().await;
        self.0.breaker.state() == BreakerState::Closed
    }

    fn spawn_replay(&self) {
        let inner = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            if let Some(inner) = inner.upgrade() {
                inner.replay().await;
            }
        });
    }

    /// Call Redis under the breaker and the timeout.
    async fn via_redis<T, F>(&self, read: bool, op: &'static str, call: F) -> FastOutcome<T>
    where
        F: Future<Output = StoreResult<T>>,
    {
        let i = &self.0;
        let permit = if read {
            i.breaker.try_acquire()
        } else {
            // Writes may go to Redis while the journal is replayed: they are newer than anything
            // the journal invalidates, so they cannot bring back stale data.
            match i.breaker.state() {
                BreakerState::Recovering => Some(breaker::Permit { probe: false }),
                _ => i.breaker.try_acquire(),
            }
        };
        let Some(permit) = permit else {
            self.fallback(op);
            return FastOutcome::Unavailable;
        };
        if read && permit.probe {
            // A read must not be the probe: Redis may have come back with old data, and what it
            // answers is not to be served before the journal is replayed. Probe with a ping and
            // serve this read from the database.
            if i.probe(permit).await {
                self.spawn_replay();
            }
            self.fallback(op);
            return FastOutcome::Unavailable;
        }
        let started = Instant::now();
        let result = tokio::time::timeout(i.config.redis_timeout, call).await;
        let elapsed = started.elapsed();
        metrics::histogram!("ratatoskr_tier_latency_seconds", "tier" => "redis", "op" => op)
            .record(elapsed.as_secs_f64());
        i.counters
            .redis_latency_us
            .store(elapsed.as_micros() as u64, Relaxed);
        match result {
            Ok(Err(e)) if e.is_backend() => {
                tracing::warn!(op, error = %e, "Redis failed; using the database");
                i.breaker.on_failure();
                self.fallback(op);
                FastOutcome::Unavailable
            }
            Ok(answer) => {
                if i.breaker.on_success(permit) {
                    self.spawn_replay();
                }
                FastOutcome::Answered(answer)
            }
            Err(_) => {
                tracing::warn!(op, timeout = ?i.config.redis_timeout, "Redis timed out; using the database");
                i.breaker.on_failure();
                self.fallback(op);
                FastOutcome::Unavailable
            }
        }
    }

    fn fallback(&self, op: &'static str) {
        self.0.counters.fallbacks.fetch_add(1, Relaxed);
        metrics::counter!("ratatoskr_fallbacks_total", "op" => op).increment(1);
    }

    /// Call the database, timing it.
    async fn via_db<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        let started = Instant::now();
        let result = call.await;
        let elapsed = started.elapsed();
        metrics::histogram!("ratatoskr_tier_latency_seconds", "tier" => "database", "op" => op)
            .record(elapsed.as_secs_f64());
        self.0
            .counters
            .database_latency_us
            .store(elapsed.as_micros() as u64, Relaxed);
        result
    }

    /// Redis could not be told about a durable change: journal it so that whoever sees Redis
    /// again invalidates it first. If the journal cannot be written either, the durable change
    /// still stands; the error is logged and counted (the database is then down too, and the
    /// request already failed or will).
    async fn owe(&self, targets: Vec<JournalTarget>) {
        if let Err(e) = self.0.journal.append(&targets).await {
            metrics::counter!("ratatoskr_journal_write_failures_total").increment(1);
            tracing::error!(error = %e, "could not journal a change Redis missed");
        } else {
            self.0
                .counters
                .journal_pending
                .fetch_add(targets.len() as u64, Relaxed);
            metrics::gauge!("ratatoskr_journal_length")
                .set(self.0.counters.journal_pending.load(Relaxed) as f64);
        }
    }

    fn forget(&self, key: &SessionKey) {
        if let Some(c) = &self.0.cache {
            c.invalidate(key);
        }
    }

    /// After repopulating Redis from a database read, make sure no write slipped in between
    /// the read and the repopulation; if one did, drop the copy (the next read repopulates).
    async fn repopulate(&self, key: &SessionKey, record: &Record) {
        let written = match self
            .via_redis(false, "restore", self.0.fast.restore(key, record))
            .await
        {
            FastOutcome::Answered(Ok(written)) => written,
            FastOutcome::Answered(Err(_)) | FastOutcome::Unavailable => {
                // It may still land (a stalled Redis) without the check below: whoever
                // recovers deletes it.
                self.owe(vec![JournalTarget::Session(*key)]).await;
                return;
            }
        };
        if !written {
            return;
        }
        let again = self.0.durable.load(key).await;
        let same =
            matches!(&again, Ok(Some(r)) if r.meta == record.meta && r.attrs == record.attrs);
        if !same {
            self.drop_copy(key).await;
        }
    }

    /// Make sure Redis holds no copy of `key` (the database ended or changed the session, or
    /// may have): delete it, or journal the deletion if Redis cannot be reached.
    async fn drop_copy(&self, key: &SessionKey) {
        self.forget(key);
        match self
            .via_redis(false, "destroy", self.0.fast.destroy(key))
            .await
        {
            FastOutcome::Answered(Ok(_)) => {}
            FastOutcome::Answered(Err(_)) | FastOutcome::Unavailable => {
                self.owe(vec![JournalTarget::Session(*key)]).await;
            }
        }
    }

    /// Write one touch through: the database first, then — only if the database took it —
    /// Redis, so that Redis's deadline never passes the database's. A database that cannot be
    /// reached gets the touch queued for the next flush (or dropped and counted if the queue
    /// is full); the session then keeps its deadline in both tiers.
    async fn touch_through(&self, key: &SessionKey, meta: &Meta, last_seen: Millis) -> bool {
        match self
            .via_db("touch", self.0.durable.touch(key, meta, last_seen))
            .await
        {
            Ok(true) => {
                self.extend_copy(key, meta, last_seen).await;
                true
            }
            Ok(false) => {
                // Ended in the database (expired, destroyed, rotated): no copy may outlive it.
                self.drop_copy(key).await;
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not touch a session in the database; will retry");
                if !self.0.touches.push(*key, meta.clone(), last_seen) {
                    metrics::counter!("ratatoskr_touches_dropped_total").increment(1);
                }
                true
            }
        }
    }

    /// After the database took a touch: extend the Redis copy (if any) to the same deadline.
    async fn extend_copy(&self, key: &SessionKey, meta: &Meta, last_seen: Millis) {
        if let FastOutcome::Answered(Ok(true)) = self
            .via_redis(false, "touch", self.0.fast.touch(key, meta, last_seen))
            .await
            && let Some(c) = &self.0.cache
        {
            c.touched(key, last_seen);
        }
    }
}

impl Inner {
    /// Apply every notice Redis has sent so far. Loads call this before they consult the near
    /// cache and again after a Redis read: the tracking connection sends `All` before it serves
    /// its first read after a reconnect, so a read that came back on a new connection (Redis may
    /// have restarted with old data) is always followed by an `All` here. Returns whether an
    /// `All` was seen; the caller then must not trust what it just read.
    fn drain(&self) -> bool {
        let (Some(rx), Some(cache)) = (&self.invalidations, &self.cache) else {
            return false;
        };
        let mut rx = rx.lock().unwrap_or_else(|e| e.into_inner());
        let mut reset = false;
        loop {
            match rx.try_recv() {
                Ok(Invalidation::Key(k)) => cache.invalidate(&k),
                Ok(Invalidation::All) => {
                    cache.clear();
                    reset = true;
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => cache.clear(),
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Closed) => {
                    // No more notices will come: nothing may be served from the cache.
                    cache.clear();
                    reset = true;
                    break;
                }
            }
        }
        drop(rx);
        if reset {
            // The connection was lost or Redis was flushed: it may have restarted with old data.
            // Stop reading it until the journal has been replayed.
            self.breaker.begin_recovery();
        }
        reset
    }

    /// The half-open probe: a ping under the timeout. Returns whether replay is now due.
    async fn probe(&self, permit: breaker::Permit) -> bool {
        match tokio::time::timeout(self.config.redis_timeout, self.fast.ping()).await {
            Ok(Ok(())) => self.breaker.on_success(permit),
            _ => {
                self.breaker.on_failure();
                false
            }
        }
    }

    /// Write the queued touches: each to the database (concurrently: the SQL store's group
    /// commit puts them in few transactions), then the ones the database took to Redis. A touch
    /// the database refused (the session ended meanwhile, or its deadline passed before the
    /// touch arrived) removes the Redis copy instead; one that failed is queued again.
    async fn flush_touches(self: &Arc<Self>) -> StoreResult<()> {
        let batch = self.touches.take();
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len();
        let store = TieredStore(Arc::clone(self));
        let mut failed = Vec::new();
        let mut first_error = None;
        for chunk in batch.chunks(1024) {
            let answers = futures::future::join_all(
                chunk.iter().map(|(k, m, t)| self.durable.touch(k, m, *t)),
            )
            .await;
            let mut follow_ups = Vec::new();
            for ((k, m, t), answer) in chunk.iter().zip(answers) {
                match answer {
                    Ok(took) => follow_ups.push((k, m, *t, took)),
                    Err(e) => {
                        first_error.get_or_insert(e);
                        failed.push((*k, m.clone(), *t));
                    }
                }
            }
            futures::future::join_all(follow_ups.into_iter().map(|(k, m, t, took)| {
                let store = &store;
                async move {
                    if took {
                        store.extend_copy(k, m, t).await;
                    } else {
                        store.drop_copy(k).await;
                    }
                }
            }))
            .await;
        }
        let flushed = n - failed.len();
        metrics::counter!("ratatoskr_touches_flushed_total").increment(flushed as u64);
        match first_error {
            None => {
                self.touches.done(n);
                Ok(())
            }
            Some(e) => {
                tracing::warn!(error = %e, touches = failed.len(), "could not write touches to the database; will retry");
                self.touches.put_back(failed, n);
                Err(e)
            }
        }
    }

    /// Replay the journal against Redis, then close the breaker. Only one replay at a time per
    /// instance; replays by several instances are idempotent (they delete keys).
    async fn replay(&self) {
        let _guard = self.replaying.lock().await;
        if self.breaker.state() != BreakerState::Recovering {
            return;
        }
        let started = Instant::now();
        // First, before any journalled key is deleted: a Redis that restarted (from a snapshot
        // or an append-only file) or was replaced by a promoted replica may hold copies older
        // than deletions it once acknowledged, which no journal recorded; those are discarded.
        // And writes sent before the outage that reach Redis late are refused from here on, so
        // none can land after the deletions below and bring a copy back.
        match tokio::time::timeout(
            self.config.redis_timeout.max(Duration::from_secs(60)),
            self.fast.begin_epoch(),
        )
        .await
        {
            Ok(Ok(_)) => {}
            _ => {
                tracing::warn!("could not start a new Redis epoch; Redis stays unused");
                self.breaker.recovery_failed();
                return;
            }
        }
        let mut replayed = 0u64;
        loop {
            let pending = match self.journal.pending(500).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the outage journal; Redis stays unused");
                    self.breaker.recovery_failed();
                    return;
                }
            };
            if pending.is_empty() {
                break;
            }
            let mut done = Vec::with_capacity(pending.len());
            for entry in &pending {
                let call = async {
                    match &entry.target {
                        JournalTarget::Session(key) => self.fast.destroy(key).await.map(|_| ()),
                        JournalTarget::User(user) => {
                            self.fast.destroy_user(user, None).await.map(|_| ())
                        }
                    }
                };
                match tokio::time::timeout(self.config.redis_timeout, call).await {
                    Ok(Ok(())) => done.push(entry.id),
                    _ => {
                        tracing::warn!("Redis failed during journal replay; will retry");
                        let _ = self.journal.acknowledge(&done).await;
                        self.breaker.recovery_failed();
                        return;
                    }
                }
            }
            if let Err(e) = self.journal.acknowledge(&done).await {
                tracing::warn!(error = %e, "cannot acknowledge replayed journal entries");
                self.breaker.recovery_failed();
                return;
            }
            replayed += done.len() as u64;
        }
        // Make sure the read connection is up (a tracked connection announces itself with an
        // `All` before its first read) and consume what it announced, so that the first read
        // after recovery is not mistaken for a read from a restarted Redis.
        if tokio::time::timeout(self.config.redis_timeout, self.fast.ping())
            .await
            .map_or(true, |r| r.is_err())
        {
            self.breaker.recovery_failed();
            return;
        }
        self.drain();
        if let Some(c) = &self.cache {
            c.clear();
        }
        self.counters.journal_pending.store(0, Relaxed);
        metrics::gauge!("ratatoskr_journal_length").set(0.0);
        self.breaker.recovered();
        if replayed > 0 {
            tracing::info!(replayed, took = ?started.elapsed(), "outage journal replayed; Redis is read again");
        }
    }
}

async fn flush_touches(inner: Weak<Inner>) {
    let every = match inner.upgrade() {
        Some(i) => i.config.touch_flush_every,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        let _ = i.flush_touches().await;
    }
}

async fn poll_journal(inner: Weak<Inner>) {
    let every = match inner.upgrade() {
        Some(i) => i.config.journal_poll_every,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        i.poll_once().await;
    }
}

impl Inner {
    /// One round of the journal poller: learn of changes other instances journalled (stop
    /// reading Redis until they are replayed), finish a recovery, or probe a half-open breaker.
    async fn poll_once(&self) {
        // Keep the notice channel from lagging while no loads drain it.
        self.drain();
        metrics::gauge!("ratatoskr_breaker_state").set(self.breaker.state().as_gauge());
        let Ok(n) = self.journal.pending_count().await else {
            return;
        };
        self.counters.journal_pending.store(n, Relaxed);
        metrics::gauge!("ratatoskr_journal_length").set(n as f64);
        match self.breaker.state() {
            // Another instance journalled changes Redis missed: stop reading Redis until they
            // are replayed.
            BreakerState::Closed if n > 0 => {
                self.breaker.begin_recovery();
                self.replay().await;
            }
            BreakerState::Recovering => self.replay().await,
            // An idle instance probes by itself, so it recovers without waiting for traffic.
            BreakerState::HalfOpen => {
                if let Some(permit) = self.breaker.try_acquire()
                    && permit.probe
                    && self.probe(permit).await
                {
                    self.replay().await;
                }
            }
            BreakerState::Open | BreakerState::Closed => {}
        }
    }
}

#[async_trait]
impl SessionStore for TieredStore {
    fn backend_name(&self) -> &'static str {
        "tiered"
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> StoreResult<()> {
        self.via_db("create", self.0.durable.create(key, record))
            .await?;
        // `create`, not `restore`: Redis refuses a session of a user whose revocation marker
        // is at or after its creation. The database took this session before a revoke-all
        // that deleted it there; if that revoke-all's Redis part ran before this write, the
        // marker keeps the copy out. A failure needs no journal entry: a new key cannot be in
        // any old Redis data, and reads fall through to the database and repopulate.
        let _ = self
            .via_redis(false, "create", self.0.fast.create(key, record))
            .await;
        Ok(())
    }

    async fn load(&self, key: &SessionKey) -> StoreResult<Option<Record>> {
        let i = &self.0;
        let now = now_ms();
        if i.drain() {
            self.spawn_replay();
        }
        if let Some(cache) = &i.cache
            && i.breaker.state() == BreakerState::Closed
            && let Some(r) = cache.get(key, now)
        {
            metrics::counter!("ratatoskr_tier_hits_total", "tier" => "near").increment(1);
            return Ok(Some(r));
        }
        let epoch = i.cache.as_ref().map(|c| c.epoch(key));
        let redis_ok = match self.via_redis(true, "load", i.fast.load(key)).await {
            FastOutcome::Answered(Ok(Some(_))) if i.drain() => {
                // The read may have come from a Redis that just restarted with old data.
                self.spawn_replay();
                self.fallback("load");
                false
            }
            FastOutcome::Answered(Ok(Some(r))) => {
                metrics::counter!("ratatoskr_tier_hits_total", "tier" => "redis").increment(1);
                if let (Some(cache), Some(epoch)) = (&i.cache, epoch) {
                    cache.insert(*key, r.clone(), epoch);
                }
                return Ok(Some(r));
            }
            FastOutcome::Answered(_) => true,
            FastOutcome::Unavailable => false,
        };
        let loaded = self.via_db("load", i.durable.load(key)).await?;
        match &loaded {
            Some(r) => {
                metrics::counter!("ratatoskr_tier_hits_total", "tier" => "database").increment(1);
                if redis_ok {
                    self.repopulate(key, r).await;
                }
            }
            None => metrics::counter!("ratatoskr_tier_misses_total").increment(1),
        }
        Ok(loaded)
    }

    async fn apply(&self, key: &SessionKey, delta: &Delta) -> StoreResult<()> {
        match self.via_db("apply", self.0.durable.apply(key, delta)).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => {
                // The database ended it: a Redis copy must not keep serving it.
                self.drop_copy(key).await;
                return Err(StoreError::NotFound);
            }
            // Refused (too large) or failed: the copy stays as the database has it (a failed
            // write during a database outage must not log the user out of Redis too).
            Err(e) => return Err(e),
        }
        self.forget(key);
        match self
            .via_redis(false, "apply", self.0.fast.apply(key, delta))
            .await
        {
            FastOutcome::Answered(Ok(()) | Err(StoreError::NotFound)) => {}
            // Redis refused what the database took: its copy is now older than the database's.
            FastOutcome::Answered(Err(_)) => self.drop_copy(key).await,
            // This instance stops reading Redis (its breaker opened); others learn of the
            // stale copy from the journal.
            FastOutcome::Unavailable => self.owe(vec![JournalTarget::Session(*key)]).await,
        }
        Ok(())
    }

    /// Without the deadline the caller read, the touch is written through (database, then
    /// Redis): correct whatever the deadline, one database write.
    async fn touch(&self, key: &SessionKey, meta: &Meta, last_seen: Millis) -> StoreResult<bool> {
        Ok(self.touch_through(key, meta, last_seen).await)
    }

    /// A session with more than [`TieredConfig::touch_sync_margin`] left before `expires_at`
    /// has its touch queued for the next batch (no round trip now); a nearer one, or one that
    /// finds the queue full, is written through. Either way the database takes the touch
    /// before Redis is extended.
    async fn touch_with_deadline(
        &self,
        key: &SessionKey,
        meta: &Meta,
        last_seen: Millis,
        expires_at: Millis,
    ) -> StoreResult<bool> {
        let margin = duration_ms(self.0.config.touch_sync_margin);
        if expires_at.saturating_sub(now_ms()) > margin
            && self.0.touches.push(*key, meta.clone(), last_seen)
        {
            return Ok(true);
        }
        Ok(self.touch_through(key, meta, last_seen).await)
    }

    async fn touch_many(&self, touches: &[(SessionKey, Meta, Millis)]) -> StoreResult<()> {
        futures::future::join_all(touches.iter().map(|(k, m, t)| self.touch_through(k, m, *t)))
            .await;
        Ok(())
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        meta: &Meta,
        now: Millis,
    ) -> StoreResult<()> {
        match self
            .via_db("rotate", self.0.durable.rotate(old, new, meta, now))
            .await
        {
            Ok(()) => {}
            // Refused: the old session lives on unchanged in the database, and so may its copy.
            Err(e @ (StoreError::Collision | StoreError::Revoked | StoreError::Codec(_))) => {
                return Err(e);
            }
            // Gone, or a failure that may have committed: the old copy must go.
            Err(e) => {
                self.drop_copy(old).await;
                return Err(e);
            }
        }
        // The old copy goes; the new key is not written to Redis here but repopulated from the
        // database by its first read. Rotating in Redis would copy the attributes Redis holds,
        // and those may be older than the database's (a change another instance could not tell
        // Redis, journalled but not yet replayed here): the new key would keep them, and no
        // journal entry names it. Found by the model-based test.
        self.drop_copy(old).await;
        Ok(())
    }

    /// The database first; then the Redis copy goes whatever the database answered (a
    /// failure may have committed, and a destroy that was asked for must not leave a copy).
    async fn destroy(&self, key: &SessionKey) -> StoreResult<bool> {
        let existed = self.via_db("destroy", self.0.durable.destroy(key)).await;
        self.drop_copy(key).await;
        existed
    }

    async fn list_user(&self, user_id: &str) -> StoreResult<Vec<SessionSummary>> {
        self.via_db("list_user", self.0.durable.list_user(user_id))
            .await
    }

    /// The database first (it deletes and raises the user's revocation marker in one step),
    /// then the same in Redis through Redis's own per-user index, sparing only `except`:
    /// whatever landed in Redis before this runs is deleted, and a session created before it
    /// that reaches Redis afterwards is refused there by the marker (see `create`). Redis runs
    /// it whatever the database answered: a failure may have committed.
    async fn destroy_user(&self, user_id: &str, except: Option<&SessionKey>) -> StoreResult<u64> {
        let n = self
            .via_db("destroy_user", self.0.durable.destroy_user(user_id, except))
            .await;
        if let Some(c) = &self.0.cache {
            // Which cached sessions belong to the user is not known here; the notices Redis
            // sends for the deletions below drop them, and this instance's own copies go now.
            c.forget_user(user_id, except);
        }
        match self
            .via_redis(
                false,
                "destroy_user",
                self.0.fast.destroy_user(user_id, except),
            )
            .await
        {
            FastOutcome::Answered(Ok(_)) => {}
            _ => {
                self.owe(vec![JournalTarget::User(user_id.to_owned())])
                    .await
            }
        }
        n
    }

    async fn count(&self) -> StoreResult<u64> {
        self.via_db("count", self.0.durable.count()).await
    }

    async fn reap(&self) -> StoreResult<u64> {
        let _ = self.0.flush_touches().await;
        let n = self.via_db("reap", self.0.durable.reap()).await?;
        let _ = self.via_redis(false, "reap", self.0.fast.reap()).await;
        Ok(n)
    }

    async fn ping(&self) -> StoreResult<()> {
        // Ready when sessions can be served: by the database (the source of truth), or, with
        // the database away, by Redis for reads.
        match self.0.durable.ping().await {
            Ok(()) => Ok(()),
            Err(db) => {
                match tokio::time::timeout(self.0.config.redis_timeout, self.0.fast.ping()).await {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(db),
                }
            }
        }
    }
}
