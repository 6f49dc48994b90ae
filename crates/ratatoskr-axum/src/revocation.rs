//! Ending sessions other than by logging out of the current one: all of a user's sessions (with
//! or without an exception) or one by handle. Used by the user's own [`Session`](crate::Session)
//! ("log out other sessions", "log out everywhere", "revoke that device") and by
//! [`SessionControl`](crate::SessionControl) (password change, account disabled, admin action).

use ratatoskr_core::{AuditEvent, AuditKind, Handle, SessionKey};

use crate::error::SessionError;
use crate::shared::{Shared, Tally};

/// How ended sessions are recorded: the audit kind and detail, and the
/// `ratatoskr_sessions_ended_total` cause.
pub(crate) struct Ending<'a> {
    pub kind: AuditKind,
    pub cause: &'static str,
    pub detail: &'a str,
}

impl Ending<'_> {
    fn event(&self, handle: Handle, user_id: &str) -> AuditEvent {
        AuditEvent::new(self.kind)
            .handle(handle)
            .user(Some(user_id))
            .detail(self.detail)
    }
}

impl Shared {
    /// End every session of `user_id` except `except`; returns how many ended. Also refuses any
    /// session for the user that was being created at the same moment (the store contract).
    pub async fn revoke_user(
        &self,
        user_id: &str,
        except: Option<&SessionKey>,
        ending: Ending<'_>,
    ) -> Result<u64, SessionError> {
        // Listed first so each ended session gets its own audit event.
        let ended: Vec<Handle> = self
            .manager
            .list_user(user_id)
            .await?
            .into_iter()
            .filter(|s| Some(&s.key) != except)
            .map(|s| s.handle)
            .collect();
        // The store's count is what ended; the list above may include sessions that expired
        // meanwhile.
        let n = self.manager.revoke_user(user_id, except).await?;
        self.record(
            Tally::Ended(ending.cause, n),
            ended.into_iter().map(|h| ending.event(h, user_id)),
        )
        .await;
        Ok(n)
    }

    /// End one session of `user_id` by handle. `false` if the user has no such session.
    pub async fn revoke_handle(
        &self,
        user_id: &str,
        handle: &Handle,
        ending: Ending<'_>,
    ) -> Result<bool, SessionError> {
        let ended = self.manager.revoke_handle(user_id, handle).await?;
        if ended {
            self.record(
                Tally::Ended(ending.cause, 1),
                [ending.event(*handle, user_id)],
            )
            .await;
        }
        Ok(ended)
    }
}
