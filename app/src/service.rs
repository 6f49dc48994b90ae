//! What the application does, independent of how it is asked (JSON API, HTML forms, CLI):
//! authentication with lockout, registration, password changes, platform connections and the
//! active platform, and session listings with devices.

use axum::http::StatusCode;
use ratatoskr_axum::{RevokeReason, Session};
use ratatoskr_core::{Handle, SessionSummary, now_ms};
use serde::{Deserialize, Serialize};

use crate::crypto;
use crate::db::{Attempt, Inserted, NewPlatform, Platform, User};
use crate::device::{self, Device};
use crate::error::{AppError, AppResult};
use crate::extract::CurrentUser;
use crate::state::AppState;
use crate::validation;

/// Failed logins that lock a user name.
pub const MAX_FAILURES: i64 = 5;
/// The window in which failures are counted, and how long a lock lasts.
pub const LOCK_WINDOW_MS: i64 = 30 * 60 * 1000;
/// Most platform connections per user.
pub const MAX_PLATFORMS: i64 = 20;
/// The session attribute naming the active platform.
pub const ACTIVE_ATTR: &str = "app.active_platform";

/// What the session keeps about the active platform: its id (checked against the database on
/// every read) and its type (for analytics without a database query per session).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ActiveRef {
    /// The platform's id.
    pub id: i64,
    /// Its type.
    pub platform_type: String,
}

/// Wrong current passwords a password change accepts per window before it ends the session.
pub const MAX_PASSWORD_CHANGE_FAILURES: i64 = 3;

/// The outcome of checking credentials.
pub enum Authenticated {
    /// Correct, and the account is enabled.
    Ok(User),
    /// Wrong name or password, or a disabled account (indistinguishable on purpose).
    Invalid,
    /// Too many failures: locked until then (ms since the epoch).
    Locked(i64),
}

/// The error for a full password-hashing pool: `503 server_busy`, `Retry-After: 1`.
pub fn busy_error() -> AppError {
    AppError::RetryLater(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_busy",
        "the server is busy checking other passwords; try again in a moment".into(),
        1,
    )
}

/// Check credentials, counting attempts per user name (existing or not) and locking it for
/// 30 minutes after 5 failures within 30 minutes. Unknown names cost as much as known ones.
///
/// The attempt is reserved before the password is checked ([`crate::db::Db::reserve_attempt`]),
/// so any number of parallel requests get at most 5 verdicts per window, and a success never
/// clears a lock that is in force.
pub async fn authenticate(
    state: &AppState,
    raw_name: &str,
    password: &str,
) -> AppResult<Authenticated> {
    let Ok(name) = validation::username(raw_name) else {
        // Not a possible user name: no account can match, nothing to count.
        metrics::counter!("ratatoskr_app_logins_total", "result" => "failure").increment(1);
        return Ok(Authenticated::Invalid);
    };
    let now = now_ms();
    if let Attempt::Refused(until) = state
        .db
        .reserve_attempt(&name, now, LOCK_WINDOW_MS, MAX_FAILURES)
        .await?
    {
        state.db.count_login("locked", now).await?;
        metrics::counter!("ratatoskr_app_logins_total", "result" => "locked").increment(1);
        return Ok(Authenticated::Locked(until));
    }
    let creds = state.db.credentials(&name).await?;
    // Over-long passwords are never right (and are not worth hashing): check an empty one
    // against the dummy hash, so the answer takes the usual time.
    let too_long = password.len() > 1024 || password.is_empty();
    let (password, hash) = match &creds {
        Some((_, h)) if !too_long => (password.to_owned(), Some(h.clone())),
        _ => (String::new(), None),
    };
    let ok = match state.hasher.verify(password, hash).await {
        Ok(ok) => ok,
        Err(crypto::Busy) => {
            state.db.release_attempt(&name, now_ms()).await?;
            return Err(busy_error());
        }
    };
    let now = now_ms();
    match creds {
        Some((user, _)) if ok && !user.disabled => {
            if let Some(until) = state.db.succeed_attempt(&name, now).await? {
                // Locked by failures checked at the same time: the lock holds.
                state.db.count_login("locked", now).await?;
                metrics::counter!("ratatoskr_app_logins_total", "result" => "locked").increment(1);
                return Ok(Authenticated::Locked(until));
            }
            state.db.count_login("success", now).await?;
            metrics::counter!("ratatoskr_app_logins_total", "result" => "success").increment(1);
            Ok(Authenticated::Ok(user))
        }
        _ => {
            let locked = state
                .db
                .fail_attempt(&name, now, MAX_FAILURES, LOCK_WINDOW_MS)
                .await?;
            let result = if locked.is_some() {
                "locked"
            } else {
                "failure"
            };
            state.db.count_login(result, now).await?;
            metrics::counter!("ratatoskr_app_logins_total", "result" => result).increment(1);
            Ok(match locked {
                Some(until) => Authenticated::Locked(until),
                None => Authenticated::Invalid,
            })
        }
    }
}

