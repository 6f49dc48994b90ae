//! The admin CLI: `ratatoskr user …`, `ratatoskr sessions …`, `ratatoskr stats`, against the
//! same configuration (database, Redis) as `serve`. Results go to stdout; progress and errors
//! to stderr.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use clap::Subcommand;
use ratatoskr_axum::RevokeReason;
use ratatoskr_core::{AuditKind, Handle};
use ratatoskr_sql::SqlStore;

use crate::configuration::Settings;
use crate::domain::time::{HOUR, Timestamp};
use crate::domain::user::User;
use crate::services::error::ServiceError;
use crate::services::sessions::SessionView;
use crate::web::state::AppState;

/// `ratatoskr user …`.
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user; the password is read from standard input (one line).
    Add {
        /// The user name (3–32 of a-z 0-9 _ . -).
        name: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Disable a user: they cannot log in and every session of theirs ends.
    Disable {
        /// The user name.
        name: String,
    },
    /// Enable a disabled user.
    Enable {
        /// The user name.
        name: String,
    },
    /// Set a user's password (read from standard input); every session of theirs ends.
    Passwd {
        /// The user name.
        name: String,
    },
    /// List users.
    List,
}

/// `ratatoskr sessions …`.
#[derive(Subcommand, Debug)]
pub enum SessionsCommand {
    /// List live sessions (every user's, or one user's).
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke one session by handle, or every session of a user.
    Revoke {
        /// Every session of this user.
        #[arg(long, conflicts_with = "handle")]
        user: Option<String>,
        /// The session's handle (from `sessions list`).
        #[arg(required_unless_present = "user")]
        handle: Option<String>,
    },
}

/// A service's error as the command's: the message, and the code for refusals.
fn fail(e: ServiceError) -> anyhow::Error {
    match e {
        ServiceError::Internal(e) => e,
        e if e.is_server_fault() || matches!(e, ServiceError::Session(_)) => {
            anyhow::anyhow!("{e}")
        }
        e => anyhow::anyhow!("{e} ({})", e.code()),
    }
}

async fn open(settings: &Settings) -> anyhow::Result<AppState> {
    Ok(crate::startup::open(settings).await?.0)
}

fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Password (input is visible; or pipe it in): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\n', '\r']).to_owned();
    anyhow::ensure!(!pw.is_empty(), "no password on standard input");
    Ok(pw)
}

async fn user_named(state: &AppState, name: &str) -> anyhow::Result<User> {
    match state.accounts().user_named(name).await {
        Ok(u) => Ok(u),
        Err(ServiceError::NotFound(_)) => Err(anyhow::anyhow!("no user named {name}")),
        Err(e) => Err(fail(e)),
    }
}

/// Run a `user` command.
pub async fn user(settings: &Settings, cmd: UserCommand) -> anyhow::Result<()> {
    let state = open(settings).await?;
    match cmd {
        UserCommand::Add { name, admin } => {
            let pw = read_password()?;
            let u = state
                .accounts()
                .register(&name, &pw, admin)
                .await
                .map_err(fail)?;
            println!(
                "created {}user {} (id {})",
                if u.is_admin { "administrator " } else { "" },
                u.username,
                u.id
            );
        }
        UserCommand::Disable { name } => {
            let u = user_named(&state, &name).await?;
            let n = state
                .accounts()
                .set_disabled(&u, true)
                .await
                .map_err(fail)?;
            println!("disabled {}; {n} session(s) ended", u.username);
        }
        UserCommand::Enable { name } => {
            let u = user_named(&state, &name).await?;
            state
                .accounts()
                .set_disabled(&u, false)
                .await
                .map_err(fail)?;
            println!("enabled {}", u.username);
        }
        UserCommand::Passwd { name } => {
            let u = user_named(&state, &name).await?;
            let pw = read_password()?;
            let n = state.accounts().set_password(&u, &pw).await.map_err(fail)?;
            println!("password of {} changed; {n} session(s) ended", u.username);
        }
        UserCommand::List => {
            println!(
                "{:<32} {:>6} {:<6} {:<9} CREATED",
                "USER", "ID", "ADMIN", "DISABLED"
            );
            for u in state.db.users(0, i64::MAX).await? {
                println!(
                    "{:<32} {:>6} {:<6} {:<9} {}",
                    u.username,
                    u.id,
                    if u.is_admin { "yes" } else { "no" },
                    if u.disabled { "yes" } else { "no" },
                    u.created_at.datetime()
                );
            }
        }
    }
    Ok(())
}

/// Progress on stderr for commands that walk every user.
fn progress(done: i64, total: i64) {
    if done == total || done % 100 == 0 {
        eprintln!("… {done}/{total} users scanned");
    }
}

