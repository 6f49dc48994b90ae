//! Opening the stores named by the configuration.
//!
//! `DATABASE_URL` alone: the SQL store is the session store. With `REDIS_URL` too: the tiered
//! store (Redis in front, the database behind, an outage journal in the database). Either way the
//! application's own tables live in the same database, reached through [`Stores::sql`].

use std::sync::Arc;

use ratatoskr_core::SessionStore;
use ratatoskr_redis::{RedisConfig, RedisStore};
use ratatoskr_sql::{SqlAudit, SqlStore};
use ratatoskr_tiered::TieredStore;
use ratatoskr_tiered::near_cache::NearCacheConfig;

use crate::configuration::{Settings, sqlite_path};
use crate::domain::urls::redact;

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
                    redact(&settings.database_url)
                )
            })?;
        let tiered = match redis_deployment(settings)? {
            Some(config) => Some(open_tiered(config, &sql).await?),
            None => None,
        };
        Ok(Stores {
            sessions: match &tiered {
                Some(t) => Arc::new(t.clone()),
                None => sql.store(),
            },
            audit: sql.audit(),
            sql,
            tiered,
        })
    }
}

/// Redis in front of the database. The Redis connection is lazy: the application starts (and
/// serves from the database) even while Redis is down, and the tiered store's breaker brings
/// Redis in when it answers.
async fn open_tiered(config: RedisConfig, sql: &SqlStore) -> anyhow::Result<TieredStore> {
    let url = if config.cluster_nodes.is_empty() {
        redact(&config.url)
    } else {
        let nodes: Vec<String> = config.cluster_nodes.iter().map(|n| redact(n)).collect();
        format!("cluster {}", nodes.join(","))
    };
    let redis = RedisStore::connect_lazy(config)
        .map_err(|e| anyhow::anyhow!("invalid Redis configuration {url}: {e}"))?;
    // The near cache is required: the build fails rather than run without it if Redis were
    // not in tracking mode.
    let tiered = TieredStore::builder(redis, sql)
        .near_cache(NearCacheConfig::default())
        .build()
        .map_err(|e| anyhow::anyhow!("tiered session store: {e}"))?;
    if !tiered.recover_now().await {
        tracing::warn!(
            redis = %url,
            "Redis is not reachable yet; serving sessions from the database until it is"
        );
    }
    Ok(tiered)
}

/// The Redis deployment `settings` name, if any: a Redis Cluster (`REDIS_CLUSTER_NODES`), or one
/// server — standalone, or the master that Sentinels name when `REDIS_URL` is
/// `redis+sentinel://host:port,…/<master name>` (docs/deployment.md). Naming both is refused:
/// which one holds the sessions must not depend on precedence rules nobody remembers.
pub fn redis_deployment(settings: &Settings) -> anyhow::Result<Option<RedisConfig>> {
    let nodes = settings
        .redis_cluster_nodes
        .as_deref()
        .filter(|n| !n.trim().is_empty());
    match (nodes, &settings.redis_url) {
        (Some(_), Some(_)) => anyhow::bail!(
            "both REDIS_URL and REDIS_CLUSTER_NODES are set; set REDIS_CLUSTER_NODES for a \
             Redis Cluster or REDIS_URL for one server (standalone or through Sentinel), not both"
        ),
        (Some(nodes), None) => {
            let config = RedisConfig::cluster_from_list(nodes);
            if config.cluster_nodes.is_empty() {
                anyhow::bail!("REDIS_CLUSTER_NODES names no node (expected host:port,host:port,…)");
            }
            Ok(Some(tier_settings(config, settings)))
        }
        (None, Some(url)) => Ok(Some(redis_config(url, settings))),
        (None, None) => Ok(None),
    }
}

/// The Redis tier's configuration for `url` under `settings`.
///
/// Client-side caching is on: Redis tells this process when a session it read changes, so
/// warm reads are served from the near cache without a round trip. The per-user revocation
/// marker ("every session of this user created before then is dead") lives at least as long as
/// the longest a session can live: a marker that expired before the sessions it ended would
/// let a copy of one of them (in another instance's near cache, or restored from the database
/// after an outage) come back.
pub fn redis_config(url: &str, settings: &Settings) -> RedisConfig {
    tier_settings(RedisConfig::new(url), settings)
}

/// What every Redis deployment gets from `settings`: tracking on, the revocation marker as
/// long-lived as a session can be (see [`redis_config`]).
fn tier_settings(mut config: RedisConfig, settings: &Settings) -> RedisConfig {
    config.tracking = true;
    config.revocation_ttl = config.revocation_ttl.max(settings.absolute_timeout);
    config
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        settings: Settings,
    }

    fn settings(args: &[&str]) -> Settings {
        let mut all = vec!["ratatoskr"];
        all.extend_from_slice(args);
        Args::parse_from(all).settings
    }

    #[test]
    fn revocation_markers_live_at_least_as_long_as_a_session_can() {
        let long = settings(&["--absolute-timeout", "30d"]);
        let c = redis_config("redis://127.0.0.1:6379/0", &long);
        assert!(
            c.revocation_ttl >= std::time::Duration::from_secs(30 * 24 * 3600),
            "{:?}",
            c.revocation_ttl
        );
        assert!(c.tracking);
        // A short absolute timeout keeps the library's own (longer) default.
        let short = settings(&["--absolute-timeout", "1h", "--idle-timeout", "30m"]);
        let c = redis_config("redis://127.0.0.1:6379/0", &short);
        assert!(c.revocation_ttl >= RedisConfig::new("redis://x").revocation_ttl);
    }

    #[test]
    fn redis_cluster_nodes_name_a_cluster_with_the_tier_settings() {
        let s = settings(&[
            "--redis-cluster-nodes",
            " 127.0.0.1:7000, 127.0.0.1:7001,,",
            "--absolute-timeout",
            "30d",
        ]);
        let c = redis_deployment(&s).unwrap().expect("a Redis tier");
        assert_eq!(c.cluster_nodes, ["127.0.0.1:7000", "127.0.0.1:7001"]);
        assert!(c.tracking);
        assert!(c.revocation_ttl >= std::time::Duration::from_secs(30 * 24 * 3600));
    }

    #[test]
    fn a_sentinel_url_is_one_server_found_through_the_sentinels() {
        let s = settings(&["--redis-url", "redis+sentinel://127.0.0.1:26379/main"]);
        let c = redis_deployment(&s).unwrap().expect("a Redis tier");
        assert!(c.cluster_nodes.is_empty());
        assert_eq!(c.url, "redis+sentinel://127.0.0.1:26379/main");
        assert!(c.tracking);
    }

    #[test]
    fn no_redis_setting_means_no_redis_tier() {
        assert!(redis_deployment(&settings(&[])).unwrap().is_none());
        let blank = settings(&["--redis-cluster-nodes", " "]);
        assert!(redis_deployment(&blank).unwrap().is_none());
    }

    #[test]
    fn naming_both_a_cluster_and_one_server_is_refused_with_the_reason() {
        let s = settings(&[
            "--redis-url",
            "redis://127.0.0.1:6379/",
            "--redis-cluster-nodes",
            "127.0.0.1:7000",
        ]);
        let e = redis_deployment(&s).unwrap_err().to_string();
        assert!(e.contains("not both"), "{e}");
        let empty = settings(&["--redis-cluster-nodes", ",,"]);
        let e = redis_deployment(&empty).unwrap_err().to_string();
        assert!(e.contains("names no node"), "{e}");
    }
}
