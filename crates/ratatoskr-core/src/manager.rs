//! Session policy on top of any store: timeouts, touch rate, rotation, per-user limits.
//!
//! The [`SessionManager`] is what the web layer talks to. It never hands a store a token (only
//! keys), retries token collisions, decides when a touch is due (so a read-heavy session is not
//! rewritten on every request), and applies the per-user concurrent-session limit at login.
//!
//! ```
//! use std::sync::Arc;
//! use ratatoskr_core::{ManagerConfig, MemoryStore, SessionManager, Delta};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let manager = SessionManager::new(Arc::new(MemoryStore::default()), ManagerConfig::default());
//! let (token, _) = manager.create(None, None).await.unwrap();
//! manager.apply(&token.key(), &Delta::default().set("theme", b"\"dark\"".to_vec())).await.unwrap();
//!
//! // Logging in rotates the token: the old one is dead afterwards.
//! let login = manager.login(&token, "alice").await.unwrap();
//! assert!(manager.load(&token).await.unwrap().is_none());
//! let session = manager.load(&login.token).await.unwrap().unwrap();
//! assert_eq!(session.attrs["theme"], b"\"dark\"");
//! # });
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::Limits;
use crate::record::{Delta, Millis, Record, SessionSummary, duration_ms, now_ms};
use crate::store::{SessionStore, StoreError, StoreResult};
use crate::token::{Handle, SessionKey, Token};

/// Timeouts and limits. The defaults follow the contract: 2 h idle, 24 h absolute, 5 per user.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// How long a session may sit unused.
    pub idle_timeout: Duration,
    /// How long a session may live at all.
    pub absolute_timeout: Duration,
    /// A touch is written only when the stored `last_seen` is older than this, so reads of a
    /// busy session are not writes. Keep it well below the idle timeout.
    pub touch_interval: Duration,
    /// Concurrent sessions per user; the oldest are revoked at login beyond it. `None`: no limit.
    pub max_sessions_per_user: Option<usize>,
    /// Size limits for records.
    pub limits: Limits,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            idle_timeout: Duration::from_secs(2 * 3600),
            absolute_timeout: Duration::from_secs(24 * 3600),
            touch_interval: Duration::from_secs(60),
            max_sessions_per_user: Some(5),
            limits: Limits::default(),
        }
    }
}

/// The outcome of a login (a rotation that also binds the user).
#[derive(Debug)]
pub struct Login {
    /// The new token for the cookie.
    pub token: Token,
    /// The session as it now is.
    pub record: Record,
    /// Sessions revoked because the user was over the concurrent-session limit, oldest first.
    pub evicted: Vec<Handle>,
}

/// Session policy over one store.
#[derive(Clone)]
pub struct SessionManager {
    store: Arc<dyn SessionStore>,
    config: ManagerConfig,
}

