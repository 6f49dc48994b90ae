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
//! The [`NearCache`] keeps decoded sessions in process. It is filled from Redis reads (and with
//! the copy this process just wrote, when no notice for the key came meanwhile) and kept correct
//! by the invalidation notices Redis sends (`CLIENT TRACKING`), so a read-only request on a warm
//! session makes no network round trip.
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
mod calls;
mod copies;
pub mod near_cache;
mod recovery;
mod store;
mod touches;

use std::sync::Arc;
use std::time::Duration;

use ratatoskr_core::{Invalidation, OutageJournal, SessionStore, StoreResult};
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

pub(crate) use std::sync::atomic::Ordering::Relaxed;

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
            tokio::spawn(every(
                Arc::downgrade(&store.0),
                |c| c.touch_flush_every,
                |i| async move {
                    let _ = i.flush_touches().await;
                },
            )),
            tokio::spawn(every(
                Arc::downgrade(&store.0),
                |c| c.journal_poll_every,
                |i| async move { i.poll_once().await },
            )),
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
}

/// A background task: `job` on the store every `period` of its configuration (a tick missed
/// while the machine was busy is not made up in a burst), until the store is dropped — the task
/// holds only a weak reference, so it never keeps a dropped store alive.
async fn every<F, Fut>(inner: std::sync::Weak<Inner>, period: fn(&TieredConfig) -> Duration, job: F)
where
    F: Fn(Arc<Inner>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let every = match inner.upgrade() {
        Some(i) => period(&i.config),
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(i) = inner.upgrade() else { return };
        job(i).await;
    }
}
