//! A durable audit trail of session lifecycle events, in the `ratatoskr_audit` table.
//!
//! [`SqlAudit`] implements [`AuditSink`]: each event is one row. Recording never fails the
//! request that caused the event; a failed insert is logged as a warning and dropped. The query
//! helpers serve an administration page: the latest events, one user's events, and events per
//! hour per kind for charts.
//!
//! Events name sessions by handle, never by token or key, so the table is safe to show to
//! administrators. It grows with traffic: call [`SqlAudit::prune`] from a scheduled job to keep
//! the retention you need.

use async_trait::async_trait;
use sqlx::pool::Pool;
use sqlx::{PgPool, SqlitePool};

use ratatoskr_core::audit::{AuditEvent, AuditKind, AuditSink};
use ratatoskr_core::{Handle, Millis, StoreError, StoreResult};

use crate::dialect::{AnyPool, Dialect, either};
use crate::driver::stmt;

/// One hour of [`SqlAudit::counts_by_hour`]: how many events of `kind` happened in the hour
/// starting at `hour`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HourlyCount {
    /// Start of the hour, in milliseconds since the Unix epoch (a multiple of 3,600,000).
    pub hour: Millis,
    /// What happened.
    pub kind: AuditKind,
    /// How many times.
    pub count: u64,
}

/// One hour in milliseconds.
pub const HOUR_MS: Millis = 3_600_000;

/// An [`AuditSink`] writing to the `ratatoskr_audit` table of a SQLite or PostgreSQL database.
///
/// Get one from a store ([`crate::SqliteStore::audit`], [`crate::PgStore::audit`],
/// [`crate::SqlStore::audit`]), which shares its pool, or from a pool of your own with
/// [`SqlAudit::from_sqlite_pool`] / [`SqlAudit::from_pg_pool`]. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> Result<(), ratatoskr_core::StoreError> {
/// use ratatoskr_core::{AuditEvent, AuditKind, AuditSink, now_ms};
/// use ratatoskr_sql::SqliteStore;
///
/// let store = SqliteStore::connect("sqlite://sessions.db").await?;
/// let audit = store.audit();
/// audit.record(AuditEvent::new(AuditKind::Created).user(Some("42"))).await;
/// let last_day = audit.counts_by_hour(None, now_ms() - 24 * 3_600_000).await?;
/// for h in last_day {
///     println!("{} {} {}", h.hour, h.kind.as_str(), h.count);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqlAudit(AnyPool);

impl std::fmt::Debug for SqlAudit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SqlAudit").field(&self.backend()).finish()
    }
}

type RawEvent = (i64, String, Option<String>, Option<String>, Option<String>);

impl SqlAudit {
    /// An audit sink on a SQLite pool; applies Ratatoskr's migrations.
    pub async fn from_sqlite_pool(pool: SqlitePool) -> StoreResult<Self> {
        crate::migrate::migrate(&pool).await?;
        Ok(Self::migrated(AnyPool::Sqlite(pool)))
    }

    /// An audit sink on a PostgreSQL pool; applies Ratatoskr's migrations.
    pub async fn from_pg_pool(pool: PgPool) -> StoreResult<Self> {
        crate::migrate::migrate(&pool).await?;
        Ok(Self::migrated(AnyPool::Postgres(pool)))
    }

    pub(crate) fn migrated(pool: AnyPool) -> Self {
        SqlAudit(pool)
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.0.backend()
    }

