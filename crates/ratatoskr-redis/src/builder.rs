//! [`RedisStore::builder`]: every setting named, every default written down, nothing that can
//! be left out by accident.

use std::sync::Arc;
use std::time::Duration;

use ratatoskr_core::tier::FastTier;
use ratatoskr_core::{Invalidation, Limits, SessionStore, StoreError, StoreResult};
use tokio::sync::broadcast;

use crate::{BACKEND, RedisConfig, RedisStore};

impl RedisStore {
    /// A builder for a store on the Redis at `url` (`redis://[:password@]host:port/[db]`).
    ///
    /// | setting | default |
    /// |---|---|
    /// | [`key_prefix`](RedisStoreBuilder::key_prefix) | `rt:` |
    /// | [`response_timeout`](RedisStoreBuilder::response_timeout) | 500 ms |
    /// | [`connect_timeout`](RedisStoreBuilder::connect_timeout) | 2 s |
    /// | [`revocation_ttl`](RedisStoreBuilder::revocation_ttl) | 24 h (the manager's default absolute timeout) |
    /// | [`tracking`](RedisStoreBuilder::tracking) | **on** (client-side caching: the tiered store keeps a near cache) |
    /// | [`tracking_heartbeat`](RedisStoreBuilder::tracking_heartbeat) | 1 s |
    /// | [`limits`](RedisStoreBuilder::limits) | [`Limits::default`] |
    ///
    /// Unlike [`RedisConfig::default`], tracking is on: that is what a store in front of a
    /// database wants. Turn it off for a store used on its own (it costs a second connection).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use ratatoskr_redis::RedisStore;
    ///
    /// # async fn demo() -> Result<(), ratatoskr_core::StoreError> {
    /// let redis = RedisStore::builder("redis://127.0.0.1:6379/")
    ///     .key_prefix("myapp:")
    ///     .revocation_ttl(Duration::from_secs(7 * 24 * 3600)) // ≥ your absolute timeout
    ///     .connect()
    ///     .await?;
    /// assert!(redis.subscribe_invalidations().is_some()); // tracking mode
    /// # Ok(()) }
    /// ```
    pub fn builder(url: impl Into<String>) -> RedisStoreBuilder {
        let mut config = RedisConfig::new(url);
        config.tracking = true;
        RedisStoreBuilder { config }
    }
}

/// Builds a [`RedisStore`]; see [`RedisStore::builder`] for the defaults.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until `connect` or `connect_lazy`"]
pub struct RedisStoreBuilder {
    config: RedisConfig,
}

impl RedisStoreBuilder {
    /// Start from a whole [`RedisConfig`] (its `tracking` setting is kept as it is).
    pub fn from_config(config: RedisConfig) -> Self {
        RedisStoreBuilder { config }
    }

    /// Prepended to every key this store writes, so several applications can share one Redis.
    /// Must not be empty.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.key_prefix = prefix.into();
        self
    }

    /// The longest one store operation may take before it fails with
    /// [`StoreError::Backend`]. Must not be zero.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.config.response_timeout = timeout;
        self
    }

    /// The longest the first connection (and each reconnection) may take. Must not be zero.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long a user's revocation marker is kept at least: make it at least the longest
    /// absolute timeout your sessions have (see [`RedisConfig::revocation_ttl`]).
    pub fn revocation_ttl(mut self, ttl: Duration) -> Self {
        self.config.revocation_ttl = ttl;
        self
    }

    /// Client-side caching (`CLIENT TRACKING` on a second connection): on by default. A tiered
    /// store built over a tracking Redis store keeps a near cache; over one without, it has
    /// none.
    pub fn tracking(mut self, on: bool) -> Self {
        self.config.tracking = on;
        self
    }

    /// How often the tracked connection is pinged (zero: never).
    pub fn tracking_heartbeat(mut self, every: Duration) -> Self {
        self.config.tracking_heartbeat = every;
        self
    }

    /// Size limits on records, attribute names and user ids.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.config.limits = limits;
        self
    }

    /// The configuration as it stands.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Connect and check that Redis answers (see [`RedisStore::connect`]). Fails on an
    /// invalid setting or URL, or when Redis does not answer within the connect timeout.
    pub async fn connect(self) -> StoreResult<RedisStore> {
        self.validate()?;
        RedisStore::connect(self.config).await
    }

    /// A store that connects on first use (see [`RedisStore::connect_lazy`]), so the
    /// application starts while Redis is down. Fails only on an invalid setting or URL. Must
    /// be called within a Tokio runtime.
    pub fn connect_lazy(self) -> StoreResult<RedisStore> {
        self.validate()?;
        RedisStore::connect_lazy(self.config)
    }

    fn validate(&self) -> StoreResult<()> {
        let c = &self.config;
        let problem = if c.key_prefix.is_empty() {
            Some("the key prefix is empty (keys would mix with any other data in this Redis)")
        } else if c.response_timeout.is_zero() {
            Some("the response timeout is zero (every call would fail)")
        } else if c.connect_timeout.is_zero() {
            Some("the connect timeout is zero (no connection could be made)")
        } else if c.revocation_ttl.is_zero() {
            Some("the revocation TTL is zero (revoke-all could not refuse late logins)")
        } else {
            None
        };
        match problem {
            Some(p) => Err(StoreError::backend(
                BACKEND,
                format_args!("invalid configuration: {p}"),
            )),
            None => Ok(()),
        }
    }
}

/// A Redis store is the fast tier of `ratatoskr-tiered`; in tracking mode it also brings the
/// notices a near cache needs.
impl FastTier for RedisStore {
    fn fast_store(&self) -> Arc<dyn SessionStore> {
        Arc::new(self.clone())
    }

    fn invalidations(&self) -> Option<broadcast::Receiver<Invalidation>> {
        self.subscribe_invalidations()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_turns_tracking_on_and_keeps_the_other_defaults() {
        let b = RedisStore::builder("redis://127.0.0.1:6379/");
        assert!(b.config().tracking);
        let d = RedisConfig::default();
        assert_eq!(b.config().key_prefix, d.key_prefix);
        assert_eq!(b.config().response_timeout, d.response_timeout);
        assert_eq!(b.config().revocation_ttl, d.revocation_ttl);
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_a_reason() {
        let b = RedisStore::builder("redis://127.0.0.1:6379/");
        for (bad, words) in [
            (b.clone().key_prefix(""), "prefix"),
            (
                b.clone().response_timeout(Duration::ZERO),
                "response timeout",
            ),
            (b.clone().connect_timeout(Duration::ZERO), "connect timeout"),
            (b.clone().revocation_ttl(Duration::ZERO), "revocation TTL"),
        ] {
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains(words), "{err}");
        }
        assert!(b.validate().is_ok());
    }
}
