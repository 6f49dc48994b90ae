//! The request's session: loaded on first use, written back as a delta after the handler.

use std::collections::BTreeMap;
use std::sync::Arc;

use ratatoskr_core::record::Delta;
use ratatoskr_core::{
    AuditEvent, AuditKind, Handle, Millis, Record, SessionManager, SessionSummary, Token, now_ms,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::config::{FingerprintPolicy, SessionConfig};
use crate::cookie::CookieSpec;
use crate::csrf::{self, OriginPolicy};
use crate::error::SessionError;
use crate::metrics;

/// The attribute that marks a session as "remember me" (persistent cookie).
pub const REMEMBER_ATTR: &str = "ratatoskr.remember";

/// A typed session value with a fixed attribute name, for context extractors:
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct ActivePlatform { id: i64, name: String }
/// impl ratatoskr_axum::SessionValue for ActivePlatform {
///     const KEY: &'static str = "active_platform";
/// }
/// ```
pub trait SessionValue: Serialize + DeserializeOwned + Send + Sync {
    /// The attribute name the value lives under.
    const KEY: &'static str;
}

/// What the layer knows before any handler runs; shared by every request.
pub(crate) struct Shared {
    pub manager: SessionManager,
    pub config: SessionConfig,
    pub cookie: CookieSpec,
    pub origin: OriginPolicy,
}

impl Shared {
    pub async fn audit(&self, event: AuditEvent) {
        self.config.audit.record(event).await;
    }
}

/// The current session, as a handler sees it. Cheap to clone; all clones are the same session.
///
/// Nothing is read from the store until a method needs it, so a handler that never touches the
/// session costs no store call. Changes are collected and written after the handler returns,
/// as one [`Delta`] of the attributes that changed — unless the response is a 5xx. Values are
/// JSON. Lifecycle operations ([`login`](Self::login), [`rotate`](Self::rotate),
/// [`logout`](Self::logout), revocations) happen at once and set or clear the cookie.
#[derive(Clone)]
pub struct Session(Arc<Inner>);

struct Inner {
    shared: Arc<Shared>,
    /// The token in the request's cookie, already parsed; `None` for cookieless requests.
    cookie: Option<Token>,
    /// This request's fingerprint, when the policy is not `Off`.
    fingerprint: Option<[u8; 8]>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    loaded: bool,
    live: Option<Live>,
    /// Pending attribute changes: `Some(value)` set, `None` removed.
    changes: BTreeMap<String, Option<Vec<u8>>>,
    cookie: CookieAction,
}

struct Live {
    token: Token,
    record: Record,
}

impl Live {
    fn handle(&self) -> Handle {
        self.token.key().handle()
    }
    fn user(&self) -> Option<&str> {
        self.record.meta.user_id.as_deref()
    }
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum CookieAction {
    #[default]
    Keep,
    Set,
    Remove,
}

/// The public facts about the current session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// Its public handle.
    pub handle: Handle,
    /// The user, if logged in.
    pub user_id: Option<String>,
    /// When it was created.
    pub created_at: Millis,
    /// When it was last used.
    pub last_seen: Millis,
    /// When it ends if unused.
    pub idle_expires_at: Millis,
    /// When it ends regardless.
    pub absolute_expires_at: Millis,
}

/// What the layer must do to the response once the handler is done.
pub(crate) struct Outcome {
    pub error: Option<SessionError>,
    pub set_cookie: Option<String>,
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        cookie: Option<Token>,
        fingerprint: Option<[u8; 8]>,
    ) -> Self {
        Session(Arc::new(Inner {
            shared,
            cookie,
            fingerprint,
            state: Mutex::new(State::default()),
        }))
    }

    fn manager(&self) -> &SessionManager {
        &self.0.shared.manager
    }

    /// Load the cookie's session once. A failure leaves it unloaded so a later call retries.
    async fn load(&self, st: &mut State) -> Result<(), SessionError> {
        if st.loaded {
            return Ok(());
        }
        let Some(token) = &self.0.cookie else {
            st.loaded = true;
            return Ok(());
        };
        let record = match self.manager().load(token).await {
            Ok(r) => r,
            Err(e) => {
                metrics::load("error");
                return Err(e.into());
            }
        };
        st.loaded = true;
        let Some(record) = record else {
            metrics::load("miss");
            // Strict mode: the token is not adopted. It names no live session: it expired, was
            // ended, or was never issued; stores cannot tell these apart once a session is gone.
            self.0
                .shared
                .audit(
                    AuditEvent::new(AuditKind::Expired)
                        .handle(token.key().handle())
                        .detail("cookie names no live session (expired, ended or never issued)"),
                )
                .await;
            return Ok(());
        };
        metrics::load("hit");
        let live = Live {
            token: token.clone(),
            record,
        };
        if let (Some(stored), Some(now)) = (live.record.meta.fingerprint, self.0.fingerprint)
            && stored != now
        {
            let policy = self.0.shared.config.fingerprint.policy;
            let revoke = policy == FingerprintPolicy::Revoke;
            metrics::fingerprint_mismatch(if revoke { "revoke" } else { "log" });
            if revoke {
                self.manager().destroy(&live.token.key()).await?;
                metrics::ended("fingerprint", 1);
            }
            self.0
                .shared
                .audit(
                    AuditEvent::new(AuditKind::FingerprintMismatch)
                        .handle(live.handle())
                        .user(live.user())
                        .detail(if revoke {
                            "session destroyed; request continues anonymous"
                        } else {
                            "logged only"
                        }),
                )
                .await;
            if revoke {
                return Ok(());
            }
        }
        st.live = Some(live);
        Ok(())
    }

    /// Write pending changes: create the session first if there is none.
    async fn save_locked(&self, st: &mut State) -> Result<(), SessionError> {
        if st.changes.is_empty() {
            return Ok(());
        }
        let mut delta = Delta::default();
        for (name, change) in &st.changes {
            match change {
                Some(v) => delta.set.push((name.clone(), v.clone())),
                None => delta.remove.push(name.clone()),
            }
        }
        if st.live.is_none() {
            let (token, record) = self
                .manager()
                .create(None, self.0.fingerprint)
                .await
                .inspect_err(|_| metrics::save("error"))?;
            metrics::created();
            self.0
                .shared
                .audit(AuditEvent::new(AuditKind::Created).handle(token.key().handle()))
                .await;
            st.live = Some(Live { token, record });
            st.cookie = CookieAction::Set;
        }
        let live = st.live.as_mut().expect("created above");
        match self.manager().apply(&live.token.key(), &delta).await {
            Ok(()) => {
                metrics::save("ok");
                live.record.apply(&delta);
                st.changes.clear();
                Ok(())
            }
            Err(e) => {
                metrics::save("error");
                Err(e.into())
            }
        }
    }

    /// An attribute's raw bytes (JSON, when written by this crate).
    pub async fn get_raw(&self, name: &str) -> Result<Option<Vec<u8>>, SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        if let Some(change) = st.changes.get(name) {
            return Ok(change.clone());
        }
        Ok(st
            .live
            .as_ref()
            .and_then(|l| l.record.attrs.get(name).cloned()))
    }

    /// Set an attribute's raw bytes. Setting the value it already has changes nothing.
    pub async fn insert_raw(&self, name: &str, value: Vec<u8>) -> Result<(), SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        let stored = st.live.as_ref().and_then(|l| l.record.attrs.get(name));
        if stored == Some(&value) {
            st.changes.remove(name);
        } else {
            st.changes.insert(name.to_owned(), Some(value));
        }
        Ok(())
    }

    /// Remove an attribute. Removing one that is not there changes nothing.
    pub async fn remove(&self, name: &str) -> Result<(), SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        let stored = st
            .live
            .as_ref()
            .is_some_and(|l| l.record.attrs.contains_key(name));
        if stored {
            st.changes.insert(name.to_owned(), None);
        } else {
            st.changes.remove(name);
        }
        Ok(())
    }

    /// An attribute, deserialized from JSON.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, SessionError> {
        match self.get_raw(name).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(SessionError::Value),
            None => Ok(None),
        }
    }

    /// Set an attribute to `value` serialized as JSON.
    pub async fn insert<T: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), SessionError> {
        let bytes = serde_json::to_vec(value).map_err(SessionError::Value)?;
        self.insert_raw(name, bytes).await
    }

    /// A [`SessionValue`] by its own key.
    pub async fn get_value<T: SessionValue>(&self) -> Result<Option<T>, SessionError> {
        self.get(T::KEY).await
    }

    /// Set a [`SessionValue`] under its own key.
    pub async fn set_value<T: SessionValue>(&self, value: &T) -> Result<(), SessionError> {
        self.insert(T::KEY, value).await
    }

    /// Remove a [`SessionValue`].
    pub async fn remove_value<T: SessionValue>(&self) -> Result<(), SessionError> {
        self.remove(T::KEY).await
    }

    /// The logged-in user, if any.
    pub async fn user_id(&self) -> Result<Option<String>, SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        Ok(st.live.as_ref().and_then(|l| l.record.meta.user_id.clone()))
    }

    /// Public facts about the session; `None` when there is none.
    pub async fn info(&self) -> Result<Option<SessionInfo>, SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        Ok(st.live.as_ref().map(|l| SessionInfo {
            handle: l.handle(),
            user_id: l.record.meta.user_id.clone(),
            created_at: l.record.meta.created_at,
            last_seen: l.record.last_seen,
            idle_expires_at: l.record.expires_at(),
            absolute_expires_at: l.record.meta.absolute_deadline,
        }))
    }

    /// A freshly masked CSRF token for this session (different on every call, all valid);
    /// `None` when there is no session.
    pub async fn csrf_token(&self) -> Result<Option<String>, SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        Ok(st
            .live
            .as_ref()
            .map(|l| csrf::mask_token(&l.record.meta.csrf_secret)))
    }

    /// The CSRF secret if the session is authenticated (the layer's token check).
    pub(crate) async fn authenticated_csrf_secret(
        &self,
    ) -> Result<Option<([u8; 16], Handle, String)>, SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        Ok(st.live.as_ref().and_then(|l| {
            l.record
                .meta
                .user_id
                .clone()
                .map(|u| (l.record.meta.csrf_secret, l.handle(), u))
        }))
    }

    /// Keep the cookie beyond the browser session (up to the absolute deadline), or not.
    pub async fn set_remember_me(&self, remember: bool) -> Result<(), SessionError> {
        if remember {
            self.insert_raw(REMEMBER_ATTR, b"true".to_vec()).await?;
        } else {
            self.remove(REMEMBER_ATTR).await?;
        }
        let mut st = self.0.state.lock().await;
        if st.live.is_some() || !st.changes.is_empty() {
            st.cookie = CookieAction::Set;
        }
        Ok(())
    }

    /// Log `user_id` in. The session moves to a new token (the pre-login token is dead
    /// afterwards) with a new CSRF secret, keeping its attributes — unless it belonged to
    /// another user, in which case it is destroyed and a fresh one is created. Sessions of the
    /// user beyond the concurrent-session limit are revoked, oldest first, and audited.
    pub async fn login(&self, user_id: &str) -> Result<(), SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        let shared = &self.0.shared;
        if let Some(live) = &st.live
            && live.user().is_some_and(|u| u != user_id)
        {
            let (key, handle, previous) = (
                live.token.key(),
                live.handle(),
                live.user().map(str::to_owned),
            );
            self.manager().destroy(&key).await?;
            metrics::ended("logout", 1);
            shared
                .audit(
                    AuditEvent::new(AuditKind::Destroyed)
                        .handle(handle)
                        .user(previous.as_deref())
                        .detail("another user logged in on this browser"),
                )
                .await;
            st.live = None;
        }
        let login = match &st.live {
            Some(_) => {
                // Pending changes travel with the session into its new token.
                self.save_locked(&mut st).await?;
                let live = st.live.as_ref().expect("checked above");
                let old = live.handle();
                let login = self.manager().login(&live.token, user_id).await?;
                metrics::rotation("login");
                shared
                    .audit(
                        AuditEvent::new(AuditKind::Rotated)
                            .handle(old)
                            .user(Some(user_id))
                            .detail(format!("login; new handle {}", login.token.key().handle())),
                    )
                    .await;
                login
            }
            None => {
                let login = self
                    .manager()
                    .login_fresh(user_id, self.0.fingerprint)
                    .await?;
                metrics::created();
                shared
                    .audit(
                        AuditEvent::new(AuditKind::Created)
                            .handle(login.token.key().handle())
                            .user(Some(user_id))
                            .detail("login"),
                    )
                    .await;
                login
            }
        };
        for handle in &login.evicted {
            shared
                .audit(
                    AuditEvent::new(AuditKind::EvictedByLimit)
                        .handle(*handle)
                        .user(Some(user_id))
                        .detail("over the concurrent-session limit at login; oldest revoked"),
                )
                .await;
        }
        metrics::ended("evicted", login.evicted.len() as u64);
        st.live = Some(Live {
            token: login.token,
            record: login.record,
        });
        st.cookie = CookieAction::Set;
        self.save_locked(&mut st).await
    }

    /// Move the session to a new token with a new CSRF secret (privilege change). Does nothing
    /// when there is no session.
    pub async fn rotate(&self) -> Result<(), SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        self.save_locked(&mut st).await?;
        let Some(live) = &st.live else {
            return Ok(());
        };
        let old = live.handle();
        let (token, record) = self.manager().rotate(&live.token).await?;
        metrics::rotation("privilege");
        self.0
            .shared
            .audit(
                AuditEvent::new(AuditKind::Rotated)
                    .handle(old)
                    .user(record.meta.user_id.as_deref())
                    .detail(format!(
                        "privilege change; new handle {}",
                        token.key().handle()
                    )),
            )
            .await;
        st.live = Some(Live { token, record });
        st.cookie = CookieAction::Set;
        Ok(())
    }

    /// Log out: destroy the session server-side, drop pending changes, send the removal cookie.
    pub async fn logout(&self) -> Result<(), SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        st.changes.clear();
        if let Some(live) = st.live.take() {
            if let Err(e) = self.manager().destroy(&live.token.key()).await {
                st.live = Some(live);
                return Err(e.into());
            }
            metrics::ended("logout", 1);
            self.0
                .shared
                .audit(
                    AuditEvent::new(AuditKind::Destroyed)
                        .handle(live.handle())
                        .user(live.user())
                        .detail("logout"),
                )
                .await;
        }
        if self.0.cookie.is_some() || st.cookie == CookieAction::Set {
            st.cookie = CookieAction::Remove;
        }
        Ok(())
    }

    fn authenticated(st: &State) -> Result<(&Live, &str), SessionError> {
        let live = st.live.as_ref().ok_or(SessionError::Unauthenticated)?;
        let user = live.user().ok_or(SessionError::Unauthenticated)?;
        Ok((live, user))
    }

    /// The logged-in user's live sessions, oldest first (this one included).
    pub async fn list_user_sessions(&self) -> Result<Vec<SessionSummary>, SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        let (_, user) = Self::authenticated(&st)?;
        Ok(self.manager().list_user(user).await?)
    }

    /// The current session's handle, if there is a session.
    pub async fn handle(&self) -> Result<Option<Handle>, SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        Ok(st.live.as_ref().map(Live::handle))
    }

    /// Log out every other session of the logged-in user; returns how many ended.
    pub async fn revoke_other_sessions(&self) -> Result<u64, SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        let (live, user) = Self::authenticated(&st)?;
        let key = live.token.key();
        let others: Vec<Handle> = self
            .manager()
            .list_user(user)
            .await?
            .into_iter()
            .filter(|s| s.key != key)
            .map(|s| s.handle)
            .collect();
        let n = self.manager().revoke_user(user, Some(&key)).await?;
        metrics::ended("revoked_by_user", n);
        for handle in others {
            self.0
                .shared
                .audit(
                    AuditEvent::new(AuditKind::RevokedByUser)
                        .handle(handle)
                        .user(Some(user))
                        .detail(format!("log out other sessions, from {}", live.handle())),
                )
                .await;
        }
        Ok(n)
    }

    /// Revoke one of the logged-in user's sessions by handle. `false` when the user has no such
    /// session (so a caller answers 404 without learning whether it is someone else's). Revoking
    /// the current session is a logout.
    pub async fn revoke_session(&self, handle: &Handle) -> Result<bool, SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        let (live, user) = Self::authenticated(&st)?;
        let user = user.to_owned();
        let current = live.handle() == *handle;
        if !self.manager().revoke_handle(&user, handle).await? {
            return Ok(false);
        }
        metrics::ended("revoked_by_user", 1);
        self.0
            .shared
            .audit(
                AuditEvent::new(AuditKind::RevokedByUser)
                    .handle(*handle)
                    .user(Some(&user))
                    .detail(if current {
                        "own current session"
                    } else {
                        "from another session"
                    }),
            )
            .await;
        if current {
            st.live = None;
            st.changes.clear();
            st.cookie = CookieAction::Remove;
        }
        Ok(true)
    }

    /// Log the user out everywhere, this session included (the removal cookie is sent).
    pub async fn logout_everywhere(&self) -> Result<u64, SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        let (_, user) = Self::authenticated(&st)?;
        let user = user.to_owned();
        let n = crate::control::revoke_all(
            &self.0.shared,
            &user,
            crate::control::RevokeReason::LogoutEverywhere,
        )
        .await?;
        st.live = None;
        st.changes.clear();
        st.cookie = CookieAction::Remove;
        Ok(n)
    }

    /// Write pending changes now instead of after the handler, to handle a failure in the
    /// handler. Creates the session (and sets the cookie) if there is none yet.
    pub async fn save(&self) -> Result<(), SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        self.save_locked(&mut st).await
    }

    /// After the handler: save unless the response is a server error, and work out the cookie.
    pub(crate) async fn finish(&self, server_error: bool) -> Outcome {
        let mut st = self.0.state.lock().await;
        let mut error = None;
        if server_error {
            // Never persist what a failed request half-did.
            st.changes.clear();
        } else if !st.changes.is_empty() {
            let saved = match self.load(&mut st).await {
                Ok(()) => self.save_locked(&mut st).await,
                Err(e) => Err(e),
            };
            error = saved.err();
        }
        let spec: &CookieSpec = &self.0.shared.cookie;
        let set_cookie = match st.cookie {
            CookieAction::Keep => None,
            CookieAction::Remove => Some(spec.removal()),
            CookieAction::Set => st.live.as_ref().map(|l| {
                let persistent = self.0.shared.config.cookie.persistent
                    || l.record.attrs.get(REMEMBER_ATTR).map(Vec::as_slice) == Some(b"true");
                let max_age =
                    persistent.then(|| (l.record.meta.absolute_deadline - now_ms()).max(0) / 1000);
                spec.set(&l.token, max_age)
            }),
        };
        Outcome { error, set_cookie }
    }
}
