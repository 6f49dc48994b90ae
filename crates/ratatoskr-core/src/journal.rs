//! The outage journal: what changed in the durable tier while the fast tier was unreachable.
//!
//! When Redis cannot be told about a durable change (a destroy, a delta, a rotation, a revoke-all),
//! the tiered store writes the affected session keys (or user) here, in the database. Whoever sees
//! Redis come back first — any instance, not necessarily the one that made the change — replays
//! the journal by invalidating those keys in Redis before anyone reads Redis again. So a session
//! revoked during an outage stays revoked even if Redis returns with its old data and the revoking
//! instance is gone.
//!
//! `ratatoskr-sql` provides the durable implementation; [`MemoryJournal`] is for tests.

use std::sync::Mutex;

use async_trait::async_trait;

use crate::record::{Millis, now_ms};
use crate::store::StoreResult;
use crate::token::SessionKey;

/// What must be invalidated in the fast tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalTarget {
    /// One session.
    Session(SessionKey),
    /// Every session of a user (a revoke-all).
    User(String),
}

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalEntry {
    /// Monotonic id; replay acknowledges up to an id.
    pub id: i64,
    /// When it was written.
    pub at: Millis,
    /// What to invalidate.
    pub target: JournalTarget,
}

/// A durable, shared list of fast-tier invalidations still to be made.
#[async_trait]
pub trait OutageJournal: Send + Sync + 'static {
    /// Append targets (in one write).
    async fn append(&self, targets: &[JournalTarget]) -> StoreResult<()>;
    /// The oldest `limit` entries not yet acknowledged.
    async fn pending(&self, limit: usize) -> StoreResult<Vec<JournalEntry>>;
    /// Remove the given entries after they were replayed.
    async fn acknowledge(&self, ids: &[i64]) -> StoreResult<()>;
    /// How many entries are pending.
    async fn pending_count(&self) -> StoreResult<u64>;
}

/// An in-memory journal, for tests of the tiered store's logic.
#[derive(Default)]
pub struct MemoryJournal(Mutex<(i64, Vec<JournalEntry>)>);

#[async_trait]
impl OutageJournal for MemoryJournal {
    async fn append(&self, targets: &[JournalTarget]) -> StoreResult<()> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for t in targets {
            g.0 += 1;
            let id = g.0;
            g.1.push(JournalEntry {
                id,
                at: now_ms(),
                target: t.clone(),
            });
        }
        Ok(())
    }

    async fn pending(&self, limit: usize) -> StoreResult<Vec<JournalEntry>> {
        let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        Ok(g.1.iter().take(limit).cloned().collect())
    }

    async fn acknowledge(&self, ids: &[i64]) -> StoreResult<()> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.1.retain(|e| !ids.contains(&e.id));
        Ok(())
    }

    async fn pending_count(&self) -> StoreResult<u64> {
        Ok(self.0.lock().unwrap_or_else(|e| e.into_inner()).1.len() as u64)
    }
}
