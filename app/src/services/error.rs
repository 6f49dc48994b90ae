//! What a service refuses or fails with: one variant per outcome, each with a stable code. No
//! HTTP here: the web layer maps each to a status (`crate::web::error`), the CLI to a message.

use std::time::Duration;

use ratatoskr_axum::SessionError;

use crate::domain::invalid::Invalid;
use crate::domain::time::{Timestamp, whole_seconds_up};

/// A service's error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// An input broke a rule.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Registration is closed.
    #[error("registration is closed on this server; ask an administrator for an account")]
    RegistrationClosed,
    /// The user name is taken.
    #[error("that user name is taken")]
    UsernameTaken,
    /// Wrong name or password, or a disabled account (indistinguishable on purpose).
    #[error("wrong user name or password")]
    InvalidCredentials,
    /// Too many failed logins for the name: locked until then.
    #[error(
        "too many failed logins for this user name; try again in {minutes} minutes",
        minutes = minutes_until(*.0)
    )]
    LoginLocked(Timestamp),
    /// The current password given for a change is wrong.
    #[error("the current password is not right")]
    WrongPassword,
    /// Too many wrong current passwords: password changes are locked until then.
    #[error(
        "too many wrong current passwords; password changes are locked for a while, and the \
         session that guessed has ended"
    )]
    PasswordChangesLocked(Timestamp),
    /// The password-hashing pool is full.
    #[error("the server is busy checking other passwords; try again in a moment")]
    Busy,
    /// A per-client rate limit: the action refused, and how long to wait.
    #[error(
        "too many {0} attempts from your address; try again in {secs} seconds",
        secs = whole_seconds_up(*.1)
    )]
    RateLimited(&'static str, Duration),
    /// Nothing of that kind (or not the caller's).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// Needs an administrator.
    #[error("this needs an administrator")]
    Forbidden,
    /// An administrator tried to disable their own account.
    #[error("administrators cannot disable their own account")]
    CannotDisableSelf,
    /// The user has as many platform connections as allowed.
    #[error("at most {0} platform connections per user")]
    TooManyPlatforms(i64),
    /// That account on that instance is connected already.
    #[error("this account on this instance is already connected")]
    PlatformExists,
    /// The connection is inactive.
    #[error("this platform connection is inactive; activate it first")]
    PlatformInactive,
    /// The connection's token was sealed under another key.
    #[error("this connection's access token was sealed with another key; remove and add it again")]
    PlatformTokenUnreadable,
    /// Not a preference key.
    #[error("a preference key is 1 to 32 of a-z, 0-9, '_' and '-'")]
    InvalidPreferenceKey,
    /// The session keeps as many preferences as allowed.
    #[error("a session keeps at most {0} preferences")]
    TooManyPreferences(usize),
    /// A preference value is too large.
    #[error("a preference value may be at most {0} bytes of JSON")]
    PreferenceTooLarge(usize),
    /// A session error (missing, ended, the store unavailable…), with the library's code.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The application database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Anything else that is the server's fault.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A service's result.
pub type ServiceResult<T> = Result<T, ServiceError>;

fn minutes_until(until: Timestamp) -> u64 {
    until.since(Timestamp::now()).as_secs().div_ceil(60)
}

impl From<ratatoskr_core::StoreError> for ServiceError {
    fn from(e: ratatoskr_core::StoreError) -> Self {
        ServiceError::Session(e.into())
    }
}

impl ServiceError {
    /// The stable code (the API's `error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Invalid(i) => i.code(),
            ServiceError::RegistrationClosed => "registration_closed",
            ServiceError::UsernameTaken => "username_taken",
            ServiceError::InvalidCredentials => "invalid_credentials",
            ServiceError::LoginLocked(_) | ServiceError::PasswordChangesLocked(_) => {
                "too_many_attempts"
            }
            ServiceError::WrongPassword => "wrong_password",
            ServiceError::Busy => "server_busy",
            ServiceError::RateLimited(..) => "rate_limited",
            ServiceError::NotFound(_) => "not_found",
            ServiceError::Forbidden => "forbidden",
            ServiceError::CannotDisableSelf => "cannot_disable_self",
            ServiceError::TooManyPlatforms(_) => "too_many_platforms",
            ServiceError::PlatformExists => "platform_exists",
            ServiceError::PlatformInactive => "platform_inactive",
            ServiceError::PlatformTokenUnreadable => "platform_token_unreadable",
            ServiceError::InvalidPreferenceKey => "invalid_preference_key",
            ServiceError::TooManyPreferences(_) => "too_many_preferences",
            ServiceError::PreferenceTooLarge(_) => "preference_too_large",
            ServiceError::Session(e) => e.code(),
            ServiceError::Database(_) => "database_unavailable",
            ServiceError::Internal(_) => "internal_error",
        }
    }

    /// How long the client should wait before trying again, for refusals that say.
    pub fn retry_after(&self) -> Option<Duration> {
        let now = Timestamp::now();
        match self {
            ServiceError::Busy => Some(Duration::from_secs(1)),
            ServiceError::RateLimited(_, wait) => Some((*wait).max(Duration::from_secs(1))),
            ServiceError::LoginLocked(until) => Some(until.since(now)),
            ServiceError::PasswordChangesLocked(until) => {
                Some(until.since(now).max(Duration::from_secs(1)))
            }
            _ => None,
        }
    }

    /// Whether it is the server's fault (or its backends'), not the client's: its details are
    /// logged, never shown.
    pub fn is_server_fault(&self) -> bool {
        match self {
            ServiceError::Database(_) | ServiceError::Internal(_) => true,
            // The store down, a value that does not decode, a route without the layer; the
            // session being gone or too large is the client's.
            ServiceError::Session(e) => matches!(
                e,
                SessionError::Unavailable(_) | SessionError::Value(_) | SessionError::LayerMissing
            ),
            _ => false,
        }
    }
}
