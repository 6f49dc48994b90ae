//! `GET /api/sessions`, `DELETE /api/sessions/{handle}`, `POST /api/sessions/revoke-others`,
//! `POST /api/sessions/revoke-all`, and the session's preferences
//! (`GET /api/session/preferences`, `PUT|DELETE /api/session/preferences/{key}`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::error::{AppError, AppResult};
use crate::extract::{CurrentUser, JsonBody, PathParam};
use crate::service;
use crate::state::AppState;

/// Preferences are attributes named `pref.<key>`.
const PREF_PREFIX: &str = "pref.";
/// Most preferences per session.
pub const MAX_PREFS: usize = 16;
/// Largest preference value, serialized.
pub const MAX_PREF_BYTES: usize = 1024;

/// `GET /api/sessions`.
pub async fn list(State(state): State<AppState>, cu: CurrentUser) -> AppResult<Response> {
    let current = cu.session.handle().await?;
    let sessions = service::sessions_of(&state, &cu.id_string(), current).await?;
    Ok(Json(json!({ "sessions": sessions })).into_response())
}

/// `DELETE /api/sessions/{handle}`: 204; 404 if the user has no such session.
pub async fn revoke(
    cu: CurrentUser,
    PathParam(handle): PathParam<String>,
) -> AppResult<StatusCode> {
    let handle = service::parse_handle(&handle)?;
    if cu.session.revoke_session(&handle).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::not_found("session"))
    }
}

/// `POST /api/sessions/revoke-others`: 200 `{revoked}`.
pub async fn revoke_others(cu: CurrentUser) -> AppResult<Response> {
    let revoked = cu.session.revoke_other_sessions().await?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}

/// `POST /api/sessions/revoke-all` ("log out everywhere"): 200 `{revoked}`, cookie cleared.
pub async fn revoke_all(cu: CurrentUser) -> AppResult<Response> {
    let revoked = cu.session.logout_everywhere().await?;
    Ok(Json(json!({ "revoked": revoked })).into_response())
}

fn pref_key(raw: &str) -> AppResult<String> {
    let ok = (1..=32).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(format!("{PREF_PREFIX}{raw}"))
    } else {
        Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_preference_key",
            "a preference key is 1 to 32 of a-z, 0-9, '_' and '-'",
        ))
    }
}

/// The session's stored preferences.
async fn stored(state: &AppState, cu: &CurrentUser) -> AppResult<Map<String, Value>> {
    let Some(handle) = cu.session.handle().await? else {
        return Ok(Map::new());
    };
    let list = state.sessions.list_user(&cu.id_string()).await?;
    let Some(me) = list.into_iter().find(|s| s.handle == handle) else {
        return Ok(Map::new());
    };
    let record = state.sessions.store().load(&me.key).await?;
    Ok(record
        .map(|r| {
            r.attrs
                .into_iter()
                .filter_map(|(k, v)| {
                    let key = k.strip_prefix(PREF_PREFIX)?.to_owned();
                    Some((key, serde_json::from_slice(&v).ok()?))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// `GET /api/session/preferences`: the preferences object.
pub async fn preferences(State(state): State<AppState>, cu: CurrentUser) -> AppResult<Response> {
    Ok(Json(Value::Object(stored(&state, &cu).await?)).into_response())
}

/// `PUT /api/session/preferences/{key}` with a JSON value: 204; 413 for a value over 1 KiB,
/// 400 beyond 16 keys or for a bad key.
pub async fn put_preference(
    State(state): State<AppState>,
    cu: CurrentUser,
    PathParam(key): PathParam<String>,
    JsonBody(value): JsonBody<Value>,
) -> AppResult<StatusCode> {
    let attr = pref_key(&key)?;
    let bytes = serde_json::to_vec(&value).map_err(|e| AppError::Internal(e.into()))?;
    if bytes.len() > MAX_PREF_BYTES {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "preference_too_large",
            format!("a preference value may be at most {MAX_PREF_BYTES} bytes of JSON"),
        ));
    }
    let existing = stored(&state, &cu).await?;
    if !existing.contains_key(&key) && existing.len() >= MAX_PREFS {
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "too_many_preferences",
            format!("a session keeps at most {MAX_PREFS} preferences"),
        ));
    }
    cu.session.insert_raw(&attr, bytes).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/session/preferences/{key}`: 204.
pub async fn delete_preference(
    cu: CurrentUser,
    PathParam(key): PathParam<String>,
) -> AppResult<StatusCode> {
    let attr = pref_key(&key)?;
    cu.session.remove(&attr).await?;
    Ok(StatusCode::NO_CONTENT)
}
