//! What every handler can reach.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use ratatoskr_axum::SessionControl;
use ratatoskr_core::SessionManager;

use crate::audit::AuditTrail;
use crate::configuration::Settings;
use crate::crypto::{Hasher, TokenCipher};
use crate::db::Db;
use crate::limits::Limits;
use crate::routes::sessions::Stripes;
use crate::stores::Stores;
use crate::templates::Templates;

/// Shared application state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// Session policy over the configured store.
    pub sessions: SessionManager,
    /// Session administration with audit events (revoke a user's sessions, one by handle).
    pub control: SessionControl,
    /// The application's tables.
    pub db: Db,
    /// The opened stores (health, audit queries).
    pub stores: Stores,
    /// Seals platform tokens.
    pub cipher: TokenCipher,
    /// The configuration.
    pub settings: Arc<Settings>,
    /// Page templates.
    pub templates: Arc<Templates>,
    /// The Prometheus exposition.
    pub metrics: PrometheusHandle,
    /// The bounded password-hashing pool.
    pub hasher: Hasher,
    /// Per-client rate limits on login, registration and password change.
    pub limits: Limits,
    /// The audit trail: rows for users' events, hourly counters for anonymous ones.
    pub audit: AuditTrail,
    /// Serializes preference writes per session.
    pub pref_locks: Arc<Stripes>,
}
