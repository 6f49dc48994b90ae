//! # ratatoskr-redis
//!
//! The Redis session store for Ratatoskr: [`RedisStore`], an implementation of
//! [`SessionStore`](ratatoskr_core::SessionStore) that keeps each session as one small Redis hash, writes only what a request
//! changed, and does every conditional write in one atomic Lua script.
//!
//! ```no_run
//! use std::time::Duration;
//! use ratatoskr_core::{Delta, Record, SessionStore, Token, now_ms};
//! use ratatoskr_redis::{RedisConfig, RedisStore};
//!
//! # async fn run() -> Result<(), ratatoskr_core::StoreError> {
//! let store = RedisStore::connect(RedisConfig {
//!     url: "redis://127.0.0.1:6379/".into(),
//!     response_timeout: Duration::from_millis(250),
//!     ..RedisConfig::default()
//! })
//! .await?;
//!
//! let token = Token::generate(); // goes into the cookie; Redis only ever sees its hash
//! let key = token.key();
//! let record = Record::new(Some("42".into()), now_ms(),
//!                          Duration::from_secs(2 * 3600), Duration::from_secs(24 * 3600));
//! store.create(&key, &record).await?;
//! store.apply(&key, &Delta::default().set("counter", b"1".to_vec())).await?;
//! assert_eq!(store.list_user("42").await?.len(), 1);
//! store.destroy(&key).await?;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! With the default prefix `rt:` (every name below starts with the configured
//! [`RedisConfig::key_prefix`]). Every script touches keys of **one hash slot**: the session's,
//! or its user's (the `{u:<user id>}` hash tag), so the same layout runs on one server, behind
//! Sentinel and on a Redis Cluster.
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `rt:<32 raw key bytes>` | hash | one session | at its idle/absolute deadline |
//! | `rt:{u:<user id>}` | sorted set | the user's sessions: raw key → expiry (whole seconds) | with its last member |
//! | `rt:{u:<user id>}r` | string | when the user's sessions were last revoked (ms) | ≥ [`RedisConfig::revocation_ttl`] |
//! | `rt:owner` | string | the server run(s) (`run_id`s) holding the data, see [`SessionStore::begin_epoch`](ratatoskr_core::SessionStore::begin_epoch) | never |
//! | `rt:fence` (one per slot on a cluster: `rt:fence{TAG}`) | string | the write epoch that fences off late writes | never |
//!
//! A session and its user's index entry are written in two steps, the index first, so that a
//! crash in between never leaves a session its user's revoke-all cannot find; `docs/redis.md`
//! has the argument.
//!
//! The session hash has one field per attribute, named by the attribute itself, plus two
//! reserved fields whose names are single bytes that are not valid UTF-8 on their own, so no
//! attribute name (a Rust `String`) can ever collide with them:
//!
//! - [`META_FIELD`] (`0xFF`): the fixed part, [`codec::encode_meta`](ratatoskr_core::codec::encode_meta) (user, creation time,
//!   timeouts, version, fingerprint, CSRF secret).
//! - [`LAST_SEEN_FIELD`] (`0xFE`): `last_seen` in ms, as a decimal integer — **only** while the
//!   expiry is capped by the absolute deadline. Otherwise the key's own expiry says it all:
//!   `PEXPIRETIME = last_seen + idle_timeout`, so `last_seen` is read back as
//!   `PEXPIRETIME - idle_timeout` and costs no memory. Both are written by the same scripts, so
//!   the two can never disagree (unless someone changes a key's TTL by hand; don't).
//!
//! A session for user `42` with one attribute `counter = 1` occupies **152 bytes** by
//! `MEMORY USAGE` (Redis 7.0, jemalloc): the hash stays a listpack (≤ 128 fields, values ≤ 64
//! bytes); with its user's index (one entry) everything it costs is **256 bytes**. There is no
//! global index: [`count`](ratatoskr_core::SessionStore::count) walks the keyspace. `docs/redis.md` has the
//! breakdown.
//!
//! ## Atomicity
//!
//! Every write is a Lua script (`EVALSHA`, reloaded automatically after a Redis restart) over
//! the keys of one slot, so each is indivisible for every client and every application
//! instance:
//!
//! - **create** files the session in its user's index after checking the revocation marker
//!   ([`StoreError::Revoked`]), then writes the hash, refusing an existing key
//!   ([`StoreError::Collision`]).
//! - **restore** (a copy from the database, put back by the tiered store) is create without
//!   the revocation check: written only if the key is absent (and the copy has not expired).
//! - **apply** refuses a missing session ([`StoreError::NotFound`]: no resurrection) and a
//!   result over [`Limits::max_record_bytes`](ratatoskr_core::codec::Limits::max_record_bytes), writing nothing in either case; else `HSET`s
//!   and `HDEL`s just the delta. Parallel deltas on different attributes all land.
//! - **touch** moves the expiry (never past the absolute deadline), after raising the index
//!   entry's; it never rewrites attributes and never creates anything.
//! - **rotate** moves the attributes to the new key (`RENAME` within a slot; across slots the
//!   old key is taken and deleted in one step, then the new one written) and the index entries.
//! - **destroy_user** raises the revocation marker and ends every indexed session; a create
//!   caught between its two steps meets a tombstone and is refused.
//! - **load** reads the hash and its expiry in one `MULTI`/`EXEC`.
//!
//! ## Failure
//!
//! Every call is bounded by [`RedisConfig::response_timeout`] and reports
//! [`StoreError::Backend`] on a timeout, a connection error or a server error. The connection
//! is a [`redis::aio::ConnectionManager`]: multiplexed, re-established after a disconnect, and
//! always RESP2, so that the first call after a lost connection (a Redis restart) fails rather
//! than silently running on a new connection to a server that may have lost or rolled back its
//! data. Nothing panics on bad stored data: a session that does not decode is logged by handle
//! and treated as absent.
//!
//! ## Client-side caching
//!
//! [`RedisStore::connect_tracked`] (or [`RedisConfig::tracking`]) runs `load` and `apply` on a
//! second, RESP3 connection with `CLIENT TRACKING ON NOLOOP` and announces on a broadcast
//! channel every change to a session read through it ([`Invalidation::Key`]) — every change
//! but this store's own `apply`, whose written copy the cache in front puts back itself — and
//! every moment notices may have been missed ([`Invalidation::All`]: the tracked connection
//! was lost or re-established, Redis was flushed). Tracking is turned on before a connection
//! serves its first read; a lost connection is reported to the channel at once and to the
//! next call as an error. `docs/redis.md` explains the choices and has the propagation
//! figures.
//!
//! ## Deployments
//!
//! One server ([`RedisConfig::new`] with `redis://…`), a Sentinel-managed master
//! ([`RedisConfig::sentinel`], or `redis+sentinel://h:p,h:p/<master-name>`), or a Redis
//! Cluster ([`RedisConfig::cluster`], [`RedisConfig::cluster_from_list`]). Tracking works on
//! each: on a cluster with one tracked connection per master, each `load` sent to the master of
//! its key's slot, and every topology change announced as [`Invalidation::All`].
#![warn(missing_docs)]

