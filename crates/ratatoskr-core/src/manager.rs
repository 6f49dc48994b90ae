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

use std::sync::Arc;
use std::time::Duration;

use crate::codec::Limits;
use crate::record::{Delta, Millis, Record, SessionSummary, duration_ms, now_ms};
use crate::store::{SessionStore, StoreError, StoreResult};
use crate::token::{Handle, SessionKey, Token, random_bytes};

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
        let mut record = Record::new(
            user_id,
            now_ms(),
            self.config.idle_timeout,
            self.config.absolute_timeout,
        );
        record.meta.fingerprint = fingerprint;
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
        let key = token.key();
        let Some(mut record) = self.store.load(&key).await? else {
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
            record.last_seen = now;
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
        let user = record.meta.user_id.clone();
        self.rotate_to(&key, record, user).await
    }

    async fn rotate_to(
        &self,
        key: &SessionKey,
        record: Record,
        user_id: Option<String>,
    ) -> StoreResult<(Token, Record)> {
        let now = now_ms();
        let mut meta = record.meta.clone();
        meta.user_id = user_id;
        meta.version += 1;
        meta.csrf_secret = random_bytes();
        let mut attempts = 0;
        loop {
            let token = Token::generate();
            match self.store.rotate(key, &token.key(), &meta, now).await {
                Ok(()) => {
                    let record = Record {
                        meta,
                        last_seen: now,
                        attrs: record.attrs,
                    };
                    return Ok((token, record));
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
        let key = token.key();
        let (token, record) = match self.store.load(&key).await? {
            Some(record) if !record.is_expired(now_ms()) => {
                self.rotate_to(&key, record, Some(user_id.to_owned()))
                    .await?
            }
            _ => self.create(Some(user_id.to_owned()), None).await?,
        };
        let evicted = self.enforce_limit(user_id, &token.key()).await?;
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
        let (token, record) = self.create(Some(user_id.to_owned()), fingerprint).await?;
        let evicted = self.enforce_limit(user_id, &token.key()).await?;
        Ok(Login {
            token,
            record,
            evicted,
        })
    }

    /// Revoke the oldest sessions of a user beyond the limit, never `keep`.
    async fn enforce_limit(&self, user_id: &str, keep: &SessionKey) -> StoreResult<Vec<Handle>> {
        let Some(max) = self.config.max_sessions_per_user else {
            return Ok(Vec::new());
        };
        let sessions = self.store.list_user(user_id).await?;
        let mut evicted = Vec::new();
        if sessions.len() > max {
            let excess = sessions.len() - max;
            for s in sessions.iter().filter(|s| &s.key != keep).take(excess) {
                if self.store.destroy(&s.key).await? {
                    evicted.push(s.handle);
                }
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
        let (anon, before) = m.create(None, None).await.unwrap();
        let login = m.login(&anon, "alice").await.unwrap();
        assert_ne!(login.record.meta.csrf_secret, before.meta.csrf_secret);
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

    /// A store that counts how often it is asked to load.
    #[derive(Default)]
    struct CountingStore {
        inner: MemoryStore,
        loads: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl SessionStore for CountingStore {
        fn backend_name(&self) -> &'static str {
            "counting"
        }
        async fn create(&self, k: &SessionKey, r: &Record) -> StoreResult<()> {
            self.inner.create(k, r).await
        }
        async fn load(&self, k: &SessionKey) -> StoreResult<Option<Record>> {
            self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.load(k).await
        }
        async fn apply(&self, k: &SessionKey, d: &Delta) -> StoreResult<()> {
            self.inner.apply(k, d).await
        }
        async fn touch(&self, k: &SessionKey, m: &crate::Meta, t: Millis) -> StoreResult<bool> {
            self.inner.touch(k, m, t).await
        }
        async fn rotate(
            &self,
            o: &SessionKey,
            n: &SessionKey,
            m: &crate::Meta,
            t: Millis,
        ) -> StoreResult<()> {
            self.inner.rotate(o, n, m, t).await
        }
        async fn destroy(&self, k: &SessionKey) -> StoreResult<bool> {
            self.inner.destroy(k).await
        }
        async fn list_user(&self, u: &str) -> StoreResult<Vec<SessionSummary>> {
            self.inner.list_user(u).await
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
        assert_eq!(store.loads.load(std::sync::atomic::Ordering::SeqCst), 0);
        // A well-formed but unknown token does reach the store, and is simply absent.
        let unknown = Token::generate().as_cookie_value();
        assert!(m.load_cookie(&unknown).await.unwrap().is_none());
        assert_eq!(store.loads.load(std::sync::atomic::Ordering::SeqCst), 1);
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
