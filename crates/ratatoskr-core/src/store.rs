//! The one trait every backend implements.
//!
//! A store keeps [`Record`]s under [`SessionKey`]s and answers for its own atomicity: each method
//! is one indivisible operation as seen by every other caller, on every instance. The contract is
//! written down here and checked for every backend by the `ratatoskr-conformance` suite:
//!
//! - **create** refuses an existing key ([`StoreError::Collision`]) and refuses a session for a
//!   user whose sessions were revoked at or after the record's creation time
//!   ([`StoreError::Revoked`]), so a session created while a revoke-all runs cannot survive it.
//! - **load** returns `None` for a missing or expired session, and for a stored record that no
//!   longer decodes (logged by handle via [`log_undecodable`], never by token).
//! - **apply** writes only the attributes in the [`Delta`] and refuses with
//!   [`StoreError::NotFound`] when the session was destroyed or expired: no resurrection.
//! - **touch** moves `last_seen` and the idle expiry, never past the absolute deadline, without
//!   rewriting attributes; it does nothing to a missing session.
//! - **rotate** moves a session to a new key with new fixed data and the same attributes; the new
//!   key exists before the old one disappears, and the old one is dead afterwards.
//! - **destroy** is final. **list_user** / **destroy_user** find a user's sessions through an index
//!   (never a scan of the keyspace) that is pruned as sessions end, so it never grows without bound.

use std::sync::Arc;

use async_trait::async_trait;

use crate::codec::CodecError;
use crate::record::{Delta, Meta, Millis, Record, SessionSummary};
use crate::token::SessionKey;

/// What can go wrong in a store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A session with this key already exists (a token collision: generate another token).
    #[error("a session with this key already exists")]
    Collision,
    /// The session does not exist: it expired, was destroyed, or never was.
    #[error("the session does not exist (expired or destroyed)")]
    NotFound,
    /// The user's sessions were revoked after this operation began.
    #[error("the user's sessions were revoked while this session was being created")]
    Revoked,
    /// The record is too large, or a name is too long.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The backend failed or could not be reached.
    #[error("the {backend} session store failed: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What it said (never contains a token: stores never see one).
        message: String,
    },
}

impl StoreError {
    /// A backend failure with its message.
    pub fn backend(backend: &'static str, err: impl std::fmt::Display) -> Self {
        StoreError::Backend {
            backend,
            message: err.to_string(),
        }
    }

    /// Whether the error is the backend's fault (as opposed to a client's or a race's).
    pub fn is_backend(&self) -> bool {
        matches!(self, StoreError::Backend { .. })
    }
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// A session backend. See the module documentation for the contract.
///
/// Implementations: `MemoryStore` (this crate, for tests of the layers above),
/// `ratatoskr_sql::SqliteStore` and `PgStore`, `ratatoskr_redis::RedisStore`.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// A short name for logs and metrics (`"sqlite"`, `"postgres"`, `"redis"`, `"memory"`).
    fn backend_name(&self) -> &'static str;

    /// Store a new session. Fails with `Collision` if the key exists, `Revoked` if the user's
    /// sessions were revoked at or after `record.meta.created_at`.
    async fn create(&self, key: &SessionKey, record: &Record) -> StoreResult<()>;

    /// Load a live session; `None` if missing, expired or undecodable.
    async fn load(&self, key: &SessionKey) -> StoreResult<Option<Record>>;

    /// [`load`](Self::load), shared: a store that keeps decoded sessions in memory (a near
    /// cache) hands out the copy it holds instead of copying it for every read. The caller
    /// must not expect later changes to show in it (copy on write: `Arc::make_mut`). Default:
    /// `load`, wrapped.
    async fn load_shared(&self, key: &SessionKey) -> StoreResult<Option<Arc<Record>>> {
        Ok(self.load(key).await?.map(Arc::new))
    }

    /// Write only the attributes a request changed. `NotFound` if the session is gone.
    async fn apply(&self, key: &SessionKey, delta: &Delta) -> StoreResult<()>;

    /// Record use at `last_seen`: extend the idle expiry (capped by the absolute deadline)
    /// without rewriting the record. Returns whether the session existed.
    async fn touch(&self, key: &SessionKey, meta: &Meta, last_seen: Millis) -> StoreResult<bool>;

    /// [`touch`](Self::touch), from a caller that read the session and knows when the copy it
    /// read expires (`expires_at`, before this touch). A tiered store uses the deadline to decide
    /// whether the touch may wait for a batch or must reach the database before it; other stores
    /// ignore it (the default).
    async fn touch_with_deadline(
        &self,
        key: &SessionKey,
        meta: &Meta,
        last_seen: Millis,
        expires_at: Millis,
    ) -> StoreResult<bool> {
        let _ = expires_at;
        self.touch(key, meta, last_seen).await
    }

    /// Touch many sessions at once (the tiered store flushes batched touches to the database
    /// through this). The default calls [`touch`](Self::touch) for each; SQL stores override it
    /// with one transaction.
    async fn touch_many(&self, touches: &[(SessionKey, Meta, Millis)]) -> StoreResult<()> {
        for (key, meta, last_seen) in touches {
            self.touch(key, meta, *last_seen).await?;
        }
        Ok(())
    }

