//! How the tiered store calls each tier: Redis under the breaker and the timeout (a failure
//! or a timeout counts, and the caller falls back), the database timed; and the journal entry owed
//! when Redis could not be told about a durable change.

use std::future::Future;
use std::time::Instant;

use ratatoskr_core::{JournalTarget, StoreResult};

use crate::breaker::{self, BreakerState};
use crate::{FastOutcome, Relaxed, TieredStore};

impl TieredStore {
    /// Call Redis under the breaker and the timeout.
    pub(crate) async fn via_redis<T, F>(
        &self,
        read: bool,
        op: &'static str,
        call: F,
    ) -> FastOutcome<T>
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

    pub(crate) fn fallback(&self, op: &'static str) {
        self.0.counters.fallbacks.fetch_add(1, Relaxed);
        metrics::counter!("ratatoskr_fallbacks_total", "op" => op).increment(1);
    }

    /// Call the database, timing it.
    pub(crate) async fn via_db<T>(
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
    pub(crate) async fn owe(&self, targets: Vec<JournalTarget>) {
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
}
