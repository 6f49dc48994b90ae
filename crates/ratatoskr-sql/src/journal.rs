//! The durable outage journal: [`SqlJournal`], the `ratatoskr_redis_journal` table.
//!
//! The tiered store (`ratatoskr-tiered`) writes here what Redis missed while it was unreachable
//! (a session key to invalidate, or a whole user after a revoke-all). The table lives in the
//! database every instance shares, so whichever instance sees Redis answer again replays it,
//! even if the instance that wrote an entry has died since. See
//! [`OutageJournal`](ratatoskr_core::OutageJournal) for the contract.

use async_trait::async_trait;
use sqlx::pool::Pool;

use ratatoskr_core::{JournalEntry, JournalTarget, OutageJournal, StoreError, StoreResult};

use crate::dialect::{AnyPool, Dialect, either};
use crate::driver::stmt;
use crate::group::{Op, Writer};

/// An [`OutageJournal`] in the `ratatoskr_redis_journal` table of a SQLite or PostgreSQL
/// database, shared by every instance using that database.
///
/// Get one from a store ([`crate::SqliteStore::journal`], [`crate::PgStore::journal`],
/// [`crate::SqlStore::journal`]): it shares the store's pool, and its writes go through the
/// store's writer, so with group commit on they share transactions with the session writes
/// they accompany. Cheap to clone.
///
/// - `append` writes all its targets in one transaction, each an entry with a new id; ids only
///   grow and are never reused;
/// - `pending(limit)` returns the oldest `limit` entries, by id;
/// - `acknowledge(ids)` deletes those entries (ids already gone are ignored, so two instances
///   replaying at once do no harm);
/// - `pending_count()` counts what is left.
///
/// ```no_run
/// # async fn demo() -> Result<(), ratatoskr_core::StoreError> {
/// use std::sync::Arc;
/// use ratatoskr_core::{JournalTarget, OutageJournal};
/// use ratatoskr_sql::SqlStore;
///
/// let sql = SqlStore::connect("sqlite://data/sessions.db").await?;
/// let journal: Arc<dyn OutageJournal> = Arc::new(sql.journal());
/// journal.append(&[JournalTarget::User("42".into())]).await?;
/// for entry in journal.pending(100).await? {
///     // ... invalidate entry.target in Redis, then:
///     journal.acknowledge(&[entry.id]).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqlJournal {
    pool: AnyPool,
    writer: Writer,
}

impl std::fmt::Debug for SqlJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SqlJournal").field(&self.backend()).finish()
    }
}

/// The row of one raw entry: id, at, kind, session key, user.
type RawEntry = (i64, i64, String, Option<Vec<u8>>, Option<String>);

const KIND_SESSION: &str = "session";
const KIND_USER: &str = "user";

/// A target as the row's columns: kind, session key, user.
pub(crate) fn columns(target: &JournalTarget) -> (&'static str, Option<&[u8]>, Option<&str>) {
    match target {
        JournalTarget::Session(key) => (KIND_SESSION, Some(&key.as_bytes()[..]), None),
        JournalTarget::User(user) => (KIND_USER, None, Some(user.as_str())),
    }
}

impl SqlJournal {
    pub(crate) fn new(pool: AnyPool, writer: Writer) -> Self {
        SqlJournal { pool, writer }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.pool.backend()
    }

    fn be(&self) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        move |e| StoreError::backend(self.backend(), e)
    }

    fn entry(&self, (id, at, kind, key, user): RawEntry) -> Option<JournalEntry> {
        let target = match (kind.as_str(), key, user) {
            (KIND_SESSION, Some(key), _) => {
                JournalTarget::Session(crate::common::key_from_db(self.backend(), &key)?)
            }
            (KIND_USER, _, Some(user)) => JournalTarget::User(user),
            // The table's CHECK constraints rule this out; `pending` selects known kinds only.
            _ => {
                tracing::warn!(
                    backend = self.backend(),
                    id,
                    kind,
                    "skipping a malformed journal entry"
                );
                return None;
            }
        };
        Some(JournalEntry { id, at, target })
    }
}

#[async_trait]
impl OutageJournal for SqlJournal {
    async fn append(&self, targets: &[JournalTarget]) -> StoreResult<()> {
        if targets.is_empty() {
            return Ok(());
        }
        self.writer
            .submit(Op::JournalAppend(targets.to_vec()))
            .await
            .map(drop)
    }

    /// The oldest `limit` entries, by id. Entries of a kind this build does not know (written
    /// by a newer version during a rolling deploy) are left for that version to replay.
    async fn pending(&self, limit: usize) -> StoreResult<Vec<JournalEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = either!(&self.pool, AnyPool, p => pending(p, limit).await).map_err(self.be())?;
        Ok(rows.into_iter().filter_map(|r| self.entry(r)).collect())
    }

    async fn acknowledge(&self, ids: &[i64]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.writer
            .submit(Op::JournalAck(ids.to_vec()))
            .await
            .map(drop)
    }

    async fn pending_count(&self) -> StoreResult<u64> {
        let n = either!(&self.pool, AnyPool, p => pending_count(p).await).map_err(self.be())?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The oldest `limit` entries of the kinds this build knows, by id.
async fn pending<D: Dialect>(pool: &Pool<D>, limit: i64) -> Result<Vec<RawEntry>, sqlx::Error> {
    stmt::<D>(
        "SELECT id, at, kind, session_key, user_id FROM ratatoskr_redis_journal
         WHERE kind IN ('session', 'user') ORDER BY id LIMIT $1",
    )
    .bind(limit)
    .fetch_tuples_in(pool)
    .await
}

/// How many entries of the kinds this build knows are pending.
async fn pending_count<D: Dialect>(pool: &Pool<D>) -> Result<i64, sqlx::Error> {
    stmt::<D>("SELECT count(*) FROM ratatoskr_redis_journal WHERE kind IN ('session', 'user')")
        .fetch_one_in(pool)
        .await?
        .get(0)
}
