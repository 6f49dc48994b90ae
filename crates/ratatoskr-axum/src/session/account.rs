//! The logged-in user's sessions as seen from one of them: list them, revoke one, revoke the
//! others, or all. The revocation itself is shared with
//! [`SessionControl`](crate::SessionControl) (`crate::revocation`).

use ratatoskr_core::{AuditKind, Handle, SessionSummary};

use super::Session;
use crate::control::RevokeReason;
use crate::error::SessionError;
use crate::revocation::Ending;

/// Sessions the user ended from one of their own.
const BY_USER: &str = "revoked_by_user";

impl Session {
    /// The logged-in user's live sessions, oldest first (this one included).
    pub async fn list_user_sessions(&self) -> Result<Vec<SessionSummary>, SessionError> {
        let st = self.loaded().await?;
        let (_, user) = st.authenticated()?;
        Ok(self.manager().list_user(user).await?)
    }

    /// Log out every other session of the logged-in user; returns how many ended.
    pub async fn revoke_other_sessions(&self) -> Result<u64, SessionError> {
        let st = self.loaded().await?;
        let (live, user) = st.authenticated()?;
        let detail = format!("log out other sessions, from {}", live.handle());
        let ending = Ending {
            kind: AuditKind::RevokedByUser,
            cause: BY_USER,
            detail: &detail,
        };
        self.shared()
            .revoke_user(user, Some(&live.token.key()), ending)
            .await
    }

    /// Revoke one of the logged-in user's sessions by handle. `false` when the user has no such
    /// session (so a caller answers 404 without learning whether it is someone else's). Revoking
    /// the current session is a logout.
    pub async fn revoke_session(&self, handle: &Handle) -> Result<bool, SessionError> {
        let mut st = self.loaded().await?;
        let (live, user) = st.authenticated()?;
        let current = live.handle() == *handle;
        let ending = Ending {
            kind: AuditKind::RevokedByUser,
            cause: BY_USER,
            detail: if current {
                "own current session"
            } else {
                "from another session"
            },
        };
        let ended = self.shared().revoke_handle(user, handle, ending).await?;
        if ended && current {
            st.ended();
        }
        Ok(ended)
    }

    /// Log the user out everywhere, this session included (the removal cookie is sent).
    pub async fn logout_everywhere(&self) -> Result<u64, SessionError> {
        let mut st = self.loaded().await?;
        let (_, user) = st.authenticated()?;
        let ending = RevokeReason::LogoutEverywhere.ending();
        let n = self.shared().revoke_user(user, None, ending).await?;
        st.ended();
        Ok(n)
    }
}
