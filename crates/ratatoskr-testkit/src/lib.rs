//! Test support shared by Ratatoskr's crates (never a runtime dependency).
//!
//! Fault tests kill, freeze and restart servers. They must never do that to the shared services
//! on 6379 and 5432, so they start their own with [`RedisProcess`] and [`PgProcess`], on free
//! loopback ports, and these are stopped and deleted when dropped. Scale-out tests start a
//! whole [`RedisCluster`] (3 masters, 3 replicas) or a [`RedisSentinel`] group (1 master,
//! 2 replicas, 3 sentinels) the same way.

#![warn(missing_docs)]

pub mod cluster;
mod node;
pub mod procs;
pub mod sentinel;

pub use cluster::{RedisCluster, key_slot};
pub use procs::{POSTGRES_MISSING, PgProcess, REDIS_SERVER_MISSING, RedisProcess, free_port};
pub use sentinel::RedisSentinel;
