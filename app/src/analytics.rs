//! Figures the application records and the analytics page draws: active sessions sampled
//! periodically into `app_session_samples`, login attempts per hour (`app_login_counts`),
//! expiries and revocations per hour from the audit trail ([`crate::audit::AuditTrail`]: rows for
//! users' events, hourly counters for anonymous ones), and live
//! sessions by platform type and by device class.

use std::collections::BTreeMap;
use std::time::Duration;

use ratatoskr_core::{AuditKind, now_ms};
use ratatoskr_sql::HOUR_MS;
use serde::Serialize;

use crate::charts;
use crate::error::AppResult;
use crate::service;
use crate::state::AppState;

/// How long samples are kept.
const KEEP_SAMPLES_MS: i64 = 7 * 24 * HOUR_MS;
/// Users looked at for the by-platform and by-device breakdowns.
const MAX_USERS_SCANNED: i64 = 10_000;

/// Sample the number of live sessions every `every` (first sample at once), and do the
/// housekeeping of the application's tables.
pub fn spawn_sampler(state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = sample(&state).await {
                tracing::warn!(error = %e, "could not sample active sessions; will retry");
            }
        }
    })
}

/// Take one sample now.
pub async fn sample(state: &AppState) -> anyhow::Result<i64> {
    let now = now_ms();
    let active = i64::try_from(state.sessions.store().count().await?).unwrap_or(i64::MAX);
    metrics::gauge!("ratatoskr_active_sessions").set(active as f64);
    state
        .db
        .record_sample(now, active, now - KEEP_SAMPLES_MS)
        .await?;
    state
        .db
        .prune(now, service::LOCK_WINDOW_MS, now - 30 * 24 * HOUR_MS)
        .await?;
    let retention = i64::try_from(state.settings.audit_retention.as_millis()).unwrap_or(i64::MAX);
    state.audit.prune(now.saturating_sub(retention)).await?;
    state.limits.forget_idle();
    state.hasher.release_idle_memory();
    Ok(active)
}

/// Everything behind the analytics page (also `GET /api/admin/analytics`).
#[derive(Serialize)]
pub struct Figures {
    /// Hours covered.
    pub hours: i64,
    /// Start of the period, ms.
    pub from: i64,
    /// End of the period, ms.
    pub to: i64,
    /// Live sessions now.
    pub active_sessions: i64,
    /// Samples of live sessions over the period.
    pub active_over_time: Vec<crate::db::Sample>,
    /// Start of each hour of the period.
    pub hour_starts: Vec<i64>,
    /// Successful logins per hour.
    pub logins: Vec<u64>,
    /// Failed or locked-out login attempts per hour.
    pub failed_logins: Vec<u64>,
    /// Sessions presented after they had expired or ended, per hour.
    pub expiries: Vec<u64>,
    /// Sessions revoked (by their user, an administrator, a password change, a disabled
    /// account or the concurrent-session limit), per hour.
    pub revocations: Vec<u64>,
    /// CSRF refusals per hour.
    pub csrf_refusals: Vec<u64>,
    /// Live sessions by the type of their active platform (`none` without one).
    pub sessions_by_platform_type: BTreeMap<String, u64>,
    /// Live sessions by device class.
    pub sessions_by_device_class: BTreeMap<String, u64>,
    /// Platform connections by type.
    pub platforms_by_type: BTreeMap<String, u64>,
}