impl SessionManager {
    /// A manager over `store` with `config`.
    pub fn new(store: Arc<dyn SessionStore>, config: ManagerConfig) -> Self {
        SessionManager { store, config }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// Create a session, anonymous or for `user_id`, with an optional fingerprint. Token
    /// collisions (astronomically unlikely, but handled) are retried with a fresh token.
    pub async fn create(
        &self,
        user_id: Option<String>,
        fingerprint: Option<[u8; 8]>,
    ) -> StoreResult<(Token, Record)> {
        self.create_with(user_id, fingerprint, BTreeMap::new())
            .await
    }

    /// [`create`](Self::create) a session that starts with `attrs`: one store write, where a
    /// create followed by an [`apply`](Self::apply) would be two.
    pub async fn create_with(
        &self,
        user_id: Option<String>,
        fingerprint: Option<[u8; 8]>,
        attrs: BTreeMap<String, Vec<u8>>,
    ) -> StoreResult<(Token, Record)> {
        let mut record = Record::new(
            user_id,
            now_ms(),
            self.config.idle_timeout,
            self.config.absolute_timeout,
        );
        record.meta.fingerprint = fingerprint;
        record.attrs = attrs;
        let mut attempts = 0;
        loop {
            let token = Token::generate();
            match self.store.create(&token.key(), &record).await {
                Ok(()) => return Ok((token, record)),
                Err(StoreError::Collision) if attempts < 3 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Load a live session and touch it if a touch is due. `None` if it is missing or expired.
    pub async fn load(&self, token: &Token) -> StoreResult<Option<Record>> {
        Ok(self.load_shared(token).await?.map(Arc::unwrap_or_clone))
    }

    /// [`load`](Self::load), sharing the store's copy where it keeps one (a near cache: see
    /// [`SessionStore::load_shared`]), so a read copies nothing. A touch it writes is shown in
    /// the returned record (a copy then, the cache's is moved by the store).
    pub async fn load_shared(&self, token: &Token) -> StoreResult<Option<Arc<Record>>> {
        let key = token.key();
        let Some(mut record) = self.store.load_shared(&key).await? else {
            return Ok(None);
        };
        let now = now_ms();
        if record.is_expired(now) {
            return Ok(None);
        }
        if self.touch_due(&record, now)
            && self
                .store
                .touch_with_deadline(&key, &record.meta, now, record.expires_at())
                .await?
        {
            Arc::make_mut(&mut record).last_seen = now;
        }
        Ok(Some(record))
    }

    /// Load the session named by a cookie value. A value that is not a well-formed token is
    /// refused here, before any store is asked, and answers `Ok(None)` like an unknown session.
    pub async fn load_cookie(&self, value: &str) -> StoreResult<Option<(Token, Record)>> {
        let Ok(token) = Token::parse(value) else {
            return Ok(None);
        };
        Ok(self.load(&token).await?.map(|r| (token, r)))
    }

    /// Whether a touch at `now` would be written: the stored `last_seen` is older than the
    /// touch interval and moving it would still extend the expiry.
    pub fn touch_due(&self, record: &Record, now: Millis) -> bool {
        now - record.last_seen >= duration_ms(self.config.touch_interval)
            && record.meta.idle_deadline(now) > record.expires_at()
    }

    /// Write the attributes a request changed.
    pub async fn apply(&self, key: &SessionKey, delta: &Delta) -> StoreResult<()> {
        if delta.is_empty() {
            return Ok(());
        }
        self.store.apply(key, delta).await
    }

    /// Rotate to a new token with the same data, a new CSRF secret and a bumped version; the
    /// user stays as it was. Use on privilege change.
    pub async fn rotate(&self, token: &Token) -> StoreResult<(Token, Record)> {
        let key = token.key();
        let record = self.store.load(&key).await?.ok_or(StoreError::NotFound)?;
        self.rotate_loaded(token, &record).await
    }

    /// [`rotate`](Self::rotate) a session the caller has just loaded (`record`), without
    /// loading it again. The store still refuses with `NotFound` if it ended meanwhile.
    pub async fn rotate_loaded(
        &self,
        token: &Token,
        record: &Record,
    ) -> StoreResult<(Token, Record)> {
        let user = record.meta.user_id.clone();
        let (token, record, _) = self.rotate_to(&token.key(), record, user, false).await?;
        Ok((token, record))
    }

    /// Rotate `key` to a new token with `record`'s data bound to `user_id`. With `list`, the
    /// store also answers the user's sessions (for the limit), in the same call.
    async fn rotate_to(
        &self,
        key: &SessionKey,
        record: &Record,
        user_id: Option<String>,
        list: bool,
    ) -> StoreResult<(Token, Record, Vec<SessionSummary>)> {
        let now = now_ms();
        let mut meta = record.meta.clone();
        meta.user_id = user_id;
        meta.version += 1;
        let mut attempts = 0;
        loop {
            let token = Token::generate();
            let new = token.key();
            let rotated = if list {
                self.store.rotate_and_list_user(key, &new, &meta, now).await
            } else {
                self.store
                    .rotate(key, &new, &meta, now)
                    .await
                    .map(|()| Vec::new())
            };
            match rotated {
                Ok(sessions) => {
                    let record = Record {
                        meta,
                        last_seen: now,
                        attrs: record.attrs.clone(),
                    };
                    return Ok((token, record, sessions));
                }
                Err(StoreError::Collision) if attempts < 3 => attempts += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Log `user_id` in on the session behind `token`: rotate it to a new token bound to the
    /// user (the pre-login token is dead afterwards), then enforce the concurrent-session limit
    /// by revoking the user's oldest other sessions. If there is no live session behind `token`,
    /// a fresh one is created.
    pub async fn login(&self, token: &Token, user_id: &str) -> StoreResult<Login> {
        match self.store.load(&token.key()).await? {
            Some(record) => self.login_loaded(token, &record, user_id).await,
            None => self.login_fresh(user_id, None).await,
        }
    }

    /// [`login`](Self::login) on a session the caller has already loaded (`record`, behind
    /// `token`), without loading it again: the web layer loads the cookie's session once per
    /// request. The rotation and the user's session list for the limit are one store call
    /// ([`SessionStore::rotate_and_list_user`]); only sessions beyond the limit cost more (one
    /// `destroy` each). An expired `record`, or a session that ended since it was loaded,
    /// gives a fresh session (without its data) bound to `record`'s fingerprint.
    pub async fn login_loaded(
        &self,
        token: &Token,
        record: &Record,
        user_id: &str,
    ) -> StoreResult<Login> {
        let fingerprint = record.meta.fingerprint;
        if record.is_expired(now_ms()) {
            return self.login_fresh(user_id, fingerprint).await;
        }
        let key = token.key();
        let limited = self.config.max_sessions_per_user.is_some();
        let (token, record, sessions) = match self
            .rotate_to(&key, record, Some(user_id.to_owned()), limited)
            .await
        {
            Ok(rotated) => rotated,
            Err(StoreError::NotFound) => return self.login_fresh(user_id, fingerprint).await,
            Err(e) => return Err(e),
        };
        let evicted = self.evict_excess(sessions, &[key, token.key()]).await?;
        Ok(Login {
            token,
            record,
            evicted,
        })
    }

    /// Log `user_id` in on a fresh session (there is no pre-login session to rotate), bound to
    /// `fingerprint`, then enforce the concurrent-session limit as [`login`](Self::login) does.
    pub async fn login_fresh(
        &self,
        user_id: &str,
        fingerprint: Option<[u8; 8]>,
    ) -> StoreResult<Login> {
        self.login_fresh_with(user_id, fingerprint, BTreeMap::new())
            .await
    }

    /// [`login_fresh`](Self::login_fresh) on a session that starts with `attrs` (one store
    /// write). The user's sessions are listed for the limit once the session is created.
    pub async fn login_fresh_with(
        &self,
        user_id: &str,
        fingerprint: Option<[u8; 8]>,
        attrs: BTreeMap<String, Vec<u8>>,
    ) -> StoreResult<Login> {
        let create = self.create_with(Some(user_id.to_owned()), fingerprint, attrs);
        let (token, record, sessions) = if self.config.max_sessions_per_user.is_some() {
            // Listed after the create landed, never beside it: a list read first would miss a
            // login of the same user at the same moment, and both could stay under the limit.
            let (token, record) = create.await?;
            let listed = self.store.list_user(user_id).await?;
            (token, record, listed)
        } else {
            let (token, record) = create.await?;
            (token, record, Vec::new())
        };
        let evicted = self.evict_excess(sessions, &[token.key()]).await?;
        Ok(Login {
            token,
            record,
            evicted,
        })
    }

    /// Revoke the oldest of the user's sessions beyond the limit. `sessions` is the user's list
    /// (oldest first) read while the login's own session was written, so it may or may not hold
    /// the keys in `own` (the new session, and the pre-login one a rotation removed): those are
    /// never counted twice nor evicted; the new session counts once.
    async fn evict_excess(
        &self,
        sessions: Vec<SessionSummary>,
        own: &[SessionKey],
    ) -> StoreResult<Vec<Handle>> {
        let Some(max) = self.config.max_sessions_per_user else {
            return Ok(Vec::new());
        };
        let others: Vec<SessionSummary> = sessions
            .into_iter()
            .filter(|s| !own.contains(&s.key))
            .collect();
        let excess = (others.len() + 1).saturating_sub(max);
        let mut evicted = Vec::new();
        for s in others.iter().take(excess) {
            if self.store.destroy(&s.key).await? {
                evicted.push(s.handle);
            }
        }
        Ok(evicted)
    }

    /// Destroy a session (logout).
    pub async fn destroy(&self, key: &SessionKey) -> StoreResult<bool> {
        self.store.destroy(key).await
    }

    /// A user's live sessions, oldest first.
    pub async fn list_user(&self, user_id: &str) -> StoreResult<Vec<SessionSummary>> {
        self.store.list_user(user_id).await
    }

    /// Revoke one of a user's sessions by handle. `false` if the user has no such session, so a
    /// caller can answer 404 without learning whether the handle exists for someone else.
    pub async fn revoke_handle(&self, user_id: &str, handle: &Handle) -> StoreResult<bool> {
        let sessions = self.store.list_user(user_id).await?;
        match sessions.iter().find(|s| &s.handle == handle) {
            Some(s) => self.store.destroy(&s.key).await,
            None => Ok(false),
        }
    }

    /// Revoke all of a user's sessions except `except` (log out other sessions, or everywhere
    /// with `None`).
    pub async fn revoke_user(
        &self,
        user_id: &str,
        except: Option<&SessionKey>,
    ) -> StoreResult<u64> {
        self.store.destroy_user(user_id, except).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;

    fn manager(max: usize) -> SessionManager {
        SessionManager::new(
            Arc::new(MemoryStore::default()),
            ManagerConfig {
                max_sessions_per_user: Some(max),
                ..ManagerConfig::default()
            },
        )
    }

    #[tokio::test]
    async fn login_rotates_and_kills_the_pre_login_token() {
        let m = manager(5);
        let (anon, _) = m.create(None, None).await.unwrap();
        let login = m.login(&anon, "alice").await.unwrap();
        assert_ne!(login.token, anon);
        assert!(m.load(&anon).await.unwrap().is_none());
        let r = m.load(&login.token).await.unwrap().unwrap();
        assert_eq!(r.meta.user_id.as_deref(), Some("alice"));
        assert_eq!(r.meta.version, 2);
    }

    #[tokio::test]
    async fn login_fresh_keeps_the_fingerprint_and_enforces_the_limit() {
        let m = manager(1);
        let first = m.login_fresh("carol", Some([7; 8])).await.unwrap();
        assert_eq!(first.record.meta.fingerprint, Some([7; 8]));
        tokio::time::sleep(Duration::from_millis(2)).await;
        let second = m.login_fresh("carol", None).await.unwrap();
        assert_eq!(second.evicted, vec![first.token.key().handle()]);
        assert!(m.load(&first.token).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn login_rotates_the_csrf_secret() {
        let m = manager(5);
        let (anon, _) = m.create(None, None).await.unwrap();
        let login = m.login(&anon, "alice").await.unwrap();
        // The secret is the token's: a new token, a new secret.
        assert_ne!(login.token.key(), anon.key());
        assert_ne!(login.token.csrf_secret(), anon.csrf_secret());
    }

    #[tokio::test]
    async fn login_beyond_the_limit_evicts_the_oldest_sessions() {
        let m = manager(2);
        let mut tokens = Vec::new();
        for _ in 0..3 {
            let (anon, _) = m.create(None, None).await.unwrap();
            tokens.push(m.login(&anon, "bob").await.unwrap());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(tokens[2].evicted, vec![tokens[0].token.key().handle()]);
        assert!(m.load(&tokens[0].token).await.unwrap().is_none());
        assert!(m.load(&tokens[1].token).await.unwrap().is_some());
        assert!(m.load(&tokens[2].token).await.unwrap().is_some());
    }

    /// A memory store that counts what it is asked to do, can answer `Collision` to the next
    /// creates or rotations, and can hand back one stale (expired) record as if it were stored.
    #[derive(Default)]
    struct CountingStore {
        inner: MemoryStore,
        loads: AtomicUsize,
        creates: AtomicUsize,
        rotates: AtomicUsize,
        touches: AtomicUsize,
        applies: AtomicUsize,
        lists: AtomicUsize,
        rotate_lists: AtomicUsize,
        /// `rotate_and_list_user` reads the list before it rotates (else after).
        list_first: std::sync::atomic::AtomicBool,
        create_collisions: AtomicUsize,
        rotate_collisions: AtomicUsize,
        stale: std::sync::Mutex<Option<(SessionKey, Record)>>,
    }

    /// Take one from `n` if it is not zero; whether one was taken.
    fn take_one(n: &AtomicUsize) -> bool {
        n.fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1)).is_ok()
    }

    #[async_trait::async_trait]
    impl SessionStore for CountingStore {
        fn backend_name(&self) -> &'static str {
            "counting"
        }
        async fn create(&self, k: &SessionKey, r: &Record) -> StoreResult<()> {
            self.creates.fetch_add(1, SeqCst);
            if take_one(&self.create_collisions) {
                return Err(StoreError::Collision);
            }
            self.inner.create(k, r).await
        }
        async fn load(&self, k: &SessionKey) -> StoreResult<Option<Record>> {
            self.loads.fetch_add(1, SeqCst);
            if let Some((key, r)) = &*self.stale.lock().unwrap()
                && key == k
            {
                return Ok(Some(r.clone()));
            }
            self.inner.load(k).await
        }
        async fn apply(&self, k: &SessionKey, d: &Delta) -> StoreResult<()> {
            self.applies.fetch_add(1, SeqCst);
            self.inner.apply(k, d).await
        }
        async fn touch(&self, k: &SessionKey, m: &crate::Meta, t: Millis) -> StoreResult<bool> {
            self.touches.fetch_add(1, SeqCst);
            self.inner.touch(k, m, t).await
        }
        async fn rotate(
            &self,
            o: &SessionKey,
            n: &SessionKey,
            m: &crate::Meta,
            t: Millis,
        ) -> StoreResult<()> {
            self.rotates.fetch_add(1, SeqCst);
            if take_one(&self.rotate_collisions) {
                return Err(StoreError::Collision);
            }
            self.inner.rotate(o, n, m, t).await
        }
        async fn destroy(&self, k: &SessionKey) -> StoreResult<bool> {
            self.inner.destroy(k).await
        }
        async fn list_user(&self, u: &str) -> StoreResult<Vec<SessionSummary>> {
            self.lists.fetch_add(1, SeqCst);
            self.inner.list_user(u).await
        }
        /// One call, as a store that answers both in one round trip would count it; the list
        /// is read on the side of the rotation `list_first` says.
        async fn rotate_and_list_user(
            &self,
            o: &SessionKey,
            n: &SessionKey,
            m: &crate::Meta,
            t: Millis,
        ) -> StoreResult<Vec<SessionSummary>> {
            self.rotate_lists.fetch_add(1, SeqCst);
            let user = m.user_id.as_deref().unwrap_or_default();
            if self.list_first.load(SeqCst) {
                let listed = self.inner.list_user(user).await?;
                self.rotate(o, n, m, t).await?;
                Ok(listed)
            } else {
                self.rotate(o, n, m, t).await?;
                self.inner.list_user(user).await
            }
        }
        async fn destroy_user(&self, u: &str, e: Option<&SessionKey>) -> StoreResult<u64> {
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

    fn counted(config: ManagerConfig) -> (Arc<CountingStore>, SessionManager) {
        let store = Arc::new(CountingStore::default());
        (store.clone(), SessionManager::new(store, config))
    }

    #[tokio::test]
    async fn create_retries_three_collisions_then_reports_the_fourth() {
        let (store, m) = counted(ManagerConfig::default());
        store.create_collisions.store(3, SeqCst);
        let (token, _) = m.create(None, None).await.unwrap();
        assert_eq!(store.creates.load(SeqCst), 4, "one try and three retries");
        assert!(m.load(&token).await.unwrap().is_some());

        let (store, m) = counted(ManagerConfig::default());
        store.create_collisions.store(4, SeqCst);
        assert!(matches!(
            m.create(None, None).await,
            Err(StoreError::Collision)
        ));
        assert_eq!(store.creates.load(SeqCst), 4, "no fifth try");
        assert_eq!(store.count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn rotate_retries_three_collisions_then_reports_the_fourth() {
        let (store, m) = counted(ManagerConfig::default());
        let (token, _) = m.create(Some("u".into()), None).await.unwrap();
        store.rotate_collisions.store(3, SeqCst);
        let (rotated, record) = m.rotate(&token).await.unwrap();
        assert_eq!(store.rotates.load(SeqCst), 4, "one try and three retries");
        assert_eq!(record.meta.user_id.as_deref(), Some("u"));
        assert!(m.load(&rotated).await.unwrap().is_some());

        store.rotate_collisions.store(4, SeqCst);
        assert!(matches!(
            m.rotate(&rotated).await,
            Err(StoreError::Collision)
        ));
        assert_eq!(store.rotates.load(SeqCst), 8, "no fifth try");
        assert!(m.load(&rotated).await.unwrap().is_some(), "nothing changed");
    }

    #[tokio::test]
    async fn rotate_bumps_the_version_by_one_renews_the_csrf_secret_and_keeps_the_data() {
        let (_, m) = counted(ManagerConfig::default());
        let (t1, r1) = m.create(Some("u".into()), Some([3; 8])).await.unwrap();
        m.apply(&t1.key(), &Delta::default().set("a", b"1".to_vec()))
            .await
            .unwrap();
        let (t2, r2) = m.rotate(&t1).await.unwrap();
        let (t3, r3) = m.rotate(&t2).await.unwrap();
        assert_eq!(
            (r1.meta.version, r2.meta.version, r3.meta.version),
            (1, 2, 3)
        );
        assert_ne!(t2.csrf_secret(), t1.csrf_secret());
        assert_eq!(r3.attrs["a"], b"1");
        assert_eq!(r3.meta.fingerprint, Some([3; 8]));
        let stored = m.load(&t3).await.unwrap().unwrap();
        assert_eq!(stored.meta, r3.meta);
        assert!(m.load(&t1).await.unwrap().is_none());
        assert!(matches!(m.rotate(&t1).await, Err(StoreError::NotFound)));
    }

    #[test]
    fn touch_due_is_exact_at_the_interval_and_never_past_the_absolute_deadline() {
        let m = SessionManager::new(
            Arc::new(MemoryStore::default()),
            ManagerConfig {
                touch_interval: Duration::from_secs(60),
                ..ManagerConfig::default()
            },
        );
        let mut r = Record::new(
            None,
            1_000,
            Duration::from_secs(7200),
            Duration::from_secs(86_400),
        );
        assert!(!m.touch_due(&r, 1_000));
        assert!(!m.touch_due(&r, 60_999), "59.999 s after the last touch");
        assert!(m.touch_due(&r, 61_000), "exactly the interval");
        assert!(m.touch_due(&r, 3_000_000));
        // Near the absolute deadline (86,401,000) a touch can no longer move the expiry.
        r.last_seen = 86_401_000 - 7_200_000 - 30_000;
        assert!(m.touch_due(&r, r.last_seen + 60_000), "still extends it");
        r.last_seen = 86_401_000 - 100_000;
        assert_eq!(r.expires_at(), 86_401_000);
        assert!(
            !m.touch_due(&r, r.last_seen + 60_000),
            "would not extend the expiry"
        );
    }

    #[tokio::test]
    async fn load_writes_a_touch_only_when_one_is_due() {
        let (store, m) = counted(ManagerConfig::default());
        let (token, created) = m.create(None, None).await.unwrap();
        let loaded = m.load(&token).await.unwrap().unwrap();
        assert_eq!(
            store.touches.load(SeqCst),
            0,
            "a fresh session is not touched"
        );
        assert_eq!(loaded.last_seen, created.last_seen);

        let (store, m) = counted(ManagerConfig {
            touch_interval: Duration::ZERO,
            ..ManagerConfig::default()
        });
        let (token, created) = m.create(None, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
        let loaded = m.load(&token).await.unwrap().unwrap();
        assert_eq!(store.touches.load(SeqCst), 1);
        assert!(
            loaded.last_seen > created.last_seen,
            "the touch is reported"
        );
        let stored = store.inner.load(&token.key()).await.unwrap().unwrap();
        assert_eq!(stored.last_seen, loaded.last_seen, "and written");
    }

    #[tokio::test]
    async fn expired_or_missing_sessions_load_as_none() {
        let (store, m) = counted(ManagerConfig::default());
        let token = Token::generate();
        let mut stale = Record::new(None, now_ms() - 10_000, Duration::from_secs(1), MINUTE);
        stale.attrs.insert("a".into(), b"1".to_vec());
        *store.stale.lock().unwrap() = Some((token.key(), stale));
        assert!(m.load(&token).await.unwrap().is_none());
        assert!(m.load(&Token::generate()).await.unwrap().is_none());
        assert_eq!(store.touches.load(SeqCst), 0);
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn login_on_an_expired_session_starts_a_fresh_one_without_its_data() {
        let (store, m) = counted(ManagerConfig::default());
        let token = Token::generate();
        let mut stale = Record::new(None, now_ms() - 10_000, Duration::from_secs(1), MINUTE);
        stale.attrs.insert("a".into(), b"1".to_vec());
        *store.stale.lock().unwrap() = Some((token.key(), stale));
        let login = m.login(&token, "alice").await.unwrap();
        assert_eq!(
            store.rotates.load(SeqCst),
            0,
            "an expired session is not rotated"
        );
        assert_eq!(store.creates.load(SeqCst), 1);
        assert!(login.record.attrs.is_empty());
        assert_eq!(login.record.meta.version, 1);
        assert_eq!(login.record.meta.user_id.as_deref(), Some("alice"));
    }

    #[tokio::test]
    async fn apply_skips_empty_deltas_and_writes_the_rest() {
        let (store, m) = counted(ManagerConfig::default());
        let (token, _) = m.create(None, None).await.unwrap();
        m.apply(&token.key(), &Delta::default()).await.unwrap();
        assert_eq!(store.applies.load(SeqCst), 0);
        m.apply(&token.key(), &Delta::default().set("a", b"1".to_vec()))
            .await
            .unwrap();
        assert_eq!(store.applies.load(SeqCst), 1);
        assert_eq!(m.load(&token).await.unwrap().unwrap().attrs["a"], b"1");
        assert!(matches!(
            m.apply(&Token::generate().key(), &Delta::default().remove("a"))
                .await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn the_limit_revokes_exactly_the_excess_oldest_first() {
        let (_, m) = counted(ManagerConfig {
            max_sessions_per_user: Some(2),
            ..ManagerConfig::default()
        });
        let mut old = Vec::new();
        for _ in 0..4 {
            old.push(m.create(Some("u".into()), None).await.unwrap().0);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let login = m.login_fresh("u", None).await.unwrap();
        let want: Vec<Handle> = old[..3].iter().map(|t| t.key().handle()).collect();
        assert_eq!(login.evicted, want, "five sessions, limit two: three go");
        let left: Vec<SessionKey> = m
            .list_user("u")
            .await
            .unwrap()
            .iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(left, vec![old[3].key(), login.token.key()]);
    }

    #[tokio::test]
    async fn the_session_logging_in_is_never_evicted_even_when_it_is_the_oldest() {
        let (_, m) = counted(ManagerConfig {
            max_sessions_per_user: Some(1),
            ..ManagerConfig::default()
        });
        let (anon, _) = m.create(None, None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let other = m.login_fresh("u", None).await.unwrap();
        // Rotation keeps the creation time: the new session is the user's oldest.
        let login = m.login(&anon, "u").await.unwrap();
        assert_eq!(login.evicted, vec![other.token.key().handle()]);
        assert!(m.load(&login.token).await.unwrap().is_some());
        assert!(m.load(&other.token).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn without_a_limit_nobody_is_evicted() {
        let (_, m) = counted(ManagerConfig {
            max_sessions_per_user: None,
            ..ManagerConfig::default()
        });
        for _ in 0..7 {
            assert!(m.login_fresh("u", None).await.unwrap().evicted.is_empty());
        }
        assert_eq!(m.list_user("u").await.unwrap().len(), 7);
        assert!(m.config().max_sessions_per_user.is_none());
        assert_eq!(m.store().backend_name(), "counting");
    }

    #[tokio::test]
    async fn destroy_and_revoke_user_report_what_they_ended() {
        let (_, m) = counted(ManagerConfig::default());
        let (a, _) = m.create(Some("u".into()), None).await.unwrap();
        let (b, _) = m.create(Some("u".into()), None).await.unwrap();
        let (c, _) = m.create(Some("u".into()), None).await.unwrap();
        let (d, _) = m.create(Some("v".into()), None).await.unwrap();
        assert!(m.destroy(&a.key()).await.unwrap());
        assert!(!m.destroy(&a.key()).await.unwrap(), "already gone");
        assert_eq!(m.list_user("u").await.unwrap().len(), 2);
        assert_eq!(m.revoke_user("u", Some(&c.key())).await.unwrap(), 1);
        assert!(m.load(&b).await.unwrap().is_none());
        assert!(m.load(&c).await.unwrap().is_some());
        assert_eq!(m.revoke_user("u", None).await.unwrap(), 1);
        assert!(
            m.load(&d).await.unwrap().is_some(),
            "another user's session"
        );
    }

    #[tokio::test]
    async fn malformed_cookie_values_never_reach_the_store() {
        let store = Arc::new(CountingStore::default());
        let m = SessionManager::new(store.clone(), ManagerConfig::default());
        let bad = [
            String::new(),
            "short".into(),
            "A".repeat(42),
            "A".repeat(44),
            "A".repeat(8192),
            format!("{}=", "A".repeat(42)),
            format!("{}+", "A".repeat(42)),
            "é".repeat(22),
            format!("{}B", "A".repeat(42)),
        ];
        for value in &bad {
            assert!(m.load_cookie(value).await.unwrap().is_none(), "{value:?}");
        }
        assert_eq!(store.loads.load(SeqCst), 0);
        // A well-formed but unknown token does reach the store, and is simply absent.
        let unknown = Token::generate().as_cookie_value();
        assert!(m.load_cookie(&unknown).await.unwrap().is_none());
        assert_eq!(store.loads.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn login_loaded_rotates_the_record_it_is_given_in_one_store_call() {
        let (store, m) = counted(ManagerConfig::default());
        let (anon, _) = m
            .create_with(None, Some([5; 8]), BTreeMap::new())
            .await
            .unwrap();
        m.apply(&anon.key(), &Delta::default().set("a", b"1".to_vec()))
            .await
            .unwrap();
        let loaded = m.load(&anon).await.unwrap().unwrap();
        let loads = store.loads.load(SeqCst);
        let login = m.login_loaded(&anon, &loaded, "alice").await.unwrap();
        assert_eq!(
            store.loads.load(SeqCst),
            loads,
            "the record is not loaded again"
        );
        assert_eq!(
            store.rotate_lists.load(SeqCst),
            1,
            "rotation and list: one call"
        );
        assert_eq!(store.rotates.load(SeqCst), 1);
        assert_eq!(store.lists.load(SeqCst), 0, "no list_user of its own");
        assert!(
            m.load(&anon).await.unwrap().is_none(),
            "pre-login token dead"
        );
        let r = m.load(&login.token).await.unwrap().unwrap();
        assert_eq!(r.meta.user_id.as_deref(), Some("alice"));
        assert_eq!(r.meta.version, 2);
        assert_eq!(r.meta.fingerprint, Some([5; 8]), "fingerprint binding kept");
        assert_ne!(
            login.token.csrf_secret(),
            anon.csrf_secret(),
            "CSRF secret renewed"
        );
        assert_eq!(r.attrs["a"], b"1");
        assert_eq!(login.record.meta, r.meta);
        assert_eq!(login.record.attrs, r.attrs);
    }

    #[tokio::test]
    async fn login_loaded_on_an_ended_session_starts_a_fresh_one_with_its_fingerprint() {
        let (store, m) = counted(ManagerConfig::default());
        let (anon, _) = m.create(None, Some([9; 8])).await.unwrap();
        let loaded = m.load(&anon).await.unwrap().unwrap();
        m.destroy(&anon.key()).await.unwrap();
        let login = m.login_loaded(&anon, &loaded, "alice").await.unwrap();
        assert_eq!(store.creates.load(SeqCst), 2);
        assert_eq!(login.record.meta.version, 1);
        assert_eq!(login.record.meta.fingerprint, Some([9; 8]));
        assert!(m.load(&login.token).await.unwrap().is_some());
        assert!(m.load(&anon).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_public_login_still_loads_the_session_itself() {
        let (store, m) = counted(ManagerConfig::default());
        let (anon, _) = m.create(None, None).await.unwrap();
        m.login(&anon, "alice").await.unwrap();
        assert_eq!(store.loads.load(SeqCst), 1);
        assert_eq!(store.rotate_lists.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn the_new_session_counts_once_whichever_side_of_the_rotation_the_list_was_read() {
        for list_first in [false, true] {
            let (store, m) = counted(ManagerConfig {
                max_sessions_per_user: Some(2),
                ..ManagerConfig::default()
            });
            store.list_first.store(list_first, SeqCst);
            let a = m.login_fresh("u", None).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
            let b = m.login_fresh("u", None).await.unwrap();
            // The user logs in again on b: b's old key may be in the list (read before the
            // rotation) or the new one (after): either way the user has two sessions, no excess.
            let again = m.login_loaded(&b.token, &b.record, "u").await.unwrap();
            assert!(again.evicted.is_empty(), "list_first {list_first}");
            assert_eq!(m.list_user("u").await.unwrap().len(), 2);
            // An anonymous session logs in as u: three sessions, the oldest (a) goes.
            let (anon, record) = m.create(None, None).await.unwrap();
            let login = m.login_loaded(&anon, &record, "u").await.unwrap();
            assert_eq!(
                login.evicted,
                vec![a.token.key().handle()],
                "list_first {list_first}"
            );
            let left: Vec<SessionKey> = m
                .list_user("u")
                .await
                .unwrap()
                .iter()
                .map(|s| s.key)
                .collect();
            assert_eq!(left.len(), 2);
            assert!(left.contains(&again.token.key()) && left.contains(&login.token.key()));
        }
    }

    #[tokio::test]
    async fn create_with_and_login_fresh_with_write_the_attributes_in_the_create() {
        let (store, m) = counted(ManagerConfig::default());
        let attrs: BTreeMap<String, Vec<u8>> = [("a".to_owned(), b"1".to_vec())].into();
        let (t, r) = m.create_with(None, None, attrs.clone()).await.unwrap();
        assert_eq!(r.attrs, attrs);
        assert_eq!(m.load(&t).await.unwrap().unwrap().attrs, attrs);
        let login = m
            .login_fresh_with("u", Some([1; 8]), attrs.clone())
            .await
            .unwrap();
        assert_eq!(login.record.meta.fingerprint, Some([1; 8]));
        assert_eq!(m.load(&login.token).await.unwrap().unwrap().attrs, attrs);
        assert_eq!(store.creates.load(SeqCst), 2);
        assert_eq!(store.applies.load(SeqCst), 0);
        assert_eq!(
            store.lists.load(SeqCst),
            1,
            "the limit's list, sent with the create"
        );
    }

    #[tokio::test]
    async fn without_a_limit_a_login_lists_nothing() {
        let (store, m) = counted(ManagerConfig {
            max_sessions_per_user: None,
            ..ManagerConfig::default()
        });
        let (anon, record) = m.create(None, None).await.unwrap();
        m.login_loaded(&anon, &record, "u").await.unwrap();
        m.login_fresh("u", None).await.unwrap();
        assert_eq!(store.lists.load(SeqCst), 0);
        assert_eq!(store.rotate_lists.load(SeqCst), 0);
        assert_eq!(store.rotates.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn the_default_rotate_and_list_user_rotates_then_answers_the_users_list() {
        let store = MemoryStore::default();
        let m = SessionManager::new(Arc::new(MemoryStore::default()), ManagerConfig::default());
        let (_, anon) = m.create(None, None).await.unwrap();
        let (old, new, other) = (Token::generate(), Token::generate(), Token::generate());
        store.create(&old.key(), &anon).await.unwrap();
        let mut theirs = anon.clone();
        theirs.meta.user_id = Some("u".into());
        store.create(&other.key(), &theirs).await.unwrap();
        let now = now_ms();
        let listed = store
            .rotate_and_list_user(&old.key(), &new.key(), &theirs.meta, now)
            .await
            .unwrap();
        assert!(store.load(&old.key()).await.unwrap().is_none(), "rotated");
        assert!(store.load(&new.key()).await.unwrap().is_some());
        assert!(
            listed.iter().any(|s| s.key == other.key()),
            "the user's list"
        );
        // No user: rotated, nothing listed.
        let newer = Token::generate();
        let listed = store
            .rotate_and_list_user(&new.key(), &newer.key(), &anon.meta, now)
            .await
            .unwrap();
        assert!(listed.is_empty());
        assert!(store.load(&newer.key()).await.unwrap().is_some());
        // A failed rotation answers its error, not a list.
        assert!(matches!(
            store
                .rotate_and_list_user(&old.key(), &Token::generate().key(), &theirs.meta, now)
                .await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn revoke_handle_only_touches_the_users_own_sessions() {
        let m = manager(5);
        let (a, _) = m.create(Some("a".into()), None).await.unwrap();
        let (b, _) = m.create(Some("b".into()), None).await.unwrap();
        let hb = b.key().handle();
        assert!(!m.revoke_handle("a", &hb).await.unwrap());
        assert!(m.load(&b).await.unwrap().is_some());
        assert!(m.revoke_handle("a", &a.key().handle()).await.unwrap());
        assert!(m.load(&a).await.unwrap().is_none());
    }
}
