//! # ratatoskr-core
//!
//! The session model of Ratatoskr, with no I/O: what a session token is, what a store keeps, how
//! it is encoded, and the one [`SessionStore`] trait every backend implements.
//!
//! ## The pieces
//! - [`token`]: the 256-bit [`Token`] in the cookie, the [`SessionKey`] (its SHA-256) that stores
//!   file sessions under, and the public [`Handle`] that names a session in lists.
//! - [`record`]: the [`Record`] a store keeps ([`Meta`] + last seen + attributes) and the [`Delta`]
//!   a request writes back.
//! - [`codec`]: the compact, versioned binary encoding (documented in `docs/format.md`).
//! - [`store`]: the [`SessionStore`] trait and its contract.
//! - [`memory`]: [`MemoryStore`], for tests of the layers above.
//! - [`audit`]: the [`AuditSink`] trait for session lifecycle events.
//! - [`journal`]: the [`OutageJournal`] of fast-tier invalidations owed after an outage.
//! - [`manager`]: [`SessionManager`], the policy on top of a store: timeouts, rotation, limits.
//! - [`tier`]: [`FastTier`](tier::FastTier) and [`DurableTier`](tier::DurableTier), what a store
//!   brings to `TieredStore::builder(redis, database)`.
//!
//! Backends live in their own crates (`ratatoskr-sql`, `ratatoskr-redis`), and every one of them
//! passes the same `ratatoskr-conformance` suite.
#![warn(missing_docs)]

pub mod audit;
pub mod codec;
pub mod journal;
pub mod manager;
pub mod memory;
pub mod record;
pub mod store;
pub mod tier;
pub mod token;

pub use audit::{AuditEvent, AuditKind, AuditSink};
pub use codec::{CodecError, Limits};
pub use journal::{JournalEntry, JournalTarget, MemoryJournal, OutageJournal};
pub use manager::{ManagerConfig, SessionManager};
pub use memory::MemoryStore;
pub use record::{Delta, Meta, Millis, Record, SessionSummary, now_ms};
pub use store::{Invalidation, SessionStore, StoreError, StoreResult};
pub use token::{Handle, SessionKey, Token, TokenError};
