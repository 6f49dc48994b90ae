//! What a store brings to a two-tier composition (`ratatoskr-tiered`): the seams that let
//! `TieredStore::builder(redis, database)` take the concrete stores and work out the rest
//! itself, instead of a list of positional arguments where a forgotten one silently turns a
//! feature off.
//!
//! - A [`FastTier`] (Redis) is the store in front, and may announce changes to the sessions it
//!   served ([`Invalidation`] notices), which is what a per-process near cache needs.
//! - A [`DurableTier`] (SQLite, PostgreSQL) is the source of truth, and keeps the shared
//!   [`OutageJournal`] of invalidations owed to the fast tier after an outage.
//!
//! `ratatoskr-redis` implements [`FastTier`] for its `RedisStore` (with notices when it runs in
//! tracking mode), `ratatoskr-sql` implements [`DurableTier`] for its stores. For tests, any
//! store is a fast tier without notices, and a pair `(store, journal)` is a durable tier:
//!
//! ```
//! use std::sync::Arc;
//! use ratatoskr_core::tier::{DurableTier, FastTier};
//! use ratatoskr_core::{MemoryJournal, MemoryStore, OutageJournal, SessionStore};
//!
//! let fast: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
//! assert!(fast.invalidations().is_none());
//! let durable = (
//!     Arc::new(MemoryStore::default()) as Arc<dyn SessionStore>,
//!     Arc::new(MemoryJournal::default()) as Arc<dyn OutageJournal>,
//! );
//! assert_eq!(durable.durable_store().backend_name(), "memory");
//! ```

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::journal::OutageJournal;
use crate::store::{Invalidation, SessionStore};

/// A store that can sit in front of a durable one.
pub trait FastTier {
    /// The store itself.
    fn fast_store(&self) -> Arc<dyn SessionStore>;

    /// A receiver of change notices for the sessions this store serves, if it sends them
    /// (Redis in tracking mode). `None`: no notices, so no per-process cache can be kept
    /// correct in front of it.
    fn invalidations(&self) -> Option<broadcast::Receiver<Invalidation>>;
}

/// A store that is the source of truth behind a fast tier.
pub trait DurableTier {
    /// The store itself.
    fn durable_store(&self) -> Arc<dyn SessionStore>;

    /// The outage journal, kept in the same durable storage and shared by every instance.
    fn journal(&self) -> Arc<dyn OutageJournal>;
}

/// Any store, as a fast tier without notices.
impl FastTier for Arc<dyn SessionStore> {
    fn fast_store(&self) -> Arc<dyn SessionStore> {
        self.clone()
    }

    fn invalidations(&self) -> Option<broadcast::Receiver<Invalidation>> {
        None
    }
}

/// A store and the receiver of its notices.
impl FastTier for (Arc<dyn SessionStore>, broadcast::Receiver<Invalidation>) {
    fn fast_store(&self) -> Arc<dyn SessionStore> {
        self.0.clone()
    }

    fn invalidations(&self) -> Option<broadcast::Receiver<Invalidation>> {
        Some(self.1.resubscribe())
    }
}

/// A store and a journal, as a durable tier.
impl DurableTier for (Arc<dyn SessionStore>, Arc<dyn OutageJournal>) {
    fn durable_store(&self) -> Arc<dyn SessionStore> {
        self.0.clone()
    }

    fn journal(&self) -> Arc<dyn OutageJournal> {
        self.1.clone()
    }
}

impl<T: FastTier + ?Sized> FastTier for &T {
    fn fast_store(&self) -> Arc<dyn SessionStore> {
        (**self).fast_store()
    }

    fn invalidations(&self) -> Option<broadcast::Receiver<Invalidation>> {
        (**self).invalidations()
    }
}

impl<T: DurableTier + ?Sized> DurableTier for &T {
    fn durable_store(&self) -> Arc<dyn SessionStore> {
        (**self).durable_store()
    }

    fn journal(&self) -> Arc<dyn OutageJournal> {
        (**self).journal()
    }
}
