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

/// The session attribute holding the preferences: one JSON object of at most [`MAX_PREFS`]
/// keys, written whole, so no interleaving of writes can store more.
pub const PREFS_ATTR: &str = "app.prefs";
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

fn pref_key(raw: &str) -> AppResult<&str> {
    let ok = (1..=32).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(raw)
    } else {
        Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "invalid_preference_key",
            "a preference key is 1 to 32 of a-z, 0-9, '_' and '-'",
        ))
    }
}

/// A preferences object as stored (undecodable means none).
fn decode(raw: Option<&[u8]>) -> Map<String, Value> {
    raw.and_then(|v| serde_json::from_slice(v).ok())
        .unwrap_or_default()
}

/// The session's preferences as the store has them now (not as this request loaded them:
/// another request may have changed them since).
async fn stored(state: &AppState, cu: &CurrentUser) -> AppResult<Map<String, Value>> {
    let Some(handle) = cu.session.handle().await? else {
        return Ok(Map::new());
    };
    let list = state.sessions.list_user(&cu.id_string()).await?;
    let Some(me) = list.into_iter().find(|s| s.handle == handle) else {
        return Ok(Map::new());
    };
    let record = state.sessions.store().load(&me.key).await?;
    Ok(decode(
        record
            .as_ref()
            .and_then(|r| r.attrs.get(PREFS_ATTR))
            .map(Vec::as_slice),
    ))
}

/// Read, change and write the session's preferences as one step: `change` gets the stored
/// object and says whether to write it back. Writes to one session are serialized in this
/// process (so none is lost), and the object is one attribute, so whatever the interleaving
/// (other instances included) a session never holds more than [`MAX_PREFS`].
async fn update(
    state: &AppState,
    cu: &CurrentUser,
    change: impl FnOnce(&mut Map<String, Value>) -> AppResult<bool>,
) -> AppResult<()> {
    let Some(handle) = cu.session.handle().await? else {
        return Err(ratatoskr_axum::SessionError::Unauthenticated.into());
    };
    let _turn = state.pref_locks.lock(&handle.to_string()).await;
    let mut prefs = stored(state, cu).await?;
    let before = prefs.len();
    if !change(&mut prefs)? {
        return Ok(());
    }
    if prefs.len() > MAX_PREFS && prefs.len() > before {
        // The bound is checked on what is written, whatever `change` did.
        return Err(too_many());
    }
    let bytes = serde_json::to_vec(&prefs).map_err(|e| AppError::Internal(e.into()))?;
    cu.session.insert_raw(PREFS_ATTR, bytes).await?;
    cu.session.save().await?;
    Ok(())
}

fn too_many() -> AppError {
    AppError::new(
        StatusCode::BAD_REQUEST,
        "too_many_preferences",
        format!("a session keeps at most {MAX_PREFS} preferences"),
    )
}

/// `GET /api/session/preferences`: the preferences object.
pub async fn preferences(cu: CurrentUser) -> AppResult<Response> {
    let raw = cu.session.get_raw(PREFS_ATTR).await?;
    Ok(Json(Value::Object(decode(raw.as_deref()))).into_response())
}

/// `PUT /api/session/preferences/{key}` with a JSON value: 204; 413 for a value over 1 KiB,
/// 400 beyond 16 keys or for a bad key.
pub async fn put_preference(
    State(state): State<AppState>,
    cu: CurrentUser,
    PathParam(key): PathParam<String>,
    JsonBody(value): JsonBody<Value>,
) -> AppResult<StatusCode> {
    let key = pref_key(&key)?;
    let bytes = serde_json::to_vec(&value).map_err(|e| AppError::Internal(e.into()))?;
    if bytes.len() > MAX_PREF_BYTES {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "preference_too_large",
            format!("a preference value may be at most {MAX_PREF_BYTES} bytes of JSON"),
        ));
    }
    update(&state, &cu, |prefs| {
        if !prefs.contains_key(key) && prefs.len() >= MAX_PREFS {
            return Err(too_many());
        }
        prefs.insert(key.to_owned(), value);
        Ok(true)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/session/preferences/{key}`: 204.
pub async fn delete_preference(
    State(state): State<AppState>,
    cu: CurrentUser,
    PathParam(key): PathParam<String>,
) -> AppResult<StatusCode> {
    let key = pref_key(&key)?;
    update(&state, &cu, |prefs| Ok(prefs.remove(key).is_some())).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Async locks by name, striped: a fixed set of mutexes, each name always taking the same one
/// (two names may share one; that only makes them wait for each other).
pub struct Stripes(Box<[tokio::sync::Mutex<()>]>);

impl Default for Stripes {
    fn default() -> Self {
        Stripes((0..64).map(|_| tokio::sync::Mutex::new(())).collect())
    }
}

impl Stripes {
    /// Wait for `name`'s turn.
    pub async fn lock(&self, name: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher as _, Hasher as _};
        static SEED: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
        let mut h = SEED.get_or_init(std::hash::RandomState::new).build_hasher();
        h.write(name.as_bytes());
        let i = usize::try_from(h.finish() % self.0.len() as u64).unwrap_or(0);
        self.0[i].lock().await
    }
}
