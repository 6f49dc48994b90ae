//! The request's session: loaded on first use, written back as a delta after the handler.
//!
//! - this module: the [`Session`] handle, its per-request state and the read-only facts;
//! - [`persist`]: loading the cookie's session, writing changes, the cookie to send;
//! - [`attrs`]: attribute access (raw, JSON, typed [`SessionValue`]s, "remember me");
//! - [`lifecycle`]: login, rotation, logout;
//! - [`account`]: the logged-in user's other sessions (list, revoke).

mod account;
mod attrs;
mod lifecycle;
mod persist;

use std::collections::BTreeMap;
use std::sync::Arc;

use ratatoskr_core::{Handle, Millis, Record, SessionManager, Token};
use tokio::sync::{Mutex, MutexGuard};

use crate::control::SessionControl;
use crate::csrf;
use crate::error::SessionError;
use crate::shared::Shared;

pub use attrs::{REMEMBER_ATTR, SessionValue};

/// The current session, as a handler sees it. Cheap to clone; all clones are the same session.
///
/// Nothing is read from the store until a method needs it, so a handler that never touches the
/// session costs no store call. Changes are collected and written after the handler returns,
/// as one [`Delta`](ratatoskr_core::Delta) of the attributes that changed — unless the response
/// is a 5xx. Values are JSON. Lifecycle operations ([`login`](Self::login),
/// [`rotate`](Self::rotate), [`logout`](Self::logout), revocations) happen at once and set or
/// clear the cookie.
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

impl State {
    /// The session and its user, or `Unauthenticated`.
    fn authenticated(&self) -> Result<(&Live, &str), SessionError> {
        let live = self.live.as_ref().ok_or(SessionError::Unauthenticated)?;
        let user = live.user().ok_or(SessionError::Unauthenticated)?;
        Ok((live, user))
    }

    /// The session is gone (logged out or revoked): forget it and send the removal cookie.
    fn ended(&mut self) {
        self.live = None;
        self.changes.clear();
        self.cookie = CookieAction::Remove;
    }
}

struct Live {
    token: Token,
    /// Shared with the near cache on a hit (no copy per read); a write copies it on change.
    record: Arc<Record>,
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

    fn shared(&self) -> &Shared {
        &self.0.shared
    }

    /// After the handler, without waiting, when the outcome needs no store call: nothing was
    /// changed (or the response is a server error, whose changes are dropped) and no cookie is
    /// due — the common read. `None` when [`finish`](Self::finish) must run (or the state is
    /// locked by a clone the handler kept). The same outcome `finish` would give.
    pub(crate) fn finish_unchanged(&self, server_error: bool) -> Option<persist::Outcome> {
        let mut st = self.0.state.try_lock().ok()?;
        if st.cookie != CookieAction::Keep {
            return None;
        }
        if server_error {
            // Never persist what a failed request half-did.
            st.changes.clear();
        } else if !st.changes.is_empty() {
            return None;
        }
        Some(persist::Outcome {
            error: None,
            set_cookie: None,
        })
    }

    /// Session administration through the same layer (the [`SessionControl`] extractor).
    pub(crate) fn control(&self) -> SessionControl {
        SessionControl(self.0.shared.clone())
    }

    fn manager(&self) -> &SessionManager {
        &self.0.shared.manager
    }

    /// The state, with the cookie's session loaded (once per request).
    async fn loaded(&self) -> Result<MutexGuard<'_, State>, SessionError> {
        let mut st = self.0.state.lock().await;
        self.load(&mut st).await?;
        Ok(st)
    }

    /// The logged-in user, if any.
    pub async fn user_id(&self) -> Result<Option<String>, SessionError> {
        let st = self.loaded().await?;
        Ok(st.live.as_ref().and_then(|l| l.user().map(str::to_owned)))
    }

    /// The current session's handle, if there is a session.
    pub async fn handle(&self) -> Result<Option<Handle>, SessionError> {
        let st = self.loaded().await?;
        Ok(st.live.as_ref().map(Live::handle))
    }

    /// Public facts about the session; `None` when there is none.
    pub async fn info(&self) -> Result<Option<SessionInfo>, SessionError> {
        let st = self.loaded().await?;
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
        let st = self.loaded().await?;
        Ok(st
            .live
            .as_ref()
            .map(|l| csrf::mask_token(&l.token.csrf_secret())))
    }

    /// The CSRF secret if the session is authenticated (the layer's token check).
    pub(crate) async fn authenticated_csrf_secret(&self) -> Result<Option<[u8; 16]>, SessionError> {
        let st = self.loaded().await?;
        Ok(st
            .live
            .as_ref()
            .filter(|l| l.user().is_some())
            .map(|l| l.token.csrf_secret()))
    }

    /// Whether the request presented a well-formed session cookie.
    pub(crate) fn has_cookie(&self) -> bool {
        self.0.cookie.is_some()
    }

    /// The handle of the presented cookie's token, if any (no store call), for a refusal to
    /// name.
    pub(crate) fn cookie_handle(&self) -> Option<Handle> {
        self.0.cookie.as_ref().map(|t| t.key().handle())
    }

    /// The loaded session's handle and user, for a CSRF refusal of an authenticated session
    /// to name (worked out only then: the handle is a SHA-256 run).
    pub(crate) async fn authenticated_subject(&self) -> (Option<Handle>, Option<String>) {
        let st = self.0.state.lock().await;
        match &st.live {
            Some(l) => (Some(l.handle()), l.user().map(str::to_owned)),
            None => (None, None),
        }
    }
}
