//! Session administration outside the current request's session: revoke all of a user's
//! sessions (password change, account disabled, admin action) or one by handle.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use ratatoskr_core::{AuditEvent, AuditKind, Handle, SessionManager, SessionSummary};

use crate::error::SessionError;
use crate::metrics;
use crate::session::Shared;

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
    fn kind(self) -> AuditKind {
        match self {
            RevokeReason::Admin => AuditKind::RevokedByAdmin,
            _ => AuditKind::RevokedAll,
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
        revoke_all(&self.0, user_id, reason).await
    }

    /// End one session of `user_id` by handle, as an administrator. `false` if the user has no
    /// such session.
    pub async fn revoke_handle(
        &self,
        user_id: &str,
        handle: &Handle,
    ) -> Result<bool, SessionError> {
        let ended = self.0.manager.revoke_handle(user_id, handle).await?;
        if ended {
            metrics::ended("revoked_by_admin", 1);
            self.0
                .audit(
                    AuditEvent::new(AuditKind::RevokedByAdmin)
                        .handle(*handle)
                        .user(Some(user_id))
                        .detail("admin"),
                )
                .await;
        }
        Ok(ended)
    }
}

pub(crate) async fn revoke_all(
    shared: &Shared,
    user_id: &str,
    reason: RevokeReason,
) -> Result<u64, SessionError> {
    // Listed first so each ended session gets its own audit event.
    let sessions = shared.manager.list_user(user_id).await?;
    let n = shared.manager.revoke_user(user_id, None).await?;
    metrics::ended(
        if reason == RevokeReason::Admin {
            "revoked_by_admin"
        } else {
            "revoked_all"
        },
        n,
    );
    for s in sessions {
        shared
            .audit(
                AuditEvent::new(reason.kind())
                    .handle(s.handle)
                    .user(Some(user_id))
                    .detail(reason.as_str()),
            )
            .await;
    }
    Ok(n)
}

impl<S: Send + Sync> FromRequestParts<S> for SessionControl {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<SessionControl>()
            .cloned()
            .ok_or(SessionError::LayerMissing)
    }
}
