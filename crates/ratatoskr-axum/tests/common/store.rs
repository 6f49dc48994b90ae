//! A memory store that counts every call and fails every call on demand.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use async_trait::async_trait;
use ratatoskr_core::record::Delta;
use ratatoskr_core::{
    MemoryStore, Meta, Millis, Record, SessionKey, SessionStore, SessionSummary, StoreError,
    StoreResult,
};

/// A memory store that counts every call and fails every call while `fail` is set.
#[derive(Default)]
pub struct TestStore {
    pub inner: MemoryStore,
    pub loads: AtomicUsize,
    pub creates: AtomicUsize,
    pub applies: AtomicUsize,
    pub touches: AtomicUsize,
    pub rotates: AtomicUsize,
    pub destroys: AtomicUsize,
    pub fail: AtomicBool,
}

impl TestStore {
    /// Live sessions in the store.
    pub fn inner_count_sync(&self) -> u64 {
        futures_lite_block(self.inner.count())
    }
    pub fn calls(&self) -> usize {
        self.loads.load(SeqCst) + self.writes()
    }
    pub fn writes(&self) -> usize {
        self.creates.load(SeqCst)
            + self.applies.load(SeqCst)
            + self.touches.load(SeqCst)
            + self.rotates.load(SeqCst)
            + self.destroys.load(SeqCst)
    }
    fn check(&self, counter: &AtomicUsize) -> StoreResult<()> {
        counter.fetch_add(1, SeqCst);
        if self.fail.load(SeqCst) {
            Err(StoreError::backend("test", "injected outage"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SessionStore for TestStore {
    fn backend_name(&self) -> &'static str {
        "test"
    }
    async fn create(&self, k: &SessionKey, r: &Record) -> StoreResult<()> {
        self.check(&self.creates)?;
        self.inner.create(k, r).await
    }
    async fn load(&self, k: &SessionKey) -> StoreResult<Option<Record>> {
        self.check(&self.loads)?;
        self.inner.load(k).await
    }
    async fn apply(&self, k: &SessionKey, d: &Delta) -> StoreResult<()> {
        self.check(&self.applies)?;
        self.inner.apply(k, d).await
    }
    async fn touch(&self, k: &SessionKey, m: &Meta, t: Millis) -> StoreResult<bool> {
        self.check(&self.touches)?;
        self.inner.touch(k, m, t).await
    }
    async fn rotate(&self, o: &SessionKey, n: &SessionKey, m: &Meta, t: Millis) -> StoreResult<()> {
        self.check(&self.rotates)?;
        self.inner.rotate(o, n, m, t).await
    }
    async fn destroy(&self, k: &SessionKey) -> StoreResult<bool> {
        self.check(&self.destroys)?;
        self.inner.destroy(k).await
    }
    async fn list_user(&self, u: &str) -> StoreResult<Vec<SessionSummary>> {
        if self.fail.load(SeqCst) {
            return Err(StoreError::backend("test", "injected outage"));
        }
        self.inner.list_user(u).await
    }
    async fn destroy_user(&self, u: &str, e: Option<&SessionKey>) -> StoreResult<u64> {
        self.check(&self.destroys)?;
        self.inner.destroy_user(u, e).await
    }
    async fn count(&self) -> StoreResult<u64> {
        self.inner.count().await
    }
    async fn reap(&self) -> StoreResult<u64> {
        self.inner.reap().await
    }
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

fn futures_lite_block<F: std::future::Future<Output = StoreResult<u64>>>(f: F) -> u64 {
    // MemoryStore futures complete without waiting; poll once with a no-op waker.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r.unwrap(),
        std::task::Poll::Pending => panic!("memory store future did not complete at once"),
    }
}
