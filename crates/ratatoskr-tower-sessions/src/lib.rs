//! # ratatoskr-tower-sessions
//!
//! [`RatatoskrStore`]: a [tower-sessions](https://docs.rs/tower-sessions) `SessionStore` over
//! any Ratatoskr store — Redis, SQLite, PostgreSQL, or the tiered store with its circuit
//! breaker, outage journal and near cache. A tower-sessions (or axum-login) application keeps
//! its handlers, its `SessionManagerLayer` and its `Session` extractor; only the line that makes
//! the store changes:
//!
//! ```
//! use std::sync::Arc;
//! use ratatoskr_tower_sessions::RatatoskrStore;
//! use tower_sessions_core::SessionStore;
//!
//! # fn assert_store<S: SessionStore + Clone>(_: &S) {}
//! // Any Ratatoskr store; in production `TieredStore::builder(redis, database).build()?`.
//! let session_store = RatatoskrStore::new(ratatoskr_core::MemoryStore::default());
//! # assert_store(&session_store);
//! // let layer = SessionManagerLayer::new(session_store); — as before
//! ```
//!
//! ## What is stored, and how
//!
//! - **Ids are hashed at rest.** The tower-sessions id (128 random bits, in the cookie) is
//!   turned into a Ratatoskr [`SessionKey`] by SHA-256, so a dump of Redis or the database holds
//!   no usable cookie value ([`RatatoskrStore::storage_key`]).
//! - **One attribute per key.** Each key of the session's data is one attribute (`d:` + key,
//!   its JSON value), and a save writes only the keys whose values changed and removes the
//!   ones that are gone: a Redis hash field or a database row each, never the whole record.
//! - **Expiry.** A session is created with tower-sessions' expiry as its idle timeout and a
//!   lifetime cap ([`RatatoskrStore::with_max_lifetime`], default 400 days, the longest a
//!   browser keeps a cookie). A save that pushes the expiry later is a *touch*, which the
//!   tiered store batches to the database instead of writing through; an expiry moved earlier
//!   is kept in one small attribute (`x`) and honoured on load.
//! - **No resurrection.** Saving a session that ended meanwhile (logged out by another request,
//!   expired) writes nothing, as tower-sessions' Redis store does; `create` retries with a new
//!   id on the (astronomically unlikely) collision.
//!
//! tower-sessions saves whole records (last writer wins per key); the per-attribute writes
//! underneath make that cheaper, not different. For Ratatoskr's own semantics (deltas from
//! what the request read, rotation, per-user listing and revocation, CSRF), use
//! `ratatoskr-axum` directly.
#![warn(missing_docs)]

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ratatoskr_core::record::duration_ms;
use ratatoskr_core::{Delta, Millis, SessionKey, SessionStore, StoreError, now_ms};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, Error};

/// The attribute-name prefix of a data key.
const DATA_PREFIX: &str = "d:";
/// The attribute holding an expiry earlier than the store's own deadline (decimal ms).
const EXPIRY_ATTR: &str = "x";
/// The default cap on a session's lifetime: 400 days, the longest browsers keep a cookie.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(400 * 24 * 3600);

/// A tower-sessions store over a Ratatoskr store. Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use ratatoskr_tower_sessions::RatatoskrStore;
///
/// let store = RatatoskrStore::new(ratatoskr_core::MemoryStore::default())
///     .with_max_lifetime(Duration::from_secs(30 * 24 * 3600)); // log everyone out after 30 days
/// # let _ = store;
/// ```
#[derive(Clone)]
pub struct RatatoskrStore {
    store: Arc<dyn SessionStore>,
    max_lifetime: Duration,
}

impl fmt::Debug for RatatoskrStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RatatoskrStore")
            .field("backend", &self.store.backend_name())
            .field("max_lifetime", &self.max_lifetime)
            .finish()
    }
}

impl RatatoskrStore {
    /// The adapter over `store` (a `RedisStore`, `SqliteStore`, `PgStore`, `TieredStore`, …).
    pub fn new(store: impl SessionStore) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// The adapter over a shared store (what `SqlStore::store()` returns).
    pub fn from_arc(store: Arc<dyn SessionStore>) -> Self {
        RatatoskrStore {
            store,
            max_lifetime: DEFAULT_MAX_LIFETIME,
        }
    }

