//! [`TieredStore`] as a [`SessionStore`]: which tier each operation goes to, in which order,
//! and what it does to the copies when the database refuses or fails.

use std::sync::Arc;

use async_trait::async_trait;
use ratatoskr_core::{
    Delta, JournalTarget, Meta, Millis, Record, SessionKey, SessionStore, SessionSummary,
    StoreError, StoreResult, now_ms, record::duration_ms,
};

use crate::breaker::BreakerState;
use crate::{FastOutcome, TieredStore};

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
        // Written on the tracked connection (tracking mode), the copy is announced from its
        // first moment and goes into the near cache at once, unless a notice or a reset came
        // meanwhile: the next request on the session (a login after the login page's visit)
        // needs no round trip.
        let i = &self.0;
        let epoch = i.cache.as_ref().map(|c| c.epoch(key));
        let created = self
            .via_redis(false, "create", i.fast.create_cacheable(key, record))
            .await;
        if let (FastOutcome::Answered(Ok(true)), Some(cache), Some(epoch)) =
            (created, &i.cache, epoch)
        {
            if i.drain() {
                self.spawn_replay();
            } else {
                cache.insert(*key, record.clone(), epoch);
            }
        }
        Ok(())
    }

    /// A near-cache hit hands out the cache's own copy (no record copied per read).
    async fn load_shared(&self, key: &SessionKey) -> StoreResult<Option<Arc<Record>>> {
        if let Some(r) = self.near_hit(key) {
            return Ok(Some(r));
        }
        Ok(self.load_past_cache(key).await?.map(Arc::new))
    }

    async fn load(&self, key: &SessionKey) -> StoreResult<Option<Record>> {
        if let Some(r) = self.near_hit(key) {
            return Ok(Some(Arc::unwrap_or_clone(r)));
        }
        self.load_past_cache(key).await
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
        // The copy this instance holds is taken out while the write is on its way, and the
        // written copy put back once Redis took the delta (see `NearCache::install`): the next
        // read of this session needs no Redis round trip.
        let taken = self.0.cache.as_ref().map(|c| c.take(key));
        match self
            .via_redis(false, "apply", self.0.fast.apply(key, delta))
            .await
        {
            FastOutcome::Answered(Ok(())) => match taken.and_then(|t| t.written(delta)) {
                Some((record, epoch)) => self.install(key, record, epoch),
                // Nothing to put back; a load that read Redis before the write must not
                // insert what it read.
                None => self.forget(key),
            },
            FastOutcome::Answered(Err(StoreError::NotFound)) => self.forget(key),
            // Redis refused what the database took: its copy is now older than the database's.
            FastOutcome::Answered(Err(_)) => self.drop_copy(key).await,
            // This instance stops reading Redis (its breaker opened); others learn of the
            // stale copy from the journal.
            FastOutcome::Unavailable => {
                self.forget(key);
                self.owe(vec![JournalTarget::Session(*key)]).await;
            }
        }
        Ok(())
    }

    /// Without the deadline the caller read, the touch is written through (database, then
    /// Redis): correct whatever the deadline, one database write.
    async fn touch(&self, key: &SessionKey, meta: &Meta, last_seen: Millis) -> StoreResult<bool> {
        Ok(self.touch_through(key, meta, last_seen).await)
    }

    /// A session with more than [`TieredConfig::touch_sync_margin`](crate::TieredConfig::touch_sync_margin) left before `expires_at`
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

impl TieredStore {
    /// The near cache's copy of `key`, if this instance may serve one: notices drained first
    /// (a reset starts a replay), the breaker closed, the copy live.
    fn near_hit(&self, key: &SessionKey) -> Option<Arc<Record>> {
        let i = &self.0;
        if i.drain() {
            self.spawn_replay();
        }
        let cache = i.cache.as_ref()?;
        if i.breaker.state() != BreakerState::Closed {
            return None;
        }
        let r = cache.get_shared(key, now_ms())?;
        metrics::counter!("ratatoskr_tier_hits_total", "tier" => "near").increment(1);
        Some(r)
    }

    /// A load the near cache could not answer: Redis, then the database.
    async fn load_past_cache(&self, key: &SessionKey) -> StoreResult<Option<Record>> {
        let i = &self.0;
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
}
