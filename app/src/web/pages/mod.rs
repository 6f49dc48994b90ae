//! HTML pages and their forms: `/login`, `/`, `/platforms`, `/sessions`, `/admin`, one module
//! per page family. Forms post urlencoded bodies with the `csrf_token` field and are answered
//! with a redirect (a flash message in the session says what happened) or with the page again
//! showing the error.

mod admin;
mod assets;
mod auth;
mod common;
mod platforms;
mod sessions;

use axum::Router;

use crate::web::state::AppState;

pub use assets::{method_not_allowed, not_found};

/// Every page route (assets included).
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(auth::router())
        .merge(platforms::router())
        .merge(sessions::router())
        .merge(admin::router())
        .merge(assets::router())
}
