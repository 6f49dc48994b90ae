//! The background sampler: every few seconds (`RATATOSKR_SAMPLE_EVERY`) it records the number
//! of live sessions for the analytics chart and does the housekeeping of the application's
//! tables and in-memory limits. It composes services, so it lives beside start-up.

use std::time::Duration;

use crate::web::state::AppState;

/// Sample every `every` (first sample at once) until aborted.
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

/// Take one sample now, and do the housekeeping: prune old rows, forget idle clients, give the
/// hashing pool's memory back when it has been idle. Returns the live sessions.
pub async fn sample(state: &AppState) -> anyhow::Result<i64> {
    let analytics = state.analytics();
    let active = analytics.record_sample().await?;
    analytics.prune(state.settings.audit_retention).await?;
    state.limits.forget_idle();
    state.hasher.release_idle_memory();
    Ok(active)
}
