//! What every handler can reach.

use ratatoskr_core::SessionManager;

/// Shared application state (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    /// Session policy over the configured store.
    pub sessions: SessionManager,
}
