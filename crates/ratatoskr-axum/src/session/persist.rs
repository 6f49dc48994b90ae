//! Between the session and the store: loading the cookie's session (strict mode, fingerprint
//! check), writing pending changes as one delta, and what the response's cookie becomes.

use std::collections::BTreeMap;
use std::sync::Arc;

use ratatoskr_core::record::Delta;
use ratatoskr_core::{AuditEvent, AuditKind, now_ms};

use super::{CookieAction, Live, REMEMBER_ATTR, Session, State};
use crate::config::FingerprintPolicy;
use crate::error::SessionError;
use crate::metrics;
use crate::shared::Tally;

/// What the layer must do to the response once the handler is done.
pub(crate) struct Outcome {
    pub error: Option<SessionError>,
    pub set_cookie: Option<String>,
}

impl Session {
    /// Load the cookie's session once. A failure leaves it unloaded so a later call retries.
    pub(super) async fn load(&self, st: &mut State) -> Result<(), SessionError> {
        if st.loaded {
            return Ok(());
        }
        let Some(token) = &self.0.cookie else {
            st.loaded = true;
            return Ok(());
        };
        let record = self
            .manager()
            .load_shared(token)
            .await
            .inspect_err(|_| metrics::load("error"))?;
        st.loaded = true;
        let Some(record) = record else {
            metrics::load("miss");
            // Strict mode: the token is not adopted. It names no live session: it expired, was
            // ended, or was never issued; stores cannot tell these apart once a session is gone.
            // (Boxed, as the mismatch below: the audit's future would otherwise make every
            // load's future, and so every request's, larger.)
            Box::pin(
                self.shared().audit(
                    AuditEvent::new(AuditKind::Expired)
                        .handle(token.key().handle())
                        .detail("cookie names no live session (expired, ended or never issued)"),
                ),
            )
            .await;
            return Ok(());
        };
        metrics::load("hit");
        let live = Live {
            token: token.clone(),
            record,
        };
        if self.fingerprint_matches(&live) || Box::pin(self.fingerprint_mismatch(&live)).await? {
            st.live = Some(live);
        }
        Ok(())
    }

    /// Whether the stored fingerprint and this request's agree (or either is absent).
    fn fingerprint_matches(&self, live: &Live) -> bool {
        match (live.record.meta.fingerprint, self.0.fingerprint) {
            (Some(stored), Some(now)) => stored == now,
            _ => true,
        }
    }

    /// A fingerprint mismatch: audit it and, under the `Revoke` policy, destroy the session.
    /// `false` when the session is gone.
    async fn fingerprint_mismatch(&self, live: &Live) -> Result<bool, SessionError> {
        let revoke = self.shared().config.fingerprint.policy == FingerprintPolicy::Revoke;
        metrics::fingerprint_mismatch(if revoke { "revoke" } else { "log" });
        let event = AuditEvent::new(AuditKind::FingerprintMismatch)
            .handle(live.handle())
            .user(live.user());
        if !revoke {
            self.shared().audit(event.detail("logged only")).await;
            return Ok(true);
        }
        self.manager().destroy(&live.token.key()).await?;
        self.shared()
            .record(
                Tally::Ended("fingerprint", 1),
                [event.detail("session destroyed; request continues anonymous")],
            )
            .await;
        Ok(false)
    }

    /// Write pending changes: one `create` carrying them if there is no session yet, else one
    /// `apply` of the delta.
    pub(super) async fn save_locked(&self, st: &mut State) -> Result<(), SessionError> {
        if st.changes.is_empty() {
            return Ok(());
        }
        let Some(live) = st.live.as_mut() else {
            let (token, record) = self
                .manager()
                .create_with(None, self.0.fingerprint, pending_attrs(st))
                .await
                .inspect_err(|_| metrics::save("error"))?;
            metrics::save("ok");
            self.shared()
                .record(
                    Tally::Created,
                    [AuditEvent::new(AuditKind::Created).handle(token.key().handle())],
                )
                .await;
            st.live = Some(Live {
                token,
                record: Arc::new(record),
            });
            st.cookie = CookieAction::Set;
            st.changes.clear();
            return Ok(());
        };
        // The pending changes move into the delta, and from there into the loaded record once
        // written (no copy of a name or a value); a failed write puts them back, so that a
        // later `save` sends them again.
        let mut delta = Delta::default();
        for (name, change) in std::mem::take(&mut st.changes) {
            match change {
                Some(v) => delta.set.push((name, v)),
                None => delta.remove.push(name),
            }
        }
        if let Err(e) = self.manager().apply(&live.token.key(), &delta).await {
            metrics::save("error");
            for (name, v) in delta.set {
                st.changes.insert(name, Some(v));
            }
            for name in delta.remove {
                st.changes.insert(name, None);
            }
            return Err(e.into());
        }
        metrics::save("ok");
        Arc::make_mut(&mut live.record).apply_owned(delta);
        Ok(())
    }

    /// Write pending changes now instead of after the handler, to handle a failure in the
    /// handler. Creates the session (and sets the cookie) if there is none yet.
    pub async fn save(&self) -> Result<(), SessionError> {
        let mut st = self.loaded().await?;
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
        let shared = self.shared();
        let set_cookie = match st.cookie {
            CookieAction::Keep => None,
            CookieAction::Remove => Some(shared.cookie.removal()),
            CookieAction::Set => st.live.as_ref().map(|l| {
                let persistent = shared.config.cookie.persistent
                    || l.record.attrs.get(REMEMBER_ATTR).map(Vec::as_slice) == Some(b"true");
                let max_age =
                    persistent.then(|| (l.record.meta.absolute_deadline - now_ms()).max(0) / 1000);
                shared.cookie.set(&l.token, max_age)
            }),
        };
        Outcome { error, set_cookie }
    }
}

/// The attributes a new session starts with: the pending sets (a pending removal has nothing to
/// remove in a session that does not exist yet).
pub(super) fn pending_attrs(st: &State) -> BTreeMap<String, Vec<u8>> {
    st.changes
        .iter()
        .filter_map(|(name, change)| Some((name.clone(), change.clone()?)))
        .collect()
}
