//! A per-process cache of decoded sessions, kept correct by Redis invalidations.
//!
//! Only records **read from Redis** enter the cache (and this process's own writes applied to
//! such a record, see below): Redis then tracks the key for this client
//! (RESP3 `CLIENT TRACKING`) and tells it when any client changes or deletes it. The cache drops
//! the key on that notice, drops everything when the tracking connection goes away (notices may
//! have been missed), and never serves a session past its deadlines. It is bounded in entries and
//! in bytes; beyond either bound the oldest insertions are evicted first.
//!
//! A load that raced an invalidation must not re-insert the stale value it read, so each key has
//! an epoch that every invalidation of it bumps; [`NearCache::insert`] takes the epoch read
//! before the Redis read and refuses to insert if it moved. Epochs are kept per *stripe* (a
//! fixed slice of the key space, 1,024 in all), not per key, so that they cost no memory per
//! key ever seen: a notice for another key of the same stripe refuses an insert it need not
//! have (a reload later), never the other way round. A clear moves every epoch.
//!
//! This process's own writes keep the copy warm instead of dropping it: [`NearCache::take`]
//! removes the copy before the write is sent (moving the key's epoch, so that a load which read
//! the old value meanwhile cannot insert it later), and [`NearCache::install`] puts the written
//! copy back after the write returned — unless a notice for the key (or a clear) came in
//! between, in which case the copy this process holds may miss another instance's change and
//! the next read goes to Redis. See `docs/performance.md` for what that needs from Redis.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use ratatoskr_core::codec::record_size;
use ratatoskr_core::{Delta, Millis, Record, SessionKey};

const SHARDS: usize = 16;
/// Epoch stripes per shard.
const STRIPES: usize = 64;

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

/// The map's hasher. A session key is a SHA-256 digest (uniform bytes), so its bytes folded
/// into a word are as good a hash as SipHash of them, at a fraction of the cost; and only keys
/// of sessions a store created (from tokens the server generated) enter the map, so a client
/// cannot choose keys that collide.
#[derive(Default, Clone, Copy)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(23) ^ u64::from_le_bytes(word);
        }
    }

    /// The length a slice or array hashes first: the same for every key, so it adds nothing.
    fn write_usize(&mut self, _: usize) {}
}

type DigestMap<V> = HashMap<SessionKey, V, BuildHasherDefault<DigestHasher>>;

struct Shard {
    map: DigestMap<(Arc<Record>, usize)>,
    order: VecDeque<SessionKey>,
    bytes: usize,
    /// Moved by a clear (and a revoke-all's drop), for every key of the shard at once.
    generation: u64,
    /// Moved by an invalidation of any key of the stripe.
    stripes: [u64; STRIPES],
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            map: DigestMap::default(),
            order: VecDeque::new(),
            bytes: 0,
            generation: 0,
            stripes: [0; STRIPES],
        }
    }
}

/// The key's stripe. Session keys are hashes (uniform bytes): byte 0 picks the shard, byte 1
/// the stripe.
fn stripe(key: &SessionKey) -> usize {
    key.as_bytes()[1] as usize % STRIPES
}

impl Shard {
    fn remove(&mut self, key: &SessionKey) -> Option<Arc<Record>> {
        let (record, size) = self.map.remove(key)?;
        self.bytes -= size;
        Some(record)
    }

    fn epoch(&self, key: &SessionKey) -> Epoch {
        Epoch {
            generation: self.generation,
            stripe: self.stripes[stripe(key)],
        }
    }

    /// Move the key's epoch: whatever was read before may not be inserted.
    fn bump(&mut self, key: &SessionKey) {
        self.stripes[stripe(key)] += 1;
    }
}

/// The cache. All methods take `&self`; shards are locked briefly and never across an await.
pub struct NearCache {
    shards: Vec<Mutex<Shard>>,
    max_entries_per_shard: usize,
    max_bytes_per_shard: usize,
}

/// An epoch token from [`NearCache::epoch`] or [`NearCache::take`], to pass to
/// [`NearCache::insert`] or [`NearCache::install`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epoch {
    generation: u64,
    stripe: u64,
}

/// A copy taken out of the cache by [`NearCache::take`] before this process writes to it.
#[derive(Debug)]
pub struct Taken {
    record: Option<Arc<Record>>,
    epoch: Epoch,
}

