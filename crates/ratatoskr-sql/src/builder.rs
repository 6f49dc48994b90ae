//! [`SqlStore::builder`]: the database store with every default written down, and the
//! [`DurableTier`] seam the tiered store is built on.

use std::sync::Arc;
use std::time::Duration;

use ratatoskr_core::tier::DurableTier;
use ratatoskr_core::{Limits, OutageJournal, SessionStore, StoreError, StoreResult};

use crate::{Dialect, GroupCommit, SqlOptions, SqlStore, Store, spawn_reaper};

impl SqlStore {
    /// A builder for a store on the database at `url`: `sqlite://path/file.db` (the file and
    /// its directory are created when missing), `sqlite::memory:` (tests), or
    /// `postgres://user@host/db`. Migrations are applied on connect.
    ///
    /// | setting | default |
    /// |---|---|
    /// | [`max_connections`](SqlStoreBuilder::max_connections) | 8 (an in-memory SQLite database uses one) |
    /// | [`acquire_timeout`](SqlStoreBuilder::acquire_timeout) | 5 s |
    /// | [`sqlite_busy_timeout`](SqlStoreBuilder::sqlite_busy_timeout) | 5 s |
    /// | [`pg_statement_timeout`](SqlStoreBuilder::pg_statement_timeout) | 5 s |
    /// | [`group_commit`](SqlStoreBuilder::group_commit) | on ([`GroupCommit::default`]) |
    /// | [`limits`](SqlStoreBuilder::limits) | [`Limits::default`] |
    /// | [`reap_every`](SqlStoreBuilder::reap_every) | 5 min: a background task deletes expired rows |
    ///
    /// ```
    /// use std::time::Duration;
    /// use ratatoskr_core::SessionStore;
    /// use ratatoskr_sql::SqlStore;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let database = SqlStore::builder("sqlite::memory:")
    ///     .reap_every(Duration::from_secs(60))
    ///     .connect()
    ///     .await?;
    /// assert_eq!(database.store().count().await?, 0);
    /// # Ok::<(), ratatoskr_core::StoreError>(())
    /// # }).unwrap();
    /// ```
    pub fn builder(url: impl Into<String>) -> SqlStoreBuilder {
        SqlStoreBuilder {
            url: url.into(),
            options: SqlOptions::default(),
            reap_every: Some(DEFAULT_REAP_EVERY),
        }
    }
}

/// How often the builder's reaper deletes expired rows by default.
pub const DEFAULT_REAP_EVERY: Duration = Duration::from_secs(300);

/// Builds a [`SqlStore`]; see [`SqlStore::builder`] for the defaults.
#[derive(Clone)]
#[must_use = "a builder does nothing until `connect`"]
pub struct SqlStoreBuilder {
    url: String,
    options: SqlOptions,
    reap_every: Option<Duration>,
}

impl std::fmt::Debug for SqlStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: not shown.
        f.debug_struct("SqlStoreBuilder")
            .field("options", &self.options)
            .field("reap_every", &self.reap_every)
            .finish_non_exhaustive()
    }
}

impl SqlStoreBuilder {
    /// Start from whole [`SqlOptions`].
    pub fn options(mut self, options: SqlOptions) -> Self {
        self.options = options;
        self
    }

    /// Most connections in the pool. Must not be zero.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.options.max_connections = n;
        self
    }

    /// How long connecting, or waiting for a pooled connection, may take. Must not be zero.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.options.acquire_timeout = timeout;
        self
    }

    /// SQLite only: how long a writer waits for another process's write lock.
    pub fn sqlite_busy_timeout(mut self, timeout: Duration) -> Self {
        self.options.sqlite_busy_timeout = timeout;
        self
    }

    /// PostgreSQL only: the server cancels statements running longer than this (`None`: the
    /// server's setting).
    pub fn pg_statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.options.pg_statement_timeout = timeout;
        self
    }

    /// Group commit settings ([`GroupCommit::off`] for one transaction per write).
    pub fn group_commit(mut self, config: GroupCommit) -> Self {
        self.options.group_commit = config;
        self
    }

    /// Size limits enforced on what the store keeps.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.options.limits = limits;
        self
    }

    /// Delete expired rows in a background task this often (at least every 10 ms). Expired
    /// sessions are invisible at once either way; reaping reclaims their space.
    pub fn reap_every(mut self, every: Duration) -> Self {
        self.reap_every = Some(every);
        self
    }

    /// No background reaper: the application calls [`SessionStore::reap`] itself (or runs
    /// [`spawn_reaper`]). Without either, anonymous sessions that expire are never deleted.
    pub fn without_reaper(mut self) -> Self {
        self.reap_every = None;
        self
    }

    /// Connect, apply migrations and start the reaper. Must be called within a Tokio runtime.
    /// Fails on a setting that cannot work, an unsupported URL scheme, or a database that
    /// cannot be reached within the acquire timeout.
    pub async fn connect(self) -> StoreResult<SqlStore> {
        let problem = if self.options.max_connections == 0 {
            Some("max_connections is zero (no operation could run)")
        } else if self.options.acquire_timeout.is_zero() {
            Some("the acquire timeout is zero (every operation would fail)")
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(StoreError::backend(
                "sql",
                format_args!("invalid configuration: {p}"),
            ));
        }
        let store = SqlStore::connect_with(&self.url, &self.options).await?;
        if let Some(every) = self.reap_every {
            // Detached on purpose: it holds the store and ends with the runtime.
            drop(spawn_reaper(store.store(), every));
        }
        Ok(store)
    }
}

/// The database is the durable tier of `ratatoskr-tiered`, with its journal in the same
/// database.
impl DurableTier for SqlStore {
    fn durable_store(&self) -> Arc<dyn SessionStore> {
        self.store()
    }

    fn journal(&self) -> Arc<dyn OutageJournal> {
        Arc::new(SqlStore::journal(self))
    }
}

impl<D: Dialect> DurableTier for Store<D> {
    fn durable_store(&self) -> Arc<dyn SessionStore> {
        Arc::new(self.clone())
    }

    fn journal(&self) -> Arc<dyn OutageJournal> {
        Arc::new(Store::journal(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settings_that_cannot_work_are_refused_with_a_reason() {
        let err = SqlStore::builder("sqlite::memory:")
            .max_connections(0)
            .connect()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_connections"), "{err}");
        let err = SqlStore::builder("sqlite::memory:")
            .acquire_timeout(Duration::ZERO)
            .connect()
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("acquire timeout"), "{err}");
    }

    #[tokio::test]
    async fn a_built_store_is_a_durable_tier_with_its_journal() {
        let sql = SqlStore::builder("sqlite::memory:")
            .without_reaper()
            .connect()
            .await
            .unwrap();
        assert_eq!(sql.durable_store().backend_name(), "sqlite");
        assert_eq!(DurableTier::journal(&sql).pending_count().await.unwrap(), 0);
    }
}
