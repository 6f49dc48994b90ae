//! The conformance suite against the in-memory store.

use std::sync::Arc;

use async_trait::async_trait;
use ratatoskr_conformance::Harness;
use ratatoskr_core::{MemoryStore, SessionKey, SessionStore};

struct Memory(Arc<MemoryStore>);

#[async_trait]
impl Harness for Memory {
    fn store(&self) -> Arc<dyn SessionStore> {
        self.0.clone()
    }
    async fn other_instance(&self) -> Arc<dyn SessionStore> {
        // One process, one map: the "other instance" is the same store.
        self.0.clone()
    }
    async fn corrupt(&self, key: &SessionKey) {
        self.0.overwrite_raw(key, vec![1, 0xff, 0xff]);
    }
    async fn index_entries(&self, user_id: &str) -> usize {
        self.0.index_entries(user_id)
    }
}

async fn harness() -> Memory {
    Memory(Arc::new(MemoryStore::default()))
}

ratatoskr_conformance::store_conformance!(harness);
