//! Session administration outside the current request's session: revoke all of a user's
//! sessions (password change, account disabled, admin action) or one by handle.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use ratatoskr_core::{AuditKind, Handle, SessionManager, SessionSummary};

use crate::error::SessionError;
use crate::revocation::Ending;
use crate::shared::Shared;

/// Why all of a user's sessions are being revoked; recorded in the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeReason {
    /// The user changed their password (ASVS 7.4.3): every session ends.
    PasswordChanged,
    /// The account was disabled or deleted (ASVS 7.4.2).
    AccountDisabled,
    /// An administrator ended them (ASVS 7.4.5).
    Admin,
    /// The user chose "log out everywhere".
    LogoutEverywhere,
}

impl RevokeReason {
    /// How the sessions it ends are audited and counted.
    pub(crate) fn ending(self) -> Ending<'static> {
        match self {
            RevokeReason::Admin => ADMIN,
            _ => Ending {
                kind: AuditKind::RevokedAll,
                cause: "revoked_all",
                detail: self.as_str(),
            },
        }
    }

    /// A stable name for the audit detail.
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::PasswordChanged => "password_changed",
            RevokeReason::AccountDisabled => "account_disabled",
            RevokeReason::Admin => "admin",
            RevokeReason::LogoutEverywhere => "logout_everywhere",
        }
    }
}

/// Administration of sessions, with audit events. Get it from
/// [`SessionLayer::control`](crate::SessionLayer::control) or extract it in a handler behind
/// the layer.
#[derive(Clone)]
pub struct SessionControl(pub(crate) Arc<Shared>);

impl SessionControl {
    /// The manager underneath.
    pub fn manager(&self) -> &SessionManager {
        &self.0.manager
    }

    /// A user's live sessions, oldest first.
    pub async fn list_user(&self, user_id: &str) -> Result<Vec<SessionSummary>, SessionError> {
        Ok(self.0.manager.list_user(user_id).await?)
    }

    /// End every session of `user_id`. Also refuses any session for the user that was being
    /// created at the same moment (the store contract). Returns how many ended.
    pub async fn revoke_user(
        &self,
        user_id: &str,
        reason: RevokeReason,
    ) -> Result<u64, SessionError> {
        self.0.revoke_user(user_id, None, reason.ending()).await
    }

    /// End one session of `user_id` by handle, as an administrator. `false` if the user has no
    /// such session.
    pub async fn revoke_handle(
        &self,
        user_id: &str,
        handle: &Handle,
    ) -> Result<bool, SessionError> {
        self.0.revoke_handle(user_id, handle, ADMIN).await
    }
}

/// An administrator's revocation.
const ADMIN: Ending<'static> = Ending {
    kind: AuditKind::RevokedByAdmin,
    cause: "revoked_by_admin",
    detail: "admin",
};

impl<S: Send + Sync> FromRequestParts<S> for SessionControl {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The layer's one extension is the session; its control shares the layer's state.
        parts
            .extensions
            .get::<crate::Session>()
            .map(crate::Session::control)
            .ok_or(SessionError::LayerMissing)
    }
}
