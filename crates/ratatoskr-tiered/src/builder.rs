//! [`TieredStore::builder`]: Redis and the database in, a tiered store out, with the near cache
//! on whenever Redis can keep it correct, and an error (not a silent downgrade) when a setting
//! asks for something the tiers cannot do.

use std::sync::Arc;
use std::time::Duration;

use ratatoskr_core::tier::{DurableTier, FastTier};
use ratatoskr_core::{Invalidation, OutageJournal, SessionStore};
use tokio::sync::broadcast;

use crate::near_cache::NearCacheConfig;
use crate::{TieredConfig, TieredStore};

impl TieredStore {
    /// A builder composing `fast` (a `ratatoskr_redis::RedisStore`) in front of `durable` (a
    /// `ratatoskr_sql::SqlStore`, `SqliteStore` or `PgStore`, whose database also keeps the
    /// outage journal).
    ///
    /// The near cache is **on by default when the Redis store is in tracking mode** (the
    /// default of `RedisStore::builder`), because only then does Redis tell this process when a
    /// cached session changes; without tracking it is off and the build says so in the log.
    /// Asking for it explicitly ([`near_cache`](TieredBuilder::near_cache)) over a store that
    /// cannot keep it correct is an error.
    ///
    /// | setting | default |
    /// |---|---|
    /// | near cache | on if the fast tier sends invalidation notices; 10,000 sessions / 16 MiB |
    /// | [`redis_timeout`](TieredBuilder::redis_timeout) | 250 ms |
    /// | [`breaker_open_for`](TieredBuilder::breaker_open_for) | 1 s |
    /// | [`touch_flush_every`](TieredBuilder::touch_flush_every) | 1 s |
    /// | [`journal_poll_every`](TieredBuilder::journal_poll_every) | 1 s |
    /// | journal | the durable tier's (`ratatoskr_redis_journal` in the database) |
    ///
    /// The rest is in [`TieredConfig`] ([`config`](TieredBuilder::config)).
    ///
    /// ```no_run
    /// use ratatoskr_redis::RedisStore;
    /// use ratatoskr_sql::SqlStore;
    /// use ratatoskr_tiered::TieredStore;
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = RedisStore::builder("redis://127.0.0.1:6379/").connect_lazy()?;
    /// let database = SqlStore::builder("sqlite://data/sessions.db").connect().await?;
    /// let store = TieredStore::builder(redis, database).build()?;
    /// assert!(store.health().near_cache.is_some());
    /// # Ok(()) }
    /// ```
    pub fn builder(fast: impl FastTier, durable: impl DurableTier) -> TieredBuilder {
        TieredBuilder {
            fast: fast.fast_store(),
            invalidations: fast.invalidations(),
            durable: durable.durable_store(),
            journal: durable.journal(),
            config: TieredConfig::default(),
            near_cache: Choice::Auto,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    /// On when notices are available.
    Auto,
    /// Asked for: an error without notices.
    Required,
    /// Asked to be off.
    Off,
}

/// Builds a [`TieredStore`]; see [`TieredStore::builder`].
#[must_use = "a builder does nothing until `build`"]
pub struct TieredBuilder {
    fast: Arc<dyn SessionStore>,
    invalidations: Option<broadcast::Receiver<Invalidation>>,
    durable: Arc<dyn SessionStore>,
    journal: Arc<dyn OutageJournal>,
    config: TieredConfig,
    near_cache: Choice,
}

impl std::fmt::Debug for TieredBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredBuilder")
            .field("fast", &self.fast.backend_name())
            .field("durable", &self.durable.backend_name())
            .field("notices", &self.invalidations.is_some())
            .field("near_cache", &self.near_cache)
            .field("config", &self.config)
            .finish()
    }
}

/// A tiered store the builder refuses to build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TieredBuildError {
    /// A near cache was asked for, but the fast tier sends no invalidation notices, so cached
    /// sessions could outlive changes made by other instances.
    #[error(
        "a near cache needs invalidation notices, and this fast tier sends none: build the \
         Redis store in tracking mode (RedisStore::builder(url), or .tracking(true))"
    )]
    NearCacheWithoutNotices,
    /// A duration that must be positive is zero.
    #[error("{0} must not be zero")]
    Zero(&'static str),
    /// The touch margin is not larger than the flush interval: batched touches could reach the
    /// database after the session's deadline.
    #[error(
        "touch_sync_margin ({margin:?}) must be larger than touch_flush_every ({flush:?}), \
         several times larger is better"
    )]
    TouchMargin {
        /// The margin asked for.
        margin: Duration,
        /// The flush interval asked for.
        flush: Duration,
    },
}

impl TieredBuilder {
    /// Start from a whole [`TieredConfig`] (its `near_cache` bounds apply when the cache is on).
    pub fn config(mut self, config: TieredConfig) -> Self {
        self.config = config;
        self
    }

    /// Keep a near cache with these bounds; the build fails if the fast tier sends no
    /// invalidation notices (a Redis store not in tracking mode).
    pub fn near_cache(mut self, bounds: NearCacheConfig) -> Self {
        self.config.near_cache = bounds;
        self.near_cache = Choice::Required;
        self
    }

    /// No near cache: every read asks Redis (or the database).
    pub fn without_near_cache(mut self) -> Self {
        self.near_cache = Choice::Off;
        self
    }

