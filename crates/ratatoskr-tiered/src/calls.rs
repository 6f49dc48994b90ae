//! How the tiered store calls each tier: Redis under the breaker and the timeout (a failure
//! or a timeout counts, and the caller falls back), the database timed; and the journal entry owed
//! when Redis could not be told about a durable change.

use std::future::Future;
use std::time::Instant;

use ratatoskr_core::{JournalTarget, SessionStore, StoreResult};

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
    /// again invalidates it first, and send the deletion once more in the background (see
    /// [`delete_soon`](Self::delete_soon)). If the journal cannot be written either, the durable
    /// change still stands; the error is logged and counted (the database is then down too, and
    /// the request already failed or will).
    pub(crate) async fn owe(&self, targets: Vec<JournalTarget>) {
        self.delete_soon(targets.clone());
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

    /// Send the deletions of `targets` to Redis in the background, outside the breaker, once.
    ///
    /// Why: the breaker may be open while Redis is fine — one call that timed out on a loaded
    /// machine opens it for `breaker_open_for` — and a deletion that is only journalled reaches
    /// the other instances through their next journal poll; until then their near caches serve
    /// the revoked session (up to 1.26 s measured by the application's multi-instance test;
    /// `tests/revocation_reach.rs`). A deletion cannot bring stale data back, so it may be sent
    /// whatever the breaker says; it is not awaited (Redis may really be down), and the journal
    /// entry stays (replaying it again is harmless).
    fn delete_soon(&self, targets: Vec<JournalTarget>) {
        let (fast, limit) = (self.0.fast.clone(), self.0.config.redis_timeout);
        tokio::spawn(async move {
            for target in &targets {
                let deleted = tokio::time::timeout(limit, delete_in_redis(fast.as_ref(), target));
                if !matches!(deleted.await, Ok(Ok(()))) {
                    return;
                }
            }
        });
    }
}

/// Delete what a journal entry names in Redis: the session's copy, or every copy of the user's
/// sessions (and raise the user's revocation marker there).
pub(crate) async fn delete_in_redis(
    fast: &dyn SessionStore,
    target: &JournalTarget,
) -> StoreResult<()> {
    match target {
        JournalTarget::Session(key) => fast.discard_copy(key).await.map(|_| ()),
        JournalTarget::User(user) => fast.destroy_user(user, None).await.map(|_| ()),
    }
}
