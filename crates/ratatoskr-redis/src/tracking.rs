//! Client-side caching support: the tracked connection behind `load` and `apply`, and the
//! channel of [`Invalidation`] notices it feeds.
//!
//! The connection is a RESP3 [`MultiplexedConnection`] of its own, with
//! `CLIENT TRACKING ON NOLOOP`, that serves `load`, `apply` (and a `PING` for `ping` and the
//! heartbeat). It is managed here rather than by a [`redis::aio::ConnectionManager`] because
//! the manager reconnects by itself and serves commands on the new connection before anyone
//! could turn tracking on there: reads that Redis would not track, for a cache that would then
//! never hear of their keys again. Here a connection is handed out only after
//! `CLIENT TRACKING ON` has succeeded on it, and the `All` notice for it has been sent.
//!
//! The rules that keep a cache fed by this channel correct:
//!
//! - Every key read through `load` was read on a tracked connection, so Redis sends an
//!   `invalidate` push on that connection for any later change, expiry, eviction or deletion
//!   of it by any **other** connection — another instance, or this store's own write
//!   connection. The push is passed on as [`Invalidation::Key`], in order with the replies on
//!   that connection: a push for a change made after a read is sent on the channel after that
//!   read's reply was delivered.
//! - A `null` invalidation (`FLUSHALL`, `FLUSHDB`, a tracking table that overflowed wholesale)
//!   becomes [`Invalidation::All`].
//! - Losing a connection (the server closed it, a read or the heartbeat failed or timed out,
//!   a write met `READONLY`) sends `All` once, at once, since pushes may be lost with it; a new
//!   connection sends `All` again before it serves its first read.
//! - The first `load` or `ping` after a connection was lost fails with a backend error (the
//!   connection is re-established on the call after), exactly as the write connection reports
//!   its first command after a loss: a Redis restart is never silent.
//!
//! ## Own writes: which are announced, and why none leaves a stale copy
//!
//! `NOLOOP` keeps Redis from announcing to a connection the changes that connection makes
//! itself; changes made by any other connection, this process's included, are announced as
//! before. And a change (by anyone) makes Redis forget every connection that tracked the key,
//! the writer included. So, write kind by write kind:
//!
//! - **`apply` on the tracked connection** (the one write a cache puts back as written, with
//!   `NearCache::install`): not announced, so the cache's install is not refused by its own
//!   notice. The script reads the key after changing it (`HLEN`, its last command), which
//!   tracks it again for this connection: the next change by anyone else is announced. Without
//!   that read the key would be untracked after the first own write and a copy installed then
//!   would never be dropped (checked: `tests/tracking.rs`,
//!   `an_own_apply_is_not_announced_and_later_changes_by_others_are`). Its refusals (`{-1}`,
//!   `{-4}`) change nothing. A caller that does not learn the outcome (a timeout, a lost
//!   connection) must drop its copy itself — the write may have landed silently — and the
//!   loss has sent `All` anyway. The one receiver that must know of this write is the cache
//!   in front of the store, which made it; **other receivers of the same store do not hear of
//!   it** (one cache per tracked store; a second cache needs a store of its own, whose tracked
//!   connection is another client).
//! - **`apply` that the tracked connection certainly did not run** (no tracked connection, no
//!   master known for the slot, or a refusal before execution such as `MOVED`) is sent on the
//!   write connection: another client, announced if the key is tracked. It is not tracked only
//!   when the connection that tracked it was lost or replaced, or the cluster's slot map
//!   changed — each announced with `All`, which keeps the writer's install out.
//! - **`create` through a near cache** (`create_cacheable`) on the tracked connection: the
//!   same as `apply` — not announced, and its script's last command reads the key, so the new
//!   key is tracked from its first moment and the cache keeps the record it created. Note that
//!   Redis 7.0 tracks, on any read inside a script, **every key the script declares**: a
//!   user's one-server create also tracks that user's index, marker and the fence (their
//!   notices name no session and are dropped). One the tracked connection certainly did not
//!   run goes through the write connection and is not cached (checked: `ratatoskr-tiered`'s
//!   `own_writes.rs`, `a_new_session_is_served_from_the_near_cache_and_others_changes_reach_it_*`).
//! - **Every other write** — `create` without a near cache, `restore`, `touch`, `rotate`
//!   (both keys), `destroy`, `destroy_user` (`revoke_one`), the index scripts, and the
//!   maintenance paths (`discard`
//!   on a new epoch or after an outage, `reap`) — runs on the write connection (on a cluster,
//!   the cluster client's connection to the master): another client as far as Redis is
//!   concerned, so a change to a tracked key is announced to this process exactly as one by
//!   another instance. Creates and restores write keys this connection has not read (nothing
//!   to announce, nothing cached).
//! - Expiry and eviction: announced — except an expiry that the tracked connection's own
//!   command finds (Redis deletes an expired key lazily when it is accessed, and under
//!   `NOLOOP` that deletion counts as the accessing connection's own change). That command
//!   is a `load`, which then answers "absent" itself, or an `apply`, which then answers
//!   `NotFound` (and the cache drops its copy); and a cache never serves a copy past its
//!   deadline anyway. Active expiry and expiries found by any other connection are
//!   announced.
//!
//! On a cluster each master has its own tracked connection (see `tracked.rs`); `apply` goes to
//! the one of its key's slot, and the same rules hold per master.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ratatoskr_core::{Invalidation, SessionKey, StoreError, StoreResult};
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ErrorKind, PushInfo, PushKind, RedisResult, ServerErrorKind, Value,
};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::backend;
use crate::conn::SentinelConn;

