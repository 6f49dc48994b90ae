//! The figures behind the analytics page: active sessions sampled periodically, login attempts
//! per hour, expiries and revocations per hour from the audit trail
//! ([`crate::services::audit::AuditTrail`]: rows for users' events, hourly counters for
//! anonymous ones), and live sessions by platform type and by device class.

use std::collections::BTreeMap;
use std::time::Duration;

use ratatoskr_core::{AuditKind, SessionManager};
use serde::Serialize;

use crate::db::{Db, Sample};
use crate::domain::time::{HOUR, Timestamp};
use crate::services::accounts::LOCK_WINDOW;
use crate::services::audit::AuditTrail;
use crate::services::error::ServiceResult;
use crate::services::sessions::Sessions;

/// How long samples are kept.
const KEEP_SAMPLES: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long login counts are kept.
const KEEP_LOGIN_COUNTS: Duration = Duration::from_secs(30 * 24 * 3600);
/// Users looked at for the by-platform and by-device breakdowns.
const MAX_USERS_SCANNED: i64 = 10_000;

/// Everything behind the analytics page (also `GET /api/admin/analytics`).
#[derive(Serialize)]
pub struct Figures {
    /// Hours covered.
    pub hours: i64,
    /// Start of the period.
    pub from: Timestamp,
    /// End of the period.
    pub to: Timestamp,
    /// Live sessions now.
    pub active_sessions: i64,
    /// Samples of live sessions over the period.
    pub active_over_time: Vec<Sample>,
    /// Start of each hour of the period.
    pub hour_starts: Vec<Timestamp>,
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

/// What the analytics need: the database, the audit trail and the session manager.
#[derive(Clone, Copy)]
pub struct Analytics<'a> {
    /// The application database.
    pub db: &'a Db,
    /// The audit trail.
    pub audit: &'a AuditTrail,
    /// Session policy over the session store.
    pub manager: &'a SessionManager,
}

impl Analytics<'_> {
    /// Live sessions now.
    async fn live(&self) -> ServiceResult<i64> {
        Ok(i64::try_from(self.manager.store().count().await?).unwrap_or(i64::MAX))
    }

    /// Record one sample of the live sessions now; returns it.
    pub async fn record_sample(&self) -> ServiceResult<i64> {
        let now = Timestamp::now();
        let active = self.live().await?;
        metrics::gauge!("ratatoskr_active_sessions").set(active as f64);
        self.db
            .record_sample(now, active, now.minus(KEEP_SAMPLES))
            .await?;
        Ok(active)
    }

    /// Drop what is past keeping: throttle rows whose window and lock are over, old login
    /// counts, audit rows and counters older than `audit_retention`.
    pub async fn prune(&self, audit_retention: Duration) -> ServiceResult<()> {
        let now = Timestamp::now();
        self.db.prune_throttle(now, LOCK_WINDOW).await?;
        self.db
            .prune_login_counts(now.minus(KEEP_LOGIN_COUNTS))
            .await?;
        self.audit.prune(now.minus(audit_retention)).await?;
        Ok(())
    }

    /// Compute the figures for the last `hours` hours (1–168).
    pub async fn figures(&self, hours: i64) -> ServiceResult<Figures> {
        let hours = hours.clamp(1, 168);
        let span = |n: i64| HOUR * u32::try_from(n).unwrap_or(0);
        let to = Timestamp::now();
        let first_hour = to.minus(span(hours - 1)).hour_start();
        let hour_starts: Vec<Timestamp> = (0..hours).map(|i| first_hour.plus(span(i))).collect();
        let index = |hour: Timestamp| {
            let i = usize::try_from(hour.since(first_hour).as_secs() / 3600).ok()?;
            (hour >= first_hour && i < hour_starts.len()).then_some(i)
        };
        let zeros = vec![0u64; hour_starts.len()];
        let (mut logins, mut failed, mut expiries, mut revocations, mut csrf) = (
            zeros.clone(),
            zeros.clone(),
            zeros.clone(),
            zeros.clone(),
            zeros,
        );
        for c in self.db.login_counts(first_hour).await? {
            if let Some(i) = index(c.hour) {
                let n = u64::try_from(c.count).unwrap_or(0);
                if c.success {
                    logins[i] += n;
                } else {
                    failed[i] += n;
                }
            }
        }
        for h in self.audit.counts_by_hour(first_hour).await? {
            let Some(i) = index(h.hour) else {
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
        let (by_platform, by_device) = self.breakdowns().await?;
        let platforms_by_type = self
            .db
            .platforms_by_type()
            .await?
            .into_iter()
            .map(|(t, c)| (t, u64::try_from(c).unwrap_or(0)))
            .collect();
        let from = to.minus(span(hours));
        Ok(Figures {
            hours,
            from,
            to,
            active_sessions: self.live().await?,
            active_over_time: self.db.samples(from).await?,
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

    /// Live sessions by active platform type and by device class.
    async fn breakdowns(&self) -> ServiceResult<(BTreeMap<String, u64>, BTreeMap<String, u64>)> {
        let mut by_platform = BTreeMap::new();
        let mut by_device = BTreeMap::new();
        let sessions = Sessions {
            manager: self.manager,
            db: self.db,
        };
        for (_, list) in sessions.all(MAX_USERS_SCANNED, |_, _| {}).await? {
            for s in list {
                let platform = s.platform_type.map_or("none", |t| t.as_str());
                *by_platform.entry(platform.to_owned()).or_insert(0) += 1;
                *by_device
                    .entry(s.device_class.as_str().to_owned())
                    .or_insert(0) += 1;
            }
        }
        Ok((by_platform, by_device))
    }
}
