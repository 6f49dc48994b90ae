//! Keeping the Redis copy of a session in line with the database: repopulating it after a
//! database read, dropping it when the database ended or changed the session, extending it only
//! after the database took a touch (see `docs/architecture.md`, "One truth").

use ratatoskr_core::{JournalTarget, Meta, Millis, Record, SessionKey};

use crate::breaker::BreakerState;
use crate::near_cache::Epoch;
use crate::{FastOutcome, TieredStore};

impl TieredStore {
    pub(crate) fn forget(&self, key: &SessionKey) {
        if let Some(c) = &self.0.cache {
            c.invalidate(key);
        }
    }

    /// Put the copy this instance just wrote to Redis into the near cache, after applying the
    /// notices that arrived meanwhile (any for this key, or a reset, keeps it out).
    pub(crate) fn install(&self, key: &SessionKey, record: Record, epoch: Epoch) {
        let i = &self.0;
        if i.drain() {
            self.spawn_replay();
            return;
        }
        if let Some(c) = &i.cache {
            if i.breaker.state() == BreakerState::Closed {
                c.install(*key, record, epoch);
            } else {
                c.invalidate(key);
            }
        }
    }

    /// After repopulating Redis from a database read, make sure no write slipped in between
    /// the read and the repopulation; if one did, drop the copy (the next read repopulates).
    pub(crate) async fn repopulate(&self, key: &SessionKey, record: &Record) {
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
    pub(crate) async fn drop_copy(&self, key: &SessionKey) {
        self.forget(key);
        match self
            .via_redis(false, "destroy", self.0.fast.discard_copy(key))
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
    pub(crate) async fn touch_through(
        &self,
        key: &SessionKey,
        meta: &Meta,
        last_seen: Millis,
    ) -> bool {
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
    pub(crate) async fn extend_copy(&self, key: &SessionKey, meta: &Meta, last_seen: Millis) {
        if let FastOutcome::Answered(Ok(true)) = self
            .via_redis(false, "touch", self.0.fast.touch(key, meta, last_seen))
            .await
            && let Some(c) = &self.0.cache
        {
            c.touched(key, last_seen);
        }
    }
}