    /// Longest wait for Redis on any call before it counts as a failure.
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.config.redis_timeout = timeout;
        self
    }

    /// How long the breaker stays open before one probe is let through.
    pub fn breaker_open_for(mut self, window: Duration) -> Self {
        self.config.breaker_open_for = window;
        self
    }

    /// How often batched touches are written to the database.
    pub fn touch_flush_every(mut self, every: Duration) -> Self {
        self.config.touch_flush_every = every;
        self
    }

    /// How often this instance checks the shared journal for entries others wrote.
    pub fn journal_poll_every(mut self, every: Duration) -> Self {
        self.config.journal_poll_every = every;
        self
    }

    /// Use this journal instead of the durable tier's own (every instance must share it).
    pub fn journal(mut self, journal: Arc<dyn OutageJournal>) -> Self {
        self.journal = journal;
        self
    }

    /// Whether the store will keep a near cache.
    pub fn has_near_cache(&self) -> bool {
        self.near_cache != Choice::Off && self.invalidations.is_some()
    }

    /// Build the store. Must be called within a Tokio runtime (it starts the touch flusher and
    /// the journal poller). The store starts in the recovering state and reads Redis once the
    /// journal is replayed; [`start`](Self::start) also waits for that first attempt.
    pub fn build(self) -> Result<TieredStore, TieredBuildError> {
        let c = &self.config;
        for (name, d) in [
            ("redis_timeout", c.redis_timeout),
            ("breaker_open_for", c.breaker_open_for),
            ("touch_flush_every", c.touch_flush_every),
            ("journal_poll_every", c.journal_poll_every),
        ] {
            if d.is_zero() {
                return Err(TieredBuildError::Zero(name));
            }
        }
        if c.touch_sync_margin <= c.touch_flush_every {
            return Err(TieredBuildError::TouchMargin {
                margin: c.touch_sync_margin,
                flush: c.touch_flush_every,
            });
        }
        let notices = match (self.near_cache, self.invalidations) {
            (Choice::Required, None) => return Err(TieredBuildError::NearCacheWithoutNotices),
            (Choice::Off, _) => None,
            (Choice::Auto, None) => {
                tracing::info!(
                    fast = self.fast.backend_name(),
                    "no near cache: the fast tier sends no invalidation notices \
                     (a Redis store in tracking mode does)"
                );
                None
            }
            (_, Some(rx)) => Some(rx),
        };
        Ok(TieredStore::new(
            self.fast,
            self.durable,
            self.journal,
            notices,
            self.config,
        ))
    }

    /// [`build`](Self::build), then try to bring Redis in at once (probe and journal replay).
    /// A Redis that does not answer yet is logged, not an error: sessions are served from the
    /// database until it does.
    pub async fn start(self) -> Result<TieredStore, TieredBuildError> {
        let store = self.build()?;
        if !store.recover_now().await {
            tracing::warn!("Redis is not reachable yet; serving sessions from the database");
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use ratatoskr_core::{MemoryJournal, MemoryStore};

    use super::*;

    fn durable() -> (Arc<dyn SessionStore>, Arc<dyn OutageJournal>) {
        (
            Arc::new(MemoryStore::default()),
            Arc::new(MemoryJournal::default()),
        )
    }

    type Tracked = (Arc<dyn SessionStore>, broadcast::Receiver<Invalidation>);

    /// A fast tier with notices, and the sender that feeds them.
    fn tracked() -> (Tracked, broadcast::Sender<Invalidation>) {
        let (tx, rx) = broadcast::channel(16);
        ((Arc::new(MemoryStore::default()), rx), tx)
    }

    #[tokio::test]
    async fn the_near_cache_is_on_by_default_when_the_fast_tier_sends_notices() {
        let (fast, _tx) = tracked();
        let store = TieredStore::builder(fast, durable()).build().unwrap();
        assert!(store.health().near_cache.is_some());
    }

    #[tokio::test]
    async fn without_notices_the_default_store_has_no_near_cache() {
        let fast: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
        let store = TieredStore::builder(fast, durable()).build().unwrap();
        assert!(store.health().near_cache.is_none());
    }

    #[tokio::test]
    async fn asking_for_a_near_cache_without_notices_is_an_error_not_a_silent_downgrade() {
        let fast: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
        let err = TieredStore::builder(fast, durable())
            .near_cache(NearCacheConfig::default())
            .build()
            .err()
            .unwrap();
        assert_eq!(err, TieredBuildError::NearCacheWithoutNotices);
        assert!(err.to_string().contains("tracking"), "{err}");
    }

    #[tokio::test]
    async fn the_near_cache_can_be_turned_off_over_a_tracking_tier() {
        let (fast, _tx) = tracked();
        let builder = TieredStore::builder(fast, durable()).without_near_cache();
        assert!(!builder.has_near_cache());
        assert!(builder.build().unwrap().health().near_cache.is_none());
    }

    #[tokio::test]
    async fn durations_that_cannot_work_are_refused() {
        let (fast, _tx) = tracked();
        let err = TieredStore::builder(&fast, durable())
            .redis_timeout(Duration::ZERO)
            .build()
            .err()
            .unwrap();
        assert_eq!(err, TieredBuildError::Zero("redis_timeout"));
        let err = TieredStore::builder(&fast, durable())
            .touch_flush_every(Duration::from_secs(30))
            .build()
            .err()
            .unwrap();
        assert!(matches!(err, TieredBuildError::TouchMargin { .. }), "{err}");
    }
}
