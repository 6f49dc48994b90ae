//! An audit trail of session lifecycle events, behind one small trait.
//!
//! Events name sessions by [`Handle`], never by token or key, so the trail can be read by people
//! and shipped to a log system without exposing anything usable. `ratatoskr-sql` provides a
//! durable implementation; [`MemoryAudit`] keeps events in memory for tests; [`TracingAudit`]
//! writes them to the log.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::record::{Millis, now_ms};
use crate::token::Handle;

/// What happened to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditKind {
    /// A session was created.
    Created,
    /// A session moved to a new token (login, privilege change).
    Rotated,
    /// A session was destroyed by its owner (logout).
    Destroyed,
    /// A session reached its idle or absolute deadline.
    Expired,
    /// A session was revoked because its user went over the concurrent-session limit.
    EvictedByLimit,
    /// A session was revoked by its user from another session ("your sessions").
    RevokedByUser,
    /// A session was revoked by an administrator.
    RevokedByAdmin,
    /// All of a user's sessions were revoked (password change, account disabled).
    RevokedAll,
    /// The request's fingerprint did not match the one recorded at creation.
    FingerprintMismatch,
    /// An unsafe request was refused by the CSRF defences.
    CsrfRefused,
}

impl AuditKind {
    /// The stable snake_case name used in storage and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Created => "created",
            AuditKind::Rotated => "rotated",
            AuditKind::Destroyed => "destroyed",
            AuditKind::Expired => "expired",
            AuditKind::EvictedByLimit => "evicted_by_limit",
            AuditKind::RevokedByUser => "revoked_by_user",
            AuditKind::RevokedByAdmin => "revoked_by_admin",
            AuditKind::RevokedAll => "revoked_all",
            AuditKind::FingerprintMismatch => "fingerprint_mismatch",
            AuditKind::CsrfRefused => "csrf_refused",
        }
    }

    /// Parse the stable name back.
    pub fn parse(s: &str) -> Option<Self> {
        ALL_KINDS.iter().copied().find(|k| k.as_str() == s)
    }
}

/// Every kind, for iteration (reports, metrics registration).
pub const ALL_KINDS: [AuditKind; 10] = [
    AuditKind::Created,
    AuditKind::Rotated,
    AuditKind::Destroyed,
    AuditKind::Expired,
    AuditKind::EvictedByLimit,
    AuditKind::RevokedByUser,
    AuditKind::RevokedByAdmin,
    AuditKind::RevokedAll,
    AuditKind::FingerprintMismatch,
    AuditKind::CsrfRefused,
];

/// One audit event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// When it happened.
    pub at: Millis,
    /// What happened.
    pub kind: AuditKind,
    /// The session concerned, if any (a CSRF refusal on an anonymous request has none).
    pub handle: Option<Handle>,
    /// The user concerned, if known.
    pub user_id: Option<String>,
    /// Free-form detail (a reason, the new handle after rotation…). Never a token.
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event of `kind` now, with nothing else filled in.
    pub fn new(kind: AuditKind) -> Self {
        AuditEvent {
            at: now_ms(),
            kind,
            handle: None,
            user_id: None,
            detail: None,
        }
    }

    /// Builder: the session concerned.
    pub fn handle(mut self, handle: Handle) -> Self {
        self.handle = Some(handle);
        self
    }

    /// Builder: the user concerned.
    pub fn user(mut self, user_id: Option<&str>) -> Self {
        self.user_id = user_id.map(str::to_owned);
        self
    }

    /// Builder: a detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Where audit events go. Recording must not fail the request that caused the event: an
/// implementation logs its own failures and returns.
#[async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Record one event.
    async fn record(&self, event: AuditEvent);
}

/// Keeps events in memory (tests, demos).
#[derive(Default)]
pub struct MemoryAudit(Mutex<Vec<AuditEvent>>);

impl MemoryAudit {
    /// A copy of every event recorded so far.
    pub fn events(&self) -> Vec<AuditEvent> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl AuditSink for MemoryAudit {
    async fn record(&self, event: AuditEvent) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }
}

/// Writes events to the `tracing` log at INFO, target `ratatoskr::audit`.
#[derive(Default, Clone, Copy)]
pub struct TracingAudit;

#[async_trait]
impl AuditSink for TracingAudit {
    async fn record(&self, e: AuditEvent) {
        tracing::info!(
            target: "ratatoskr::audit",
            kind = e.kind.as_str(),
            handle = e.handle.map(|h| h.to_string()),
            user = e.user_id,
            detail = e.detail,
            "session audit event"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in ALL_KINDS {
            assert_eq!(AuditKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(AuditKind::parse("nope"), None);
    }
}
