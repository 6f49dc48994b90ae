//! The JSON API and the probes, one module (and one router) per route family.

pub mod admin;
pub mod auth;
pub mod health;
pub mod platforms;
pub mod sessions;

use axum::Router;

use crate::web::state::AppState;

/// Every API route.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(auth::router())
        .merge(platforms::router())
        .merge(sessions::router())
        .merge(admin::router())
}
