//! The session health report: each configured tier, whether it answers and how fast, the
//! fallback state, and the session policy.

use std::time::Duration;

use ratatoskr_core::SessionManager;
use serde_json::json;

use crate::stores::Stores;

/// How long a probe waits for a store.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The session health report (`GET /health/sessions`, and the admin page's panel):
/// `ok` when every configured tier answers, `degraded` when Redis is configured but skipped
/// (breaker not closed) while the database answers, `down` when the database does not.
pub async fn report(stores: &Stores, manager: &SessionManager) -> serde_json::Value {
    let started = std::time::Instant::now();
    let db_ok = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, stores.sql.store().ping()).await,
        Ok(Ok(()))
    );
    let db_latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let count = if db_ok {
        tokio::time::timeout(PROBE_TIMEOUT, manager.store().count())
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        None
    };
    let tiered = stores.tiered.as_ref().map(|t| t.health());
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
    let cfg = manager.config();
    json!({
        "status": status,
        "tiers": {
            "database": {
                "backend": stores.sql.backend_name(),
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
            "store": manager.store().backend_name(),
            "active": count,
            "idle_timeout": humantime::format_duration(cfg.idle_timeout).to_string(),
            "absolute_timeout": humantime::format_duration(cfg.absolute_timeout).to_string(),
            "max_per_user": cfg.max_sessions_per_user,
        },
    })
}