mod builder;
mod config;
mod conn;
mod maintenance;
mod ops;
mod replies;
mod scripts;
mod tracked;
mod tracking;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ratatoskr_core::codec::CodecError;
use ratatoskr_core::{Invalidation, Millis, SessionKey, StoreError, StoreResult};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, RedisResult, Value};
use tokio::sync::broadcast;

pub use crate::builder::RedisStoreBuilder;
pub use crate::config::RedisConfig;
use crate::config::redact_url;
use crate::conn::{Conn, SentinelConn, Topology};
pub use crate::conn::{SENTINEL_SCHEME, key_slot};
pub(crate) use crate::replies::*;
use crate::tracked::{TrackSettings, Tracker};
pub use crate::tracking::INVALIDATION_CHANNEL_CAPACITY;
use crate::tracking::TrackSource;

/// The backend name in logs, metrics and [`StoreError::Backend`].
pub const BACKEND: &str = "redis";

/// The hash field holding the encoded fixed part ([`codec::encode_meta`](ratatoskr_core::codec::encode_meta)). A lone `0xFF` byte is
/// not UTF-8, so no attribute name can take it.
pub const META_FIELD: &[u8] = b"\xff";

/// The hash field holding `last_seen` (decimal ms), present only while the session's expiry is
/// capped by its absolute deadline. A lone `0xFE` byte is not UTF-8 either.
pub const LAST_SEEN_FIELD: &[u8] = b"\xfe";

