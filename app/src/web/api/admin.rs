//! Administration API: `GET /api/admin/sessions[?user=NAME]`,
//! `DELETE /api/admin/users/{name}/sessions[/{handle}]`, `POST /api/admin/users/{name}/disable`
//! and `/enable`, `GET /api/admin/analytics[?hours=N]`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use ratatoskr_axum::RevokeReason;
use serde::Deserialize;
use serde_json::json;

use crate::services::error::ServiceError;
use crate::services::sessions::parse_handle;
use crate::web::error::AppResult;
use crate::web::extract::{Admin, PathParam, QueryParams};
use crate::web::state::AppState;

/// Users listed by the all-users view.
const MAX_USERS: i64 = 10_000;

/// This family's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/sessions", get(sessions))
        .route("/api/admin/users/{name}/sessions", delete(revoke_user))
        .route(
            "/api/admin/users/{name}/sessions/{handle}",
            delete(revoke_one),
        )
        .route("/api/admin/users/{name}/disable", post(disable))
        .route("/api/admin/users/{name}/enable", post(enable))
        .route("/api/admin/analytics", get(analytics))
}

/// `?user=NAME`.
#[derive(Deserialize)]
pub struct UserQuery {
    /// A user name.
    pub user: Option<String>,
}

/// `GET /api/admin/sessions?user=NAME`: that user's sessions; without `user`, every user's.
async fn sessions(
    State(state): State<AppState>,
    Admin(admin): Admin,
    QueryParams(q): QueryParams<UserQuery>,
) -> AppResult<Response> {
    let current = admin.session.handle().await?;
    match q.user {
        Some(name) => {
            let user = state.accounts().user_named(&name).await?;
            let sessions = state.session_list().of(user.id, current).await?;
            Ok(Json(json!({ "user": user, "sessions": sessions })).into_response())
        }
        None => {
            let all = state.session_list().all(MAX_USERS, |_, _| {}).await?;
            let users: Vec<_> = all
                .into_iter()
                .map(|(user, sessions)| json!({ "user": user, "sessions": sessions }))
                .collect();
            Ok(Json(json!({ "users": users })).into_response())
        }
    }
}

/// `DELETE /api/admin/users/{name}/sessions`: 200 `{revoked}`.
async fn revoke_user(
    State(state): State<AppState>,
    _admin: Admin,
    PathParam(name): PathParam<String>,
) -> AppResult<Response> {
    let user = state.accounts().user_named(&name).await?;
    let revoked = state
        .control
        .revoke_user(&user.id.session_user_id(), RevokeReason::Admin)
        .await?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}

/// `DELETE /api/admin/users/{name}/sessions/{handle}`: 204; 404 if the user has no such
/// session.
async fn revoke_one(
    State(state): State<AppState>,
    _admin: Admin,
    PathParam((name, handle)): PathParam<(String, String)>,
) -> AppResult<StatusCode> {
    let user = state.accounts().user_named(&name).await?;
    let handle = parse_handle(&handle)?;
    if state
        .control
        .revoke_handle(&user.id.session_user_id(), &handle)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ServiceError::NotFound("session").into())
    }
}

/// `POST /api/admin/users/{name}/disable`: 200 `{revoked}`; the user's sessions all end.
async fn disable(
    State(state): State<AppState>,
    Admin(admin): Admin,
    PathParam(name): PathParam<String>,
) -> AppResult<Response> {
    let accounts = state.accounts();
    let user = accounts.user_named(&name).await?;
    if user.id == admin.user.id {
        return Err(ServiceError::CannotDisableSelf.into());
    }
    let revoked = accounts.set_disabled(&user, true).await?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}

/// `POST /api/admin/users/{name}/enable`: 204.
async fn enable(
    State(state): State<AppState>,
    _admin: Admin,
    PathParam(name): PathParam<String>,
) -> AppResult<StatusCode> {
    let accounts = state.accounts();
    let user = accounts.user_named(&name).await?;
    accounts.set_disabled(&user, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?hours=N`.
#[derive(Deserialize)]
pub struct HoursQuery {
    /// Hours back (1–168, default 24).
    pub hours: Option<i64>,
}

/// `GET /api/admin/analytics`: the figures behind the analytics page.
async fn analytics(
    State(state): State<AppState>,
    _admin: Admin,
    QueryParams(q): QueryParams<HoursQuery>,
) -> AppResult<Response> {
    let f = state.analytics().figures(q.hours.unwrap_or(24)).await?;
    Ok(Json(f).into_response())
}