/// How many notices a slow receiver may fall behind before it sees
/// [`broadcast::error::RecvError::Lagged`] (which a cache must treat as `All`).
pub const INVALIDATION_CHANNEL_CAPACITY: usize = 4096;

/// A tracked connection and whether it has been lost.
#[derive(Clone)]
struct Tracked {
    con: MultiplexedConnection,
    lost: Arc<AtomicBool>,
}

/// Where the tracked connection goes.
pub(crate) enum TrackSource {
    /// One server.
    Fixed(redis::Client),
    /// The master the Sentinels name at the time of each (re)connection.
    Sentinel(Arc<SentinelConn>),
    /// Not known yet (a cluster's masters get a tracked connection each, see `tracked.rs`).
    None,
}

impl TrackSource {
    async fn client(&self) -> RedisResult<redis::Client> {
        match self {
            TrackSource::Fixed(c) => Ok(c.clone()),
            TrackSource::Sentinel(s) => s.master_client().await,
            TrackSource::None => Err(redis::RedisError::from((
                ErrorKind::InvalidClientConfig,
                "no tracking on this deployment",
            ))),
        }
    }
}

/// The tracked read connection, shared by all clones of a store.
pub(crate) struct Tracking {
    client: TrackSource,
    tx: broadcast::Sender<Invalidation>,
    prefix: Arc<[u8]>,
    slot: Mutex<Option<Tracked>>,
    connecting: tokio::sync::Mutex<()>,
    connect_timeout: Duration,
    response_timeout: Duration,
    connections: AtomicU64,
    heartbeat: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Tracking {
    fn drop(&mut self) {
        if let Some(h) = self
            .heartbeat
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            h.abort();
        }
    }
}

/// Report a lost connection: `All`, once per connection.
fn lose(tx: &broadcast::Sender<Invalidation>, lost: &AtomicBool) {
    if !lost.swap(true, SeqCst) {
        let _ = tx.send(Invalidation::All);
    }
}

/// What an `invalidate` push means for session keys under `prefix`: the keys named (others,
/// such as indexes, are skipped), or `None` for "everything" (a null push, or one this code
/// does not understand).
pub(crate) fn invalidated_keys(prefix: &[u8], data: &[Value]) -> Option<Vec<SessionKey>> {
    match data.first() {
        Some(Value::Array(keys)) => Some(
            keys.iter()
                .filter_map(|k| match k {
                    Value::BulkString(b) => b.strip_prefix(prefix),
                    Value::SimpleString(s) => s.as_bytes().strip_prefix(prefix),
                    _ => None,
                })
                .filter_map(SessionKey::from_slice)
                .collect(),
        ),
        _ => None,
    }
}

/// Whether an error leaves the connection usable (a server's error reply does; anything else,
/// an I/O error, a timeout, a reply that does not parse, may have cost pushes).
fn connection_survives(e: &redis::RedisError) -> bool {
    // `READONLY`: the server is a replica now (a failover demoted it). Its connection is
    // taken out of service like a lost one, so that the next call reconnects to the master
    // named then (and the caches hear `All`).
    matches!(e.kind(), ErrorKind::Server(k) if k != ServerErrorKind::ReadOnly)
}

