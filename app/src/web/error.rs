//! Errors as HTTP answers, in one place: every API error is `{"error": {"code", "message"}}`
//! with a fitting status; pages show the same code and message in an HTML page (or send an
//! anonymous visitor to the login page). Backend details go to the log, never to the client.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ratatoskr_axum::json_error;

use crate::domain::time::whole_seconds_up;
use crate::services::error::ServiceError;
use crate::web::redirect::to_login;
use crate::web::templates::error_page;

/// An error a handler answers with.
#[derive(Debug)]
pub enum AppError {
    /// What a service refused or failed with.
    Service(ServiceError),
    /// A request the web layer refuses before any service sees it (malformed body, path or
    /// query, unknown route): status, stable code and message.
    Request(StatusCode, &'static str, String),
}

/// Handler result.
pub type AppResult<T> = Result<T, AppError>;

impl<E: Into<ServiceError>> From<E> for AppError {
    fn from(e: E) -> Self {
        AppError::Service(e.into())
    }
}

/// The status a service error is answered with.
pub fn status_of(e: &ServiceError) -> StatusCode {
    use ServiceError as E;
    match e {
        E::Invalid(_) | E::WrongPassword | E::InvalidPreferenceKey | E::TooManyPreferences(_) => {
            StatusCode::BAD_REQUEST
        }
        E::InvalidCredentials => StatusCode::UNAUTHORIZED,
        E::RegistrationClosed | E::Forbidden => StatusCode::FORBIDDEN,
        E::NotFound(_) => StatusCode::NOT_FOUND,
        E::UsernameTaken
        | E::CannotDisableSelf
        | E::TooManyPlatforms(_)
        | E::PlatformExists
        | E::PlatformInactive
        | E::PlatformTokenUnreadable => StatusCode::CONFLICT,
        E::PreferenceTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        E::LoginLocked(_) | E::PasswordChangesLocked(_) | E::RateLimited(..) => {
            StatusCode::TOO_MANY_REQUESTS
        }
        E::Busy | E::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
        E::Session(s) => s.status(),
        E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl AppError {
    /// A refusal of the request itself.
    pub fn request(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AppError::Request(status, code, message.into())
    }

    /// Status, code and public message.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            AppError::Request(s, c, m) => (*s, c, m.clone()),
            AppError::Service(e) => {
                let status = status_of(e);
                let message = match e {
                    ServiceError::Database(_) => {
                        "the database is temporarily unavailable; try again shortly".into()
                    }
                    ServiceError::Internal(_) => "something went wrong on our side".into(),
                    ServiceError::Session(_) if status.is_server_error() => {
                        "sessions are temporarily unavailable; try again shortly".into()
                    }
                    other => other.to_string(),
                };
                (status, e.code(), message)
            }
        }
    }

    /// Whether the client can do something about it (a refusal, not a failure).
    pub fn is_refusal(&self) -> bool {
        match self {
            AppError::Request(..) => true,
            AppError::Service(e) => !e.is_server_fault() && !matches!(e, ServiceError::Session(_)),
        }
    }

    /// The `Retry-After`, for refusals that have one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AppError::Service(e) => e.retry_after(),
            AppError::Request(..) => None,
        }
    }

    fn log(&self) {
        if let AppError::Service(e) = self
            && e.is_server_fault()
        {
            tracing::error!(error = %e, code = e.code(), "request failed");
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log();
        if let AppError::Service(ServiceError::Session(e)) = self {
            return e.into_response();
        }
        let (status, code, message) = self.parts();
        with_retry_after(json_error(status, code, &message), self.retry_after())
    }
}

/// Add `Retry-After` (whole seconds, rounded up) to a response, when there is one.
pub fn with_retry_after(mut response: Response, wait: Option<Duration>) -> Response {
    if let Some(wait) = wait {
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(whole_seconds_up(wait)),
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
            return to_login("login_required");
        }
        with_retry_after(error_page(status, code, &message), self.0.retry_after())
    }
}

#[cfg(test)]
mod tests {
    use ratatoskr_axum::SessionError;

    use super::*;
    use crate::domain::invalid::Invalid;
    use crate::domain::time::Timestamp;

    #[test]
    fn refusals_are_client_errors_and_failures_hide_their_details() {
        let later = Timestamp::now().plus(Duration::from_secs(90));
        let refusals = [
            (
                ServiceError::Invalid(Invalid::Username),
                400,
                "invalid_username",
            ),
            (ServiceError::InvalidCredentials, 401, "invalid_credentials"),
            (ServiceError::RegistrationClosed, 403, "registration_closed"),
            (ServiceError::NotFound("platform"), 404, "not_found"),
            (ServiceError::UsernameTaken, 409, "username_taken"),
            (
                ServiceError::PreferenceTooLarge(1024),
                413,
                "preference_too_large",
            ),
            (ServiceError::LoginLocked(later), 429, "too_many_attempts"),
            (
                ServiceError::RateLimited("login", Duration::from_millis(1500)),
                429,
                "rate_limited",
            ),
            (ServiceError::Busy, 503, "server_busy"),
        ];
        for (e, status, code) in refusals {
            let e = AppError::from(e);
            let (s, c, message) = e.parts();
            assert_eq!((s.as_u16(), c), (status, code), "{message}");
            assert!(!message.is_empty());
        }
        // Retry-After in whole seconds, rounded up.
        let r = AppError::from(ServiceError::RateLimited(
            "login",
            Duration::from_millis(1500),
        ))
        .into_response();
        assert_eq!(r.headers()["retry-after"], "2");
        let r = AppError::from(ServiceError::LoginLocked(later)).into_response();
        let secs: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((80..=90).contains(&secs), "{secs}");

        let failures = [
            AppError::from(sqlx::Error::PoolTimedOut),
            AppError::from(anyhow::anyhow!("secret detail")),
            AppError::from(SessionError::Unavailable(
                ratatoskr_core::StoreError::backend("redis", "secret detail"),
            )),
        ];
        // The service layer's idea of a server fault is the status the web layer answers with.
        for e in [
            SessionError::Ended,
            SessionError::Revoked,
            SessionError::Unauthenticated,
            SessionError::LayerMissing,
            SessionError::Value(serde_json::from_str::<u8>("x").unwrap_err()),
            SessionError::Unavailable(ratatoskr_core::StoreError::backend("sqlite", "down")),
        ] {
            let e = ServiceError::Session(e);
            assert_eq!(e.is_server_fault(), status_of(&e).is_server_error(), "{e}");
        }
        for e in failures {
            assert!(!e.is_refusal());
            let (status, _, message) = e.parts();
            assert!(status.is_server_error(), "{status}");
            assert!(
                !message.contains("secret") && !message.contains("pool"),
                "{message}"
            );
        }
    }
}
