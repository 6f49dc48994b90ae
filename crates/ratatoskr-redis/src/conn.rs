//! The three ways to reach Redis — one server, a Redis Cluster, a Sentinel-managed master —
//! behind one connection type the store sends every command through, and the hash-slot
//! arithmetic the key layout relies on.

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ErrorKind, Pipeline, ProtocolVersion, RedisFuture,
    RedisResult, ServerErrorKind, Value,
};

/// Where the data lives, as parsed from a [`RedisConfig`](crate::RedisConfig).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Topology {
    /// One server (`redis://…`).
    Single(String),
    /// A Redis Cluster, reached through these seed nodes (`host:port` or `redis://…` URLs).
    Cluster(Vec<String>),
    /// The master Sentinel names `master`, asked of these sentinels (`host:port`).
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
        username: Option<String>,
        password: Option<String>,
        db: i64,
    },
}

/// A master's address, `(host, port)`.
pub(crate) type Addr = (String, u16);

/// A slot range and the master serving it.
pub(crate) type SlotRange = (u16, u16, Addr);

/// The URL scheme of the Sentinel form: `redis+sentinel://[user:pass@]h:p[,h:p…]/<master>[/db]`.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

fn bad(what: impl Into<String>) -> redis::RedisError {
    redis::RedisError::from((
        ErrorKind::InvalidClientConfig,
        "invalid Redis address",
        what.into(),
    ))
}

fn host_port(s: &str) -> RedisResult<(String, u16)> {
    let s = s.trim();
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| bad(format!("bad port in {s:?}")))?),
        None => (s, 26379),
    };
    if host.is_empty() {
        return Err(bad(format!("no host in {s:?}")));
    }
    Ok((host.trim_matches(|c| c == '[' || c == ']').to_owned(), port))
}

/// Parse `redis+sentinel://[user:pass@]host:port,host:port/<master>[/<db>]`.
pub(crate) fn parse_sentinel_url(url: &str) -> RedisResult<Topology> {
    let rest = url
        .strip_prefix(SENTINEL_SCHEME)
        .ok_or_else(|| bad("not a redis+sentinel:// URL"))?;
    let (auth, rest) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (hosts, path) = rest
        .split_once('/')
        .ok_or_else(|| bad("the sentinel URL names no master (…/<master-name>)"))?;
    let mut parts = path.split('/');
    let master = parts.next().unwrap_or_default().to_owned();
    if master.is_empty() {
        return Err(bad("the sentinel URL names no master (…/<master-name>)"));
    }
    let db = match parts.next() {
        Some(d) if !d.is_empty() => d.parse().map_err(|_| bad("bad database number"))?,
        _ => 0,
    };
    let sentinels = hosts
        .split(',')
        .map(host_port)
        .collect::<RedisResult<Vec<_>>>()?;
    let (username, password) = match auth {
        Some(a) => match a.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| u.to_owned()), Some(p.to_owned())),
            None => (Some(a.to_owned()), None),
        },
        None => (None, None),
    };
    Ok(Topology::Sentinel {
        sentinels,
        master,
        username,
        password,
        db,
    })
}

/// The Redis Cluster hash slot of `key`: CRC16 of the key, or of its hash tag (the bytes between
/// the first `{` and the next `}`, if any), mod 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % 16384
}

/// For each of the 16384 slots, a short hash tag that lands in it: the fence key of slot `s` is
/// `<prefix>fence{TAG[s]}`.
pub(crate) static SLOT_TAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut tags: Vec<Option<String>> = vec![None; 16384];
    let mut missing = 16384;
    let mut n: u64 = 0;
    while missing > 0 {
        let tag = format!("{n:x}");
        let slot = usize::from(crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % 16384);
        if tags[slot].is_none() {
            tags[slot] = Some(tag);
            missing -= 1;
        }
        n += 1;
    }
    tags.into_iter().map(Option::unwrap_or_default).collect()
});

/// The current Sentinel-named master, re-resolved after a connection is lost or the server
/// answers that it is a replica now (`READONLY`).
pub(crate) struct SentinelConn {
    client: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Option<MultiplexedConnection>>,
    config: AsyncConnectionConfig,
}

impl SentinelConn {
    pub(crate) fn new(
        topology: &Topology,
        protocol: ProtocolVersion,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> RedisResult<Self> {
        Ok(SentinelConn {
            client: tokio::sync::Mutex::new(sentinel_client(topology, protocol)?),
            current: Mutex::new(None),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(response_timeout)),
        })
    }

    /// The connection slot (a poisoned lock still holds a usable `Option`).
    fn current(&self) -> std::sync::MutexGuard<'_, Option<MultiplexedConnection>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(c) = self.current().clone() {
            return Ok(c);
        }
        let mut sentinel = self.client.lock().await;
        // Another task may have resolved the master while this one waited for the lock.
        if let Some(c) = self.current().clone() {
            return Ok(c);
        }
        let client = sentinel.async_get_client().await?;
        let con = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        *self.current() = Some(con.clone());
        Ok(con)
    }

    /// After an error: drop the connection unless it is still the master's and usable.
    fn check(&self, e: &redis::RedisError) {
        let keep = matches!(e.kind(), ErrorKind::Server(k) if k != ServerErrorKind::ReadOnly);
        if !keep {
            *self.current() = None;
        }
    }

    /// A client for the master Sentinel names now (for the tracked connection).
    pub(crate) async fn master_client(&self) -> RedisResult<redis::Client> {
        self.client.lock().await.async_get_client().await
    }
}