fn print_sessions(rows: &[(String, SessionView)]) {
    println!(
        "{:<24} {:<20} {:<22} {:<22} {:<16} DEVICE",
        "HANDLE", "USER", "CREATED", "LAST SEEN", "IP"
    );
    for (user, s) in rows {
        println!(
            "{:<24} {:<20} {:<22} {:<22} {:<16} {} ({})",
            s.handle,
            user,
            s.created_at.datetime(),
            s.last_seen.datetime(),
            s.ip.as_deref().unwrap_or("-"),
            s.device,
            s.device_class
        );
    }
    println!("{} session(s)", rows.len());
}

/// The owner of a session, by handle, from the database (the source of truth).
async fn owner_of(state: &AppState, handle: &Handle) -> anyhow::Result<Option<String>> {
    let found = match &state.stores.sql {
        SqlStore::Sqlite(s) => s.find_by_handle(handle).await?,
        SqlStore::Postgres(s) => s.find_by_handle(handle).await?,
    };
    Ok(found.and_then(|s| s.meta.user_id))
}

/// Run a `sessions` command.
pub async fn sessions(settings: &Settings, cmd: SessionsCommand) -> anyhow::Result<()> {
    let state = open(settings).await?;
    match cmd {
        SessionsCommand::List { user: Some(name) } => {
            let u = user_named(&state, &name).await?;
            let rows = state.session_list().of(u.id, None).await.map_err(fail)?;
            let rows: Vec<_> = rows
                .into_iter()
                .map(|s| (u.username.to_string(), s))
                .collect();
            print_sessions(&rows);
        }
        SessionsCommand::List { user: None } => {
            let all = state
                .session_list()
                .all(i64::MAX, progress)
                .await
                .map_err(fail)?;
            let rows: Vec<_> = all
                .into_iter()
                .flat_map(|(u, ss)| ss.into_iter().map(move |s| (u.username.to_string(), s)))
                .collect();
            print_sessions(&rows);
        }
        SessionsCommand::Revoke {
            user: Some(name), ..
        } => {
            let u = user_named(&state, &name).await?;
            let n = state
                .control
                .revoke_user(&u.id.session_user_id(), RevokeReason::Admin)
                .await?;
            println!("revoked {n} session(s) of {}", u.username);
        }
        SessionsCommand::Revoke { user: None, handle } => {
            let raw = handle.unwrap_or_default();
            let handle = Handle::parse(&raw)
                .ok_or_else(|| anyhow::anyhow!("{raw:?} is not a session handle"))?;
            let Some(owner) = owner_of(&state, &handle).await? else {
                anyhow::bail!("no live session with handle {handle}");
            };
            if state.control.revoke_handle(&owner, &handle).await? {
                println!("revoked session {handle}");
            } else {
                anyhow::bail!("no live session with handle {handle}");
            }
        }
    }
    Ok(())
}

/// Run `stats`.
pub async fn stats(settings: &Settings) -> anyhow::Result<()> {
    let state = open(settings).await?;
    let since = Timestamp::now().minus(24 * HOUR);
    let users = state.db.count_users().await?;
    let platforms = state.db.count_all_platforms().await?;
    let active = state.sessions.store().count().await?;
    let row = |label: &str, value: &dyn std::fmt::Display| println!("{label:<28} {value}");
    row("store", &state.sessions.store().backend_name());
    row("users", &users);
    row("platform connections", &platforms);
    row("active sessions", &active);
    let mut by_kind = std::collections::BTreeMap::new();
    for h in state.audit.counts_by_hour(since).await? {
        *by_kind.entry(h.kind.as_str()).or_insert(0u64) += h.count;
    }
    let logins: i64 = state
        .db
        .login_counts(since)
        .await?
        .iter()
        .filter(|c| c.success)
        .map(|c| c.count)
        .sum();
    row("logins (24 h)", &logins);
    for kind in [
        AuditKind::Created,
        AuditKind::Expired,
        AuditKind::RevokedByUser,
        AuditKind::RevokedByAdmin,
        AuditKind::RevokedAll,
        AuditKind::EvictedByLimit,
        AuditKind::CsrfRefused,
        AuditKind::FingerprintMismatch,
    ] {
        row(
            &format!("{} (24 h)", kind.as_str()),
            &by_kind.get(kind.as_str()).copied().unwrap_or(0),
        );
    }
    eprintln!("… counting sessions by device");
    let all = state
        .session_list()
        .all(i64::MAX, progress)
        .await
        .map_err(fail)?;
    let mut devices = std::collections::BTreeMap::new();
    for (_, ss) in &all {
        for s in ss {
            *devices.entry(s.device_class.as_str()).or_insert(0u64) += 1;
        }
    }
    for (class, n) in devices {
        row(&format!("sessions on {class}"), &n);
    }
    Ok(())
}
