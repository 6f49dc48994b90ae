//! Liveness and readiness: `/livez` answers while the process runs; `/readyz` answers 200 only
//! when sessions can be served (some store answers), else 503.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::services::health::{PROBE_TIMEOUT, Status, report};
use crate::web::extract::Admin;
use crate::web::state::AppState;

/// This family's routes: probes, the health report and metrics.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/health/sessions", get(sessions))
        .route("/metrics", get(metrics))
}

/// `GET /livez`: 200 while the process runs.
async fn livez() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when sessions can be served, 503 otherwise.
async fn readyz(State(state): State<AppState>) -> Response {
    let store = state.sessions.store();
    match tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await {
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

/// `GET /health/sessions`: the report, for administrators; 503 when it is `down`.
async fn sessions(State(state): State<AppState>, _admin: Admin) -> Response {
    let r = report(&state.stores, &state.sessions).await;
    let status = if r.status == Status::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(r)).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(n) = state.sessions.store().count().await {
        metrics::gauge!("ratatoskr_active_sessions").set(n as f64);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
