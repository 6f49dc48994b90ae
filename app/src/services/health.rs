//! The session health report: each configured tier, whether it answers and how fast, the
//! fallback state, and the session policy. Served as JSON (`GET /health/sessions`) and shown on
//! the admin page.

use std::time::Duration;

use ratatoskr_core::SessionManager;
use ratatoskr_tiered::breaker::BreakerState;
use serde::Serialize;

use crate::stores::Stores;

/// How long a probe waits for a store.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The overall state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every configured tier answers.
    Ok,
    /// Redis is configured but skipped (its breaker is not closed); the database answers.
    Degraded,
    /// The database does not answer.
    Down,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct HealthReport {
    /// The overall state.
    pub status: Status,
    /// Each tier.
    pub tiers: Tiers,
    /// Serving from the database while Redis is skipped.
    pub fallback: Fallback,
    /// The sessions and their policy.
    pub sessions: SessionsHealth,
}

/// The tiers.
#[derive(Debug, Serialize)]
pub struct Tiers {
    /// The database.
    pub database: DatabaseTier,
    /// Redis, when configured.
    pub redis: RedisTier,
}

/// The database tier.
#[derive(Debug, Serialize)]
pub struct DatabaseTier {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Whether it answered a ping in time.
    pub ok: bool,
    /// How long the ping took, in ms (two decimals).
    pub latency_ms: f64,
    /// The tiered store's moving average of database latency, in µs.
    pub tiered_latency_us: Option<u64>,
}

/// The Redis tier.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RedisTier {
    /// No Redis configured: `{"configured": false}`.
    NotConfigured {
        /// Always false.
        configured: bool,
    },
    /// Redis in front of the database.
    Configured {
        /// Always true.
        configured: bool,
        /// Whether its breaker is closed (requests go to it).
        ok: bool,
        /// `closed`, `open` or `half_open`.
        breaker: &'static str,
        /// Breaker state changes so far.
        breaker_transitions: u64,
        /// Moving average of Redis latency, in µs.
        latency_us: u64,
        /// Sessions in the near cache.
        near_cache_entries: Option<usize>,
        /// Bytes in the near cache.
        near_cache_bytes: Option<usize>,
    },
}

/// Serving from the database while Redis is skipped.
#[derive(Debug, Serialize)]
pub struct Fallback {
    /// Whether it is happening now.
    pub active: bool,
    /// Requests served from the database because Redis was skipped.
    pub fallbacks: u64,
    /// Redis invalidations still owed (the outage journal).
    pub journal_pending: u64,
    /// Touches waiting to be written to the database.
    pub touches_pending: usize,
}

/// The sessions and their policy.
#[derive(Debug, Serialize)]
pub struct SessionsHealth {
    /// The store sessions go through.
    pub store: &'static str,
    /// Live sessions (none when the database does not answer).
    pub active: Option<u64>,
    /// `2h`.
    pub idle_timeout: String,
    /// `24h`.
    pub absolute_timeout: String,
    /// Concurrent sessions per user.
    pub max_per_user: Option<usize>,
}

/// Probe the stores and report.
pub async fn report(stores: &Stores, manager: &SessionManager) -> HealthReport {
    let started = std::time::Instant::now();
    let db_ok = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, stores.sql.store().ping()).await,
        Ok(Ok(()))
    );
    let db_latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let active = if db_ok {
        tokio::time::timeout(PROBE_TIMEOUT, manager.store().count())
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        None
    };
    let tiered = stores.tiered.as_ref().map(|t| t.health());
    let redis_ok = tiered.as_ref().map(|h| h.breaker == BreakerState::Closed);
    let status = match (db_ok, redis_ok) {
        (false, _) => Status::Down,
        (true, Some(false)) => Status::Degraded,
        _ => Status::Ok,
    };
    let redis = match &tiered {
        Some(h) => RedisTier::Configured {
            configured: true,
            ok: h.breaker == BreakerState::Closed,
            breaker: h.breaker.as_str(),
            breaker_transitions: h.breaker_transitions,
            latency_us: h.redis_latency_us,
            near_cache_entries: h.near_cache.map(|c| c.0),
            near_cache_bytes: h.near_cache.map(|c| c.1),
        },
        None => RedisTier::NotConfigured { configured: false },
    };
    let cfg = manager.config();
    HealthReport {
        status,
        tiers: Tiers {
            database: DatabaseTier {
                backend: stores.sql.backend_name(),
                ok: db_ok,
                latency_ms: (db_latency_ms * 100.0).round() / 100.0,
                tiered_latency_us: tiered.as_ref().map(|h| h.database_latency_us),
            },
            redis,
        },
        fallback: Fallback {
            active: redis_ok == Some(false),
            fallbacks: tiered.as_ref().map_or(0, |h| h.fallbacks),
            journal_pending: tiered.as_ref().map_or(0, |h| h.journal_pending),
            touches_pending: tiered.as_ref().map_or(0, |h| h.touches_pending),
        },
        sessions: SessionsHealth {
            store: manager.store().backend_name(),
            active,
            idle_timeout: humantime::format_duration(cfg.idle_timeout).to_string(),
            absolute_timeout: humantime::format_duration(cfg.absolute_timeout).to_string(),
            max_per_user: cfg.max_sessions_per_user,
        },
    }
}