/// A [`SessionStore`](ratatoskr_core::SessionStore) on Redis (one server, the master Sentinels name, or a Cluster). Cheap to clone: clones share one multiplexed,
/// self-reconnecting connection (and, in tracking mode, one tracked read connection).
///
/// See the [crate documentation](crate) for the key layout and the atomicity guarantees.
#[derive(Clone)]
pub struct RedisStore {
    con: Conn,
    config: RedisConfig,
    tracking: Option<Arc<Tracker>>,
    /// The write epoch this store (and its clones) last learned; see
    /// [`begin_epoch`](ratatoskr_core::SessionStore::begin_epoch). 0: none known yet.
    epoch: Arc<std::sync::atomic::AtomicU64>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn backend(err: impl fmt::Display) -> StoreError {
    StoreError::backend(BACKEND, err)
}

/// A client for `url` speaking `protocol`, whatever the URL asks for.
fn open_client(url: &str, protocol: ProtocolVersion) -> RedisResult<redis::Client> {
    let info = url.into_connection_info()?;
    let settings = info.redis_settings().clone().set_protocol(protocol);
    redis::Client::open(info.set_redis_settings(settings))
}

impl RedisStore {
    /// Connect, and check that Redis answers, within [`RedisConfig::connect_timeout`].
    ///
    /// Fails with [`StoreError::Backend`] if the URL is invalid or Redis cannot be reached in
    /// time. To start while Redis is down, use [`RedisStore::connect_lazy`].
    pub async fn connect(config: RedisConfig) -> StoreResult<Self> {
        let store = Self::connect_lazy(config)?;
        store.first_contact().await?;
        Ok(store)
    }

    /// [`connect`](Self::connect) in tracking mode ([`RedisConfig::tracking`] is set here):
    /// the store, and a receiver of the [`Invalidation`] notices for every session read
    /// through it, for a per-process cache such as the tiered store's near cache. More
    /// receivers: [`subscribe_invalidations`](Self::subscribe_invalidations).
    ///
    /// The notices, and what a cache must do with them:
    ///
    /// - [`Invalidation::Key`]: a session this store loaded changed, expired, was evicted or
    ///   was deleted, by any client, this process included — except by this store's own
    ///   [`apply`](ratatoskr_core::SessionStore::apply), see below. Drop it.
    /// - [`Invalidation::All`]: notices may have been missed (the tracked connection was lost
    ///   or re-established, Redis was flushed). Drop everything. So must a receiver that
    ///   lagged behind ([`broadcast::error::RecvError::Lagged`]) or whose channel closed.
    ///
    /// A cache stays correct if it holds only records returned by [`load`](ratatoskr_core::SessionStore::load)
    /// (on this store or a clone) and drops them as told, including a load that raced a notice
    /// (take a snapshot of the cache's state before the load; refuse the insert if a notice
    /// came in between, as the tiered near cache does).
    ///
    /// Own writes: `apply` runs on the tracked connection, which has `NOLOOP`, so it is **not
    /// announced** to this store's receivers (its script reads the key again after the
    /// change, so the next change by anyone else is). The cache in front must therefore take
    /// its copy out before an `apply` and put back the written copy only after it succeeded
    /// (or drop it: a failed `apply` may have landed). That is the point: the read after a
    /// write needs no round trip. It also means one cache per tracked store — a second
    /// receiver does not hear of the first one's deltas (give it a store of its own). Every
    /// other write (`create`, `restore`, `touch`, `rotate`, `destroy`, `destroy_user`,
    /// maintenance) goes through the write connection and is announced like any other
    /// client's; the module docs of `tracking.rs` have the argument, write kind by write kind.
    pub async fn connect_tracked(
        mut config: RedisConfig,
    ) -> StoreResult<(Self, broadcast::Receiver<Invalidation>)> {
        config.tracking = true;
        let store = Self::connect_lazy(config)?;
        let rx = store
            .subscribe_invalidations()
            .ok_or_else(|| backend("tracking mode has no invalidation channel"))?;
        store.first_contact().await?;
        Ok((store, rx))
    }

    /// A new receiver of invalidation notices (tracking mode only, `None` otherwise). It sees
    /// the notices sent from now on; a cache started later must start empty.
    pub fn subscribe_invalidations(&self) -> Option<broadcast::Receiver<Invalidation>> {
        self.tracking.as_ref().map(|t| t.subscribe())
    }

