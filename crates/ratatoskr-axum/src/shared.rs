//! What every request and every [`SessionControl`](crate::SessionControl) share: the manager,
//! the configuration, and the one place a lifecycle step is counted and audited.

use ratatoskr_core::{AuditEvent, SessionManager};

use crate::config::SessionConfig;
use crate::cookie::CookieSpec;
use crate::csrf::OriginPolicy;
use crate::metrics;

/// What the layer knows before any handler runs; shared by every request.
pub(crate) struct Shared {
    pub manager: SessionManager,
    pub config: SessionConfig,
    pub cookie: CookieSpec,
    pub origin: OriginPolicy,
}

/// What a lifecycle step adds to the counters listed in [`crate::metrics`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tally {
    /// `ratatoskr_sessions_created_total`.
    Created,
    /// `ratatoskr_session_rotations_total{cause}`.
    Rotated(&'static str),
    /// `ratatoskr_sessions_ended_total{cause}`, by the given number of sessions.
    Ended(&'static str, u64),
}

impl Shared {
    /// Record an audit event that no counter goes with (refusals, expiries: counted elsewhere).
    pub async fn audit(&self, event: AuditEvent) {
        self.config.audit.record(event).await;
    }

    /// Count a lifecycle step and record its audit events. Every created, rotated or ended
    /// session goes through here, so none is counted without being audited or the reverse.
    pub async fn record(&self, tally: Tally, events: impl IntoIterator<Item = AuditEvent>) {
        match tally {
            Tally::Created => metrics::created(),
            Tally::Rotated(cause) => metrics::rotation(cause),
            Tally::Ended(cause, n) => metrics::ended(cause, n),
        }
        for event in events {
            self.audit(event).await;
        }
    }
}
