//! Accounts: authentication with per-name lockout, registration, password changes, disabling,
//! and the user behind a session.

use std::time::Duration;

use ratatoskr_axum::{RevokeReason, Session, SessionControl, SessionError};

use crate::db::{Attempt, Db, Inserted, LoginResult};
use crate::domain::device::{self, Device};
use crate::domain::time::Timestamp;
use crate::domain::user::{User, UserId, UserName, check_new_password, plausible_password};
use crate::services::error::{ServiceError, ServiceResult};
use crate::services::hasher::{Busy, Hasher};

/// Failed logins that lock a user name.
pub const MAX_FAILURES: i64 = 5;
/// The window in which failures are counted, and how long a lock lasts.
pub const LOCK_WINDOW: Duration = Duration::from_secs(30 * 60);
/// Wrong current passwords a password change accepts per window before it ends the session.
pub const MAX_PASSWORD_CHANGE_FAILURES: i64 = 3;

/// What account operations need: the users' table, the hashing pool, and session control (to
/// end a user's sessions).
#[derive(Clone, Copy)]
pub struct Accounts<'a> {
    /// The application database.
    pub db: &'a Db,
    /// The password-hashing pool.
    pub hasher: &'a Hasher,
    /// Ends sessions, with audit events.
    pub control: &'a SessionControl,
}

fn count_login(result: LoginResult) {
    metrics::counter!("ratatoskr_app_logins_total", "result" => result.as_str()).increment(1);
}

