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

/// The session health report (`GET /health/sessions`, and the admin page's panel):
/// `ok` when every configured tier answers, `degraded` when Redis is configured but skipped
/// (breaker not closed) while the database answers, `down` when the database does not.
pub async fn report(state: &AppState) -> serde_json::Value {
    let started = std::time::Instant::now();
    let db_ok = matches!(
        tokio::time::timeout(READY_TIMEOUT, state.stores.sql.store().ping()).await,
        Ok(Ok(()))
    );
    let db_latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let count = if db_ok {
        tokio::time::timeout(READY_TIMEOUT, state.sessions.store().count())
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        None
    };
    let tiered = state.stores.tiered.as_ref().map(|t| t.health());
    let redis_ok = tiered
        .as_ref()
        .map(|h| h.breaker == ratatoskr_tiered::breaker::BreakerState::Closed);
    let status = match (db_ok, redis_ok) {
        (false, _) => "down",
        (true, Some(false)) => "degraded",
        _ => "ok",
    };
    let redis = match &tiered {
        Some(h) => json!({
            "configured": true,
            "ok": redis_ok,
            "breaker": h.breaker.as_str(),
            "breaker_transitions": h.breaker_transitions,
            "latency_us": h.redis_latency_us,
            "near_cache_entries": h.near_cache.map(|c| c.0),
            "near_cache_bytes": h.near_cache.map(|c| c.1),
        }),
        None => json!({"configured": false}),
    };
    let cfg = state.sessions.config();
    json!({
        "status": status,
        "tiers": {
            "database": {
                "backend": state.stores.sql.backend_name(),
                "ok": db_ok,
                "latency_ms": (db_latency_ms * 100.0).round() / 100.0,
                "tiered_latency_us": tiered.as_ref().map(|h| h.database_latency_us),
            },
            "redis": redis,
        },
        "fallback": {
            "active": redis_ok == Some(false),
            "fallbacks": tiered.as_ref().map_or(0, |h| h.fallbacks),
            "journal_pending": tiered.as_ref().map_or(0, |h| h.journal_pending),
            "touches_pending": tiered.as_ref().map_or(0, |h| h.touches_pending),
        },
        "sessions": {
            "store": state.sessions.store().backend_name(),
            "active": count,
            "idle_timeout": humantime::format_duration(cfg.idle_timeout).to_string(),
            "absolute_timeout": humantime::format_duration(cfg.absolute_timeout).to_string(),
            "max_per_user": cfg.max_sessions_per_user,
        },
    })
}

/// `GET /health/sessions`: the report, for administrators; 503 when it is `down`.
pub async fn sessions(State(state): State<AppState>, _admin: crate::extract::Admin) -> Response {
    let r = report(&state).await;
    let status = if r["status"] == "down" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(r)).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
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