impl Taken {
    /// The written copy: the one taken, with `delta` applied (`None` if nothing was cached).
    /// Copied only if a request still holds the one taken.
    pub fn written(mut self, delta: &Delta) -> Option<(Record, Epoch)> {
        let mut record = Arc::unwrap_or_clone(self.record.take()?);
        record.apply(delta);
        Some((record, self.epoch))
    }
}

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
        self.get_shared(key, now).map(Arc::unwrap_or_clone)
    }

    /// [`get`](Self::get) without copying the record: the cache's own, shared. A later change
    /// to the session replaces the cache's copy and leaves this one as it was.
    pub fn get_shared(&self, key: &SessionKey, now: Millis) -> Option<Arc<Record>> {
        let mut s = self.shard(key);
        match s.map.get(key) {
            Some((r, _)) if !r.is_expired(now) => Some(Arc::clone(r)),
            Some(_) => {
                s.remove(key);
                None
            }
            None => None,
        }
    }

    /// The key's epoch, read before asking Redis.
    pub fn epoch(&self, key: &SessionKey) -> Epoch {
        self.shard(key).epoch(key)
    }

    /// Insert a record just read from Redis, unless an invalidation for its key (or a clear)
    /// arrived since `epoch` was read. Returns whether it was inserted.
    pub fn insert(&self, key: SessionKey, record: impl Into<Arc<Record>>, epoch: Epoch) -> bool {
        let record = record.into();
        let size = record_size(48, &record.attrs) + 64;
        let mut s = self.shard(&key);
        if s.epoch(&key) != epoch || size > self.max_bytes_per_shard {
            return false;
        }
        self.put(&mut s, key, record, size);
        true
    }

    /// Before this process writes to `key`: take its copy out (a read meanwhile goes to Redis)
    /// and move its epoch (a load that read the old value cannot insert it afterwards).
    pub fn take(&self, key: &SessionKey) -> Taken {
        let mut s = self.shard(key);
        let record = s.remove(key);
        s.bump(key);
        Taken {
            record,
            epoch: s.epoch(key),
        }
    }

    /// After this process's write to `key` returned: put the written copy in, unless an
    /// invalidation for the key (another instance's change, or this write's own notice) or a
    /// clear arrived since [`take`](Self::take). The epoch moves either way, so that a load
    /// which read Redis before the write cannot overwrite the copy with the old value. Returns
    /// whether it was put in.
    pub fn install(&self, key: SessionKey, record: impl Into<Arc<Record>>, epoch: Epoch) -> bool {
        let record = record.into();
        let size = record_size(48, &record.attrs) + 64;
        let mut s = self.shard(&key);
        let current = s.epoch(&key) == epoch;
        s.bump(&key);
        if !current || size > self.max_bytes_per_shard {
            return false;
        }
        self.put(&mut s, key, record, size);
        true
    }

    fn put(&self, s: &mut Shard, key: SessionKey, record: Arc<Record>, size: usize) {
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
            let Shard { map, order, .. } = s;
            order.retain(|k| map.contains_key(k));
        }
    }

    /// Move a cached copy's `last_seen` (after this process touched the session).
    pub fn touched(&self, key: &SessionKey, last_seen: Millis) {
        if let Some((r, _)) = self.shard(key).map.get_mut(key)
            && r.last_seen < last_seen
        {
            // Copied only if a request still holds this one (it keeps what it read).
            Arc::make_mut(r).last_seen = last_seen;
        }
    }

    /// Drop one key (it changed somewhere).
    pub fn invalidate(&self, key: &SessionKey) {
        let mut s = self.shard(key);
        s.bump(key);
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
                s.generation += 1;
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
            s.generation += 1;
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
    use ratatoskr_core::{Delta, SessionKey, Token, now_ms};
    use std::time::Duration;

    fn rec(idle_ms: u64) -> Record {
        Record::new(
            None,
            now_ms(),
            Duration::from_millis(idle_ms),
            Duration::from_secs(60),
        )
    }

    /// A revoke-all through this instance drops the user's copies at once, but the one it
    /// spares and other users' copies; a load of the user's session that read Redis before the
    /// drop cannot insert it afterwards.
    #[test]
    fn forgetting_a_user_drops_its_copies_but_the_spared_one_and_others() {
        let c = NearCache::new(&NearCacheConfig::default());
        let of = |user: &str| {
            let mut r = rec(60_000);
            r.meta.user_id = Some(user.into());
            r
        };
        let (a1, a2, kept, b) = (
            Token::generate().key(),
            Token::generate().key(),
            Token::generate().key(),
            Token::generate().key(),
        );
        for (k, u) in [(a1, "ann"), (a2, "ann"), (kept, "ann"), (b, "bob")] {
            assert!(c.insert(k, of(u), c.epoch(&k)));
        }
        let before = c.epoch(&a1);
        c.forget_user("ann", Some(&kept));
        assert!(c.get(&a1, now_ms()).is_none());
        assert!(c.get(&a2, now_ms()).is_none());
        assert!(c.get(&kept, now_ms()).is_some(), "the spared session stays");
        assert!(c.get(&b, now_ms()).is_some(), "another user's stays");
        assert!(
            !c.insert(a1, of("ann"), before),
            "a load begun before cannot insert"
        );
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
    fn the_digest_hasher_spreads_session_keys_over_the_buckets() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let build = BuildHasherDefault::<DigestHasher>::default();
        let keys: Vec<SessionKey> = (0..4096).map(|_| Token::generate().key()).collect();
        let hashes: std::collections::HashSet<u64> =
            keys.iter().map(|k| build.hash_one(k)).collect();
        assert_eq!(hashes.len(), keys.len(), "no two keys hash alike");
        // hashbrown picks the bucket from the low bits and the tag from the top 7: both vary.
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
        let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 2048, "{} of 4096 bucket indices", low.len());
        assert_eq!(top.len(), 128, "every tag value");
        // Every byte of the key counts.
        let base = [9u8; 32];
        for i in 0..32 {
            let mut other = base;
            other[i] ^= 1;
            assert_ne!(
                build.hash_one(SessionKey::from_bytes(base)),
                build.hash_one(SessionKey::from_bytes(other)),
                "byte {i}"
            );
        }
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

    #[test]
    fn an_own_write_puts_the_written_copy_back() {
        let c = NearCache::new(&NearCacheConfig::default());
        let k = Token::generate().key();
        assert!(c.insert(k, rec(60_000), c.epoch(&k)));
        let taken = c.take(&k);
        assert!(
            c.get(&k, now_ms()).is_none(),
            "out while the write is on its way"
        );
        let delta = Delta::default().set("n", b"1".to_vec());
        let (written, epoch) = taken.written(&delta).expect("a copy was cached");
        assert!(c.install(k, written, epoch));
        let got = c.get(&k, now_ms()).expect("back in");
        assert_eq!(got.attrs.get("n").map(Vec::as_slice), Some(&b"1"[..]));
    }

    /// Each entry counts its attributes' encoded size plus a fixed 48 + 64 bytes against the
    /// byte bound, and an entry exactly as large as a shard's share of the bound still fits
    /// (`insert` and `install` alike); one byte more does not.
    #[test]
    fn entries_are_counted_by_size_and_one_of_exactly_the_bound_fits() {
        let mut r = rec(60_000);
        r.attrs.insert("v".into(), vec![0; 100]);
        let size = record_size(48, &r.attrs) + 64;
        let c = NearCache::new(&NearCacheConfig::default());
        let k = Token::generate().key();
        assert!(c.insert(k, r.clone(), c.epoch(&k)));
        assert_eq!(c.usage(), (1, size));

        let exact = NearCache::new(&NearCacheConfig {
            max_entries: 1_000,
            max_bytes: size * SHARDS,
        });
        let k = Token::generate().key();
        assert!(
            exact.insert(k, r.clone(), exact.epoch(&k)),
            "insert at the bound"
        );
        let taken = exact.take(&k);
        let (written, epoch) = taken.written(&Delta::default()).unwrap();
        assert!(exact.install(k, written, epoch), "install at the bound");
        assert_eq!(exact.usage(), (1, size));

        let mut bigger = r.clone();
        bigger.attrs.insert("v".into(), vec![0; 101]);
        let k = Token::generate().key();
        assert!(
            !exact.insert(k, bigger.clone(), exact.epoch(&k)),
            "one byte over"
        );
        let e = exact.take(&k).epoch;
        assert!(!exact.install(k, bigger, e), "one byte over");
    }

    /// A copy handed out shared is never changed under its holder: a touch and an own write
    /// change the cache's copy (copying it while held) and leave the held one as it was read.
    #[test]
    fn shared_copies_are_not_changed_under_their_holders() {
        let c = NearCache::new(&NearCacheConfig::default());
        let k = Token::generate().key();
        assert!(c.insert(k, rec(60_000), c.epoch(&k)));
        let held = c.get_shared(&k, now_ms()).expect("cached");
        assert!(Arc::ptr_eq(&held, &c.get_shared(&k, now_ms()).unwrap()));
        let seen = held.last_seen;

        // A touch that moves nothing copies nothing.
        c.touched(&k, seen);
        assert!(Arc::ptr_eq(&held, &c.get_shared(&k, now_ms()).unwrap()));
        c.touched(&k, seen + 5_000);
        assert_eq!(held.last_seen, seen, "the held copy keeps its last_seen");
        assert_eq!(c.get(&k, now_ms()).unwrap().last_seen, seen + 5_000);
        c.touched(&k, seen + 1_000);
        assert_eq!(
            c.get(&k, now_ms()).unwrap().last_seen,
            seen + 5_000,
            "never moved back"
        );

        let held = c.get_shared(&k, now_ms()).unwrap();
        let taken = c.take(&k);
        let (written, epoch) = taken
            .written(&Delta::default().set("n", b"1".to_vec()))
            .expect("a copy was cached");
        assert!(c.install(k, written, epoch));
        assert!(
            !held.attrs.contains_key("n"),
            "the held copy keeps its attributes"
        );
        assert_eq!(
            c.get(&k, now_ms())
                .unwrap()
                .attrs
                .get("n")
                .map(Vec::as_slice),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn a_notice_or_a_clear_between_take_and_install_keeps_the_written_copy_out() {
        let c = NearCache::new(&NearCacheConfig::default());
        let delta = Delta::default().set("n", b"1".to_vec());
        for clear in [false, true] {
            let k = Token::generate().key();
            assert!(c.insert(k, rec(60_000), c.epoch(&k)));
            let (written, epoch) = c.take(&k).written(&delta).unwrap();
            if clear {
                c.clear();
            } else {
                c.invalidate(&k);
            }
            assert!(!c.install(k, written, epoch));
            assert!(c.get(&k, now_ms()).is_none());
        }
    }

    #[test]
    fn a_load_that_read_before_an_own_write_cannot_overwrite_the_written_copy() {
        let c = NearCache::new(&NearCacheConfig::default());
        let k = Token::generate().key();
        let old = rec(60_000);
        assert!(c.insert(k, old.clone(), c.epoch(&k)));
        let before_take = c.epoch(&k);
        let taken = c.take(&k);
        // A load that missed while the write was on its way, and read Redis before it landed.
        let during = c.epoch(&k);
        let delta = Delta::default().set("n", b"1".to_vec());
        let (written, epoch) = taken.written(&delta).unwrap();
        assert!(c.install(k, written.clone(), epoch));
        assert!(!c.insert(k, old.clone(), before_take));
        assert!(!c.insert(k, old, during));
        assert_eq!(c.get(&k, now_ms()), Some(written));
    }

    /// Generated interleavings of this process's loads and writes, another instance's writes
    /// and the delivery of Redis's notices, against a model of Redis's tracking (a read tracks
    /// the key for this process; the first change after it sends one notice and stops tracking,
    /// whoever made it). Whatever the order, a copy the cache serves is Redis's current value
    /// and the key is tracked (a later change will be announced), unless a notice is still on
    /// its way (it will drop the copy) or one of this process's writes that already landed is
    /// still to return (a read overlapping a write may see the value before it). Two kinds of Redis writes: as today (this process's
    /// writes are announced to it like anyone's), and writes that are not announced to their
    /// writer but leave the key tracked for it (`NOLOOP` on the connection that writes, with the
    /// write script reading the key after it changed it).
    mod interleavings {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeSet;

        #[derive(Clone, Debug)]
        enum Step {
            LoadStart,
            LoadRead(usize),
            LoadFinish(usize),
            OwnStart,
            OwnExec(usize),
            OwnFinish(usize),
            Foreign,
            Deliver,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                Just(Step::LoadStart),
                (0..4usize).prop_map(Step::LoadRead),
                (0..4usize).prop_map(Step::LoadFinish),
                Just(Step::OwnStart),
                (0..4usize).prop_map(Step::OwnExec),
                (0..4usize).prop_map(Step::OwnFinish),
                Just(Step::Foreign),
                Just(Step::Deliver),
            ]
        }

        fn record_of(ids: &BTreeSet<u32>) -> Record {
            let mut r = Record::new(
                None,
                0,
                Duration::from_secs(3600),
                Duration::from_secs(7200),
            );
            r.last_seen = now_ms();
            r.meta.absolute_deadline = i64::MAX;
            r.attrs = ids.iter().map(|i| (format!("w{i}"), vec![1])).collect();
            r
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn a_served_copy_is_current_or_about_to_be_dropped(
                own_writes_announced in any::<bool>(),
                steps in proptest::collection::vec(step(), 1..40)
            ) {
                let c = NearCache::new(&NearCacheConfig::default());
                let k = SessionKey::from_bytes([7; 32]);
                let mut redis = BTreeSet::new();
                let mut tracked = false;
                let mut pending = 0usize;
                let mut next = 0u32;
                let mut loads: Vec<(Epoch, Option<BTreeSet<u32>>)> = Vec::new();
                let mut writes: Vec<(Taken, u32, bool)> = Vec::new();
                for s in steps {
                    match s {
                        Step::LoadStart => loads.push((c.epoch(&k), None)),
                        Step::LoadRead(i) => {
                            if let Some(l) = loads.iter_mut().filter(|l| l.1.is_none()).nth(i) {
                                l.1 = Some(redis.clone());
                                tracked = true;
                            }
                        }
                        Step::LoadFinish(i) => {
                            if let Some(at) = loads.iter().enumerate()
                                .filter(|(_, l)| l.1.is_some()).map(|(at, _)| at).nth(i)
                            {
                                let (epoch, read) = loads.remove(at);
                                c.insert(k, record_of(&read.unwrap()), epoch);
                            }
                        }
                        Step::OwnStart => {
                            next += 1;
                            writes.push((c.take(&k), next, false));
                        }
                        Step::OwnExec(i) => {
                            if let Some(w) = writes.iter_mut().filter(|w| !w.2).nth(i) {
                                redis.insert(w.1);
                                w.2 = true;
                                if !own_writes_announced {
                                    tracked = true;
                                } else if std::mem::take(&mut tracked) {
                                    pending += 1;
                                }
                            }
                        }
                        Step::OwnFinish(i) => {
                            if let Some(at) = writes.iter().enumerate()
                                .filter(|(_, w)| w.2).map(|(at, _)| at).nth(i)
                            {
                                let (taken, id, _) = writes.remove(at);
                                let delta = Delta::default().set(format!("w{id}"), vec![1]);
                                // As the stores do: put the written copy back, or move
                                // the key's epoch when there is none.
                                match taken.written(&delta) {
                                    Some((r, e)) => {
                                        c.install(k, r, e);
                                    }
                                    None => c.invalidate(&k),
                                }
                            }
                        }
                        Step::Foreign => {
                            next += 1;
                            redis.insert(next);
                            if std::mem::take(&mut tracked) {
                                pending += 1;
                            }
                        }
                        Step::Deliver => {
                            if pending > 0 {
                                pending -= 1;
                                c.invalidate(&k);
                            }
                        }
                    }
                    // While an own write has landed in Redis but not returned, a read may
                    // still be served the value before it (the read overlaps the write).
                    let overlapping = writes.iter().any(|w| w.2);
                    if let Some(served) = c.get(&k, now_ms()) {
                        prop_assert!(
                            pending > 0
                                || overlapping
                                || (served.attrs == record_of(&redis).attrs && tracked),
                            "served {:?} while Redis holds {:?} (tracked: {})",
                            served.attrs.keys().collect::<Vec<_>>(), redis, tracked
                        );
                    }
                }
            }
        }
    }
}