/// The error for a locked user name.
pub fn locked_error(until: i64) -> AppError {
    let minutes = ((until - now_ms()).max(0) + 59_999) / 60_000;
    AppError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        format!("too many failed logins for this user name; try again in {minutes} minutes"),
    )
}

/// The error for bad credentials.
pub fn invalid_credentials() -> AppError {
    AppError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "wrong user name or password",
    )
}

/// Log `user` in on `session` (a new token: the pre-login one is dead) and record the device.
pub async fn log_in(session: &Session, user: &User, device: &Device) -> AppResult<()> {
    session.login(&user.id.to_string()).await?;
    session.insert(device::ATTR, device).await?;
    Ok(())
}

/// Register a user (the caller checks that registration is open).
pub async fn register(
    state: &AppState,
    raw_name: &str,
    password: &str,
    is_admin: bool,
) -> AppResult<User> {
    let name = validation::username(raw_name).map_err(AppError::invalid)?;
    validation::password(password).map_err(AppError::invalid)?;
    let hash = hash_new(state, password).await?;
    match state.db.create_user(&name, &hash, is_admin).await? {
        Inserted::Ok(u) => Ok(u),
        Inserted::Duplicate => Err(AppError::new(
            StatusCode::CONFLICT,
            "username_taken",
            "that user name is taken",
        )),
    }
}

/// Hash a new password on the pool; a full pool is `503 server_busy`.
async fn hash_new(state: &AppState, password: &str) -> AppResult<String> {
    match state.hasher.hash(password.to_owned()).await {
        Ok(h) => Ok(h),
        Err(e) if e.is::<crypto::Busy>() => Err(busy_error()),
        Err(e) => Err(AppError::Internal(e)),
    }
}

/// Change a user's password after checking the current one; every session of the user ends
/// (this one too). Returns how many sessions ended.
///
/// Wrong current passwords are counted per user like failed logins (reserved before the
/// check, so parallel guesses are counted too): the third within 30 minutes ends the session
/// that made it and locks password changes for 30 minutes, during which every attempt is refused (`429
/// too_many_attempts`) without checking anything. A thief holding a session gets two guesses
/// per window, not an unlimited supply.
pub async fn change_password(
    state: &AppState,
    cu: &CurrentUser,
    current: &str,
    new: &str,
) -> AppResult<u64> {
    let key = format!("pw:{}", cu.user.id);
    let now = now_ms();
    if let Attempt::Refused(until) = state
        .db
        .reserve_attempt(&key, now, LOCK_WINDOW_MS, MAX_PASSWORD_CHANGE_FAILURES)
        .await?
    {
        // Nothing is checked while the lock holds (the session that guessed has ended).
        return Err(too_many_password_attempts(until));
    }
    let hash = state.db.password_hash(cu.user.id).await?;
    let ok = if current.is_empty() || current.len() > 1024 {
        false
    } else {
        match state.hasher.verify(current.to_owned(), hash).await {
            Ok(ok) => ok,
            Err(crypto::Busy) => {
                state.db.release_attempt(&key, now_ms()).await?;
                return Err(busy_error());
            }
        }
    };
    if !ok {
        metrics::counter!("ratatoskr_app_password_change_failures_total").increment(1);
        if let Some(until) = state
            .db
            .fail_attempt(&key, now_ms(), MAX_PASSWORD_CHANGE_FAILURES, LOCK_WINDOW_MS)
            .await?
        {
            return Err(password_guessing(cu, until).await);
        }
        return Err(AppError::new(
            StatusCode::BAD_REQUEST,
            "wrong_password",
            "the current password is not right",
        ));
    }
    if let Some(until) = state.db.succeed_attempt(&key, now_ms()).await? {
        // Locked by wrong guesses checked at the same time.
        return Err(password_guessing(cu, until).await);
    }
    validation::password(new).map_err(AppError::invalid)?;
    let new_hash = hash_new(state, new).await?;
    state.db.set_password(cu.user.id, &new_hash).await?;
    let n = state
        .control
        .revoke_user(&cu.id_string(), RevokeReason::PasswordChanged)
        .await?;
    // This request's own session is among them: clear its cookie too.
    cu.session.logout().await?;
    Ok(n)
}

