//! Outages and recovery: the notices drained before every read, the half-open probe, the
//! journal replay that runs before Redis is read again, and the poller through which an instance
//! learns of what others journalled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatoskr_core::Invalidation;
use tokio::sync::broadcast;

use crate::breaker::{self, BreakerState};
use crate::{Inner, Relaxed, TieredStore};

impl TieredStore {
    pub(crate) fn spawn_replay(&self) {
        let inner = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            if let Some(inner) = inner.upgrade() {
                inner.replay().await;
            }
        });
    }
}

impl Inner {
    /// Apply every notice Redis has sent so far. Loads call this before they consult the near
    /// cache and again after a Redis read: the tracking connection sends `All` before it serves
    /// its first read after a reconnect, so a read that came back on a new connection (Redis may
    /// have restarted with old data) is always followed by an `All` here. Returns whether an
    /// `All` was seen; the caller then must not trust what it just read.
    pub(crate) fn drain(&self) -> bool {
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
    pub(crate) async fn probe(&self, permit: breaker::Permit) -> bool {
        match tokio::time::timeout(self.config.redis_timeout, self.fast.ping()).await {
            Ok(Ok(())) => self.breaker.on_success(permit),
            _ => {
                self.breaker.on_failure();
                false
            }
        }
    }

    /// Replay the journal against Redis, then close the breaker. Only one replay at a time per
    /// instance; replays by several instances are idempotent (they delete keys).
    pub(crate) async fn replay(&self) {
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
                let call = crate::calls::delete_in_redis(self.fast.as_ref(), &entry.target);
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

impl Inner {
    /// One round of the journal poller: learn of changes other instances journalled (stop
    /// reading Redis until they are replayed), finish a recovery, or probe a half-open breaker.
    pub(crate) async fn poll_once(&self) {
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