    /// Put back a record copied from another tier (the tiered store repopulating Redis from the
    /// database): written only if the key is absent, with no revocation check (the copy is
    /// already authoritative). Returns whether it was written. The default uses
    /// [`create`](Self::create) and treats `Collision` and `Revoked` as "not written"; stores
    /// with a revocation check override it.
    async fn restore(&self, key: &SessionKey, record: &Record) -> StoreResult<bool> {
        match self.create(key, record).await {
            Ok(()) => Ok(true),
            Err(StoreError::Collision | StoreError::Revoked) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Move a session to `new` with fixed data `meta` and the same attributes, last seen at
    /// `now`. `NotFound` if `old` is gone, `Collision` if `new` exists, `Revoked` if `meta` names a
    /// user whose sessions were revoked at or after `now`.
    async fn rotate(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        meta: &Meta,
        now: Millis,
    ) -> StoreResult<()>;

    /// [`rotate`](Self::rotate), and the live sessions of the user `meta` names, oldest first
    /// (as [`list_user`](Self::list_user) answers; empty when `meta` names no user): what a
    /// login needs to enforce the per-user session limit. The list may have been read before or
    /// after the rotation landed, so it may hold `old`, `new`, both or neither; callers must not
    /// count on either. The list is only answered if the rotation succeeded.
    ///
    /// The default rotates, then lists (two store calls, one after the other). It does not
    /// overlap them: a list read before the rotation landed misses logins of the same user
    /// running at the same moment, and two such logins could each see room for themselves and
    /// leave the user one session over the limit. A store that can do both in one round trip
    /// (one script, one transaction, the list read after the rotation) should override it.
    async fn rotate_and_list_user(
        &self,
        old: &SessionKey,
        new: &SessionKey,
        meta: &Meta,
        now: Millis,
    ) -> StoreResult<Vec<SessionSummary>> {
        let Some(user_id) = meta.user_id.as_deref() else {
            self.rotate(old, new, meta, now).await?;
            return Ok(Vec::new());
        };
        self.rotate(old, new, meta, now).await?;
        self.list_user(user_id).await
    }

    /// [`create`](Self::create), and whether this process may keep `record` as its near-cache
    /// copy of the new session: `true` only from a store that will announce every later change
    /// of the session to this process (a Redis store in tracking mode that wrote it on its
    /// tracked connection). The default creates and answers `false`.
    async fn create_cacheable(&self, key: &SessionKey, record: &Record) -> StoreResult<bool> {
        self.create(key, record).await.map(|()| false)
    }

    /// Destroy a session. Returns whether it existed.
    async fn destroy(&self, key: &SessionKey) -> StoreResult<bool>;

    /// For a store used as a cache in front of another (Redis in a tiered store): remove the
    /// copy of `key` as [`destroy`](Self::destroy) does, and keep a copy of it whose write is
    /// still in flight — a create or restore that the other store took before this removal —
    /// from landing afterwards, for a while. A tiered store writes its cache after its
    /// database, so without this a removal (a logout, a login's eviction) can overtake the
    /// copy's write and leave a session that the database no longer has alive in the cache.
    /// The default is `destroy`: right for stores that are never written after another one.
    async fn discard_copy(&self, key: &SessionKey) -> StoreResult<bool> {
        self.destroy(key).await
    }

    /// A user's live sessions, oldest first.
    async fn list_user(&self, user_id: &str) -> StoreResult<Vec<SessionSummary>>;

    /// Destroy every session of a user except `except`, and refuse any session for that user
    /// created before now that has not landed yet. Returns how many were destroyed.
    async fn destroy_user(&self, user_id: &str, except: Option<&SessionKey>) -> StoreResult<u64>;

    /// How many live sessions the store holds.
    async fn count(&self) -> StoreResult<u64>;

    /// Remove expired sessions and index entries; returns how many were removed.
    async fn reap(&self) -> StoreResult<u64>;

    /// Check that the backend answers.
    async fn ping(&self) -> StoreResult<()>;

    /// For a store used as a cache in front of another (Redis in a tiered store), called when
    /// the tiered store recovers from an outage, before it replays its journal. Two kinds of
    /// stale data must not outlive the recovery: copies kept by a server that restarted or
    /// failed over since they were written (a snapshot, an append-only file, a lagging replica
    /// promoted), which are discarded; and writes sent before the outage that reach the server
    /// late (a stalled server, a slow network), which are refused from now on. Returns whether
    /// data was discarded. Stores that are their own source of truth have neither: the default
    /// does nothing.
    async fn begin_epoch(&self) -> StoreResult<bool> {
        Ok(false)
    }
}

/// Log a stored record that no longer decodes. It is logged by handle, never by token (stores
/// never see tokens), and the caller then treats the session as absent.
pub fn log_undecodable(backend: &'static str, key: &SessionKey, err: &CodecError) {
    tracing::warn!(
        backend,
        handle = %key.handle(),
        error = %err,
        "stored session record does not decode; treating the session as absent"
    );
}

/// A change notice from a shared fast tier, for per-process caches of decoded sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// This session changed or ended somewhere: drop any cached copy.
    Key(SessionKey),
    /// Notices may have been missed (the tracking connection dropped): drop every cached copy.
    All,
}