/// A wrong current password filled the window: end the session that made it, answer 429.
async fn password_guessing(cu: &CurrentUser, until: i64) -> AppError {
    tracing::warn!(
        user = cu.user.id,
        "too many wrong current passwords in password changes; ending the session"
    );
    metrics::counter!("ratatoskr_app_password_change_locked_total").increment(1);
    if let Err(e) = cu.session.logout().await {
        return e.into();
    }
    too_many_password_attempts(until)
}

/// `429 too_many_attempts` for password changes, with `Retry-After` until `until`.
fn too_many_password_attempts(until: i64) -> AppError {
    let secs = ((until - now_ms()).max(1000) + 999) / 1000;
    AppError::RetryLater(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        "too many wrong current passwords; password changes are locked for a while, and the \
         session that guessed has ended"
            .into(),
        u64::try_from(secs).unwrap_or(1),
    )
}

/// Disable (or enable) a user; disabling ends every session of theirs. Returns how many ended.
pub async fn set_disabled(state: &AppState, user: &User, disabled: bool) -> AppResult<u64> {
    state.db.set_disabled(user.id, disabled).await?;
    if disabled {
        Ok(state
            .control
            .revoke_user(&user.id.to_string(), RevokeReason::AccountDisabled)
            .await?)
    } else {
        Ok(0)
    }
}

// ----- platforms -----

/// A new platform connection as submitted.
#[derive(Deserialize)]
pub struct PlatformInput {
    /// `pixelfed` or `mastodon`.
    pub platform_type: String,
    /// Display name.
    pub name: String,
    /// `https://…`.
    pub instance_url: String,
    /// Account name.
    pub username: String,
    /// Access token (sealed before it is stored; never returned).
    pub access_token: String,
}

/// Validate, seal and store a platform connection.
pub async fn add_platform(
    state: &AppState,
    cu: &CurrentUser,
    input: &PlatformInput,
) -> AppResult<Platform> {
    let platform_type =
        validation::platform_type(&input.platform_type).map_err(AppError::invalid)?;
    let name = validation::display_name(&input.name).map_err(AppError::invalid)?;
    let instance_url = validation::instance_url(&input.instance_url).map_err(AppError::invalid)?;
    let username = validation::account(&input.username).map_err(AppError::invalid)?;
    validation::access_token(&input.access_token).map_err(AppError::invalid)?;
    if state.db.count_platforms(cu.user.id).await? >= MAX_PLATFORMS {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "too_many_platforms",
            format!("at most {MAX_PLATFORMS} platform connections per user"),
        ));
    }
    let aad = crypto::token_aad(cu.user.id, platform_type, &instance_url, &username);
    let token_sealed = state.cipher.seal(&input.access_token, &aad);
    let new = NewPlatform {
        platform_type,
        name: &name,
        instance_url: &instance_url,
        username: &username,
        token_sealed,
    };
    match state.db.create_platform(cu.user.id, new).await? {
        Inserted::Ok(p) => Ok(p),
        Inserted::Duplicate => Err(AppError::new(
            StatusCode::CONFLICT,
            "platform_exists",
            "this account on this instance is already connected",
        )),
    }
}

/// The session's active platform, checked against the database: a platform that was removed
/// or deactivated (from any session) is cleared from this session here.
pub async fn active_platform(state: &AppState, cu: &CurrentUser) -> AppResult<Option<Platform>> {
    let Some(active) = cu.session.get::<ActiveRef>(ACTIVE_ATTR).await? else {
        return Ok(None);
    };
    match state.db.platform(cu.user.id, active.id).await? {
        Some(p) if p.active => Ok(Some(p)),
        _ => {
            cu.session.remove(ACTIVE_ATTR).await?;
            Ok(None)
        }
    }
}

/// Make one of the user's platforms the session's active one: 404 if it is not theirs, 409 if
/// it is inactive or its token no longer opens (sealed under another key).
pub async fn switch_platform(state: &AppState, cu: &CurrentUser, id: i64) -> AppResult<Platform> {
    let Some(p) = state.db.platform(cu.user.id, id).await? else {
        return Err(AppError::not_found("platform"));
    };
    if !p.active {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "platform_inactive",
            "this platform connection is inactive; activate it first",
        ));
    }
    let sealed = state
        .db
        .platform_token(cu.user.id, id)
        .await?
        .ok_or_else(|| AppError::not_found("platform"))?;
    let aad = crypto::token_aad(cu.user.id, &p.platform_type, &p.instance_url, &p.username);
    // The token is opened only to check that it still can be; it is dropped at once.
    if state.cipher.open(&sealed, &aad).is_none() {
        return Err(AppError::new(
            StatusCode::CONFLICT,
            "platform_token_unreadable",
            "this connection's access token was sealed with another key; remove and add it again",
        ));
    }
    cu.session
        .insert(
            ACTIVE_ATTR,
            &ActiveRef {
                id: p.id,
                platform_type: p.platform_type.clone(),
            },
        )
        .await?;
    metrics::counter!("ratatoskr_app_platform_switches_total").increment(1);
    Ok(p)
}

