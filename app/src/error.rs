//! Errors as answers: every API error is `{"error": {"code", "message"}}` with a fitting
//! status; pages show the same code and message in an HTML page. Backend details go to the log,
//! never to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ratatoskr_axum::{SessionError, json_error};

/// An error a handler answers with.
#[derive(Debug)]
pub enum AppError {
    /// A client-facing error with its status, stable code and message.
    Status(StatusCode, &'static str, String),
    /// A refusal that says when to come back: status, code, message and the `Retry-After`
    /// seconds (rate limits, a busy password-hashing pool).
    RetryLater(StatusCode, &'static str, String, u64),
    /// A session error (401, 503, …) with the library's code.
    Session(SessionError),
    /// The application database failed.
    Database(sqlx::Error),
    /// Anything else that is the server's fault.
    Internal(anyhow::Error),
}

/// Handler result.
pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// A client-facing error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError::Status(status, code, message.into())
    }

    /// 400 with a validation refusal.
    pub fn invalid((code, message): crate::validation::Invalid) -> Self {
        AppError::Status(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        AppError::Status(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    /// 403 `forbidden`.
    pub fn forbidden() -> Self {
        AppError::Status(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs an administrator".into(),
        )
    }

    /// Status, code and public message.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            AppError::Status(s, c, m) | AppError::RetryLater(s, c, m, _) => (*s, c, m.clone()),
            AppError::Session(e) => (
                e.status(),
                e.code(),
                if e.status().is_server_error() {
                    "sessions are temporarily unavailable; try again shortly".into()
                } else {
                    e.to_string()
                },
            ),
            AppError::Database(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the database is temporarily unavailable; try again shortly".into(),
            ),
            AppError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "something went wrong on our side".into(),
            ),
        }
    }

    /// The `Retry-After` seconds, for refusals that have one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            AppError::RetryLater(_, _, _, secs) => Some(*secs),
            _ => None,
        }
    }

    fn log(&self) {
        match self {
            AppError::Database(e) => tracing::error!(error = %e, "database error"),
            AppError::Internal(e) => tracing::error!(error = %e, "internal error"),
            _ => {}
        }
    }
}

impl From<SessionError> for AppError {
    fn from(e: SessionError) -> Self {
        AppError::Session(e)
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        AppError::Database(e)
    }
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        AppError::Internal(e)
    }
}

impl From<ratatoskr_core::StoreError> for AppError {
    fn from(e: ratatoskr_core::StoreError) -> Self {
        AppError::Session(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        if let AppError::Session(e) = self {
            return e.into_response();
        }
        let (status, code, message) = self.parts();
        with_retry_after(json_error(status, code, &message), self.retry_after())
    }
}

/// Add `Retry-After: secs` to a response, when there is one.
pub fn with_retry_after(mut response: Response, secs: Option<u64>) -> Response {
    if let Some(secs) = secs {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(secs),
        );
    }
    response
}

/// The same errors, answered as HTML pages (or a redirect to the login page when the session
/// is missing).
#[derive(Debug)]
pub struct PageError(pub AppError);

impl<E: Into<AppError>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        self.0.log();
        let (status, code, message) = self.0.parts();
        if status == StatusCode::UNAUTHORIZED {
            return crate::routes::pages::to_login("login_required");
        }
        with_retry_after(
            crate::templates::error_page(status, code, &message),
            self.0.retry_after(),
        )
    }
}
