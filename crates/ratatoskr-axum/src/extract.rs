//! Extractors: [`Session`], [`AuthUser`], [`CsrfToken`] (and
//! [`SessionControl`](crate::SessionControl)).
//!
//! An application's own context extractor is a few lines on top of typed session access; see
//! `examples/typed_context.rs`:
//!
//! ```
//! use axum::{extract::FromRequestParts, http::{request::Parts, StatusCode}, response::{IntoResponse, Response}};
//! use ratatoskr_axum::{json_error, Session, SessionValue};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct ActivePlatform { id: i64, name: String }
//! impl SessionValue for ActivePlatform { const KEY: &'static str = "active_platform"; }
//!
//! impl<S: Send + Sync> FromRequestParts<S> for ActivePlatform {
//!     type Rejection = Response;
//!     async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
//!         let session = Session::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
//!         match session.get_value::<ActivePlatform>().await {
//!             Ok(Some(p)) => Ok(p),
//!             Ok(None) => Err(json_error(StatusCode::CONFLICT, "no_active_platform", "choose a platform first")),
//!             Err(e) => Err(e.into_response()),
//!         }
//!     }
//! }
//! ```

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::SessionError;
use crate::session::Session;

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or(SessionError::LayerMissing)
    }
}

/// The logged-in user. Anonymous requests are refused with 401
/// `{"error":{"code":"unauthenticated",…}}`; a store outage with 503.
#[derive(Clone)]
pub struct AuthUser {
    /// The user's id.
    pub user_id: String,
    /// The session, for further use in the handler.
    pub session: Session,
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state).await?;
        match session.user_id().await? {
            Some(user_id) => Ok(AuthUser { user_id, session }),
            None => Err(SessionError::Unauthenticated),
        }
    }
}

/// A freshly masked CSRF token for the current session, `None` without a session. Put it in
/// forms (`csrf_token` field) or hand it to scripts (`X-CSRF-Token` header).
#[derive(Clone, Debug)]
pub struct CsrfToken(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for CsrfToken {
    type Rejection = SessionError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state).await?;
        Ok(CsrfToken(session.csrf_token().await?))
    }
}
