//! `POST /api/register`, `POST /api/login`, `POST /api/logout`, `GET /api/session`,
//! `POST /api/password`.

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ratatoskr_axum::Session;
use serde::Deserialize;
use serde_json::json;

use crate::configuration::Registration;
use crate::device::Device;
use crate::error::{AppError, AppResult};
use crate::extract::{CurrentUser, JsonBody, Peer};
use crate::service::{self, Authenticated};
use crate::state::AppState;

/// Login or registration credentials.
#[derive(Deserialize)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// The device of a request (User-Agent and client address).
pub fn device_of(headers: &HeaderMap, peer: Option<IpAddr>) -> Device {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Device::classify(ua, peer.map(|p| p.to_string()).unwrap_or_default())
}

/// The error for closed registration.
pub fn registration_closed() -> AppError {
    AppError::new(
        StatusCode::FORBIDDEN,
        "registration_closed",
        "registration is closed on this server; ask an administrator for an account",
    )
}

/// `POST /api/register`.
pub async fn register(
    State(state): State<AppState>,
    Peer(peer): Peer,
    JsonBody(c): JsonBody<Credentials>,
) -> AppResult<Response> {
    if state.settings.registration == Registration::Closed {
        return Err(registration_closed());
    }
    state.limits.register.admit(peer)?;
    let user = service::register(&state, &c.username, &c.password, false).await?;
    Ok((StatusCode::CREATED, Json(json!({ "user": user }))).into_response())
}

/// `POST /api/login`: a new session token on success (rotation).
pub async fn login(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Peer(peer): Peer,
    JsonBody(c): JsonBody<Credentials>,
) -> AppResult<Response> {
    state.limits.login.admit(peer)?;
    match service::authenticate(&state, &c.username, &c.password).await? {
        Authenticated::Ok(user) => {
            service::log_in(&session, &user, &device_of(&headers, peer)).await?;
            let csrf = session.csrf_token().await?;
            Ok(Json(json!({ "user": user, "csrf_token": csrf })).into_response())
        }
        Authenticated::Invalid => Err(service::invalid_credentials()),
        Authenticated::Locked(until) => {
            let mut r = service::locked_error(until).into_response();
            let secs = ((until - ratatoskr_core::now_ms()).max(0) / 1000).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Ok(r)
        }
    }
}

/// `POST /api/logout`: 204; the session is destroyed server-side and the cookie cleared.
pub async fn logout(session: Session) -> AppResult<StatusCode> {
    session.logout().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/session`.
pub async fn session(State(state): State<AppState>, session: Session) -> AppResult<Response> {
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
    let cu = match current(&state, &session).await {
        Ok(cu) => cu,
        Err(_) => return Ok(Json(anonymous).into_response()),
    };
    let active = service::active_platform(&state, &cu).await?;
    let info = session.info().await?;
    Ok(Json(json!({
        "authenticated": true,
        "user": cu.user,
        "active_platform": active,
        "csrf_token": session.csrf_token().await?,
        "idle_expires_at": info.as_ref().map(|i| i.idle_expires_at),
        "absolute_expires_at": info.as_ref().map(|i| i.absolute_expires_at),
        "handle": info.as_ref().map(|i| i.handle.to_string()),
    }))
    .into_response())
}

/// The current user from a session (the [`CurrentUser`] extractor's logic, for handlers that
/// also serve anonymous requests).
pub async fn current(state: &AppState, session: &Session) -> AppResult<CurrentUser> {
    let uid = session
        .user_id()
        .await?
        .ok_or(ratatoskr_axum::SessionError::Unauthenticated)?;
    let user = match uid.parse::<i64>() {
        Ok(id) => state.db.user_by_id(id).await?,
        Err(_) => None,
    };
    match user {
        Some(user) if !user.disabled => Ok(CurrentUser {
            user,
            session: session.clone(),
        }),
        _ => {
            session.logout().await?;
            Err(ratatoskr_axum::SessionError::Unauthenticated.into())
        }
    }
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
pub async fn password(
    State(state): State<AppState>,
    Peer(peer): Peer,
    cu: CurrentUser,
    JsonBody(p): JsonBody<PasswordChange>,
) -> AppResult<Response> {
    state.limits.password.admit(peer)?;
    let revoked =
        service::change_password(&state, &cu, &p.current_password, &p.new_password).await?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}
