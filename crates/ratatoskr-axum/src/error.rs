//! Errors a handler sees, and the JSON error shape `{"error":{"code":"…","message":"…"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ratatoskr_core::{CodecError, StoreError};

use crate::refusal::{RefusalKind, SessionRefusal};

/// A JSON error response in the application's shape:
/// `{"error": {"code": "<snake_case>", "message": "<human text>"}}`.
///
/// ```
/// use axum::http::StatusCode;
/// let response = ratatoskr_axum::json_error(StatusCode::CONFLICT, "no_active_platform", "pick a platform first");
/// assert_eq!(response.status(), StatusCode::CONFLICT);
/// ```
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// What went wrong with the session during a request. Every variant answers with the JSON error
/// shape and a fitting status; a store outage is a 503, never an empty 500. The response carries
/// the error's [`SessionRefusal`] in its extensions, so the layer's
/// [`RefusalResponder`](crate::RefusalResponder) renders it when one is configured.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session store failed or could not be reached.
    #[error("the session store is unavailable: {0}")]
    Unavailable(#[source] StoreError),
    /// The session ended (logged out elsewhere, revoked, expired) while this request ran.
    #[error("the session ended while this request was running")]
    Ended,
    /// The user's sessions were revoked while this request was creating one.
    #[error("the user's sessions were revoked")]
    Revoked,
    /// The session would grow beyond its size limit, or an attribute name is too long.
    #[error("the session would be too large: {0}")]
    TooLarge(#[source] CodecError),
    /// A stored value does not deserialize into the requested type, or a value does not
    /// serialize. A programming error, reported as such.
    #[error("a session value could not be (de)serialized: {0}")]
    Value(#[source] serde_json::Error),
    /// The operation needs an authenticated session.
    #[error("this needs a logged-in session")]
    Unauthenticated,
    /// The handler asked for the session but the route is not behind the session layer.
    #[error("the session layer is not installed on this route")]
    LayerMissing,
}

impl SessionError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            SessionError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            SessionError::Ended | SessionError::Revoked | SessionError::Unauthenticated => {
                StatusCode::UNAUTHORIZED
            }
            SessionError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            SessionError::Value(_) | SessionError::LayerMissing => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The stable snake_case code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::Unavailable(_) => "session_store_unavailable",
            SessionError::Ended => "session_ended",
            SessionError::Revoked => "session_revoked",
            SessionError::TooLarge(_) => "session_too_large",
            SessionError::Value(_) => "session_value_invalid",
            SessionError::Unauthenticated => "unauthenticated",
            SessionError::LayerMissing => "session_layer_missing",
        }
    }

    /// This error as a [`SessionRefusal`]: what a [`RefusalResponder`](crate::RefusalResponder)
    /// is given, and what the response carries in its extensions.
    pub fn refusal(&self) -> SessionRefusal {
        let kind = match self {
            SessionError::Unavailable(_) => RefusalKind::Unavailable,
            SessionError::Ended | SessionError::Revoked | SessionError::Unauthenticated => {
                RefusalKind::Unauthenticated
            }
            SessionError::TooLarge(_) => RefusalKind::TooLarge,
            SessionError::Value(_) | SessionError::LayerMissing => RefusalKind::Internal,
        };
        SessionRefusal::new(kind, self.status(), self.code(), self.public_message())
    }

    /// The message sent to the client. Backend details stay in the server log.
    fn public_message(&self) -> String {
        match self {
            SessionError::Unavailable(_) => {
                "sessions are temporarily unavailable; try again shortly".to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => SessionError::Ended,
            StoreError::Revoked => SessionError::Revoked,
            StoreError::Codec(c) => SessionError::TooLarge(c),
            // Collision survives the manager's retries only if the random source is broken;
            // like a backend failure, nothing the client did.
            e @ (StoreError::Backend { .. } | StoreError::Collision) => {
                SessionError::Unavailable(e)
            }
        }
    }
}

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        crate::metrics::error(self.code());
        if self.status().is_server_error() {
            tracing::error!(error = %self, code = self.code(), "session error");
        }
        let mut response = json_error(self.status(), self.code(), &self.public_message());
        response.extensions_mut().insert(self.refusal());
        response
    }
}
