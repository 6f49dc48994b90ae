//! `GET/POST /api/platforms`, `PATCH/DELETE /api/platforms/{id}`,
//! `POST /api/platforms/{id}/switch`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::error::{AppError, AppResult};
use crate::extract::{CurrentUser, JsonBody, PathParam};
use crate::service::{self, PlatformInput};
use crate::state::AppState;

/// `GET /api/platforms`: the user's connections (never a token) and the active one's id.
pub async fn list(State(state): State<AppState>, cu: CurrentUser) -> AppResult<Response> {
    let platforms = state.db.platforms(cu.user.id).await?;
    let active = service::active_platform(&state, &cu).await?;
    Ok(Json(json!({
        "platforms": platforms,
        "active_platform_id": active.map(|p| p.id),
    }))
    .into_response())
}

/// `POST /api/platforms`: 201 `{platform}`.
pub async fn create(
    State(state): State<AppState>,
    cu: CurrentUser,
    JsonBody(input): JsonBody<PlatformInput>,
) -> AppResult<Response> {
    let p = service::add_platform(&state, &cu, &input).await?;
    Ok((StatusCode::CREATED, Json(json!({ "platform": p }))).into_response())
}

/// `DELETE /api/platforms/{id}`: 204. Sessions where it was active drop it at their next read.
pub async fn delete(
    State(state): State<AppState>,
    cu: CurrentUser,
    PathParam(id): PathParam<i64>,
) -> AppResult<StatusCode> {
    if !state.db.delete_platform(cu.user.id, id).await? {
        return Err(AppError::not_found("platform"));
    }
    // This session at once; the others when they next read it.
    service::active_platform(&state, &cu).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A change to a connection.
#[derive(Deserialize)]
pub struct Patch {
    /// Active or not.
    pub active: bool,
}

/// `PATCH /api/platforms/{id}` `{active}`: 200 `{platform}`.
pub async fn update(
    State(state): State<AppState>,
    cu: CurrentUser,
    PathParam(id): PathParam<i64>,
    JsonBody(patch): JsonBody<Patch>,
) -> AppResult<Response> {
    if !state
        .db
        .set_platform_active(cu.user.id, id, patch.active)
        .await?
    {
        return Err(AppError::not_found("platform"));
    }
    let p = state
        .db
        .platform(cu.user.id, id)
        .await?
        .ok_or_else(|| AppError::not_found("platform"))?;
    service::active_platform(&state, &cu).await?;
    Ok(Json(json!({ "platform": p })).into_response())
}

/// `POST /api/platforms/{id}/switch`: 200 `{active_platform}`; 404 not the user's; 409
/// inactive.
pub async fn switch(
    State(state): State<AppState>,
    cu: CurrentUser,
    PathParam(id): PathParam<i64>,
) -> AppResult<Response> {
    let p = service::switch_platform(&state, &cu, id).await?;
    Ok(Json(json!({ "active_platform": p })).into_response())
}