/// Compute the figures for the last `hours` hours.
pub async fn figures(state: &AppState, hours: i64) -> AppResult<Figures> {
    let hours = hours.clamp(1, 168);
    let to = now_ms();
    let first_hour = (to - (hours - 1) * HOUR_MS).div_euclid(HOUR_MS) * HOUR_MS;
    let hour_starts: Vec<i64> = (0..hours).map(|i| first_hour + i * HOUR_MS).collect();
    let index = |hour: i64| usize::try_from((hour - first_hour) / HOUR_MS).ok();
    let zeros = vec![0u64; hour_starts.len()];
    let (mut logins, mut failed, mut expiries, mut revocations, mut csrf) = (
        zeros.clone(),
        zeros.clone(),
        zeros.clone(),
        zeros.clone(),
        zeros,
    );

    for (hour, result, count) in state.db.login_counts(first_hour).await? {
        if let Some(i) = index(hour).filter(|i| *i < hour_starts.len()) {
            let c = u64::try_from(count).unwrap_or(0);
            match result.as_str() {
                "success" => logins[i] += c,
                _ => failed[i] += c,
            }
        }
    }
    for h in state.audit.counts_by_hour(first_hour).await? {
        let Some(i) = index(h.hour).filter(|i| *i < hour_starts.len()) else {
            continue;
        };
        match h.kind {
            AuditKind::Expired => expiries[i] += h.count,
            AuditKind::RevokedByUser
            | AuditKind::RevokedByAdmin
            | AuditKind::RevokedAll
            | AuditKind::EvictedByLimit => revocations[i] += h.count,
            AuditKind::CsrfRefused => csrf[i] += h.count,
            _ => {}
        }
    }

    let mut by_platform = BTreeMap::new();
    let mut by_device = BTreeMap::new();
    for (_, sessions) in service::all_sessions(state, MAX_USERS_SCANNED, |_, _| {}).await? {
        for s in sessions {
            *by_platform
                .entry(s.platform_type.unwrap_or_else(|| "none".into()))
                .or_insert(0) += 1;
            *by_device.entry(s.device_class).or_insert(0) += 1;
        }
    }
    let platforms_by_type = state
        .db
        .platforms_by_type()
        .await?
        .into_iter()
        .map(|(t, c)| (t, u64::try_from(c).unwrap_or(0)))
        .collect();
    let active_sessions = i64::try_from(state.sessions.store().count().await?).unwrap_or(i64::MAX);
    let from = to - hours * HOUR_MS;
    Ok(Figures {
        hours,
        from,
        to,
        active_sessions,
        active_over_time: state.db.samples(from).await?,
        hour_starts,
        logins,
        failed_logins: failed,
        expiries,
        revocations,
        csrf_refusals: csrf,
        sessions_by_platform_type: by_platform,
        sessions_by_device_class: by_device,
        platforms_by_type,
    })
}

/// One chart for the page.
#[derive(Serialize)]
pub struct Chart {
    /// The SVG markup (generated here, escaped here).
    pub svg: String,
    /// A caption under it.
    pub caption: String,
}

/// The charts of the analytics page.
pub fn charts(f: &Figures) -> Vec<Chart> {
    let points: Vec<(i64, f64)> = f
        .active_over_time
        .iter()
        .map(|s| (s.at, s.active as f64))
        .collect();
    let items = |m: &BTreeMap<String, u64>| -> Vec<(String, u64)> {
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    };
    vec![
        Chart {
            svg: charts::line(
                "chart-active",
                "Active sessions",
                "sessions",
                f.from,
                f.to,
                &points,
            ),
            caption: format!(
                "Live sessions, sampled periodically; {} now.",
                f.active_sessions
            ),
        },
        Chart {
            svg: charts::hourly_bars(
                "chart-logins",
                "Logins per hour",
                &f.hour_starts,
                &[
                    ("logins", f.logins.clone()),
                    ("failed", f.failed_logins.clone()),
                ],
            ),
            caption: "Successful and failed (or locked-out) login attempts.".into(),
        },
        Chart {
            svg: charts::hourly_bars(
                "chart-ends",
                "Expiries and revocations per hour",
                &f.hour_starts,
                &[
                    ("expiries", f.expiries.clone()),
                    ("revocations", f.revocations.clone()),
                    ("CSRF refusals", f.csrf_refusals.clone()),
                ],
            ),
            caption: "From the audit log: expired sessions presented, sessions revoked, refused forgeries."
                .into(),
        },
        Chart {
            svg: charts::categories(
                "chart-platforms",
                "Sessions by active platform type",
                &items(&f.sessions_by_platform_type),
            ),
            caption: "Live sessions by the type of their active platform.".into(),
        },
        Chart {
            svg: charts::categories(
                "chart-devices",
                "Sessions by device class",
                &items(&f.sessions_by_device_class),
            ),
            caption: "Live sessions by the device they logged in from.".into(),
        },
    ]
}