impl Tracking {
    /// A tracked connection to `url`'s server, established on first use. Must be called within
    /// a Tokio runtime (it spawns the heartbeat, if `heartbeat` is not zero).
    /// `tx` is the channel its notices go to (shared by the per-master connections of a
    /// cluster).
    pub(crate) fn new(
        client: TrackSource,
        tx: broadcast::Sender<Invalidation>,
        prefix: &[u8],
        connect_timeout: Duration,
        response_timeout: Duration,
        heartbeat: Duration,
    ) -> Arc<Self> {
        let tracking = Arc::new(Tracking {
            client,
            tx,
            prefix: prefix.into(),
            slot: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            connect_timeout,
            response_timeout,
            connections: AtomicU64::new(0),
            heartbeat: Mutex::new(None),
        });
        if !heartbeat.is_zero() {
            let task = tokio::spawn(beat(Arc::downgrade(&tracking), heartbeat));
            *tracking.heartbeat.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        }
        tracking
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        self.tx.subscribe()
    }

    /// How many tracked connections were established so far.
    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(SeqCst)
    }

    /// The live connection, if any. A lost one is taken out and reported as an error: the
    /// caller is the first to use the connection since it was lost.
    fn current(&self) -> StoreResult<Option<Tracked>> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(t) if !t.lost.load(SeqCst) => Ok(Some(t.clone())),
            Some(_) => {
                *slot = None;
                Err(backend(
                    "the tracking connection to Redis was lost (invalidation notices may have \
                     been missed); it is re-established on the next call",
                ))
            }
            None => Ok(None),
        }
    }

    /// The live connection, connecting first if there is none.
    async fn connection(&self) -> StoreResult<Tracked> {
        if let Some(t) = self.current()? {
            return Ok(t);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(t) = self.current()? {
            return Ok(t);
        }
        let t = self.connect().await?;
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(t.clone());
        Ok(t)
    }

    /// A new RESP3 connection with tracking on. The `All` for it is sent before it is returned,
    /// so before it serves any read.
    async fn connect(&self) -> StoreResult<Tracked> {
        let lost = Arc::new(AtomicBool::new(false));
        let (tx, prefix, flag) = (self.tx.clone(), self.prefix.clone(), lost.clone());
        // Runs on the connection's reader, in order with the replies, and must not block.
        let on_push = move |push: PushInfo| -> Result<(), ()> {
            match push.kind {
                PushKind::Invalidate => match invalidated_keys(&prefix, &push.data) {
                    Some(keys) => {
                        for key in keys {
                            let _ = tx.send(Invalidation::Key(key));
                        }
                    }
                    None => {
                        let _ = tx.send(Invalidation::All);
                    }
                },
                PushKind::Disconnection => lose(&tx, &flag),
                _ => {}
            }
            Ok(())
        };
        // No response timeout of the client's own: every request on this connection is
        // bounded by ours (`attempt`, the setup below, the heartbeat), which also takes the
        // connection out of service when it fires; a second timer per request would only
        // cost a timer-wheel entry on every write and load.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None)
            .set_push_sender(on_push);
        let setup = async {
            let mut con = self
                .client
                .client()
                .await?
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            // Default mode: Redis remembers the keys this connection reads and tells it when
            // one changes. NOLOOP: not the changes this connection makes itself (`apply`,
            // whose script reads the key again afterwards; see the module docs).
            redis::cmd("CLIENT")
                .arg("TRACKING")
                .arg("ON")
                .arg("NOLOOP")
                .query_async::<()>(&mut con)
                .await?;
            RedisResult::Ok(con)
        };
        let limit = self.connect_timeout + self.response_timeout;
        let con = match tokio::time::timeout(limit, setup).await {
            Ok(Ok(con)) => con,
            Ok(Err(e)) => return Err(backend(e)),
            Err(_) => {
                return Err(backend(format_args!(
                    "no tracking connection within {limit:?}"
                )));
            }
        };
        self.connections.fetch_add(1, SeqCst);
        // Whatever was read before this connection existed may have changed unseen.
        let _ = self.tx.send(Invalidation::All);
        Ok(Tracked { con, lost })
    }

    /// Take a connection (named by its `lost` flag) out of service after it failed: `All`
    /// now, and the next call reconnects (this call already reported the failure).
    fn fail(&self, lost: &Arc<AtomicBool>) {
        lose(&self.tx, lost);
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(&s.lost, lost)) {
            *slot = None;
        }
    }

    /// Run one request on the tracked connection within `limit`, connecting first if needed.
    pub(crate) async fn run<T, F, Fut>(&self, limit: Duration, request: F) -> StoreResult<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.attempt(limit, request)
            .await
            .map_err(Failure::into_error)
    }

    /// [`run`](Self::run) for a write: the error says whether the request certainly did not
    /// run (no connection, or a refusal Redis gives before executing anything), so that the
    /// caller may send it on another connection instead.
    pub(crate) async fn attempt<T, F, Fut>(&self, limit: Duration, request: F) -> Result<T, Failure>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        // The live connection, without a wait (nor a clock read) when there is one — every
        // call but the first after a (re)connection.
        let (Tracked { con, lost }, left) = match self.current() {
            Ok(Some(t)) => (t, limit),
            Err(e) => return Err(Failure::not_run(e)),
            Ok(None) => {
                let started = Instant::now();
                let t = match tokio::time::timeout(limit, self.connection()).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => return Err(Failure::not_run(e)),
                    Err(_) => {
                        return Err(Failure::not_run(backend(format_args!(
                            "no tracking connection within {limit:?}"
                        ))));
                    }
                };
                (t, limit.saturating_sub(started.elapsed()))
            }
        };
        match tokio::time::timeout(left, request(con)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if !connection_survives(&e) {
                    self.fail(&lost);
                }
                let ran = !refused_before_running(&e);
                Err(Failure {
                    error: backend(e),
                    not_run: !ran,
                })
            }
            Err(_) => {
                // A reply that does not come in time may be stuck behind a dead link, and so
                // may pushes.
                self.fail(&lost);
                Err(Failure {
                    error: backend(format_args!("no answer within {limit:?}")),
                    not_run: false,
                })
            }
        }
    }
}

