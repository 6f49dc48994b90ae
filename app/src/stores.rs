//! Opening the stores named by the configuration.
//!
//! `DATABASE_URL` alone: the SQL store is the session store. With `REDIS_URL` too: the tiered
//! store (Redis in front, the database behind, an outage journal in the database). Either way the
//! application's own tables live in the same database, reached through [`Stores::sql`].

use std::sync::Arc;

use ratatoskr_core::SessionStore;
use ratatoskr_sql::{SqlAudit, SqlStore};
use ratatoskr_tiered::TieredStore;

use crate::configuration::{Settings, redact_url};

/// The opened stores.
#[derive(Clone)]
pub struct Stores {
    /// The store sessions go through (SQL, or tiered when Redis is configured).
    pub sessions: Arc<dyn SessionStore>,
    /// The database (sessions' durable tier and the application's tables).
    pub sql: SqlStore,
    /// The audit log, in the database.
    pub audit: SqlAudit,
    /// The tiered store when Redis is configured (for health: breaker, journal, near cache).
    pub tiered: Option<TieredStore>,
}

impl Stores {
    /// Open what `settings` name. Creates the SQLite file's directory when needed.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        if let Some(path) = sqlite_path(&settings.database_url)
            && let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let sql = SqlStore::connect(&settings.database_url)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the database {}: {e}",
                    redact_url(&settings.database_url)
                )
            })?;
        if settings.redis_url.is_some() || settings.redis_cluster_nodes.is_some() {
            anyhow::bail!("the Redis tier is being wired in; run without REDIS_URL for now");
        }
        Ok(Stores {
            sessions: sql.store(),
            audit: sql.audit(),
            sql,
            tiered: None,
        })
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
