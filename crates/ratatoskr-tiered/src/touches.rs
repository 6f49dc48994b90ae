//! Touches waiting to be written to the database in one batch.
//!
//! A touch whose session has time to spare before its deadline waits here and is written to
//! the database every [`touch_flush_every`](crate::TieredConfig::touch_flush_every); Redis is
//! extended only after the database took it (see `docs/architecture.md`, "One truth"). Several
//! touches of one session in a window collapse into one. The buffer is bounded: a touch that
//! finds it full is not queued ([`TouchBatch::push`] says so) and the caller writes it through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ratatoskr_core::{Meta, Millis, SessionKey, StoreResult};

use crate::{Inner, TieredStore};

pub(crate) struct TouchBatch {
    pending: Mutex<HashMap<SessionKey, (Meta, Millis)>>,
    /// Touches taken for a flush that has not finished yet (still owed to the database).
    in_flight: std::sync::atomic::AtomicUsize,
    max: usize,
}

impl TouchBatch {
    pub(crate) fn new(max: usize) -> Self {
        TouchBatch {
            pending: Mutex::new(HashMap::new()),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, (Meta, Millis)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Touches not yet in the database: buffered plus being flushed.
    pub(crate) fn len(&self) -> usize {
        self.lock().len() + self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Queue a touch; `false` (nothing queued) when the buffer is full.
    pub(crate) fn push(&self, key: SessionKey, meta: Meta, last_seen: Millis) -> bool {
        let mut g = self.lock();
        match g.get_mut(&key) {
            Some(entry) => entry.1 = entry.1.max(last_seen),
            None => {
                if g.len() >= self.max {
                    return false;
                }
                g.insert(key, (meta, last_seen));
            }
        }
        true
    }

    /// Take everything for a flush; call [`done`](Self::done) or [`put_back`](Self::put_back)
    /// afterwards.
    pub(crate) fn take(&self) -> Vec<(SessionKey, Meta, Millis)> {
        let mut g = self.lock();
        self.in_flight
            .fetch_add(g.len(), std::sync::atomic::Ordering::SeqCst);
        g.drain().map(|(k, (m, t))| (k, m, t)).collect()
    }

    /// A flush of `n` touches reached the database.
    pub(crate) fn done(&self, n: usize) {
        self.in_flight
            .fetch_sub(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Touches of a failed flush, kept for the next one; `n` of them were taken. What no longer
    /// fits is dropped and counted: the database keeps the earlier deadline, and Redis, which is
    /// extended only after the database, keeps it too.
    pub(crate) fn put_back(&self, batch: Vec<(SessionKey, Meta, Millis)>, n: usize) {
        for (k, m, t) in batch {
            if !self.push(k, m, t) {
                metrics::counter!("ratatoskr_touches_dropped_total").increment(1);
            }
        }
        self.done(n);
    }
}

impl Inner {
    /// Write the queued touches: each to the database (concurrently: the SQL store's group
    /// commit puts them in few transactions), then the ones the database took to Redis. A touch
    /// the database refused (the session ended meanwhile, or its deadline passed before the
    /// touch arrived) removes the Redis copy instead; one that failed is queued again.
    pub(crate) async fn flush_touches(self: &Arc<Self>) -> StoreResult<()> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatoskr_core::{Record, Token};
    use std::time::Duration;

    #[test]
    fn touches_of_one_session_collapse_and_a_full_buffer_refuses_new_ones() {
        let b = TouchBatch::new(3);
        let meta = Record::new(None, 0, Duration::from_secs(1), Duration::from_secs(2)).meta;
        let k = Token::generate().key();
        assert!(b.push(k, meta.clone(), 10));
        assert!(b.push(k, meta.clone(), 5));
        assert_eq!(b.len(), 1);
        let pushed: Vec<bool> = (0..4)
            .map(|t| b.push(Token::generate().key(), meta.clone(), 100 + t))
            .collect();
        assert_eq!(pushed, [true, true, false, false], "full at three");
        assert!(
            b.push(k, meta.clone(), 20),
            "a queued session still collapses"
        );
        assert_eq!(b.len(), 3);
        let batch = b.take();
        assert_eq!(batch.len(), 3);
        assert_eq!(b.len(), 3, "in flight still counts");
        assert!(
            batch.contains(&(k, meta.clone(), 20)),
            "the latest touch wins"
        );
        b.done(3);
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn a_failed_flush_is_put_back_and_what_does_not_fit_is_dropped() {
        let b = TouchBatch::new(2);
        let meta = Record::new(None, 0, Duration::from_secs(1), Duration::from_secs(2)).meta;
        let keys: Vec<_> = (0..2).map(|_| Token::generate().key()).collect();
        for k in &keys {
            assert!(b.push(*k, meta.clone(), 1));
        }
        let batch = b.take();
        assert!(b.push(Token::generate().key(), meta.clone(), 2));
        b.put_back(batch, 2);
        assert_eq!(b.len(), 2, "bounded after the put-back, nothing in flight");
    }
}
