//! Test support shared by Ratatoskr's crates (never a runtime dependency).
//!
//! Fault tests kill, freeze and restart servers. They must never do that to the shared services
//! on 6379 and 5432, so they start their own with [`RedisProcess`] and [`PgProcess`], on free
//! loopback ports, and these are stopped and deleted when dropped.

#![warn(missing_docs)]

pub mod procs;

pub use procs::{POSTGRES_MISSING, PgProcess, REDIS_SERVER_MISSING, RedisProcess, free_port};
