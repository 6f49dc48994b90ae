//! `POST /api/register`, `POST /api/login`, `POST /api/logout`, `GET /api/session`,
//! `POST /api/password`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ratatoskr_axum::Session;
use serde::Deserialize;
use serde_json::json;

use crate::configuration::Registration;
use crate::services::error::ServiceError;
use crate::web::error::AppResult;
use crate::web::extract::{ClientAddr, CurrentUser, JsonBody, RequestDevice};
use crate::web::state::AppState;

/// This family's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/register", post(register))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/session", get(session))
        .route("/api/password", post(password))
}

/// Login or registration credentials.
#[derive(Deserialize)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// Refuse when registration is closed.
pub fn registration_open(state: &AppState) -> Result<(), ServiceError> {
    match state.settings.registration {
        Registration::Open => Ok(()),
        Registration::Closed => Err(ServiceError::RegistrationClosed),
    }
}

/// `POST /api/register`.
async fn register(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    JsonBody(c): JsonBody<Credentials>,
) -> AppResult<Response> {
    registration_open(&state)?;
    state.limits.register.admit(client)?;
    let user = state
        .accounts()
        .register(&c.username, &c.password, false)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "user": user }))).into_response())
}

/// `POST /api/login`: a new session token on success (rotation).
async fn login(
    State(state): State<AppState>,
    session: Session,
    ClientAddr(client): ClientAddr,
    RequestDevice(device): RequestDevice,
    JsonBody(c): JsonBody<Credentials>,
) -> AppResult<Response> {
    state.limits.login.admit(client)?;
    let accounts = state.accounts();
    let user = accounts.authenticate(&c.username, &c.password).await?;
    accounts.log_in(&session, &user, &device).await?;
    let csrf = session.csrf_token().await?;
    Ok(Json(json!({ "user": user, "csrf_token": csrf })).into_response())
}

/// `POST /api/logout`: 204; the session is destroyed server-side and the cookie cleared.
async fn logout(session: Session) -> AppResult<StatusCode> {
    session.logout().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/session`.
async fn session(State(state): State<AppState>, session: Session) -> AppResult<Response> {
    let anonymous = json!({
        "authenticated": false,
        "user": null,
        "active_platform": null,
        "csrf_token": session.csrf_token().await?,
        "idle_expires_at": null,
        "absolute_expires_at": null,
    });
    if session.user_id().await?.is_none() {
        return Ok(Json(anonymous).into_response());
    }
    // Through the extractor's checks (user still there and enabled).
    let Ok(user) = state.accounts().session_user(&session).await else {
        return Ok(Json(anonymous).into_response());
    };
    let active = state.platforms().active(user.id, &session).await?;
    let info = session.info().await?;
    Ok(Json(json!({
        "authenticated": true,
        "user": user,
        "active_platform": active,
        "csrf_token": session.csrf_token().await?,
        "idle_expires_at": info.as_ref().map(|i| i.idle_expires_at),
        "absolute_expires_at": info.as_ref().map(|i| i.absolute_expires_at),
        "handle": info.as_ref().map(|i| i.handle.to_string()),
    }))
    .into_response())
}

/// A password change.
#[derive(Deserialize)]
pub struct PasswordChange {
    /// The current password.
    pub current_password: String,
    /// The new one.
    pub new_password: String,
}

/// `POST /api/password`: 200 `{revoked}`; every session of the user ends, this one too.
async fn password(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    cu: CurrentUser,
    JsonBody(p): JsonBody<PasswordChange>,
) -> AppResult<Response> {
    state.limits.password.admit(client)?;
    let revoked = state
        .accounts()
        .change_password(&cu.user, &cu.session, &p.current_password, &p.new_password)
        .await?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}
