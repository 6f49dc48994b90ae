//! An in-process store for tests of the layers above (and for trying the library out).
//!
//! It keeps the same contract as the real backends and passes the same conformance suite, but
//! it is not shared between processes and forgets everything on restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::codec::{self, Limits};
use crate::record::{Delta, Meta, Millis, Record, SessionSummary, now_ms};
use crate::store::{SessionStore, StoreError, StoreResult, log_undecodable};
use crate::token::SessionKey;

/// A [`SessionStore`] in a mutex-guarded map.
///
/// ```
/// use std::time::Duration;
/// use ratatoskr_core::{MemoryStore, SessionStore, Record, Token, now_ms};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::default();
/// let key = Token::generate().key();
/// let record = Record::new(None, now_ms(), Duration::from_secs(60), Duration::from_secs(600));
/// store.create(&key, &record).await.unwrap();
/// assert!(store.load(&key).await.unwrap().is_some());
/// # });
/// ```
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    limits: Limits,
}

#[derive(Default)]
struct Inner {
    /// Encoded with the record codec, so the memory store exercises it like a real backend.
    sessions: HashMap<SessionKey, Vec<u8>>,
    by_user: HashMap<String, BTreeMap<SessionKey, ()>>,
    revoked_at: HashMap<String, Millis>,
    /// Keys whose copy was discarded while absent ([`SessionStore::discard_copy`]), with the
    /// time until which a create or restore of them is refused.
    tombstones: HashMap<SessionKey, Millis>,
}

impl Inner {
    fn decode(&self, key: &SessionKey) -> Option<Record> {
        let blob = self.sessions.get(key)?;
        match codec::decode_record(blob) {
            Ok(r) => Some(r),
            Err(e) => {
                log_undecodable("memory", key, &e);
                None
            }
        }
    }

    fn live(&self, key: &SessionKey, now: Millis) -> Option<Record> {
        self.decode(key).filter(|r| !r.is_expired(now))
    }

    fn remove(&mut self, key: &SessionKey) {
        self.sessions.remove(key);
        self.by_user.retain(|_, ix| {
            ix.remove(key);
            !ix.is_empty()
        });
    }

    fn insert(&mut self, key: SessionKey, record: &Record, limits: &Limits) -> StoreResult<()> {
        let blob = codec::encode_record(record, limits)?;
        if let Some(user) = &record.meta.user_id {
            // Prune the user's index of sessions that ended, so it never outgrows the live ones.
            let now = now_ms();
            let stale: Vec<SessionKey> = self
                .by_user
                .get(user)
                .into_iter()
                .flat_map(|ix| ix.keys())
                .filter(|k| self.live(k, now).is_none())
                .copied()
                .collect();
            let ix = self.by_user.entry(user.clone()).or_default();
            for k in stale {
                ix.remove(&k);
            }
            ix.insert(key, ());
        }
        self.sessions.insert(key, blob);
        Ok(())
    }

    fn check_revoked(&self, meta: &Meta, at: Millis) -> StoreResult<()> {
        if let Some(user) = &meta.user_id
            && self.revoked_at.get(user).is_some_and(|&t| t >= at)
        {
            return Err(StoreError::Revoked);
        }
        Ok(())
    }

    fn reap(&mut self, now: Millis) -> u64 {
        let dead: Vec<SessionKey> = self
            .sessions
            .keys()
            .filter(|k| self.live(k, now).is_none())
            .copied()
            .collect();
        for k in &dead {
            self.remove(k);
        }
        dead.len() as u64
    }
}

