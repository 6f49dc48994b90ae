//! `GET/POST /api/platforms`, `PATCH/DELETE /api/platforms/{id}`,
//! `POST /api/platforms/{id}/switch`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::domain::platform::PlatformId;
use crate::services::platforms::PlatformInput;
use crate::web::error::AppResult;
use crate::web::extract::{CurrentUser, JsonBody, PathParam};
use crate::web::state::AppState;

/// This family's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/platforms", get(list).post(create))
        .route("/api/platforms/{id}", patch(update).delete(delete))
        .route("/api/platforms/{id}/switch", post(switch))
}

/// `GET /api/platforms`: the user's connections (never a token) and the active one's id.
async fn list(State(state): State<AppState>, cu: CurrentUser) -> AppResult<Response> {
    let platforms = state.platforms();
    let list = platforms.list(cu.user.id).await?;
    let active = platforms.active(cu.user.id, &cu.session).await?;
    Ok(Json(json!({
        "platforms": list,
        "active_platform_id": active.map(|p| p.id),
    }))
    .into_response())
}

/// `POST /api/platforms`: 201 `{platform}`.
async fn create(
    State(state): State<AppState>,
    cu: CurrentUser,
    JsonBody(input): JsonBody<PlatformInput>,
) -> AppResult<Response> {
    let p = state.platforms().add(cu.user.id, &input).await?;
    Ok((StatusCode::CREATED, Json(json!({ "platform": p }))).into_response())
}

/// `DELETE /api/platforms/{id}`: 204. Sessions where it was active drop it at their next read.
async fn delete(
    State(state): State<AppState>,
    cu: CurrentUser,
    PathParam(id): PathParam<i64>,
) -> AppResult<StatusCode> {
    state
        .platforms()
        .delete(cu.user.id, &cu.session, PlatformId(id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A change to a connection.
#[derive(Deserialize)]
pub struct Patch {
    /// Active or not.
    pub active: bool,
}

/// `PATCH /api/platforms/{id}` `{active}`: 200 `{platform}`.
async fn update(
    State(state): State<AppState>,
    cu: CurrentUser,
    PathParam(id): PathParam<i64>,
    JsonBody(patch): JsonBody<Patch>,
) -> AppResult<Response> {
    let p = state
        .platforms()
        .set_active(cu.user.id, &cu.session, PlatformId(id), patch.active)
        .await?;
    Ok(Json(json!({ "platform": p })).into_response())
}

/// `POST /api/platforms/{id}/switch`: 200 `{active_platform}`; 404 not the user's; 409
/// inactive.
async fn switch(
    State(state): State<AppState>,
    cu: CurrentUser,
    PathParam(id): PathParam<i64>,
) -> AppResult<Response> {
    let p = state
        .platforms()
        .switch(cu.user.id, &cu.session, PlatformId(id))
        .await?;
    Ok(Json(json!({ "active_platform": p })).into_response())
}