    /// A barrier for the invalidation channel (tracking mode; a no-op otherwise): when it
    /// returns `Ok`, the notice for every change Redis completed before this call — by any
    /// client, e.g. a write another instance has seen return, but this store's own `apply`,
    /// which is never announced to it — is on the channel. It is one
    /// `PING` round trip on the tracked connection, whose pushes arrive in order with its
    /// replies. For tests and for the rare read that must see another instance's write
    /// without waiting for the notice to arrive by itself (typically tens of µs later; see
    /// `docs/redis.md`). An error means the connection was lost (and `All` was sent).
    pub async fn sync_invalidations(&self) -> StoreResult<()> {
        match &self.tracking {
            Some(t) => Box::pin(t.ping_all(self.config.response_timeout)).await,
            None => Ok(()),
        }
    }

    /// How many tracked connections this store (and its clones) established so far, `None`
    /// outside tracking mode. More than one means the tracked connection was lost and
    /// re-established (each time announced with [`Invalidation::All`]).
    pub fn tracking_connections(&self) -> Option<u64> {
        self.tracking.as_ref().map(|t| t.connections())
    }

    /// Check that Redis answers on every connection within the connect timeout.
    async fn first_contact(&self) -> StoreResult<()> {
        let mut con = self.con.clone();
        let limit = self.config.connect_timeout;
        let unreachable = || {
            backend(format_args!(
                "no connection to {} within {limit:?}",
                redact_url(&self.config.url)
            ))
        };
        match tokio::time::timeout(limit, redis::cmd("PING").query_async::<()>(&mut con)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(backend(e)),
            Err(_) => return Err(unreachable()),
        }
        if let Some(t) = &self.tracking {
            Box::pin(t.ping_all(limit)).await?;
        }
        Ok(())
    }

