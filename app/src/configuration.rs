//! Configuration: flags and environment variables, as in `CONTRACT.md` (flags win).
//!
//! Every setting has a default that works on a fresh machine with nothing installed: SQLite in
//! `./data/ratatoskr.db`, no Redis, listening on `127.0.0.1:8080`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::domain::net::TrustedProxy;
use crate::domain::rate_limit::RateLimit;
use crate::domain::urls::redact;

/// Settings shared by `serve` and the admin commands (they talk to the same stores).
#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// Listen address.
    #[arg(long, env = "RATATOSKR_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// `sqlite://…` or `postgres://…`: the durable store (sessions and the application's tables).
    /// The environment's value is never shown in `--help` (it may carry a password).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://./data/ratatoskr.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// `redis://host:port/db` for a standalone Redis tier, or
    /// `redis+sentinel://host:port,host:port/<master name>` for the master a Sentinel group
    /// names; unset = no Redis tier (unless `REDIS_CLUSTER_NODES`). The environment's value is
    /// never shown in `--help` (it may carry a password).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Comma-separated `host:port` list for Redis Cluster (its value is never shown in `--help`).
    #[arg(long, env = "REDIS_CLUSTER_NODES", hide_env_values = true)]
    pub redis_cluster_nodes: Option<String>,

    /// How long a session may sit unused (humantime: `90s`, `30m`, `2h`).
    #[arg(long, env = "RATATOSKR_IDLE_TIMEOUT", default_value = "2h", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// How long a session may live at all.
    #[arg(long, env = "RATATOSKR_ABSOLUTE_TIMEOUT", default_value = "24h", value_parser = parse_duration)]
    pub absolute_timeout: Duration,

    /// Concurrent sessions per user; the oldest are revoked at login beyond it.
    #[arg(long, env = "RATATOSKR_MAX_SESSIONS_PER_USER", default_value_t = 5)]
    pub max_sessions_per_user: usize,

    /// Key material for encrypting platform tokens; generated into the data dir when unset.
    #[arg(long, env = "RATATOSKR_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Where the generated key lives when `RATATOSKR_SECRET_KEY` is unset. Default: `secret.key`
    /// beside the SQLite database, or `./data/secret.key` for PostgreSQL.
    #[arg(long, env = "RATATOSKR_SECRET_KEY_FILE")]
    pub secret_key_file: Option<std::path::PathBuf>,

    /// Whether `POST /api/register` and the registration form are open.
    #[arg(
        long,
        env = "RATATOSKR_REGISTRATION",
        default_value = "open",
        value_enum
    )]
    pub registration: Registration,

    /// Fingerprint binding: `off`, `log` (audit a changed User-Agent) or `revoke` (also end
    /// the session).
    #[arg(long, env = "RATATOSKR_FINGERPRINT", default_value = "log", value_enum)]
    pub fingerprint: Fingerprint,

    /// How often the number of active sessions is sampled for the analytics chart.
    #[arg(long, env = "RATATOSKR_SAMPLE_EVERY", default_value = "60s", value_parser = parse_duration)]
    pub sample_every: Duration,

    /// Other origins allowed to make state-changing requests (comma list of
    /// `scheme://host[:port]`), e.g. when a proxy serves the app under another name.
    #[arg(long, env = "RATATOSKR_TRUSTED_ORIGINS", value_delimiter = ',')]
    pub trusted_origins: Vec<String>,

    /// Reverse proxies whose `X-Forwarded-For` is believed (comma list of addresses or
    /// networks: `127.0.0.1,10.0.0.0/8`). A request from one of them is from the right-most
    /// forwarded address that is not itself one of them; from anyone else, from its TCP peer.
    /// Empty (the default): forwarded headers are ignored.
    #[arg(long, env = "RATATOSKR_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<TrustedProxy>,

    /// Logins (`POST /api/login`, the login form) allowed per client address: `N/DURATION`
    /// (N at once, then one every DURATION/N), or `off`.
    #[arg(long, env = "RATATOSKR_LOGIN_RATE_LIMIT", default_value = "20/1m")]
    pub login_rate_limit: RateLimit,

    /// Registrations allowed per client address: `N/DURATION` or `off`.
    #[arg(long, env = "RATATOSKR_REGISTER_RATE_LIMIT", default_value = "10/1h")]
    pub register_rate_limit: RateLimit,

    /// Password changes allowed per client address: `N/DURATION` or `off`.
    #[arg(long, env = "RATATOSKR_PASSWORD_RATE_LIMIT", default_value = "10/15m")]
    pub password_rate_limit: RateLimit,

    /// Password hashes (argon2id, 19 MiB each) computed at once; 0 = one per CPU core.
    #[arg(long, env = "RATATOSKR_HASH_CONCURRENCY", default_value_t = 0)]
    pub hash_concurrency: usize,

    /// Password hashes that may wait for a free worker; beyond them a login, registration or
    /// password change is answered at once with `503 server_busy` and `Retry-After`.
    #[arg(long, env = "RATATOSKR_HASH_QUEUE", default_value_t = 16)]
    pub hash_queue: usize,

    /// How long audit events are kept (the per-user trail and the hourly counts of anonymous
    /// events); older ones are pruned.
    #[arg(long, env = "RATATOSKR_AUDIT_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub audit_retention: Duration,
}

