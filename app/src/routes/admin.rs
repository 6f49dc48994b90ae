//! Administration API: `GET /api/admin/sessions[?user=NAME]`,
//! `DELETE /api/admin/users/{name}/sessions[/{handle}]`, `POST /api/admin/users/{name}/disable`
//! and `/enable`, `GET /api/admin/analytics[?hours=N]`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ratatoskr_axum::RevokeReason;
use serde::Deserialize;
use serde_json::json;

use crate::analytics;
use crate::db::User;
use crate::error::{AppError, AppResult};
use crate::extract::{Admin, PathParam, QueryParams};
use crate::service;
use crate::state::AppState;

/// Users listed by the all-users view.
const MAX_USERS: i64 = 10_000;

/// `?user=NAME`.
#[derive(Deserialize)]
pub struct UserQuery {
    /// A user name.
    pub user: Option<String>,
}

/// A user by name, or 404.
pub async fn user_named(state: &AppState, name: &str) -> AppResult<User> {
    let name = name.trim().to_ascii_lowercase();
    state
        .db
        .user_by_name(&name)
        .await?
        .ok_or_else(|| AppError::not_found("user"))
}

/// `GET /api/admin/sessions?user=NAME`: that user's sessions; without `user`, every user's.
pub async fn sessions(
    State(state): State<AppState>,
    Admin(admin): Admin,
    QueryParams(q): QueryParams<UserQuery>,
) -> AppResult<Response> {
    let current = admin.session.handle().await?;
    match q.user {
        Some(name) => {
            let user = user_named(&state, &name).await?;
            let sessions = service::sessions_of(&state, &user.id.to_string(), current).await?;
            Ok(Json(json!({ "user": user, "sessions": sessions })).into_response())
        }
        None => {
            let all = service::all_sessions(&state, MAX_USERS, |_, _| {}).await?;
            let users: Vec<_> = all
                .into_iter()
                .map(|(user, sessions)| json!({ "user": user, "sessions": sessions }))
                .collect();
            Ok(Json(json!({ "users": users })).into_response())
        }
    }
}

/// `DELETE /api/admin/users/{name}/sessions`: 200 `{revoked}`.
pub async fn revoke_user(
    State(state): State<AppState>,
    _admin: Admin,
    PathParam(name): PathParam<String>,
) -> AppResult<Response> {
    let user = user_named(&state, &name).await?;
    let revoked = state
        .control
        .revoke_user(&user.id.to_string(), RevokeReason::Admin)
        .await?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}

/// `DELETE /api/admin/users/{name}/sessions/{handle}`: 204; 404 if the user has no such
/// session.
pub async fn revoke_one(
    State(state): State<AppState>,
    _admin: Admin,
    PathParam((name, handle)): PathParam<(String, String)>,
) -> AppResult<StatusCode> {
    let user = user_named(&state, &name).await?;
    let handle = service::parse_handle(&handle)?;
    if state
        .control
        .revoke_handle(&user.id.to_string(), &handle)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::not_found("session"))
    }
}

/// `POST /api/admin/users/{name}/disable`: 200 `{revoked}`; the user's sessions all end.
pub async fn disable(
    State(state): State<AppState>,
    Admin(admin): Admin,
    PathParam(name): PathParam<String>,
) -> AppResult<Response> {
    let user = user_named(&state, &name).await?;
    if user.id == admin.user.id {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "cannot_disable_self",
            "administrators cannot disable their own account",
        ));
    }
    let revoked = service::set_disabled(&state, &user, true).await?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}

/// `POST /api/admin/users/{name}/enable`: 204.
pub async fn enable(
    State(state): State<AppState>,
    _admin: Admin,
    PathParam(name): PathParam<String>,
) -> AppResult<StatusCode> {
    let user = user_named(&state, &name).await?;
    service::set_disabled(&state, &user, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?hours=N`.
#[derive(Deserialize)]
pub struct HoursQuery {
    /// Hours back (1–168, default 24).
    pub hours: Option<i64>,
}

/// `GET /api/admin/analytics`: the figures behind the analytics page.
pub async fn analytics(
    State(state): State<AppState>,
    _admin: Admin,
    QueryParams(q): QueryParams<HoursQuery>,
) -> AppResult<Response> {
    let f = analytics::figures(&state, q.hours.unwrap_or(24)).await?;
    Ok(Json(f).into_response())
}
