//! Tracking on every deployment: one tracked connection (one server, Sentinel), or one per
//! master of a Redis Cluster, each `load` going to the master that serves its key's slot, all
//! announcing on one channel.
//!
//! Why per master: Redis tracks the keys a *connection* read and announces their changes on
//! that connection; on a cluster a key's changes happen on the master serving its slot, so that
//! is where its read must be tracked. The client keeps a slot map (`CLUSTER SLOTS`) to route
//! loads. Any failed load (a master gone, a slot moved: `MOVED`, a lost connection) sends
//! `All` and drops the slot map, which the next load rebuilds; a lost or new per-master
//! connection sends `All` by itself (see `tracking.rs`). So a topology change, a failover or a
//! reconnect always flushes the caches.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratatoskr_core::{Invalidation, StoreResult};
use redis::aio::MultiplexedConnection;
use redis::{IntoConnectionInfo, ProtocolVersion, RedisResult};
use tokio::sync::broadcast;

use crate::backend;
use crate::conn::{Addr, Conn, SlotRange, key_slot};
use crate::tracking::{Failure, TrackSource, Tracking};

/// The tracked read side of a store.
pub(crate) enum Tracker {
    /// One tracked connection (one server, or the master Sentinel names).
    One(Arc<Tracking>),
    /// One tracked connection per cluster master.
    Cluster(Box<ClusterTracking>),
}

/// Settings every tracked connection is made with.
#[derive(Clone)]
pub(crate) struct TrackSettings {
    pub prefix: Vec<u8>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub heartbeat: Duration,
}

impl TrackSettings {
    fn tracking(&self, source: TrackSource, tx: broadcast::Sender<Invalidation>) -> Arc<Tracking> {
        Tracking::new(
            source,
            tx,
            &self.prefix,
            self.connect_timeout,
            self.response_timeout,
            self.heartbeat,
        )
    }
}

impl Tracker {
    pub(crate) fn one(source: TrackSource, settings: &TrackSettings) -> Tracker {
        let (tx, _) = broadcast::channel(crate::INVALIDATION_CHANNEL_CAPACITY);
        Tracker::One(settings.tracking(source, tx))
    }

    pub(crate) fn cluster(con: Conn, seed: &str, settings: TrackSettings) -> Tracker {
        let (tx, _) = broadcast::channel(crate::INVALIDATION_CHANNEL_CAPACITY);
        Tracker::Cluster(Box::new(ClusterTracking {
            tx,
            con,
            seed: seed.to_owned(),
            settings,
            map: Mutex::new(Vec::new()),
            per_master: Mutex::new(HashMap::new()),
            refresh: tokio::sync::Mutex::new(()),
        }))
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Invalidation> {
        match self {
            Tracker::One(t) => t.subscribe(),
            Tracker::Cluster(c) => c.tx.subscribe(),
        }
    }

    /// How many tracked connections were established so far (all masters together).
    pub(crate) fn connections(&self) -> u64 {
        match self {
            Tracker::One(t) => t.connections(),
            Tracker::Cluster(c) => c.all().iter().map(|t| t.connections()).sum(),
        }
    }

    /// Run `request` on the tracked connection that serves `key` (a full key name).
    pub(crate) async fn run_for<T, F, Fut>(
        &self,
        key: &[u8],
        limit: Duration,
        request: F,
    ) -> StoreResult<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match self {
            Tracker::One(t) => t.run(limit, request).await,
            Tracker::Cluster(c) => {
                let t = Box::pin(c.for_key(key)).await?;
                let result = t.run(limit, request).await;
                if result.is_err() {
                    c.topology_may_have_changed();
                }
                result
            }
        }
    }