    /// A store that connects on first use (and reconnects after failures) in the background.
    /// Operations fail with [`StoreError::Backend`] while Redis is unreachable.
    ///
    /// Fails only if the URL is invalid. Must be called within a Tokio runtime.
    pub fn connect_lazy(config: RedisConfig) -> StoreResult<Self> {
        // RESP2 whatever the URL says: a RESP3 manager reconnects by itself as soon as the
        // server closes the connection, so the first command after a Redis restart would
        // succeed and the restart would go unnoticed by the caller. With RESP2 the first
        // command on a lost connection fails (and the next one reconnects).
        let topology = config.topology().map_err(backend)?;
        let (con, source) = match &topology {
            Topology::Single(url) => {
                let client = open_client(url, ProtocolVersion::RESP2).map_err(backend)?;
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.response_timeout))
                    // Fail fast while Redis is down (one quick retry, then the error; the next
                    // call tries again) rather than keep callers waiting on a long backoff.
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                let con =
                    ConnectionManager::new_lazy_with_config(client, manager).map_err(backend)?;
                let resp3 = open_client(url, ProtocolVersion::RESP3).map_err(backend)?;
                (Conn::Single(con), TrackSource::Fixed(resp3))
            }
            Topology::Cluster(nodes) => {
                // No retries: a command that meets a failed master, a promoted replica or a
                // moved slot fails once (the client rebuilds its slot map for the next one), so
                // a topology change is never hidden from the caller — as with the RESP2
                // connection to one server (see docs/redis.md). Every call is bounded by the
                // store's response timeout; the client's own per-request bound is only a
                // backstop for the recovery's bulk writes.
                let inner = config.connect_timeout.max(config.response_timeout);
                let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .use_protocol(ProtocolVersion::RESP2)
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(inner)
                    .retries(0)
                    .build()
                    .map_err(backend)?;
                let cluster_config = ClusterConfig::new()
                    .set_connection_timeout(config.connect_timeout)
                    .set_response_timeout(inner);
                let con = client.get_pending_async_connection_with_config(cluster_config);
                (Conn::Cluster(con), TrackSource::None)
            }
            Topology::Sentinel { .. } => {
                let writes = SentinelConn::new(
                    &topology,
                    ProtocolVersion::RESP2,
                    config.connect_timeout,
                    config.response_timeout,
                )
                .map_err(backend)?;
                let reads = SentinelConn::new(
                    &topology,
                    ProtocolVersion::RESP3,
                    config.connect_timeout,
                    config.response_timeout,
                )
                .map_err(backend)?;
                (
                    Conn::Sentinel(Arc::new(writes)),
                    TrackSource::Sentinel(Arc::new(reads)),
                )
            }
        };
        let settings = TrackSettings {
            prefix: config.key_prefix.as_bytes().to_vec(),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            heartbeat: config.tracking_heartbeat,
        };
        let tracking = config.tracking.then(|| {
            Arc::new(match (&topology, source) {
                (Topology::Cluster(nodes), _) => {
                    Tracker::cluster(con.clone(), &nodes[0], settings.clone())
                }
                (_, source) => Tracker::one(source, &settings),
            })
        });
        Ok(RedisStore {
            con,
            config,
            tracking,
            epoch: Arc::default(),
        })
    }

    /// The configuration this store runs with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Run one command on this store's write connection — on a cluster routed by its first
    /// key, on Sentinel to the current master — bounded by the response timeout. For tests
    /// and diagnostics that look under the hood (the store never needs it).
    pub async fn raw_command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> StoreResult<T> {
        let mut con = self.con.clone();
        self.call(cmd.query_async(&mut con)).await
    }

    /// The Redis key of a session's hash: the prefix and the 32 raw bytes of the key.
    pub fn session_key_name(&self, key: &SessionKey) -> Vec<u8> {
        let mut name = Vec::with_capacity(self.config.key_prefix.len() + 32);
        name.extend_from_slice(self.config.key_prefix.as_bytes());
        name.extend_from_slice(key.as_bytes());
        name
    }

    /// The Redis key of a user's session index (a sorted set: raw session key → expiry in
    /// whole seconds): `<prefix>{u:<user id>}`. The hash tag puts the index and the user's
    /// revocation marker in one slot of a cluster.
    pub fn user_index_key_name(&self, user_id: &str) -> Vec<u8> {
        self.prefixed(&["{u:", user_id, "}"])
    }

    /// The Redis key of a user's revocation marker (the time of the last revoke-all, in ms):
    /// the index key's name and `r`, so always in the index's slot.
    pub fn revocation_key_name(&self, user_id: &str) -> Vec<u8> {
        self.prefixed(&["{u:", user_id, "}r"])
    }

    /// The Redis key naming the server run(s) (`INFO server` `run_id`, of every master on a
    /// cluster) that hold this data; see [`begin_epoch`](ratatoskr_core::SessionStore::begin_epoch).
    pub fn owner_key_name(&self) -> Vec<u8> {
        self.prefixed(&["owner"])
    }

    /// The write fence a script writing `key` (a full Redis key name) checks: `<prefix>fence`
    /// on one server, or on a cluster the fence of `key`'s slot, `<prefix>fence{TAG}` with a
    /// tag that lands in that slot (one fence per slot, so a script never leaves its slot).
    pub fn fence_key_name(&self, key: &[u8]) -> Vec<u8> {
        if self.con.is_cluster() {
            let tag = &conn::SLOT_TAGS[usize::from(key_slot(key))];
            self.prefixed(&["fence{", tag, "}"])
        } else {
            self.prefixed(&["fence"])
        }
    }

    fn prefixed(&self, parts: &[&str]) -> Vec<u8> {
        let mut name = self.config.key_prefix.as_bytes().to_vec();
        for p in parts {
            name.extend_from_slice(p.as_bytes());
        }
        name
    }

    /// Run one request against Redis, bounded by the response timeout.
    async fn call<T>(&self, fut: impl Future<Output = RedisResult<T>>) -> StoreResult<T> {
        self.call_within(self.config.response_timeout, fut).await
    }

    /// Run one request against Redis, bounded by `limit`.
    async fn call_within<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> StoreResult<T> {
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(backend(e)),
            Err(_) => Err(backend(format_args!("no answer within {limit:?}"))),
        }
    }

    fn prefix(&self) -> &[u8] {
        self.config.key_prefix.as_bytes()
    }

    /// The invocation of `create` or `restore` (same arguments): the session key and its
    /// slot's fence; the epoch, the encoded meta, `last_seen`, the attributes.
    fn create_invocation(
        &self,
        script: &'static redis::Script,
        key: &SessionKey,
        meta: &[u8],
        last_seen: Millis,
        attrs: &[(&[u8], &[u8])],
        arg: Vec<u8>,
    ) -> redis::ScriptInvocation<'static> {
        let name = self.session_key_name(key);
        let fence = self.fence_key_name(&name);
        let mut inv = script.prepare_invoke();
        inv.key(name).key(fence).arg(arg).arg(meta).arg(last_seen);
        for &(name, value) in attrs {
            inv.arg(name).arg(value);
        }
        inv
    }

    /// `ARGV[1]` of every script: the write epoch this store knows (0: none).
    fn script_arg(&self) -> Vec<u8> {
        self.epoch
            .load(std::sync::atomic::Ordering::Acquire)
            .to_string()
            .into_bytes()
    }

    /// Run a script that adds or changes a copy. Refused for an old write epoch (another
    /// instance recovered from an outage since this one last wrote), it is sent again with
    /// the epoch Redis named: this write is live, not one of the late ones the epoch is there
    /// to refuse.
    async fn invoke_fenced(
        &self,
        op: &'static str,
        build: impl Fn(Vec<u8>) -> redis::ScriptInvocation<'static>,
    ) -> StoreResult<Value> {
        let mut con = self.con.clone();
        for _ in 0..3 {
            let inv = build(self.script_arg());
            let reply: Value = self.call(inv.invoke_async(&mut con)).await?;
            if !self.took_newer_epoch(op, &reply) {
                return Ok(reply);
            }
        }
        Err(epoch_kept_changing(op))
    }

    /// Whether `reply` refused a write for an old write epoch; if so, the epoch Redis named is
    /// taken on, so that the write can be sent again (the step every fenced send shares).
    pub(crate) fn took_newer_epoch(&self, op: &str, reply: &Value) -> bool {
        match status(op, reply) {
            Ok((STALE_EPOCH, Some(epoch))) => {
                self.epoch.store(
                    u64::try_from(epoch).unwrap_or(0),
                    std::sync::atomic::Ordering::Release,
                );
                true
            }
            _ => false,
        }
    }

    /// Run a script that changes the session hash `name` — and reads it after the change —
    /// on the tracked connection serving `name` (tracking mode; the write connection
    /// otherwise). Its change is not announced to this process (`NOLOOP`), and its final read
    /// keeps the key tracked, so a later change by anyone else is. If the tracked connection
    /// certainly did not run it (none could be had, or Redis refused it before running it,
    /// e.g. `MOVED`), it is sent on the write connection instead, as another client whose
    /// change is announced as usual; the tracked connection's loss, or the slot map's change,
    /// was announced with `All` already.
    async fn write_on_tracked(
        &self,
        name: &[u8],
        inv: &redis::ScriptInvocation<'_>,
    ) -> StoreResult<Value> {
        let started = std::time::Instant::now();
        let limit = self.config.response_timeout;
        if let Some(t) = &self.tracking {
            let sent = t
                .attempt_for(name, limit, |mut c| async move {
                    inv.invoke_async::<Value>(&mut c).await
                })
                .await;
            match sent {
                Ok(reply) => return Ok(reply),
                Err(f) if !f.not_run => return Err(f.error),
                Err(_) => {}
            }
        }
        let mut con = self.con.clone();
        let left = limit.saturating_sub(started.elapsed());
        self.call_within(left, inv.invoke_async(&mut con)).await
    }

    fn too_large(&self, size: i64) -> StoreError {
        StoreError::Codec(CodecError::TooLarge {
            size: usize::try_from(size).unwrap_or(usize::MAX),
            limit: self.config.limits.max_record_bytes,
        })
    }
}