impl MemoryStore {
    /// A store enforcing the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        MemoryStore {
            inner: Mutex::default(),
            limits,
        }
    }

    /// Overwrite the stored bytes of a session. Only for tests of what happens when a stored
    /// record no longer decodes.
    pub fn overwrite_raw(&self, key: &SessionKey, bytes: Vec<u8>) {
        self.lock().sessions.insert(*key, bytes);
    }

    /// How many entries the per-user index holds for `user_id` (live or not), to show that it
    /// is pruned.
    pub fn index_entries(&self, user_id: &str) -> usize {
        self.lock().by_user.get(user_id).map_or(0, BTreeMap::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than refusing all further service, so recover the guard.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn backend_name(&self) -> &'static str {
        "memory"
    }

    async fn create(&self, key: &SessionKey, record: &Record) -> StoreResult<()> {
        codec::check_record(record, &self.limits)?;
        let mut g = self.lock();
        let now = now_ms();
        if g.live(key, now).is_some() {
            return Err(StoreError::Collision);
        }
        if g.tombstones.get(key).is_some_and(|&until| until > now) {
            return Err(StoreError::Revoked);
        }
        g.check_revoked(&record.meta, record.meta.created_at)?;
        g.remove(key);
        g.insert(*key, record, &self.limits)
    }

    async fn load(&self, key: &SessionKey) -> StoreResult<Option<Record>> {
        Ok(self.lock().live(key, now_ms()))
    }

    async fn apply(&self, key: &SessionKey, delta: &Delta) -> StoreResult<()> {
        for (name, _) in &delta.set {
            codec::check_attr_name(name, &self.limits)?;
        }
        let mut g = self.lock();
        let now = now_ms();
        let mut updated = g.live(key, now).ok_or(StoreError::NotFound)?;
        updated.apply(delta);
        g.insert(*key, &updated, &self.limits)
    }

    async fn touch(&self, key: &SessionKey, _meta: &Meta, last_seen: Millis) -> StoreResult<bool> {
        let mut g = self.lock();
        let Some(mut r) = g.live(key, now_ms()) else {
            return Ok(false);
        };
        r.last_seen = r.last_seen.max(last_seen);
        g.insert(*key, &r, &self.limits)?;
        Ok(true)
    }

    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        meta: &Meta,
        now: Millis,
    ) -> StoreResult<()> {
        let mut g = self.lock();
        let attrs = g.live(old, now_ms()).ok_or(StoreError::NotFound)?.attrs;
        if g.live(new, now_ms()).is_some() {
            return Err(StoreError::Collision);
        }
        g.check_revoked(meta, now)?;
        let record = Record {
            meta: meta.clone(),
            last_seen: now,
            attrs,
        };
        g.insert(*new, &record, &self.limits)?;
        g.remove(old);
        Ok(())
    }

    async fn destroy(&self, key: &SessionKey) -> StoreResult<bool> {
        let mut g = self.lock();
        let live = g.live(key, now_ms()).is_some();
        g.remove(key);
        Ok(live)
    }

    /// `destroy`; where no live session was there, a create or restore of `key` is refused for
    /// a minute after (as Redis does for a tiered store: the tiered tests use this store as
    /// their fast tier).
    async fn discard_copy(&self, key: &SessionKey) -> StoreResult<bool> {
        let mut g = self.lock();
        let now = now_ms();
        let live = g.live(key, now).is_some();
        g.remove(key);
        g.tombstones.retain(|_, until| *until > now);
        if !live {
            g.tombstones.insert(*key, now + 60_000);
        }
        Ok(live)
    }

    async fn list_user(&self, user_id: &str) -> StoreResult<Vec<SessionSummary>> {
        let g = self.lock();
        let now = now_ms();
        let mut out: Vec<SessionSummary> = g
            .by_user
            .get(user_id)
            .into_iter()
            .flat_map(|ix| ix.keys())
            .filter_map(|k| {
                g.live(k, now).map(|r| SessionSummary {
                    key: *k,
                    handle: k.handle(),
                    meta: r.meta,
                    last_seen: r.last_seen,
                })
            })
            .collect();
        out.sort_by_key(|s| (s.meta.created_at, s.handle));
        Ok(out)
    }

    async fn destroy_user(&self, user_id: &str, except: Option<&SessionKey>) -> StoreResult<u64> {
        let mut g = self.lock();
        let now = now_ms();
        let prev = g.revoked_at.get(user_id).copied().unwrap_or(i64::MIN);
        g.revoked_at.insert(user_id.to_owned(), prev.max(now));
        let keys: Vec<SessionKey> = g
            .by_user
            .get(user_id)
            .map(|ix| ix.keys().copied().collect())
            .unwrap_or_default();
        let mut n = 0;
        for k in keys {
            if Some(&k) == except {
                continue;
            }
            let live = g.live(&k, now).is_some();
            g.remove(&k);
            n += u64::from(live);
        }
        Ok(n)
    }

    async fn count(&self) -> StoreResult<u64> {
        let g = self.lock();
        let now = now_ms();
        Ok(g.sessions
            .keys()
            .filter(|k| g.live(k, now).is_some())
            .count() as u64)
    }

    async fn reap(&self) -> StoreResult<u64> {
        Ok(self.lock().reap(now_ms()))
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Token;
    use std::time::Duration;

    fn record() -> Record {
        Record::new(
            Some("u".into()),
            now_ms(),
            Duration::from_secs(60),
            Duration::from_secs(600),
        )
    }

    /// As Redis does for a tiered store: a copy discarded while absent cannot be written
    /// afterwards by a create or restore still in flight; a live copy is simply removed, and a
    /// plain `destroy` leaves nothing behind.
    #[tokio::test]
    async fn a_discarded_absent_copy_refuses_a_late_create_and_restore_for_a_minute() {
        let store = MemoryStore::default();
        let absent = Token::generate().key();
        assert!(!store.discard_copy(&absent).await.unwrap());
        assert!(matches!(
            store.create(&absent, &record()).await,
            Err(StoreError::Revoked)
        ));
        assert!(!store.restore(&absent, &record()).await.unwrap());
        assert!(store.load(&absent).await.unwrap().is_none());
        let until = store.lock().tombstones[&absent];
        let left = until - now_ms();
        assert!((59_000..=60_000).contains(&left), "{left} ms");
        // Another key's discard keeps this tombstone (only expired ones are pruned).
        assert!(!store.discard_copy(&Token::generate().key()).await.unwrap());
        assert!(matches!(
            store.create(&absent, &record()).await,
            Err(StoreError::Revoked)
        ));

        let live = Token::generate().key();
        store.create(&live, &record()).await.unwrap();
        assert!(store.discard_copy(&live).await.unwrap());
        assert!(!store.lock().tombstones.contains_key(&live));
        store.create(&live, &record()).await.unwrap();

        let destroyed = Token::generate().key();
        assert!(!store.destroy(&destroyed).await.unwrap());
        store.create(&destroyed, &record()).await.unwrap();
    }

    /// Tombstones past their time are dropped, and no longer refuse anything.
    #[tokio::test]
    async fn an_expired_tombstone_refuses_nothing_and_is_dropped() {
        let store = MemoryStore::default();
        let old = Token::generate().key();
        store.lock().tombstones.insert(old, now_ms() - 1);
        store.create(&old, &record()).await.unwrap();
        assert!(store.discard_copy(&Token::generate().key()).await.is_ok());
        assert!(!store.lock().tombstones.contains_key(&old), "pruned");
        assert_eq!(store.lock().tombstones.len(), 1);
    }
}