    /// Run a write on the tracked connection that serves `key` (a full key name). The error
    /// says whether it certainly did not run (see [`Failure`]): no connection, no master known
    /// for the slot, or a refusal before execution such as `MOVED` after a slot moved.
    pub(crate) async fn attempt_for<T, F, Fut>(
        &self,
        key: &[u8],
        limit: Duration,
        request: F,
    ) -> Result<T, Failure>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match self {
            Tracker::One(t) => t.attempt(limit, request).await,
            Tracker::Cluster(c) => {
                let t = Box::pin(c.for_key(key)).await.map_err(Failure::not_run)?;
                let result = t.attempt(limit, request).await;
                if result.is_err() {
                    c.topology_may_have_changed();
                }
                result
            }
        }
    }

    /// `PING` every tracked connection (connecting it if needed): a barrier for the notices of
    /// every change completed before it, on every master.
    pub(crate) async fn ping_all(&self, limit: Duration) -> StoreResult<()> {
        let ping = |mut c: MultiplexedConnection| async move {
            redis::cmd("PING").query_async::<()>(&mut c).await
        };
        match self {
            Tracker::One(t) => t.run(limit, ping).await,
            Tracker::Cluster(c) => {
                for t in Box::pin(c.masters()).await? {
                    if let Err(e) = t.run(limit, ping).await {
                        c.topology_may_have_changed();
                        return Err(e);
                    }
                }
                Ok(())
            }
        }
    }
}

/// The per-master tracked connections of a cluster, and the slot map that routes loads.
pub(crate) struct ClusterTracking {
    tx: broadcast::Sender<Invalidation>,
    /// The store's cluster connection, to ask for the slot map.
    con: Conn,
    /// A seed node's URL: the credentials and settings for connections to each master.
    seed: String,
    settings: TrackSettings,
    map: Mutex<Vec<SlotRange>>,
    per_master: Mutex<HashMap<Addr, Arc<Tracking>>>,
    refresh: tokio::sync::Mutex<()>,
}

impl ClusterTracking {
    fn all(&self) -> Vec<Arc<Tracking>> {
        self.per_master
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Forget the slot map (the next load asks again) and tell the caches that notices may
    /// have gone to a connection no longer in charge.
    fn topology_may_have_changed(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let _ = self.tx.send(Invalidation::All);
    }

    async fn slot_map(&self) -> StoreResult<Vec<SlotRange>> {
        {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if !map.is_empty() {
                return Ok(map.clone());
            }
        }
        let _one_at_a_time = self.refresh.lock().await;
        {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if !map.is_empty() {
                return Ok(map.clone());
            }
        }
        let mut con = self.con.clone();
        let fresh = tokio::time::timeout(self.settings.response_timeout, Box::pin(con.slot_map()))
            .await
            .map_err(|_| backend("no slot map within the response timeout"))?
            .map_err(backend)?;
        if fresh.is_empty() {
            return Err(backend("the cluster serves no slots"));
        }
        // A new map: whatever was tracked under the old one may have moved unseen.
        let _ = self.tx.send(Invalidation::All);
        *self.map.lock().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    fn tracker(&self, addr: &(String, u16)) -> StoreResult<Arc<Tracking>> {
        let mut per_master = self.per_master.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = per_master.get(addr) {
            return Ok(t.clone());
        }
        // The seed's credentials and database, this master's address, RESP3 (for pushes).
        let info = self.seed.as_str().into_connection_info().map_err(backend)?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info
            .set_addr(redis::ConnectionAddr::Tcp(addr.0.clone(), addr.1))
            .set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(backend)?;
        let t = self
            .settings
            .tracking(TrackSource::Fixed(client), self.tx.clone());
        per_master.insert(addr.clone(), t.clone());
        Ok(t)
    }

    async fn for_key(&self, key: &[u8]) -> StoreResult<Arc<Tracking>> {
        let slot = key_slot(key);
        let map = self.slot_map().await?;
        let addr = map
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|(_, _, addr)| addr.clone())
            .ok_or_else(|| {
                self.topology_may_have_changed();
                backend(format_args!("no master serves slot {slot}"))
            })?;
        self.tracker(&addr)
    }

    async fn masters(&self) -> StoreResult<Vec<Arc<Tracking>>> {
        let map = self.slot_map().await?;
        let mut out: Vec<Arc<Tracking>> = Vec::new();
        let mut seen: Vec<&(String, u16)> = Vec::new();
        for (_, _, addr) in &map {
            if !seen.contains(&addr) {
                seen.push(addr);
                out.push(self.tracker(addr)?);
            }
        }
        Ok(out)
    }
}
