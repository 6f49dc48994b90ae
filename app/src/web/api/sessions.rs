//! `GET /api/sessions`, `DELETE /api/sessions/{handle}`, `POST /api/sessions/revoke-others`,
//! `POST /api/sessions/revoke-all`, and the session's preferences
//! (`GET /api/session/preferences`, `PUT|DELETE /api/session/preferences/{key}`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::services::error::ServiceError;
use crate::services::preferences;
use crate::services::sessions::parse_handle;
use crate::web::error::AppResult;
use crate::web::extract::{CurrentUser, JsonBody, PathParam};
use crate::web::state::AppState;

/// This family's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/session/preferences", get(preferences))
        .route(
            "/api/session/preferences/{key}",
            put(put_preference).delete(delete_preference),
        )
        .route("/api/sessions", get(list))
        .route("/api/sessions/{handle}", delete(revoke))
        .route("/api/sessions/revoke-others", post(revoke_others))
        .route("/api/sessions/revoke-all", post(revoke_all))
}

/// `GET /api/sessions`.
async fn list(State(state): State<AppState>, cu: CurrentUser) -> AppResult<Response> {
    let current = cu.session.handle().await?;
    let sessions = state.session_list().of(cu.user.id, current).await?;
    Ok(Json(json!({ "sessions": sessions })).into_response())
}

/// `DELETE /api/sessions/{handle}`: 204; 404 if the user has no such session.
async fn revoke(cu: CurrentUser, PathParam(handle): PathParam<String>) -> AppResult<StatusCode> {
    let handle = parse_handle(&handle)?;
    if cu.session.revoke_session(&handle).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ServiceError::NotFound("session").into())
    }
}

/// `POST /api/sessions/revoke-others`: 200 `{revoked}`.
async fn revoke_others(cu: CurrentUser) -> AppResult<Response> {
    let revoked = cu.session.revoke_other_sessions().await?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}

/// `POST /api/sessions/revoke-all` ("log out everywhere"): 200 `{revoked}`, cookie cleared.
async fn revoke_all(cu: CurrentUser) -> AppResult<Response> {
    let revoked = cu.session.logout_everywhere().await?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}

/// `GET /api/session/preferences`: the preferences object.
async fn preferences(State(state): State<AppState>, cu: CurrentUser) -> AppResult<Response> {
    let prefs = state.preferences().get(&cu.session).await?;
    Ok(Json(Value::Object(prefs)).into_response())
}

/// `PUT /api/session/preferences/{key}` with a JSON value: 204; 413 for a value over 1 KiB,
/// 400 beyond 16 keys or for a bad key.
async fn put_preference(
    State(state): State<AppState>,
    cu: CurrentUser,
    PathParam(key): PathParam<String>,
    JsonBody(value): JsonBody<Value>,
) -> AppResult<StatusCode> {
    let key = preferences::key(&key)?;
    state
        .preferences()
        .put(cu.user.id, &cu.session, key, value)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/session/preferences/{key}`: 204.
async fn delete_preference(
    State(state): State<AppState>,
    cu: CurrentUser,
    PathParam(key): PathParam<String>,
) -> AppResult<StatusCode> {
    let key = preferences::key(&key)?;
    state
        .preferences()
        .delete(cu.user.id, &cu.session, key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