/// A [`SentinelClient`] for the master of `topology` (which must be `Sentinel`).
pub(crate) fn sentinel_client(
    topology: &Topology,
    protocol: ProtocolVersion,
) -> RedisResult<SentinelClient> {
    let Topology::Sentinel {
        sentinels,
        master,
        username,
        password,
        db,
    } = topology
    else {
        return Err(bad("not a sentinel topology"));
    };
    let addrs = sentinels
        .iter()
        .map(|(h, p)| ConnectionAddr::Tcp(h.clone(), *p));
    let mut b = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?
        .set_client_to_redis_protocol(protocol)
        .set_client_to_redis_db(*db);
    if let Some(u) = username {
        b = b
            .set_client_to_redis_username(u)
            .set_client_to_sentinel_username(u);
    }
    if let Some(p) = password {
        b = b
            .set_client_to_redis_password(p)
            .set_client_to_sentinel_password(p);
    }
    b.build()
}

/// The connection every store command goes through.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

impl Conn {
    /// Whether keys of different slots may live on different servers (a cluster).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// `host:port` of every master now (one for a single server or Sentinel: the address is
    /// not needed there, commands go to the one master).
    pub(crate) async fn masters(&mut self) -> RedisResult<Vec<(String, u16)>> {
        if !self.is_cluster() {
            return Ok(vec![(String::new(), 0)]);
        }
        let mut out: Vec<(String, u16)> = Vec::new();
        for (_, _, addr) in self.slot_map().await? {
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        Ok(out)
    }

    /// A cluster's slot ranges and the master serving each (`CLUSTER SLOTS`, asked of any
    /// node); empty for one server or Sentinel.
    pub(crate) async fn slot_map(&mut self) -> RedisResult<Vec<SlotRange>> {
        let Conn::Cluster(c) = self else {
            return Ok(Vec::new());
        };
        let slots = c
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let Value::Array(ranges) = slots else {
            return Err(bad("CLUSTER SLOTS: not an array"));
        };
        let mut out = Vec::new();
        for range in ranges {
            let Value::Array(items) = range else { continue };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(node))) =
                (items.first(), items.get(1), items.get(2))
            else {
                continue;
            };
            let host = match node.first() {
                Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                Some(Value::SimpleString(s)) => s.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = node.get(1) else {
                continue;
            };
            out.push((
                u16::try_from(*start).unwrap_or(0),
                u16::try_from(*end).unwrap_or(0),
                (host, u16::try_from(*port).unwrap_or(0)),
            ));
        }
        Ok(out)
    }

    /// Run `cmd` on the master at `addr` (from [`masters`](Self::masters)).
    pub(crate) async fn on_master<T: redis::FromRedisValue>(
        &mut self,
        addr: &(String, u16),
        cmd: &Cmd,
    ) -> RedisResult<T> {
        match self {
            Conn::Cluster(c) => {
                let v = c
                    .route_command(
                        cmd.clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: addr.0.clone(),
                            port: addr.1,
                        }),
                    )
                    .await?;
                redis::from_redis_value(v).map_err(Into::into)
            }
            other => cmd.query_async(other).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => Box::pin(async move {
                let mut con = s.connection().await?;
                let r = con.req_packed_command(cmd).await;
                if let Err(e) = &r {
                    s.check(e);
                }
                r
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(s) => Box::pin(async move {
                let mut con = s.connection().await?;
                let r = con.req_packed_commands(pipeline, offset, count).await;
                if let Err(e) = &r {
                    s.check(e);
                }
                r
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_parse_and_bad_ones_are_refused() {
        let t =
            parse_sentinel_url("redis+sentinel://10.0.0.1:26379,[::1]:26380,h/mymaster").unwrap();
        assert_eq!(
            t,
            Topology::Sentinel {
                sentinels: vec![
                    ("10.0.0.1".into(), 26379),
                    ("::1".into(), 26380),
                    ("h".into(), 26379)
                ],
                master: "mymaster".into(),
                username: None,
                password: None,
                db: 0,
            }
        );
        let t = parse_sentinel_url("redis+sentinel://:pw@h:1/m/3").unwrap();
        let Topology::Sentinel { password, db, .. } = t else {
            panic!()
        };
        assert_eq!((password.as_deref(), db), (Some("pw"), 3));
        for bad in [
            "redis://h:1/",
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h:x/m",
            "redis+sentinel://:1/m",
        ] {
            assert!(parse_sentinel_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slots_follow_the_cluster_spec_and_every_slot_has_a_fence_tag() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"rt:{u:42}"), key_slot(b"u:42"));
        assert_eq!(key_slot(b"rt:{u:42}r"), key_slot(b"rt:{u:42}"));
        assert_eq!(key_slot(b"a{}b"), key_slot(b"a{}b"));
        for (slot, tag) in SLOT_TAGS.iter().enumerate() {
            let name = format!("rt:fence{{{tag}}}");
            assert_eq!(usize::from(key_slot(name.as_bytes())), slot);
        }
    }
}
