//! Touches waiting to be written to the database in one batch.
//!
//! Idle-expiry touches go to Redis at once and to the database every
//! [`touch_flush_every`](crate::TieredConfig::touch_flush_every). Several touches of one session
//! in a window collapse into one row update. The buffer is bounded: if the database stays away
//! long enough for it to fill, the oldest touches are dropped and counted — a dropped touch only
//! means the database's idle deadline lags Redis's, never lost session data.

use std::collections::HashMap;
use std::sync::Mutex;

use ratatoskr_core::{Meta, Millis, SessionKey};

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

    pub(crate) fn push(&self, key: SessionKey, meta: Meta, last_seen: Millis) {
        let mut g = self.lock();
        match g.get_mut(&key) {
            Some(entry) => entry.1 = entry.1.max(last_seen),
            None => {
                if g.len() >= self.max {
                    drop_oldest(&mut g);
                }
                g.insert(key, (meta, last_seen));
            }
        }
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

    /// A flush failed: keep its touches for the next one.
    pub(crate) fn put_back(&self, batch: Vec<(SessionKey, Meta, Millis)>) {
        let n = batch.len();
        for (k, m, t) in batch {
            self.push(k, m, t);
        }
        self.done(n);
    }
}

fn drop_oldest(g: &mut HashMap<SessionKey, (Meta, Millis)>) {
    if let Some(oldest) = g.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) {
        g.remove(&oldest);
        metrics::counter!("ratatoskr_touches_dropped_total").increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatoskr_core::{Record, Token};
    use std::time::Duration;

    #[test]
    fn touches_of_one_session_collapse_and_the_buffer_is_bounded() {
        let b = TouchBatch::new(3);
        let meta = Record::new(None, 0, Duration::from_secs(1), Duration::from_secs(2)).meta;
        let k = Token::generate().key();
        b.push(k, meta.clone(), 10);
        b.push(k, meta.clone(), 5);
        assert_eq!(b.len(), 1);
        for t in 0..5 {
            b.push(Token::generate().key(), meta.clone(), 100 + t);
        }
        assert_eq!(b.len(), 3);
        let batch = b.take();
        assert_eq!(batch.len(), 3);
        assert_eq!(b.len(), 3, "in flight still counts");
        b.done(3);
        assert!(
            batch.iter().all(|(_, _, t)| *t >= 102),
            "the oldest were dropped"
        );
        assert_eq!(b.len(), 0);
    }
}
