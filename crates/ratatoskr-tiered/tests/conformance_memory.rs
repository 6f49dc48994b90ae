//! The conformance suite against the tiered store's logic, with in-memory tiers and journal.
//! (The same suite over real Redis + SQL runs in `conformance_real.rs`.)

use std::sync::Arc;

use async_trait::async_trait;
use ratatoskr_conformance::Harness;
use ratatoskr_core::{MemoryJournal, MemoryStore, SessionKey, SessionStore};
use ratatoskr_tiered::{TieredConfig, TieredStore};

struct Tiers {
    fast: Arc<MemoryStore>,
    durable: Arc<MemoryStore>,
    journal: Arc<MemoryJournal>,
    store: TieredStore,
}

#[async_trait]
impl Harness for Tiers {
    fn store(&self) -> Arc<dyn SessionStore> {
        Arc::new(self.store.clone())
    }
    async fn other_instance(&self) -> Arc<dyn SessionStore> {
        Arc::new(TieredStore::new(
            self.fast.clone(),
            self.durable.clone(),
            self.journal.clone(),
            None,
            TieredConfig::default(),
        ))
    }
    async fn corrupt(&self, key: &SessionKey) {
        self.fast.overwrite_raw(key, vec![1, 0xff]);
        self.durable.overwrite_raw(key, vec![1, 0xff]);
    }
    async fn index_entries(&self, user_id: &str) -> usize {
        self.durable.index_entries(user_id)
    }
}

async fn harness() -> Tiers {
    let fast = Arc::new(MemoryStore::default());
    let durable = Arc::new(MemoryStore::default());
    let journal = Arc::new(MemoryJournal::default());
    let store = TieredStore::new(
        fast.clone(),
        durable.clone(),
        journal.clone(),
        None,
        TieredConfig::default(),
    );
    Tiers {
        fast,
        durable,
        journal,
        store,
    }
}

ratatoskr_conformance::store_conformance!(harness);