// ----- sessions -----

/// One session as the "your sessions" page and the API show it.
#[derive(Clone, Debug, Serialize)]
pub struct SessionView {
    /// Public handle.
    pub handle: String,
    /// Created, ms since the epoch.
    pub created_at: i64,
    /// Last used, ms since the epoch.
    pub last_seen: i64,
    /// When it ends if unused.
    pub idle_expires_at: i64,
    /// When it ends regardless.
    pub absolute_expires_at: i64,
    /// The User-Agent at login.
    pub user_agent: Option<String>,
    /// The address at login.
    pub ip: Option<String>,
    /// "Firefox on Linux".
    pub device: String,
    /// `desktop`, `mobile`, …
    pub device_class: String,
    /// The active platform's type, if any.
    pub platform_type: Option<String>,
    /// Whether it is the session making the request.
    pub current: bool,
}

/// A user's live sessions with their devices, oldest first.
pub async fn sessions_of(
    state: &AppState,
    user_id: &str,
    current: Option<Handle>,
) -> AppResult<Vec<SessionView>> {
    let list = state.sessions.list_user(user_id).await?;
    // Platforms that can still be active: a session naming another one shows none (it drops
    // the reference itself at its next request).
    let usable: Vec<i64> = match user_id.parse::<i64>() {
        Ok(uid) if !list.is_empty() => state
            .db
            .platforms(uid)
            .await?
            .into_iter()
            .filter(|p| p.active)
            .map(|p| p.id)
            .collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::with_capacity(list.len());
    for s in list {
        out.push(view(state, s, current, &usable).await?);
    }
    Ok(out)
}

async fn view(
    state: &AppState,
    s: SessionSummary,
    current: Option<Handle>,
    usable: &[i64],
) -> AppResult<SessionView> {
    // The attributes ride with the session (through rotations) and end with it.
    let record = state.sessions.store().load(&s.key).await?;
    let attr = |name: &str| record.as_ref().and_then(|r| r.attrs.get(name));
    let device: Option<Device> = attr(device::ATTR).and_then(|v| serde_json::from_slice(v).ok());
    let active: Option<ActiveRef> = attr(ACTIVE_ATTR)
        .and_then(|v| serde_json::from_slice::<ActiveRef>(v).ok())
        .filter(|a| usable.contains(&a.id));
    let expires = s.meta.idle_deadline(s.last_seen);
    Ok(SessionView {
        handle: s.handle.to_string(),
        created_at: s.meta.created_at,
        last_seen: s.last_seen,
        idle_expires_at: expires,
        absolute_expires_at: s.meta.absolute_deadline,
        user_agent: device.as_ref().map(|d| d.user_agent.clone()),
        ip: device.as_ref().map(|d| d.ip.clone()),
        device: device
            .as_ref()
            .map_or_else(|| "Unknown client".into(), Device::label),
        device_class: device
            .as_ref()
            .map_or_else(|| "unknown".into(), |d| d.class.clone()),
        platform_type: active.map(|a| a.platform_type),
        current: current == Some(s.handle),
    })
}

/// Every user with their live sessions (users in name order, at most `max_users`), reporting
/// progress as `(users done, users total)`.
pub async fn all_sessions(
    state: &AppState,
    max_users: i64,
    mut progress: impl FnMut(i64, i64),
) -> AppResult<Vec<(User, Vec<SessionView>)>> {
    let total = state.db.count_users().await?.min(max_users);
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < total {
        let page = state.db.users(offset, 200.min(total - offset)).await?;
        if page.is_empty() {
            break;
        }
        for u in page {
            let sessions = sessions_of(state, &u.id.to_string(), None).await?;
            out.push((u, sessions));
            offset += 1;
            progress(offset, total);
        }
    }
    Ok(out)
}

/// Parse a handle from a path; unknown shapes are simply not found.
pub fn parse_handle(raw: &str) -> AppResult<Handle> {
    Handle::parse(raw).ok_or_else(|| AppError::not_found("session"))
}
