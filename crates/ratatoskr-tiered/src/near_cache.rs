//! A per-process cache of decoded sessions, kept correct by Redis invalidations.
//!
//! Only records **read from Redis** enter the cache: Redis then tracks the key for this client
//! (RESP3 `CLIENT TRACKING`) and tells it when any client changes or deletes it. The cache drops
//! the key on that notice, drops everything when the tracking connection goes away (notices may
//! have been missed), and never serves a session past its deadlines. It is bounded in entries and
//! in bytes; beyond either bound the oldest insertions are evicted first.
//!
//! A load that raced an invalidation must not re-insert the stale value it read, so each shard
//! keeps an epoch that every invalidation bumps; [`NearCache::insert`] takes the epoch read
//! before the Redis read and refuses to insert if it moved.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use ratatoskr_core::codec::record_size;
use ratatoskr_core::{Millis, Record, SessionKey};

const SHARDS: usize = 16;

/// Bounds of the near cache.
#[derive(Clone, Debug)]
pub struct NearCacheConfig {
    /// Most sessions kept.
    pub max_entries: usize,
    /// Most bytes kept (estimated from attribute sizes).
    pub max_bytes: usize,
}

impl Default for NearCacheConfig {
    fn default() -> Self {
        NearCacheConfig {
            max_entries: 100_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<SessionKey, (Record, usize)>,
    order: VecDeque<SessionKey>,
    bytes: usize,
    epoch: u64,
}

impl Shard {
    fn remove(&mut self, key: &SessionKey) {
        if let Some((_, size)) = self.map.remove(key) {
            self.bytes -= size;
        }
    }
}

/// The cache. All methods take `&self`; shards are locked briefly and never across an await.
pub struct NearCache {
    shards: Vec<Mutex<Shard>>,
    max_entries_per_shard: usize,
    max_bytes_per_shard: usize,
}

/// An epoch token from [`NearCache::epoch`], to pass to [`NearCache::insert`].
#[derive(Clone, Copy, Debug)]
pub struct Epoch(u64);

impl NearCache {
    /// An empty cache with the given bounds.
    pub fn new(config: &NearCacheConfig) -> Self {
        NearCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_entries_per_shard: config.max_entries.div_ceil(SHARDS).max(1),
            max_bytes_per_shard: config.max_bytes.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &SessionKey) -> std::sync::MutexGuard<'_, Shard> {
        let i = key.as_bytes()[0] as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A live cached copy, or `None`. An expired copy is dropped, never served.
    pub fn get(&self, key: &SessionKey, now: Millis) -> Option<Record> {
        let mut s = self.shard(key);
        match s.map.get(key) {
            Some((r, _)) if !r.is_expired(now) => Some(r.clone()),
            Some(_) => {
                s.remove(key);
                None
            }
            None => None,
        }
    }

    /// The epoch of the key's shard, read before asking Redis.
    pub fn epoch(&self, key: &SessionKey) -> Epoch {
        Epoch(self.shard(key).epoch)
    }

    /// Insert a record just read from Redis, unless an invalidation for its shard arrived since
    /// `epoch` was read. Returns whether it was inserted.
    pub fn insert(&self, key: SessionKey, record: Record, epoch: Epoch) -> bool {
        let size = record_size(48, &record.attrs) + 64;
        let mut s = self.shard(&key);
        if s.epoch != epoch.0 || size > self.max_bytes_per_shard {
            return false;
        }
        s.remove(&key);
        s.bytes += size;
        s.map.insert(key, (record, size));
        s.order.push_back(key);
        while s.map.len() > self.max_entries_per_shard || s.bytes > self.max_bytes_per_shard {
            let Some(oldest) = s.order.pop_front() else {
                break;
            };
            s.remove(&oldest);
        }
        // Keys removed by invalidation linger in `order`; compact when it grows too long.
        if s.order.len() > 2 * self.max_entries_per_shard {
            let Shard { map, order, .. } = &mut *s;
            order.retain(|k| map.contains_key(k));
        }
        true
    }

    /// Move a cached copy's `last_seen` (after this process touched the session).
    pub fn touched(&self, key: &SessionKey, last_seen: Millis) {
        if let Some((r, _)) = self.shard(key).map.get_mut(key) {
            r.last_seen = r.last_seen.max(last_seen);
        }
    }

    /// Drop one key (it changed somewhere).
    pub fn invalidate(&self, key: &SessionKey) {
        let mut s = self.shard(key);
        s.epoch += 1;
        s.remove(key);
    }

    /// Drop every copy of `user_id`'s sessions but `except` (a revoke-all through this
    /// instance: its own copies go before it answers, without waiting for Redis's notices).
    pub fn forget_user(&self, user_id: &str, except: Option<&SessionKey>) {
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
            let doomed: Vec<SessionKey> = s
                .map
                .iter()
                .filter(|(k, (r, _))| {
                    r.meta.user_id.as_deref() == Some(user_id) && Some(*k) != except
                })
                .map(|(k, _)| *k)
                .collect();
            if !doomed.is_empty() {
                s.epoch += 1;
                for k in &doomed {
                    s.remove(k);
                }
            }
        }
    }

    /// Drop everything (notices may have been missed).
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
            s.epoch += 1;
            s.map.clear();
            s.order.clear();
            s.bytes = 0;
        }
    }

    /// (entries, bytes) held now.
    pub fn usage(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(n, b), shard| {
            let s = shard.lock().unwrap_or_else(|e| e.into_inner());
            (n + s.map.len(), b + s.bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatoskr_core::{Token, now_ms};
    use std::time::Duration;

    fn rec(idle_ms: u64) -> Record {
        Record::new(
            None,
            now_ms(),
            Duration::from_millis(idle_ms),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn a_cached_session_is_served_until_it_expires() {
        let c = NearCache::new(&NearCacheConfig::default());
        let k = Token::generate().key();
        let r = rec(50);
        assert!(c.insert(k, r.clone(), c.epoch(&k)));
        assert_eq!(c.get(&k, now_ms()), Some(r.clone()));
        assert_eq!(
            c.get(&k, r.expires_at()),
            None,
            "never served past its deadline"
        );
        assert_eq!(c.usage().0, 0, "and dropped");
    }

    #[test]
    fn an_invalidation_during_a_load_prevents_the_stale_insert() {
        let c = NearCache::new(&NearCacheConfig::default());
        let k = Token::generate().key();
        let before = c.epoch(&k);
        c.invalidate(&k);
        assert!(!c.insert(k, rec(60_000), before));
        assert!(c.get(&k, now_ms()).is_none());
    }

    #[test]
    fn clear_drops_everything_and_blocks_inflight_inserts() {
        let c = NearCache::new(&NearCacheConfig::default());
        let keys: Vec<_> = (0..100).map(|_| Token::generate().key()).collect();
        for k in &keys {
            c.insert(*k, rec(60_000), c.epoch(k));
        }
        let e = c.epoch(&keys[0]);
        c.clear();
        assert_eq!(c.usage(), (0, 0));
        assert!(!c.insert(keys[0], rec(60_000), e));
    }

    #[test]
    fn the_cache_is_bounded_in_entries_and_bytes() {
        let c = NearCache::new(&NearCacheConfig {
            max_entries: 160,
            max_bytes: 1 << 30,
        });
        for _ in 0..10_000 {
            let k = Token::generate().key();
            c.insert(k, rec(60_000), c.epoch(&k));
        }
        assert!(c.usage().0 <= 160, "{:?}", c.usage());

        let c = NearCache::new(&NearCacheConfig {
            max_entries: 1 << 20,
            max_bytes: 16 * 8 * 1024,
        });
        for _ in 0..1_000 {
            let k = Token::generate().key();
            let mut r = rec(60_000);
            r.attrs.insert("blob".into(), vec![0; 1000]);
            c.insert(k, r, c.epoch(&k));
        }
        assert!(c.usage().1 <= 16 * 8 * 1024, "{:?}", c.usage());
    }
}