    fn be(&self) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        move |e| StoreError::backend(self.backend(), e)
    }

    /// Record one event, reporting failure (the [`AuditSink`] impl logs it instead).
    pub async fn try_record(&self, e: &AuditEvent) -> StoreResult<()> {
        either!(&self.0, AnyPool, p => insert(p, e).await).map_err(self.be())
    }

    /// The latest `limit` events, newest first.
    pub async fn recent(&self, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        self.query_events(None, limit).await
    }

    /// The latest `limit` events concerning `user_id`, newest first.
    pub async fn recent_for_user(&self, user_id: &str, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        self.query_events(Some(user_id), limit).await
    }

    async fn query_events(&self, user: Option<&str>, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let limit = i64::from(limit);
        let rows =
            either!(&self.0, AnyPool, p => events(p, user, limit).await).map_err(self.be())?;
        Ok(rows
            .into_iter()
            .filter_map(|(at, kind, handle, user_id, detail)| {
                let Some(kind) = AuditKind::parse(&kind) else {
                    tracing::debug!(
                        kind,
                        "skipping an audit event of a kind this build does not know"
                    );
                    return None;
                };
                Some(AuditEvent {
                    at,
                    kind,
                    handle: handle.as_deref().and_then(Handle::parse),
                    user_id,
                    detail,
                })
            })
            .collect())
    }

    /// Events per hour and kind since `since` (only of `kind`, if given), oldest hour first and
    /// kinds in name order within an hour. Hours without events are absent.
    pub async fn counts_by_hour(
        &self,
        kind: Option<AuditKind>,
        since: Millis,
    ) -> StoreResult<Vec<HourlyCount>> {
        let kind = kind.map(AuditKind::as_str);
        let rows =
            either!(&self.0, AnyPool, p => hourly(p, kind, since).await).map_err(self.be())?;
        Ok(rows
            .into_iter()
            .filter_map(|(hour, kind, count)| {
                Some(HourlyCount {
                    hour,
                    kind: AuditKind::parse(&kind)?,
                    count: u64::try_from(count).unwrap_or(0),
                })
            })
            .collect())
    }

    /// Delete events older than `before`; returns how many were deleted.
    pub async fn prune(&self, before: Millis) -> StoreResult<u64> {
        either!(&self.0, AnyPool, p => delete_before(p, before).await).map_err(self.be())
    }
}

#[async_trait]
impl AuditSink for SqlAudit {
    async fn record(&self, event: AuditEvent) {
        if let Err(error) = self.try_record(&event).await {
            tracing::warn!(
                backend = self.backend(),
                kind = event.kind.as_str(),
                %error,
                "could not record a session audit event"
            );
        }
    }
}

async fn insert<D: Dialect>(pool: &Pool<D>, e: &AuditEvent) -> Result<(), sqlx::Error> {
    let handle = e.handle.map(|h| h.to_string());
    stmt::<D>(
        "INSERT INTO ratatoskr_audit (at, kind, handle, user_id, detail)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(e.at)
    .bind(e.kind.as_str())
    .bind(handle.as_deref())
    .bind(e.user_id.as_deref())
    .bind(e.detail.as_deref())
    .execute_in(pool)
    .await
    .map(drop)
}

async fn events<D: Dialect>(
    pool: &Pool<D>,
    user: Option<&str>,
    limit: i64,
) -> Result<Vec<RawEvent>, sqlx::Error> {
    stmt::<D>(
        "SELECT at, kind, handle, user_id, detail FROM ratatoskr_audit
         WHERE ($1 IS NULL OR user_id = $1)
         ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(user)
    .bind(limit)
    .fetch_tuples_in(pool)
    .await
}

async fn hourly<D: Dialect>(
    pool: &Pool<D>,
    kind: Option<&str>,
    since: Millis,
) -> Result<Vec<(i64, String, i64)>, sqlx::Error> {
    stmt::<D>(
        "SELECT (at / 3600000) * 3600000 AS hour, kind, count(*)
         FROM ratatoskr_audit
         WHERE at >= $1 AND ($2 IS NULL OR kind = $2)
         GROUP BY hour, kind ORDER BY hour, kind",
    )
    .bind(since)
    .bind(kind)
    .fetch_tuples_in(pool)
    .await
}

async fn delete_before<D: Dialect>(pool: &Pool<D>, before: Millis) -> Result<u64, sqlx::Error> {
    stmt::<D>("DELETE FROM ratatoskr_audit WHERE at < $1")
        .bind(before)
        .execute_in(pool)
        .await
}