/// A request on a tracked connection that failed.
pub(crate) struct Failure {
    pub(crate) error: StoreError,
    /// Certainly not executed: no connection to send it on, or Redis refused it before
    /// running it (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `READONLY`,
    /// `LOADING`). A timeout or a lost connection may have run it.
    pub(crate) not_run: bool,
}

impl Failure {
    pub(crate) fn not_run(error: StoreError) -> Self {
        Failure {
            error,
            not_run: true,
        }
    }

    pub(crate) fn into_error(self) -> StoreError {
        self.error
    }
}

/// Whether Redis refused a request without executing any of it.
fn refused_before_running(e: &redis::RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ReadOnly
                | ServerErrorKind::BusyLoading
        )
    )
}

/// The heartbeat: a `PING` on the live tracked connection every `every`. A connection that
/// does not answer within the response timeout is declared lost (`All` now; the next call
/// reports it and reconnects), which bounds how long a silently broken link can hide missed
/// notices. It never connects by itself.
async fn beat(tracking: Weak<Tracking>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(tracking) = tracking.upgrade() else {
            return;
        };
        let current = tracking
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(t) = current.filter(|t| !t.lost.load(SeqCst)) else {
            continue;
        };
        let mut con = t.con.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<()>(&mut con);
        match tokio::time::timeout(tracking.response_timeout, ping).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if connection_survives(&e) => {}
            _ => lose(&tracking.tx, &t.lost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_name_session_keys_and_skip_other_keys() {
        let k = [7u8; 32];
        let mut session = b"rt:".to_vec();
        session.extend_from_slice(&k);
        let data = vec![Value::Array(vec![
            Value::BulkString(session),
            Value::BulkString(b"rt:live".to_vec()),
            Value::BulkString(b"other:key".to_vec()),
            Value::Int(3),
        ])];
        assert_eq!(
            invalidated_keys(b"rt:", &data),
            Some(vec![SessionKey::from_slice(&k).unwrap()])
        );
    }

    fn server_error(reply: &str) -> redis::RedisError {
        let v = redis::parse_redis_value(format!("-{reply}\r\n").as_bytes()).unwrap();
        v.extract_error().unwrap_err()
    }

    /// A refusal the server gives before running anything lets a write go again elsewhere; an
    /// error from a script that ran, or a lost connection, may have changed data.
    #[test]
    fn only_refusals_before_running_count_as_not_run() {
        for reply in [
            "MOVED 3999 127.0.0.1:6381",
            "ASK 3999 127.0.0.1:6381",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "CLUSTERDOWN The cluster is down",
            "MASTERDOWN Link with MASTER is down",
            "READONLY You can't write against a read only replica.",
            "LOADING Redis is loading the dataset in memory",
        ] {
            assert!(refused_before_running(&server_error(reply)), "{reply}");
        }
        let ran = server_error("ERR user_script:1: Script attempted to access a global variable");
        assert!(!refused_before_running(&ran));
        let io = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(!refused_before_running(&io));
    }

    #[test]
    fn a_null_push_means_everything() {
        assert_eq!(invalidated_keys(b"rt:", &[Value::Nil]), None);
        assert_eq!(invalidated_keys(b"rt:", &[]), None);
    }
}
