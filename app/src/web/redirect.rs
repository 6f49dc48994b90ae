//! Redirects the pages answer with.

use axum::response::{IntoResponse, Redirect, Response};

/// `303 See Other` to `to`.
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Redirect to the login page with a fixed reason (`login_required`, `logged_out`, …).
pub fn to_login(reason: &'static str) -> Response {
    see_other(&format!("/login?reason={reason}"))
}