/// Whether people may register themselves.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// Anyone may register.
    Open,
    /// Only `ratatoskr user add` creates users.
    Closed,
}

/// The fingerprint policy (see `ratatoskr_axum::FingerprintPolicy`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fingerprint {
    /// Record and compare nothing.
    Off,
    /// Audit a mismatch and carry on.
    Log,
    /// Audit a mismatch and end the session.
    Revoke,
}

/// Parse a humantime duration (`90s`, `30m`, `2h`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 90s, 30m or 2h: {e}"))
}

impl Settings {
    /// Refuse combinations that cannot work, with a message an operator can act on.
    pub fn validate(&self) -> Result<(), String> {
        if self.idle_timeout.is_zero() || self.absolute_timeout.is_zero() {
            return Err("timeouts must be greater than zero".into());
        }
        if self.idle_timeout > self.absolute_timeout {
            return Err(format!(
                "the idle timeout ({}) is longer than the absolute timeout ({})",
                humantime::format_duration(self.idle_timeout),
                humantime::format_duration(self.absolute_timeout)
            ));
        }
        if self.sample_every < Duration::from_millis(100) {
            return Err("RATATOSKR_SAMPLE_EVERY must be at least 100ms".into());
        }
        if let Some(key) = &self.secret_key
            && key.len() < 32
        {
            return Err(
                "RATATOSKR_SECRET_KEY must be at least 32 characters of random text".into(),
            );
        }
        if self.audit_retention < Duration::from_secs(3600) {
            return Err("RATATOSKR_AUDIT_RETENTION must be at least 1h".into());
        }
        if self.hash_concurrency > 1024 || self.hash_queue > 65_536 {
            return Err(
                "RATATOSKR_HASH_CONCURRENCY (at most 1024) or RATATOSKR_HASH_QUEUE (at most 65536) is too large"
                    .into(),
            );
        }
        if self.max_sessions_per_user == 0 {
            return Err("RATATOSKR_MAX_SESSIONS_PER_USER must be at least 1".into());
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres:")
            || self.database_url.starts_with("postgresql:"))
        {
            return Err(format!(
                "DATABASE_URL must start with sqlite:// or postgres:// (got `{}`)",
                redact(&self.database_url)
            ));
        }
        Ok(())
    }
}

impl Settings {
    /// Where the generated token-encryption key is kept.
    pub fn key_file(&self) -> std::path::PathBuf {
        if let Some(f) = &self.secret_key_file {
            return f.clone();
        }
        match sqlite_path(&self.database_url) {
            Some(db) => std::path::Path::new(db)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .join("secret.key"),
            None => std::path::PathBuf::from("./data/secret.key"),
        }
    }
}

/// The file path of a `sqlite://` URL, if it is one (without query parameters).
pub fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Args {
        #[command(flatten)]
        settings: Settings,
    }

    #[test]
    fn trusted_proxies_are_a_comma_list_and_empty_by_default() {
        use clap::Parser as _;
        let none = Args::parse_from(["ratatoskr"]).settings;
        assert!(none.trusted_proxies.is_empty());
        let some =
            Args::parse_from(["ratatoskr", "--trusted-proxies", "127.0.0.1, 10.0.0.0/8"]).settings;
        assert_eq!(some.trusted_proxies.len(), 2);
        assert!(Args::try_parse_from(["ratatoskr", "--trusted-proxies", "proxy.example"]).is_err());
    }

    #[test]
    fn durations_accept_humantime() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("soon").is_err());
    }
}