/// A fenced write that met a newer write epoch at every one of its three attempts.
pub(crate) fn epoch_kept_changing(op: &str) -> StoreError {
    backend(format_args!(
        "{op}: the write epoch kept changing under three attempts"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripts::SCRIPTS;
    use ratatoskr_core::Record;
    use ratatoskr_core::codec::{self, Limits};
    use ratatoskr_core::{Delta, SessionStore, now_ms};

    /// Against the Redis the test command provides (`RATATOSKR_TEST_REDIS_URL` or 6379).
    async fn store_with_prefix(prefix: &str) -> RedisStore {
        let url = std::env::var("RATATOSKR_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
        let mut config = RedisConfig::new(url);
        config.key_prefix = prefix.to_owned();
        RedisStore::connect(config)
            .await
            .expect("Redis answers (scripts/test.sh starts it)")
    }

    #[tokio::test]
    async fn a_write_from_an_older_write_epoch_is_refused_and_a_live_one_is_sent_again() {
        let prefix = format!(
            "epoch:{}:",
            ratatoskr_core::Token::generate().key().handle()
        );
        let a = store_with_prefix(&prefix).await;
        let b = store_with_prefix(&prefix).await;
        a.begin_epoch().await.unwrap();
        // Another instance recovers from an outage: a new epoch that `a` has not seen.
        b.begin_epoch().await.unwrap();
        let key = ratatoskr_core::Token::generate().key();
        let record = Record::new(
            Some("ada".into()),
            now_ms(),
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        let meta = codec::encode_meta(&record.meta, &Limits::default()).unwrap();
        // What a write sent before the recovery looks like when it arrives late: refused.
        let late = a.create_invocation(
            &SCRIPTS.restore,
            &key,
            &meta,
            record.last_seen,
            &[],
            a.script_arg(),
        );
        let reply: Value = late.invoke_async(&mut a.con.clone()).await.unwrap();
        assert_eq!(status("restore", &reply).unwrap().0, STALE_EPOCH);
        assert!(b.load(&key).await.unwrap().is_none(), "nothing written");
        // A live write through `a` learns the epoch from the refusal and lands.
        assert!(a.restore(&key, &record).await.unwrap());
        assert!(b.load(&key).await.unwrap().is_some());
        let delta = Delta::default().set("x", b"1".to_vec());
        b.begin_epoch().await.unwrap();
        a.apply(&key, &delta).await.unwrap();
        assert_eq!(b.load(&key).await.unwrap().unwrap().attrs["x"], b"1");
        a.destroy(&key).await.unwrap();
    }

    #[tokio::test]
    async fn the_running_size_follows_every_change_and_takes_over_from_hashes_without_it() {
        let prefix = format!("size:{}:", ratatoskr_core::Token::generate().key().handle());
        let mut s = store_with_prefix(&prefix).await;
        s.config.limits.max_record_bytes = 300;
        let key = ratatoskr_core::Token::generate().key();
        let mut record = Record::new(
            Some("ada".into()),
            now_ms(),
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        record.attrs.insert("a".into(), vec![b'x'; 40]);
        record.attrs.insert("b".into(), vec![b'y'; 10]);
        s.create(&key, &record).await.unwrap();
        let kept = async |s: &RedisStore| -> Option<i64> {
            let mut con = s.con.clone();
            redis::cmd("HGET")
                .arg(s.session_key_name(&key))
                .arg(&[0xfd_u8][..])
                .query_async(&mut con)
                .await
                .unwrap()
        };
        let walked = async |s: &RedisStore| -> i64 {
            let r = s.load(&key).await.unwrap().unwrap();
            r.attrs
                .iter()
                .map(|(n, v)| (n.len() + v.len() + 4) as i64)
                .sum()
        };
        assert_eq!(kept(&s).await, Some(walked(&s).await), "after create");
        // A hash written before the running size was kept.
        let mut con = s.con.clone();
        let _: () = redis::cmd("HDEL")
            .arg(s.session_key_name(&key))
            .arg(&[0xfd_u8][..])
            .query_async(&mut con)
            .await
            .unwrap();
        let delta = Delta::default()
            .remove("a")
            .set("c", vec![b'z'; 20])
            .set("b", b"".to_vec());
        s.apply(&key, &delta).await.unwrap();
        assert_eq!(kept(&s).await, Some(walked(&s).await), "taken over");
        s.apply(
            &key,
            &Delta::default()
                .set("", b"e".to_vec())
                .set("b", b"bb".to_vec()),
        )
        .await
        .unwrap();
        assert_eq!(
            kept(&s).await,
            Some(walked(&s).await),
            "empty name, shorter value"
        );
        // The limit holds exactly: what is stored plus the change, no more.
        let meta_len = codec::encode_meta(&record.meta, &Limits::default())
            .unwrap()
            .len() as i64;
        let room = 300 - (meta_len + 12 + walked(&s).await) - 4 - 1;
        let fits = Delta::default().set("d", vec![b'w'; room as usize]);
        s.apply(&key, &fits).await.unwrap();
        let too_much = Delta::default().set("e", b"".to_vec());
        assert!(matches!(
            s.apply(&key, &too_much).await,
            Err(StoreError::Codec(CodecError::TooLarge { .. }))
        ));
        s.apply(&key, &Delta::default().remove("d")).await.unwrap();
        s.apply(&key, &too_much).await.unwrap();
        assert_eq!(
            kept(&s).await,
            Some(walked(&s).await),
            "after a refusal and a removal"
        );
        s.destroy(&key).await.unwrap();
    }

    #[tokio::test]
    async fn a_new_server_run_discards_what_the_old_one_kept_and_the_same_run_keeps_it() {
        let prefix = format!(
            "owner:{}:",
            ratatoskr_core::Token::generate().key().handle()
        );
        let s = store_with_prefix(&prefix).await;
        let key = ratatoskr_core::Token::generate().key();
        let record = Record::new(
            None,
            now_ms(),
            Duration::from_secs(60),
            Duration::from_secs(600),
        );
        s.begin_epoch().await.unwrap();
        s.create(&key, &record).await.unwrap();
        assert!(
            !s.begin_epoch().await.unwrap(),
            "same run: nothing discarded"
        );
        assert!(s.load(&key).await.unwrap().is_some());
        // As if the data had been written by another run (loaded from its snapshot).
        let mut con = s.con.clone();
        let _: () = redis::cmd("SET")
            .arg(s.owner_key_name())
            .arg("a-run-before-a-restart")
            .query_async(&mut con)
            .await
            .unwrap();
        assert!(s.begin_epoch().await.unwrap(), "another run: discarded");
        assert!(s.load(&key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_stores_debug_output_shows_its_configuration() {
        let prefix = format!("dbg:{}:", ratatoskr_core::Token::generate().key().handle());
        let store = store_with_prefix(&prefix).await;
        let dbg = format!("{store:?}");
        assert!(dbg.starts_with("RedisStore"), "{dbg}");
        assert!(dbg.contains(&prefix), "{dbg}");
    }

    #[test]
    fn urls_are_redacted_in_debug_output() {
        let c = RedisConfig::new("redis://:s3cret@example:6379/0");
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(dbg.contains("example:6379/0"), "{dbg}");
        assert_eq!(redact_url("redis://h:1/"), "redis://h:1/");
    }

    #[test]
    fn last_seen_is_derived_from_the_expiry_unless_stored() {
        let r = Record::new(
            None,
            1_000,
            Duration::from_millis(500),
            Duration::from_secs(9),
        );
        assert_eq!(last_seen(&r.meta, None, 1_700), Ok(1_200));
        assert_eq!(last_seen(&r.meta, Some(b""), 1_700), Ok(1_200));
        assert_eq!(last_seen(&r.meta, Some(b"1234"), 10_000), Ok(1_234));
        assert!(last_seen(&r.meta, Some(b"x"), 1_700).is_err());
        assert!(last_seen(&r.meta, None, -1).is_err());
    }

    #[test]
    fn hashes_decode_and_bad_ones_are_errors_not_panics() {
        let mut r = Record::new(
            Some("42".into()),
            1_000,
            Duration::from_millis(500),
            Duration::from_secs(9),
        );
        r.attrs.insert("counter".into(), b"1".to_vec());
        let meta = codec::encode_meta(&r.meta, &Limits::default()).unwrap();
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (META_FIELD, &meta),
            (b"counter", b"1"),
            (b"\xfd", b"future"),
        ];
        assert_eq!(decode_hash(&pairs, 1_500), Ok(r));
        assert!(decode_hash(&pairs[1..], 1_500).is_err(), "no meta");
        let bad: Vec<(&[u8], &[u8])> = vec![(META_FIELD, &meta), (b"\xc3\x28", b"x")];
        assert!(decode_hash(&bad, 1_500).is_err(), "non-UTF-8 name");
        let garbage: Vec<(&[u8], &[u8])> = vec![(META_FIELD, b"\x01\xff\xff")];
        assert!(decode_hash(&garbage, 1_500).is_err());
    }

    #[test]
    fn odd_replies_are_errors() {
        assert!(hash_pairs(&Value::Array(vec![Value::Int(1)])).is_none());
        assert!(status("x", &Value::Okay).is_err());
        assert_eq!(status("x", &Value::Int(1)).unwrap(), (1, None));
        let v = Value::Array(vec![Value::Int(-4), Value::Int(70_000)]);
        assert_eq!(status("x", &v).unwrap(), (-4, Some(70_000)));
    }
}
