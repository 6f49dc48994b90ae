//! The session's own lifecycle: login (with rotation and the concurrent-session limit),
//! rotation at a privilege change, logout. Each step happens at once and sets or clears the
//! cookie.

use std::sync::Arc;

use ratatoskr_core::{AuditEvent, AuditKind, Handle, Token};

use super::persist::pending_attrs;
use super::{CookieAction, Live, Session};
use crate::error::SessionError;
use crate::shared::Tally;

impl Session {
    /// Log `user_id` in. The session moves to a new token (the pre-login token is dead
    /// afterwards) with a new CSRF secret, keeping its attributes — unless it belonged to
    /// another user, in which case it is destroyed and a fresh one is created. Sessions of the
    /// user beyond the concurrent-session limit are revoked, oldest first, and audited.
    pub async fn login(&self, user_id: &str) -> Result<(), SessionError> {
        let mut st = self.loaded().await?;
        if let Some(live) = &st.live
            && live.user().is_some_and(|u| u != user_id)
        {
            self.destroy(live, "another user logged in on this browser")
                .await?;
            st.live = None;
        }
        let login = match &st.live {
            Some(live) => {
                // The session this request loaded is rotated as it is (no second load). Its
                // pending changes stay pending: they travel into the new token with whatever the
                // handler changes next, in one write after the handler.
                let login = self
                    .manager()
                    .login_loaded(&live.token, &live.record, user_id)
                    .await?;
                self.rotated(
                    live.handle(),
                    &login.token,
                    Some(user_id),
                    ("login", "login"),
                )
                .await;
                login
            }
            None => {
                // The fresh session is created with the pending attributes (one write).
                let login = self
                    .manager()
                    .login_fresh_with(user_id, self.0.fingerprint, pending_attrs(&st))
                    .await?;
                st.changes.clear();
                let created = AuditEvent::new(AuditKind::Created)
                    .handle(login.token.key().handle())
                    .user(Some(user_id))
                    .detail("login");
                self.shared().record(Tally::Created, [created]).await;
                login
            }
        };
        let evicted: Vec<AuditEvent> = login
            .evicted
            .iter()
            .map(|handle| {
                AuditEvent::new(AuditKind::EvictedByLimit)
                    .handle(*handle)
                    .user(Some(user_id))
                    .detail("over the concurrent-session limit at login; oldest revoked")
            })
            .collect();
        self.shared()
            .record(Tally::Ended("evicted", login.evicted.len() as u64), evicted)
            .await;
        st.live = Some(Live {
            token: login.token,
            record: Arc::new(login.record),
        });
        st.cookie = CookieAction::Set;
        Ok(())
    }

    /// Move the session to a new token with a new CSRF secret (privilege change). Does nothing
    /// when there is no session.
    pub async fn rotate(&self) -> Result<(), SessionError> {
        let mut st = self.loaded().await?;
        self.save_locked(&mut st).await?;
        let Some(live) = &st.live else {
            return Ok(());
        };
        let (token, record) = self
            .manager()
            .rotate_loaded(&live.token, &live.record)
            .await?;
        self.rotated(
            live.handle(),
            &token,
            record.meta.user_id.as_deref(),
            ("privilege", "privilege change"),
        )
        .await;
        st.live = Some(Live {
            token,
            record: Arc::new(record),
        });
        st.cookie = CookieAction::Set;
        Ok(())
    }

    /// Log out: destroy the session server-side, drop pending changes, send the removal cookie.
    pub async fn logout(&self) -> Result<(), SessionError> {
        let mut st = self.loaded().await?;
        st.changes.clear();
        if let Some(live) = &st.live {
            self.destroy(live, "logout").await?;
            st.live = None;
        }
        if self.0.cookie.is_some() || st.cookie == CookieAction::Set {
            st.cookie = CookieAction::Remove;
        }
        Ok(())
    }

    /// Destroy `live` server-side, counted as a logout and audited with `detail`.
    async fn destroy(&self, live: &Live, detail: &'static str) -> Result<(), SessionError> {
        self.manager().destroy(&live.token.key()).await?;
        let destroyed = AuditEvent::new(AuditKind::Destroyed)
            .handle(live.handle())
            .user(live.user())
            .detail(detail);
        self.shared()
            .record(Tally::Ended("logout", 1), [destroyed])
            .await;
        Ok(())
    }

    /// Count a rotation from `old` to `new` under `cause` and audit it with `reason`.
    async fn rotated(
        &self,
        old: Handle,
        new: &Token,
        user: Option<&str>,
        (cause, reason): (&'static str, &str),
    ) {
        let event = AuditEvent::new(AuditKind::Rotated)
            .handle(old)
            .user(user)
            .detail(format!("{reason}; new handle {}", new.key().handle()));
        self.shared().record(Tally::Rotated(cause), [event]).await;
    }
}