impl Accounts<'_> {
    /// Check credentials, counting attempts per user name (existing or not) and locking it for
    /// 30 minutes after 5 failures within 30 minutes. Unknown names cost as much as known ones.
    /// Wrong credentials and a disabled account are both [`ServiceError::InvalidCredentials`].
    ///
    /// The attempt is reserved before the password is checked ([`Db::reserve_attempt`]), so any
    /// number of parallel requests get at most 5 verdicts per window, and a success never clears
    /// a lock that is in force.
    pub async fn authenticate(&self, raw_name: &str, password: &str) -> ServiceResult<User> {
        let Ok(name) = UserName::parse(raw_name) else {
            // Not a possible user name: no account can match, nothing to count.
            count_login(LoginResult::Failure);
            return Err(ServiceError::InvalidCredentials);
        };
        let key = name.as_str();
        let now = Timestamp::now();
        if let Attempt::Refused(until) = self
            .db
            .reserve_attempt(key, now, LOCK_WINDOW, MAX_FAILURES)
            .await?
        {
            return self.login_ends(LoginResult::Locked, now, until).await;
        }
        let creds = self.db.credentials(&name).await?;
        // Implausible passwords are never right (and are not worth hashing): check an empty one
        // against the dummy hash, so the answer takes the usual time.
        let (offered, hash) = match &creds {
            Some((_, h)) if plausible_password(password) => (password.to_owned(), Some(h.clone())),
            _ => (String::new(), None),
        };
        let ok = match self.hasher.verify(offered, hash).await {
            Ok(ok) => ok,
            Err(Busy) => {
                self.db.release_attempt(key, Timestamp::now()).await?;
                return Err(ServiceError::Busy);
            }
        };
        let now = Timestamp::now();
        match creds {
            Some((user, _)) if ok && !user.disabled => {
                if let Some(until) = self.db.succeed_attempt(key, now).await? {
                    // Locked by failures checked at the same time: the lock holds.
                    return self.login_ends(LoginResult::Locked, now, until).await;
                }
                self.db.count_login(LoginResult::Success, now).await?;
                count_login(LoginResult::Success);
                Ok(user)
            }
            _ => match self
                .db
                .fail_attempt(key, now, MAX_FAILURES, LOCK_WINDOW)
                .await?
            {
                Some(until) => self.login_ends(LoginResult::Locked, now, until).await,
                None => {
                    self.login_ends(LoginResult::Failure, now, Timestamp::EPOCH)
                        .await
                }
            },
        }
    }

    /// Count a refused login and answer it (`until`: the lock's end, when locked).
    async fn login_ends(
        &self,
        result: LoginResult,
        now: Timestamp,
        until: Timestamp,
    ) -> ServiceResult<User> {
        self.db.count_login(result, now).await?;
        count_login(result);
        Err(match result {
            LoginResult::Locked => ServiceError::LoginLocked(until),
            _ => ServiceError::InvalidCredentials,
        })
    }

    /// Log `user` in on `session` (a new token: the pre-login one is dead) and record the device.
    pub async fn log_in(
        &self,
        session: &Session,
        user: &User,
        device: &Device,
    ) -> ServiceResult<()> {
        session.login(&user.id.session_user_id()).await?;
        session.insert(device::ATTR, device).await?;
        Ok(())
    }

    /// Register a user (the caller checks that registration is open).
    pub async fn register(
        &self,
        raw_name: &str,
        password: &str,
        is_admin: bool,
    ) -> ServiceResult<User> {
        let name = UserName::parse(raw_name)?;
        check_new_password(password)?;
        let hash = self.hash_new(password).await?;
        match self.db.create_user(&name, &hash, is_admin).await? {
            Inserted::Ok(u) => Ok(u),
            Inserted::Duplicate => Err(ServiceError::UsernameTaken),
        }
    }

    /// Hash a new password on the pool.
    async fn hash_new(&self, password: &str) -> ServiceResult<String> {
        match self.hasher.hash(password.to_owned()).await {
            Ok(h) => Ok(h),
            Err(e) if e.is::<Busy>() => Err(ServiceError::Busy),
            Err(e) => Err(ServiceError::Internal(e)),
        }
    }

    /// Change `user`'s password after checking the current one; every session of the user ends
    /// (`session`, the one asking, too). Returns how many sessions ended.
    ///
    /// Wrong current passwords are counted per user like failed logins (reserved before the
    /// check, so parallel guesses are counted too): the third within 30 minutes ends the session
    /// that made it and locks password changes for 30 minutes, during which every attempt is
    /// refused without checking anything. A thief holding a session gets two guesses per window,
    /// not an unlimited supply.
    pub async fn change_password(
        &self,
        user: &User,
        session: &Session,
        current: &str,
        new: &str,
    ) -> ServiceResult<u64> {
        let key = format!("pw:{}", user.id);
        if let Attempt::Refused(until) = self
            .db
            .reserve_attempt(
                &key,
                Timestamp::now(),
                LOCK_WINDOW,
                MAX_PASSWORD_CHANGE_FAILURES,
            )
            .await?
        {
            // Nothing is checked while the lock holds (the session that guessed has ended).
            return Err(ServiceError::PasswordChangesLocked(until));
        }
        let hash = self.db.password_hash(user.id).await?;
        let ok = if !plausible_password(current) {
            false
        } else {
            match self.hasher.verify(current.to_owned(), hash).await {
                Ok(ok) => ok,
                Err(Busy) => {
                    self.db.release_attempt(&key, Timestamp::now()).await?;
                    return Err(ServiceError::Busy);
                }
            }
        };
        if !ok {
            metrics::counter!("ratatoskr_app_password_change_failures_total").increment(1);
            let locked = self
                .db
                .fail_attempt(
                    &key,
                    Timestamp::now(),
                    MAX_PASSWORD_CHANGE_FAILURES,
                    LOCK_WINDOW,
                )
                .await?;
            return Err(match locked {
                Some(until) => password_guessing(user, session, until).await,
                None => ServiceError::WrongPassword,
            });
        }
        if let Some(until) = self.db.succeed_attempt(&key, Timestamp::now()).await? {
            // Locked by wrong guesses checked at the same time.
            return Err(password_guessing(user, session, until).await);
        }
        let n = self.set_password(user, new).await?;
        // This request's own session is among them: clear its cookie too.
        session.logout().await?;
        Ok(n)
    }

    /// Set `user`'s password (no current one asked: the CLI); every session of theirs ends.
    /// Returns how many ended.
    pub async fn set_password(&self, user: &User, new: &str) -> ServiceResult<u64> {
        check_new_password(new)?;
        let new_hash = self.hash_new(new).await?;
        self.db.set_password(user.id, &new_hash).await?;
        Ok(self
            .control
            .revoke_user(&user.id.session_user_id(), RevokeReason::PasswordChanged)
            .await?)
    }

    /// Disable (or enable) a user; disabling ends every session of theirs. Returns how many
    /// ended.
    pub async fn set_disabled(&self, user: &User, disabled: bool) -> ServiceResult<u64> {
        self.db.set_disabled(user.id, disabled).await?;
        if disabled {
            Ok(self
                .control
                .revoke_user(&user.id.session_user_id(), RevokeReason::AccountDisabled)
                .await?)
        } else {
            Ok(0)
        }
    }

    /// A user by name as typed, or [`ServiceError::NotFound`].
    pub async fn user_named(&self, name: &str) -> ServiceResult<User> {
        self.db
            .user_by_name(name)
            .await?
            .ok_or(ServiceError::NotFound("user"))
    }

    /// The enabled user a session is logged in as. A session whose user is gone or disabled is
    /// ended; without a user it is [`SessionError::Unauthenticated`].
    pub async fn session_user(&self, session: &Session) -> ServiceResult<User> {
        let uid = session
            .user_id()
            .await?
            .ok_or(SessionError::Unauthenticated)?;
        let user = match UserId::from_session_user_id(&uid) {
            Some(id) => self.db.user_by_id(id).await?,
            None => None,
        };
        match user {
            Some(user) if !user.disabled => Ok(user),
            _ => {
                session.logout().await?;
                Err(SessionError::Unauthenticated.into())
            }
        }
    }
}

/// A wrong current password filled the window: end the session that made it.
async fn password_guessing(user: &User, session: &Session, until: Timestamp) -> ServiceError {
    tracing::warn!(
        user = user.id.0,
        "too many wrong current passwords in password changes; ending the session"
    );
    metrics::counter!("ratatoskr_app_password_change_locked_total").increment(1);
    if let Err(e) = session.logout().await {
        return e.into();
    }
    ServiceError::PasswordChangesLocked(until)
}
