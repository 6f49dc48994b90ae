//! A store wrapper that can fail, hang, or "restart", for tests of the tiered store's logic.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use async_trait::async_trait;
use ratatoskr_core::{
    Delta, Meta, Millis, Record, SessionKey, SessionStore, SessionSummary, StoreError, StoreResult,
};

/// What a faulty backend does now.
pub const UP: u64 = 0;
pub const DOWN: u64 = 1;
pub const HANG: u64 = 2;

/// Shared by every instance's view of one backend.
#[derive(Default)]
pub struct Control {
    pub mode: AtomicU64,
    /// Bumped by a restart: each view's next call fails once (its connection was reset).
    pub generation: AtomicU64,
    pub calls: AtomicUsize,
}

impl Control {
    pub fn set(&self, mode: u64) {
        self.mode.store(mode, SeqCst);
    }
    pub fn restart(&self) {
        self.generation.fetch_add(1, SeqCst);
        self.set(UP);
    }
    pub fn calls(&self) -> usize {
        self.calls.load(SeqCst)
    }
}

/// One instance's connection to a backend.
pub struct Faulty {
    pub inner: Arc<dyn SessionStore>,
    pub control: Arc<Control>,
    seen: AtomicU64,
}

impl Faulty {
    pub fn new(inner: Arc<dyn SessionStore>, control: Arc<Control>) -> Arc<Self> {
        let seen = AtomicU64::new(control.generation.load(SeqCst));
        Arc::new(Faulty {
            inner,
            control,
            seen,
        })
    }

    async fn gate(&self) -> StoreResult<()> {
        self.control.calls.fetch_add(1, SeqCst);
        let generation = self.control.generation.load(SeqCst);
        if self.seen.swap(generation, SeqCst) != generation {
            return Err(StoreError::backend("faulty", "connection reset by restart"));
        }
        match self.control.mode.load(SeqCst) {
            DOWN => Err(StoreError::backend("faulty", "connection refused")),
            HANG => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Err(StoreError::backend("faulty", "hung"))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl SessionStore for Faulty {
    fn backend_name(&self) -> &'static str {
        "faulty"
    }
    async fn create(&self, k: &SessionKey, r: &Record) -> StoreResult<()> {
        self.gate().await?;
        self.inner.create(k, r).await
    }
    async fn load(&self, k: &SessionKey) -> StoreResult<Option<Record>> {
        self.gate().await?;
        self.inner.load(k).await
    }
    async fn apply(&self, k: &SessionKey, d: &Delta) -> StoreResult<()> {
        self.gate().await?;
        self.inner.apply(k, d).await
    }
    async fn touch(&self, k: &SessionKey, m: &Meta, t: Millis) -> StoreResult<bool> {
        self.gate().await?;
        self.inner.touch(k, m, t).await
    }
    async fn restore(&self, k: &SessionKey, r: &Record) -> StoreResult<bool> {
        self.gate().await?;
        self.inner.restore(k, r).await
    }
    async fn rotate(&self, o: &SessionKey, n: &SessionKey, m: &Meta, t: Millis) -> StoreResult<()> {
        self.gate().await?;
        self.inner.rotate(o, n, m, t).await
    }
    async fn destroy(&self, k: &SessionKey) -> StoreResult<bool> {
        self.gate().await?;
        self.inner.destroy(k).await
    }
    async fn list_user(&self, u: &str) -> StoreResult<Vec<SessionSummary>> {
        self.gate().await?;
        self.inner.list_user(u).await
    }
    async fn destroy_user(&self, u: &str, e: Option<&SessionKey>) -> StoreResult<u64> {
        self.gate().await?;
        self.inner.destroy_user(u, e).await
    }
    async fn count(&self) -> StoreResult<u64> {
        self.gate().await?;
        self.inner.count().await
    }
    async fn reap(&self) -> StoreResult<u64> {
        self.gate().await?;
        self.inner.reap().await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.gate().await?;
        self.inner.ping().await
    }
}

/// Overwrite the Redis copy's fixed part with bytes that do not decode (the conformance
/// harnesses' `corrupt`, for the fast tier). A store that keeps a near cache hears of the change
/// by a notice, after it: the store's `ping` (a barrier for the notices of every change made
/// before it, on its tracked connections) waits for that notice, so that the next read does not
/// race it. (A session its own instance created is near-cached from its create on.)
pub async fn corrupt_redis_meta(redis: &ratatoskr_redis::RedisStore, key: &SessionKey) {
    let url = std::env::var("RATATOSKR_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis reachable");
    let _: () = redis::cmd("HSET")
        .arg(redis.session_key_name(key))
        .arg(ratatoskr_redis::META_FIELD)
        .arg(&[1u8, 0xff, 0xff][..])
        .query_async(&mut con)
        .await
        .unwrap();
    redis.ping().await.expect("the notice barrier");
}
