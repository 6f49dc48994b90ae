//! The application's audit trail: events that concern a user are rows in the SQL audit log;
//! anonymous events are only counted, per hour, kind and reason.
//!
//! Anyone can make anonymous events without limit: a made-up session cookie is an "expired"
//! event, a cross-site post a "CSRF refused" one. Written as rows, on the request path, they
//! would let anonymous traffic grow the database and slow every request down. So an event
//! without a user is added to a counter in memory (no I/O on the request path), and a
//! background task adds the counters to `app_audit_counts` every few seconds: its size grows
//! with hours × kinds × reasons, never with traffic. Events of a user (logins, revocations,
//! fingerprint mismatches, refused forgeries on a logged-in session…) stay rows, searchable
//! per user. Both are pruned after the configured retention (`RATATOSKR_AUDIT_RETENTION`,
//! 90 days by default).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ratatoskr_core::{AuditEvent, AuditKind, AuditSink};
use ratatoskr_sql::SqlAudit;

use crate::db::{AuditCount, Db};
use crate::domain::time::Timestamp;

/// Longest reason kept for a counter (the library's reasons are short codes and sentences).
const MAX_REASON: usize = 80;
/// Most distinct counters held between two flushes; beyond, new reasons count as `other`.
const MAX_PENDING: usize = 1024;
/// How often counters are written to the database.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

type CounterKey = (Timestamp, AuditKind, String);

/// Audit events of one kind in one hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HourlyCount {
    /// The hour's start.
    pub hour: Timestamp,
    /// The kind.
    pub kind: AuditKind,
    /// How many.
    pub count: u64,
}

/// The audit sink of the application (cheap to clone).
#[derive(Clone)]
pub struct AuditTrail {
    rows: SqlAudit,
    db: Db,
    pending: Arc<Mutex<HashMap<CounterKey, u64>>>,
}

impl std::fmt::Debug for AuditTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTrail")
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl AuditTrail {
    /// Rows go to `rows`, anonymous counters to `db`'s `app_audit_counts`.
    pub fn new(rows: SqlAudit, db: Db) -> Self {
        AuditTrail {
            rows,
            db,
            pending: Arc::default(),
        }
    }

    /// The SQL audit log (the rows).
    pub fn rows(&self) -> &SqlAudit {
        &self.rows
    }

    fn count(&self, e: &AuditEvent) {
        let hour = Timestamp::from_millis(e.at).hour_start();
        let mut reason: String = e.detail.as_deref().unwrap_or("").to_owned();
        if reason.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let key = (hour, e.kind, reason);
        if pending.len() >= MAX_PENDING && !pending.contains_key(&key) {
            *pending.entry((hour, e.kind, "other".into())).or_insert(0) += 1;
        } else {
            *pending.entry(key).or_insert(0) += 1;
        }
    }

    /// Write the counters held in memory to the database. On failure they are kept for the
    /// next flush.
    pub async fn flush(&self) -> Result<(), sqlx::Error> {
        let taken: Vec<(CounterKey, u64)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.drain().collect()
        };
        let mut result = Ok(());
        let mut failed = Vec::new();
        for ((hour, kind, reason), n) in taken {
            if result.is_ok() {
                let count = i64::try_from(n).unwrap_or(i64::MAX);
                match self
                    .db
                    .add_audit_count(hour, kind.as_str(), &reason, count)
                    .await
                {
                    Ok(()) => continue,
                    Err(e) => result = Err(e),
                }
            }
            failed.push(((hour, kind, reason), n));
        }
        if !failed.is_empty() {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (key, n) in failed {
                *pending.entry(key).or_insert(0) += n;
            }
        }
        result
    }

    /// Events per hour and kind since `since`, rows and counters together (counters still in
    /// memory are written first), oldest hour first.
    pub async fn counts_by_hour(&self, since: Timestamp) -> anyhow::Result<Vec<HourlyCount>> {
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "could not write the anonymous audit counters");
        }
        let mut all: HashMap<(Timestamp, AuditKind), u64> = HashMap::new();
        for h in self.rows.counts_by_hour(None, since.as_millis()).await? {
            *all.entry((Timestamp::from_millis(h.hour), h.kind))
                .or_insert(0) += h.count;
        }
        for c in self.db.audit_counts(since).await? {
            if let Some(kind) = AuditKind::parse(&c.kind) {
                *all.entry((c.hour, kind)).or_insert(0) += u64::try_from(c.count).unwrap_or(0);
            }
        }
        let mut out: Vec<HourlyCount> = all
            .into_iter()
            .map(|((hour, kind), count)| HourlyCount { hour, kind, count })
            .collect();
        out.sort_by(|a, b| (a.hour, a.kind.as_str()).cmp(&(b.hour, b.kind.as_str())));
        Ok(out)
    }

    /// Anonymous events per hour, kind and reason since `since` (written counters only).
    pub async fn anonymous_counts(&self, since: Timestamp) -> Result<Vec<AuditCount>, sqlx::Error> {
        self.db.audit_counts_by_reason(since).await
    }

    /// Delete rows and counters older than `before`; returns how many rows were deleted.
    pub async fn prune(&self, before: Timestamp) -> anyhow::Result<u64> {
        let rows = self.rows.prune(before.as_millis()).await?;
        self.db.prune_audit_counts(before).await?;
        Ok(rows)
    }

    /// Write the counters every [`FLUSH_EVERY`] until aborted.
    pub fn spawn_flusher(&self) -> tokio::task::JoinHandle<()> {
        let trail = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(FLUSH_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(e) = trail.flush().await {
                    tracing::warn!(error = %e, "could not write the anonymous audit counters; will retry");
                }
            }
        })
    }
}

#[async_trait]
impl AuditSink for AuditTrail {
    async fn record(&self, event: AuditEvent) {
        if event.user_id.is_some() {
            self.rows.record(event).await;
        } else {
            self.count(&event);
        }
    }
}
