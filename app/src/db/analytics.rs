//! The figures the application keeps for its analytics: samples of live sessions
//! (`app_session_samples`), login attempts per hour (`app_login_counts`) and anonymous audit
//! events per hour (`app_audit_counts`).

use serde::Serialize;

use crate::domain::time::{HOUR, Timestamp};

use super::pool::{Db, q, qa};

/// One point of the active-sessions series.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    /// When.
    pub at: Timestamp,
    /// Live sessions then.
    pub active: i64,
}

/// How a login attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginResult {
    /// Logged in.
    Success,
    /// Wrong name or password.
    Failure,
    /// Refused: the name is locked.
    Locked,
}

impl LoginResult {
    /// As stored and as the metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginResult::Success => "success",
            LoginResult::Failure => "failure",
            LoginResult::Locked => "locked",
        }
    }
}

/// Login attempts of one result in one hour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginCount {
    /// The hour's start.
    pub hour: Timestamp,
    /// Whether they succeeded (anything else failed or was locked out).
    pub success: bool,
    /// How many.
    pub count: i64,
}

/// Anonymous audit events of one kind (and reason) in one hour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditCount {
    /// The hour's start.
    pub hour: Timestamp,
    /// The event kind (`ratatoskr_core::AuditKind::as_str`).
    pub kind: String,
    /// The reason, when counted by reason.
    pub reason: Option<String>,
    /// How many.
    pub count: i64,
}

impl Db {
    /// Record the number of live sessions at `at`, and drop samples older than `keep_since`.
    pub async fn record_sample(
        &self,
        at: Timestamp,
        active: i64,
        keep_since: Timestamp,
    ) -> Result<(), sqlx::Error> {
        q!(
            self,
            execute,
            "INSERT INTO app_session_samples (at, active) VALUES ($1, $2)
             ON CONFLICT (at) DO UPDATE SET active = excluded.active",
            at.as_millis(),
            active
        )?;
        q!(
            self,
            execute,
            "DELETE FROM app_session_samples WHERE at < $1",
            keep_since.as_millis()
        )?;
        Ok(())
    }

    /// Samples since `since`, oldest first.
    pub async fn samples(&self, since: Timestamp) -> Result<Vec<Sample>, sqlx::Error> {
        Ok(qa!(
            self,
            fetch_all,
            (i64, i64),
            "SELECT at, active FROM app_session_samples WHERE at >= $1 ORDER BY at",
            since.as_millis()
        )?
        .into_iter()
        .map(|(at, active)| Sample {
            at: Timestamp::from_millis(at),
            active,
        })
        .collect())
    }

    /// Count one login attempt in the hour of `now`.
    pub async fn count_login(
        &self,
        result: LoginResult,
        now: Timestamp,
    ) -> Result<(), sqlx::Error> {
        q!(
            self,
            execute,
            "INSERT INTO app_login_counts (hour, result, count) VALUES ($1, $2, 1)
             ON CONFLICT (hour, result) DO UPDATE SET count = app_login_counts.count + 1",
            now.hour_start().as_millis(),
            result.as_str()
        )?;
        Ok(())
    }

    /// Login attempts per hour and result since `since`.
    pub async fn login_counts(&self, since: Timestamp) -> Result<Vec<LoginCount>, sqlx::Error> {
        Ok(qa!(
            self,
            fetch_all,
            (i64, String, i64),
            "SELECT hour, result, count FROM app_login_counts WHERE hour >= $1 ORDER BY hour, result",
            since.as_millis()
        )?
        .into_iter()
        .map(|(hour, result, count)| LoginCount {
            hour: Timestamp::from_millis(hour),
            success: result == LoginResult::Success.as_str(),
            count,
        })
        .collect())
    }

    /// Add `count` anonymous audit events of `kind` and `reason` to the hour starting at `hour`.
    pub async fn add_audit_count(
        &self,
        hour: Timestamp,
        kind: &str,
        reason: &str,
        count: i64,
    ) -> Result<(), sqlx::Error> {
        q!(
            self,
            execute,
            "INSERT INTO app_audit_counts (hour, kind, reason, count) VALUES ($1, $2, $3, $4)
             ON CONFLICT (hour, kind, reason) DO UPDATE SET count = app_audit_counts.count + $4",
            hour.as_millis(),
            kind,
            reason,
            count
        )?;
        Ok(())
    }

    /// Anonymous audit events per hour and kind since `since` (`reason` is `None`).
    pub async fn audit_counts(&self, since: Timestamp) -> Result<Vec<AuditCount>, sqlx::Error> {
        Ok(qa!(
            self,
            fetch_all,
            (i64, String, i64),
            "SELECT hour, kind, CAST(SUM(count) AS BIGINT) FROM app_audit_counts WHERE hour >= $1
             GROUP BY hour, kind ORDER BY hour, kind",
            since.as_millis()
        )?
        .into_iter()
        .map(|(hour, kind, count)| AuditCount {
            hour: Timestamp::from_millis(hour),
            kind,
            reason: None,
            count,
        })
        .collect())
    }

    /// Anonymous audit events per hour, kind and reason since `since`.
    pub async fn audit_counts_by_reason(
        &self,
        since: Timestamp,
    ) -> Result<Vec<AuditCount>, sqlx::Error> {
        Ok(qa!(
            self,
            fetch_all,
            (i64, String, String, i64),
            "SELECT hour, kind, reason, count FROM app_audit_counts WHERE hour >= $1
             ORDER BY hour, kind, reason",
            since.as_millis()
        )?
        .into_iter()
        .map(|(hour, kind, reason, count)| AuditCount {
            hour: Timestamp::from_millis(hour),
            kind,
            reason: Some(reason),
            count,
        })
        .collect())
    }

    /// Rows of `app_audit_counts` (its size, for tests and health).
    pub async fn count_audit_counters(&self) -> Result<i64, sqlx::Error> {
        Ok(qa!(
            self,
            fetch_one,
            (i64,),
            "SELECT count(*) FROM app_audit_counts"
        )?
        .0)
    }

    /// Drop anonymous audit counts of hours that ended before `before`.
    pub async fn prune_audit_counts(&self, before: Timestamp) -> Result<(), sqlx::Error> {
        q!(
            self,
            execute,
            "DELETE FROM app_audit_counts WHERE hour + $2 <= $1",
            before.as_millis(),
            i64::try_from(HOUR.as_millis()).unwrap_or(i64::MAX)
        )?;
        Ok(())
    }

    /// Drop login counts of hours before `before`.
    pub async fn prune_login_counts(&self, before: Timestamp) -> Result<(), sqlx::Error> {
        q!(
            self,
            execute,
            "DELETE FROM app_login_counts WHERE hour < $1",
            before.as_millis()
        )?;
        Ok(())
    }
}