    /// End every session this long after its creation at the latest, whatever its expiry
    /// (an absolute timeout, OWASP ASVS 7.3.2). Default [`DEFAULT_MAX_LIFETIME`].
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = max_lifetime.max(Duration::from_millis(1));
        self
    }

    /// The Ratatoskr store underneath (for health checks, `count`, `reap`).
    pub fn inner(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The key a session is kept under: SHA-256 of its id, so the stores never hold the value
    /// in the cookie.
    pub fn storage_key(id: &Id) -> SessionKey {
        let mut h = Sha256::new();
        h.update(b"ratatoskr-tower-sessions\0");
        h.update(id.0.to_le_bytes());
        SessionKey::from_bytes(h.finalize().into())
    }

    fn new_record(&self, record: &Record) -> session_store::Result<ratatoskr_core::Record> {
        let now = now_ms();
        let cap = duration_ms(self.max_lifetime);
        let idle = to_ms(record.expiry_date).saturating_sub(now).clamp(1, cap);
        let mut stored = ratatoskr_core::Record::new(
            None,
            now,
            Duration::from_millis(idle as u64),
            self.max_lifetime,
        );
        for (key, value) in &record.data {
            stored.attrs.insert(data_attr(key), encode(value)?);
        }
        Ok(stored)
    }
}

impl<S: SessionStore> From<Arc<S>> for RatatoskrStore {
    fn from(store: Arc<S>) -> Self {
        Self::from_arc(store)
    }
}

fn data_attr(key: &str) -> String {
    let mut name = String::with_capacity(DATA_PREFIX.len() + key.len());
    name.push_str(DATA_PREFIX);
    name.push_str(key);
    name
}

fn encode(value: &serde_json::Value) -> session_store::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Encode(e.to_string()))
}

fn to_ms(t: OffsetDateTime) -> Millis {
    Millis::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(Millis::MAX)
}

fn from_ms(ms: Millis) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The expiry written in the `x` attribute, if any.
fn earlier_expiry(stored: &ratatoskr_core::Record) -> Option<Millis> {
    let raw = stored.attrs.get(EXPIRY_ATTR)?;
    std::str::from_utf8(raw).ok()?.parse().ok()
}

fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::Codec(c) => Error::Encode(c.to_string()),
        other => Error::Backend(other.to_string()),
    }
}

#[async_trait]
impl tower_sessions_core::SessionStore for RatatoskrStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let stored = self.new_record(record)?;
        loop {
            match self
                .store
                .create(&Self::storage_key(&record.id), &stored)
                .await
            {
                Ok(()) => return Ok(()),
                Err(StoreError::Collision) => record.id = Id::default(),
                Err(e) => return Err(store_error(e)),
            }
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let key = Self::storage_key(&record.id);
        let Some(current) = self.store.load(&key).await.map_err(store_error)? else {
            // Ended meanwhile (logged out elsewhere, expired): not brought back.
            return Ok(());
        };
        let mut delta = Delta::default();
        for (k, value) in &record.data {
            let name = data_attr(k);
            let bytes = encode(value)?;
            if current.attrs.get(&name) != Some(&bytes) {
                delta.set.push((name, bytes));
            }
        }
        for name in current.attrs.keys() {
            if let Some(k) = name.strip_prefix(DATA_PREFIX)
                && !record.data.contains_key(k)
            {
                delta.remove.push(name.clone());
            }
        }
        let wanted = to_ms(record.expiry_date);
        let deadline = current.expires_at();
        let earlier = earlier_expiry(&current);
        if wanted < deadline {
            if earlier != Some(wanted) {
                delta
                    .set
                    .push((EXPIRY_ATTR.into(), wanted.to_string().into_bytes()));
            }
        } else if earlier.is_some() {
            delta.remove.push(EXPIRY_ATTR.into());
        }
        if !delta.is_empty() {
            match self.store.apply(&key, &delta).await {
                Ok(()) => {}
                Err(StoreError::NotFound) => return Ok(()),
                Err(e) => return Err(store_error(e)),
            }
        }
        if wanted > deadline {
            // Later: a touch (the stores cap it at the session's lifetime).
            let last_seen = wanted.saturating_sub(current.meta.idle_timeout);
            self.store
                .touch_with_deadline(&key, &current.meta, last_seen, deadline)
                .await
                .map_err(store_error)?;
        }
        Ok(())
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let Some(stored) = self
            .store
            .load(&Self::storage_key(session_id))
            .await
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let expiry = match earlier_expiry(&stored) {
            Some(x) => x.min(stored.expires_at()),
            None => stored.expires_at(),
        };
        if expiry <= now_ms() {
            return Ok(None);
        }
        let mut data = HashMap::new();
        for (name, value) in &stored.attrs {
            if let Some(k) = name.strip_prefix(DATA_PREFIX) {
                let value = serde_json::from_slice(value)
                    .map_err(|e| Error::Decode(format!("session value {k:?}: {e}")))?;
                data.insert(k.to_owned(), value);
            }
        }
        Ok(Some(Record {
            id: *session_id,
            data,
            expiry_date: from_ms(expiry),
        }))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.store
            .destroy(&Self::storage_key(session_id))
            .await
            .map(drop)
            .map_err(store_error)
    }
}

