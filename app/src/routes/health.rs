//! Liveness and readiness: `/livez` answers while the process runs; `/readyz` answers 200 only
//! when sessions can be served (some store answers), else 503.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

/// How long a readiness probe waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /livez`: 200 while the process runs.
pub async fn livez() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when sessions can be served, 503 otherwise.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let store = state.sessions.store();
    match tokio::time::timeout(READY_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => {
            Json(json!({"status": "ready", "store": store.backend_name()})).into_response()
        }
        Ok(Err(e)) => not_ready(&e.to_string()),
        Err(_) => not_ready("the session store did not answer in time"),
    }
}

fn not_ready(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": {"code": "not_ready", "message": message}})),
    )
        .into_response()
}
