//! What every handler can reach, and the services made from it.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use ratatoskr_axum::SessionControl;
use ratatoskr_core::SessionManager;

use crate::configuration::Settings;
use crate::db::Db;
use crate::services::accounts::Accounts;
use crate::services::analytics::Analytics;
use crate::services::audit::AuditTrail;
use crate::services::hasher::Hasher;
use crate::services::limits::Limits;
use crate::services::platforms::Platforms;
use crate::services::preferences::{Preferences, Stripes};
use crate::services::sessions::Sessions;
use crate::services::tokens::TokenCipher;
use crate::stores::Stores;
use crate::web::templates::Templates;

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

impl AppState {
    /// Accounts: login, registration, passwords, disabling.
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts {
            db: &self.db,
            hasher: &self.hasher,
            control: &self.control,
        }
    }

    /// Platform connections.
    pub fn platforms(&self) -> Platforms<'_> {
        Platforms {
            db: &self.db,
            cipher: &self.cipher,
        }
    }

    /// Session listings.
    pub fn session_list(&self) -> Sessions<'_> {
        Sessions {
            manager: &self.sessions,
            db: &self.db,
        }
    }

    /// A session's preferences.
    pub fn preferences(&self) -> Preferences<'_> {
        Preferences {
            manager: &self.sessions,
            locks: &self.pref_locks,
        }
    }

    /// Analytics figures and housekeeping.
    pub fn analytics(&self) -> Analytics<'_> {
        Analytics {
            db: &self.db,
            audit: &self.audit,
            manager: &self.sessions,
        }
    }
}
