//! The near cache without a database tier: [`NearCachedStore`] keeps decoded sessions in process
//! in front of one store that announces changes — a `ratatoskr_redis::RedisStore` in tracking
//! mode — so that a Redis-only deployment reads a warm session without a round trip, with the
//! same guarantees as the tiered store's near cache:
//!
//! - only records read from the store enter the cache, and a read that raced a change notice is
//!   not inserted (the shard's epoch moved);
//! - every notice drops its key; a lost or re-established tracking connection (`All`), a
//!   receiver that lagged, or a closed channel drops everything;
//! - a cached copy is never served past its deadline;
//! - this instance's own writes take its copy out while they are on their way and put the
//!   written copy back once they returned, unless a notice for the key or a reset arrived
//!   meanwhile (other instances learn from the notice Redis sends, tens of microseconds later);
//! - a delta that failed (a timeout, a lost connection) drops the copy: the Redis store sends
//!   `apply` on its tracked connection, whose own changes Redis does not announce back to it
//!   (`NOLOOP`; the script reads the key again so that later changes by others are), so a
//!   write that landed unseen must not leave the old copy behind. Every other write goes
//!   through the store's write connection and is announced as any other client's.
//!
//! One `NearCachedStore` per tracked Redis store: a second cache on the same store would not
//! hear of the first one's deltas.
//!
//! ```no_run
//! # async fn wire() -> Result<(), ratatoskr_core::StoreError> {
//! use ratatoskr_redis::{RedisConfig, RedisStore};
//! use ratatoskr_tiered::NearCachedStore;
//! use ratatoskr_tiered::near_cache::NearCacheConfig;
//!
//! let (redis, notices) = RedisStore::connect_tracked(RedisConfig::new("redis://127.0.0.1/")).await?;
//! let store = NearCachedStore::new(std::sync::Arc::new(redis), notices, &NearCacheConfig::default());
//! // `store` is a SessionStore: hand it to a SessionManager.
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use ratatoskr_core::{
    Delta, Invalidation, Meta, Millis, Record, SessionKey, SessionStore, SessionSummary,
    StoreResult, now_ms,
};
use tokio::sync::broadcast;

use crate::near_cache::{NearCache, NearCacheConfig};

/// A near cache in front of a store that sends [`Invalidation`] notices. See the module docs.
pub struct NearCachedStore {
    inner: Arc<dyn SessionStore>,
    cache: NearCache,
    notices: std::sync::Mutex<broadcast::Receiver<Invalidation>>,
    /// The notice channel closed: no notice will ever come again, so nothing is cached.
    deaf: AtomicBool,
}

impl NearCachedStore {
    /// Cache what `inner` loads, kept correct by `notices` (from the same store, e.g.
    /// `RedisStore::connect_tracked`).
    pub fn new(
        inner: Arc<dyn SessionStore>,
        notices: broadcast::Receiver<Invalidation>,
        config: &NearCacheConfig,
    ) -> Self {
        NearCachedStore {
            inner,
            cache: NearCache::new(config),
            notices: std::sync::Mutex::new(notices),
            deaf: AtomicBool::new(false),
        }
    }

    /// (entries, bytes) cached now.
    pub fn usage(&self) -> (usize, usize) {
        self.cache.usage()
    }

    /// Apply every notice received so far; whether everything was dropped (the caller must then
    /// not cache what it just read: it may come from a connection that missed notices).
    fn drain(&self) -> bool {
        let mut rx = self.notices.lock().unwrap_or_else(|e| e.into_inner());
        let mut reset = false;
        loop {
            match rx.try_recv() {
                Ok(Invalidation::Key(k)) => self.cache.invalidate(&k),
                Ok(Invalidation::All) | Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    self.cache.clear();
                    reset = true;
                }
                Err(broadcast::error::TryRecvError::Empty) => return reset,
                Err(broadcast::error::TryRecvError::Closed) => {
                    self.deaf.store(true, Ordering::Release);
                    self.cache.clear();
                    return true;
                }
            }
        }
    }

    fn caching(&self) -> bool {
        !self.deaf.load(Ordering::Acquire)
    }
}

