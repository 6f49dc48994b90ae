//! `app_login_throttle`: failed-attempt windows and locks per throttled name (a user name, or
//! `pw:<user id>` for password changes).
//!
//! `failures` counts the attempts reserved in the current window: those being checked now and
//! those that failed. An attempt is reserved before its password is checked, by one conditional
//! update, so however many requests arrive at once, at most `max` are checked per window; a
//! failure that finds the window full sets the lock.

use std::time::Duration;

use crate::domain::time::Timestamp;

use super::pool::{Db, q, qa};

/// The answer to [`Db::reserve_attempt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The attempt may check its password.
    Granted,
    /// Locked, or the window's attempts are used up: not before then.
    Refused(Timestamp),
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Db {
    /// Reserve one attempt for `name` before checking its password: [`Attempt::Granted`] when
    /// fewer than `max` are reserved in the `window` and no lock is in force, else
    /// [`Attempt::Refused`] with when to come back.
    pub async fn reserve_attempt(
        &self,
        name: &str,
        now: Timestamp,
        window: Duration,
        max: i64,
    ) -> Result<Attempt, sqlx::Error> {
        // A fresh window when the old one is over or a lock has run out (only one request can
        // win this: afterwards the condition is false).
        q!(
            self,
            execute,
            "INSERT INTO app_login_throttle (username, failures, window_start, locked_until)
             VALUES ($1, 0, $2, 0)
             ON CONFLICT (username) DO UPDATE SET failures = 0, window_start = $2, locked_until = 0
             WHERE app_login_throttle.locked_until <= $2
               AND (app_login_throttle.window_start + $3 <= $2 OR app_login_throttle.locked_until > 0)",
            name,
            now.as_millis(),
            ms(window)
        )?;
        let reserved = q!(
            self,
            execute,
            "UPDATE app_login_throttle SET failures = failures + 1
             WHERE username = $1 AND locked_until <= $2 AND failures < $3",
            name,
            now.as_millis(),
            max
        )?;
        if reserved == 1 {
            return Ok(Attempt::Granted);
        }
        let row = qa!(
            self,
            fetch_optional,
            (i64, i64),
            "SELECT locked_until, window_start FROM app_login_throttle WHERE username = $1",
            name
        )?;
        Ok(Attempt::Refused(match row {
            Some((locked_until, _)) if locked_until > now.as_millis() => {
                Timestamp::from_millis(locked_until)
            }
            // The window is full of attempts being checked: come back when it ends.
            Some((_, window_start)) => Timestamp::from_millis(window_start)
                .plus(window)
                .max(now.plus(Duration::from_secs(1))),
            None => now.plus(window),
        }))
    }

    /// Give back a reserved attempt whose password was not checked (the hashing pool was full).
    pub async fn release_attempt(&self, name: &str, now: Timestamp) -> Result<(), sqlx::Error> {
        q!(
            self,
            execute,
            "UPDATE app_login_throttle SET failures = failures - 1
             WHERE username = $1 AND failures > 0 AND locked_until <= $2",
            name,
            now.as_millis()
        )?;
        Ok(())
    }

    /// A reserved attempt failed: it stays counted, and when the window is full the name is
    /// locked for `lock`. Returns the end of the lock in force after this failure, if any.
    pub async fn fail_attempt(
        &self,
        name: &str,
        now: Timestamp,
        max: i64,
        lock: Duration,
    ) -> Result<Option<Timestamp>, sqlx::Error> {
        q!(
            self,
            execute,
            "UPDATE app_login_throttle SET locked_until = $2
             WHERE username = $1 AND failures >= $3 AND locked_until <= $4",
            name,
            now.plus(lock).as_millis(),
            max,
            now.as_millis()
        )?;
        self.locked_until(name, now).await
    }

    /// A reserved attempt succeeded: forget the window's failures, unless a lock is in force
    /// (set by a failure checked at the same time), which a success never clears. `Ok(None)`
    /// when cleared, `Ok(Some(until))` when locked.
    pub async fn succeed_attempt(
        &self,
        name: &str,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, sqlx::Error> {
        let cleared = q!(
            self,
            execute,
            "UPDATE app_login_throttle SET failures = 0 WHERE username = $1 AND locked_until <= $2",
            name,
            now.as_millis()
        )?;
        if cleared == 1 {
            return Ok(None);
        }
        // No row (pruned: nothing to clear) or a lock in force.
        self.locked_until(name, now).await
    }

    /// The time until which `name` is locked out, if it is now.
    pub async fn locked_until(
        &self,
        name: &str,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, sqlx::Error> {
        Ok(qa!(
            self,
            fetch_optional,
            (i64,),
            "SELECT locked_until FROM app_login_throttle WHERE username = $1 AND locked_until > $2",
            name,
            now.as_millis()
        )?
        .map(|r| Timestamp::from_millis(r.0)))
    }

    /// Housekeeping: drop throttle rows whose window (of length `window`) and lock are over.
    pub async fn prune_throttle(
        &self,
        now: Timestamp,
        window: Duration,
    ) -> Result<(), sqlx::Error> {
        q!(
            self,
            execute,
            "DELETE FROM app_login_throttle WHERE locked_until <= $1 AND window_start + $2 <= $1",
            now.as_millis(),
            ms(window)
        )?;
        Ok(())
    }
}