#[cfg(test)]
mod tests {
    use ratatoskr_core::MemoryStore;
    use serde_json::json;
    use tower_sessions_core::SessionStore as _;

    use super::*;

    fn record(minutes: i64) -> Record {
        Record {
            id: Id::default(),
            data: HashMap::from([("n".to_owned(), json!(1)), ("s".to_owned(), json!("a"))]),
            expiry_date: OffsetDateTime::now_utc() + time::Duration::minutes(minutes),
        }
    }

    fn adapter() -> (RatatoskrStore, Arc<MemoryStore>) {
        let memory = Arc::new(MemoryStore::default());
        (RatatoskrStore::from(memory.clone()), memory)
    }

    #[tokio::test]
    async fn the_store_never_sees_the_session_id() {
        let (store, memory) = adapter();
        let mut r = record(10);
        store.create(&mut r).await.unwrap();
        let key = RatatoskrStore::storage_key(&r.id);
        assert_ne!(&key.as_bytes()[..16], &r.id.0.to_le_bytes()[..]);
        assert!(memory.load(&key).await.unwrap().is_some());
        assert_eq!(store.load(&r.id).await.unwrap().unwrap().data, r.data);
    }

    #[tokio::test]
    async fn a_save_writes_only_changed_keys_and_removes_missing_ones() {
        let (store, memory) = adapter();
        let mut r = record(10);
        store.create(&mut r).await.unwrap();
        r.data.insert("n".into(), json!(2));
        r.data.remove("s");
        store.save(&r).await.unwrap();
        let stored = memory
            .load(&RatatoskrStore::storage_key(&r.id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.attrs.keys().collect::<Vec<_>>(), ["d:n"]);
        assert_eq!(
            store.load(&r.id).await.unwrap().unwrap().data["n"],
            json!(2)
        );
    }

    #[tokio::test]
    async fn a_later_expiry_extends_the_session_and_an_earlier_one_is_honoured() {
        let (store, _) = adapter();
        let mut r = record(10);
        store.create(&mut r).await.unwrap();
        r.expiry_date += time::Duration::days(1);
        store.save(&r).await.unwrap();
        let loaded = store.load(&r.id).await.unwrap().unwrap();
        assert!((loaded.expiry_date - r.expiry_date).abs() < time::Duration::seconds(1));
        // Earlier than the store's deadline: kept, and a past one ends the session.
        r.expiry_date = OffsetDateTime::now_utc() + time::Duration::minutes(1);
        store.save(&r).await.unwrap();
        let loaded = store.load(&r.id).await.unwrap().unwrap();
        assert!((loaded.expiry_date - r.expiry_date).abs() < time::Duration::seconds(1));
        r.expiry_date = OffsetDateTime::now_utc() - time::Duration::seconds(1);
        store.save(&r).await.unwrap();
        assert!(store.load(&r.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_lifetime_cap_bounds_any_expiry() {
        let (store, _) = adapter();
        let store = store.with_max_lifetime(Duration::from_secs(60));
        let mut r = record(24 * 60);
        store.create(&mut r).await.unwrap();
        let loaded = store.load(&r.id).await.unwrap().unwrap();
        assert!(loaded.expiry_date <= OffsetDateTime::now_utc() + time::Duration::seconds(61));
    }

    #[tokio::test]
    async fn saving_a_deleted_session_does_not_bring_it_back() {
        let (store, _) = adapter();
        let mut r = record(10);
        store.create(&mut r).await.unwrap();
        store.delete(&r.id).await.unwrap();
        store.save(&r).await.unwrap();
        assert!(store.load(&r.id).await.unwrap().is_none());
    }
}