#[async_trait]
impl SessionStore for NearCachedStore {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }

    /// A new session is kept in the near cache at once when the store wrote it so that it
    /// announces later changes (`create_cacheable`: in tracking mode, on the tracked
    /// connection), unless a notice or a reset arrived meanwhile: the next request on it (a
    /// login after the login page's visit) needs no round trip.
    async fn create(&self, key: &SessionKey, record: &Record) -> StoreResult<()> {
        self.drain();
        let epoch = self.cache.epoch(key);
        let cacheable = self.inner.create_cacheable(key, record).await?;
        if cacheable && !self.drain() && self.caching() {
            self.cache.insert(*key, record.clone(), epoch);
        }
        Ok(())
    }

    async fn load(&self, key: &SessionKey) -> StoreResult<Option<Record>> {
        Ok(self.load_shared(key).await?.map(Arc::unwrap_or_clone))
    }

    /// A hit hands out the cache's own copy: no record is copied per read.
    async fn load_shared(&self, key: &SessionKey) -> StoreResult<Option<Arc<Record>>> {
        self.drain();
        if self.caching()
            && let Some(r) = self.cache.get_shared(key, now_ms())
        {
            return Ok(Some(r));
        }
        let epoch = self.cache.epoch(key);
        let loaded = self.inner.load(key).await?.map(Arc::new);
        if !self.drain()
            && self.caching()
            && let Some(r) = &loaded
        {
            self.cache.insert(*key, Arc::clone(r), epoch);
        }
        Ok(loaded)
    }

    async fn apply(&self, key: &SessionKey, delta: &Delta) -> StoreResult<()> {
        // The copy is taken out while the write is on its way and the written copy put back
        // once it returned, unless a notice for the key (or a reset) arrived meanwhile; either
        // way a load of this instance that read the old value meanwhile is not inserted (the
        // epoch moves).
        let taken = self.cache.take(key);
        let result = self.inner.apply(key, delta).await;
        match (&result, taken.written(delta)) {
            (Ok(()), Some((record, epoch))) if !self.drain() && self.caching() => {
                self.cache.install(*key, record, epoch);
            }
            // Refused, failed (it may have landed without a notice: an own write on the
            // tracked connection is not announced back), or nothing to put back.
            _ => self.cache.invalidate(key),
        }
        result
    }

    async fn touch(&self, key: &SessionKey, meta: &Meta, last_seen: Millis) -> StoreResult<bool> {
        let touched = self.inner.touch(key, meta, last_seen).await?;
        if touched {
            self.cache.touched(key, last_seen);
        } else {
            self.cache.invalidate(key);
        }
        Ok(touched)
    }

    async fn touch_with_deadline(
        &self,
        key: &SessionKey,
        meta: &Meta,
        last_seen: Millis,
        expires_at: Millis,
    ) -> StoreResult<bool> {
        let touched = self
            .inner
            .touch_with_deadline(key, meta, last_seen, expires_at)
            .await?;
        if !touched {
            self.cache.invalidate(key);
        }
        Ok(touched)
    }

    async fn restore(&self, key: &SessionKey, record: &Record) -> StoreResult<bool> {
        self.inner.restore(key, record).await
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        meta: &Meta,
        now: Millis,
    ) -> StoreResult<()> {
        let result = self.inner.rotate(old, new, meta, now).await;
        self.cache.invalidate(old);
        result
    }

    async fn rotate_and_list_user(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        meta: &Meta,
        now: Millis,
    ) -> StoreResult<Vec<SessionSummary>> {
        let result = self.inner.rotate_and_list_user(old, new, meta, now).await;
        self.cache.invalidate(old);
        result
    }

    async fn destroy(&self, key: &SessionKey) -> StoreResult<bool> {
        let result = self.inner.destroy(key).await;
        self.cache.invalidate(key);
        result
    }

    async fn discard_copy(&self, key: &SessionKey) -> StoreResult<bool> {
        let result = self.inner.discard_copy(key).await;
        self.cache.invalidate(key);
        result
    }

    async fn list_user(&self, user_id: &str) -> StoreResult<Vec<SessionSummary>> {
        self.inner.list_user(user_id).await
    }

    async fn destroy_user(&self, user_id: &str, except: Option<&SessionKey>) -> StoreResult<u64> {
        let result = self.inner.destroy_user(user_id, except).await;
        self.cache.forget_user(user_id, except);
        result
    }

    async fn count(&self) -> StoreResult<u64> {
        self.inner.count().await
    }

    async fn reap(&self) -> StoreResult<u64> {
        self.inner.reap().await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }

    async fn begin_epoch(&self) -> StoreResult<bool> {
        let discarded = self.inner.begin_epoch().await?;
        self.cache.clear();
        Ok(discarded)
    }
}
