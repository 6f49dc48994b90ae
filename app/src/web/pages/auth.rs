//! `/login` (with the registration form when open), `POST /register`, `POST /logout`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use ratatoskr_axum::Session;
use serde::{Deserialize, Serialize};

use super::common::{PageResult, flash, form_refusal, render};
use crate::configuration::Registration;
use crate::services::error::ServiceError;
use crate::web::api::auth::{Credentials, registration_open};
use crate::web::extract::{ClientAddr, FormBody, QueryParams, RequestDevice};
use crate::web::redirect::{see_other, to_login};
use crate::web::state::AppState;
use crate::web::templates::{Layout, PageBody};

/// This family's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/register", post(register))
        .route("/logout", post(logout))
}

/// What `login.html` reads.
#[derive(Default, Serialize)]
struct LoginBody {
    /// Whether the registration form is shown.
    registration_open: bool,
    /// Why the visitor is here (logged out, login required…).
    notice: Option<&'static str>,
    /// Why the login failed.
    login_error: Option<String>,
    /// The name typed, shown again.
    username: Option<String>,
    /// Why the registration failed.
    register_error: Option<String>,
}

impl PageBody for LoginBody {
    const TEMPLATE: &'static str = "login.html";
}

/// `?reason=`.
#[derive(Deserialize)]
struct LoginQuery {
    reason: Option<String>,
}

fn notice(reason: Option<&str>) -> Option<&'static str> {
    Some(match reason? {
        "logged_out" => "You have been logged out.",
        "login_required" => "Please log in to continue.",
        "password_changed" => {
            "Your password was changed and every session ended. Log in with the new password."
        }
        "revoked" => "You logged out everywhere.",
        _ => return None,
    })
}

async fn login_page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    body: LoginBody,
) -> PageResult {
    let layout = Layout {
        title: "Log in",
        csrf_token: session.csrf_token().await?,
        ..Layout::default()
    };
    let body = LoginBody {
        registration_open: state.settings.registration == Registration::Open,
        ..body
    };
    render(state, status, &layout, &body)
}

/// `GET /login`.
async fn login_form(
    State(state): State<AppState>,
    session: Session,
    QueryParams(q): QueryParams<LoginQuery>,
) -> PageResult {
    if session.user_id().await?.is_some() && state.accounts().session_user(&session).await.is_ok() {
        return Ok(see_other("/"));
    }
    let body = LoginBody {
        notice: notice(q.reason.as_deref()),
        ..LoginBody::default()
    };
    login_page(&state, &session, StatusCode::OK, body).await
}

/// `POST /login`.
async fn login(
    State(state): State<AppState>,
    session: Session,
    ClientAddr(client): ClientAddr,
    RequestDevice(device): RequestDevice,
    FormBody(c): FormBody<Credentials>,
) -> PageResult {
    let shown_name: String = c.username.chars().take(64).collect();
    state.limits.login.admit(client)?;
    let accounts = state.accounts();
    let (status, message) = match accounts.authenticate(&c.username, &c.password).await {
        Ok(user) => {
            accounts.log_in(&session, &user, &device).await?;
            return Ok(see_other("/"));
        }
        Err(ServiceError::InvalidCredentials) => (
            StatusCode::UNAUTHORIZED,
            "Wrong user name or password.".to_owned(),
        ),
        Err(e @ ServiceError::LoginLocked(_)) => {
            (StatusCode::TOO_MANY_REQUESTS, format!("Locked: {e}."))
        }
        Err(e) => return Err(e.into()),
    };
    let body = LoginBody {
        login_error: Some(message),
        username: Some(shown_name),
        ..LoginBody::default()
    };
    login_page(&state, &session, status, body).await
}

/// `POST /register`: creates the account and logs it in.
async fn register(
    State(state): State<AppState>,
    session: Session,
    ClientAddr(client): ClientAddr,
    RequestDevice(device): RequestDevice,
    FormBody(c): FormBody<Credentials>,
) -> PageResult {
    registration_open(&state)?;
    state.limits.register.admit(client)?;
    let accounts = state.accounts();
    match accounts.register(&c.username, &c.password, false).await {
        Ok(user) => {
            accounts.log_in(&session, &user, &device).await?;
            let welcome = format!("Welcome, {}! Connect a platform to start.", user.username);
            flash(&session, "success", welcome).await?;
            Ok(see_other("/platforms"))
        }
        Err(e) => {
            let (status, message) = form_refusal(e.into())?;
            let body = LoginBody {
                register_error: Some(message),
                ..LoginBody::default()
            };
            login_page(&state, &session, status, body).await
        }
    }
}

/// `POST /logout`.
async fn logout(session: Session) -> PageResult {
    session.logout().await?;
    Ok(to_login("logged_out"))
}
