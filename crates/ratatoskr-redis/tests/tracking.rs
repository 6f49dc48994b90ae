//! Client-side caching support (tracking mode), `restore`, and what happens to connections
//! when Redis restarts.
//!
//! Tests that flush, kill, freeze or restart Redis run their own `redis-server`; the rest use
//! the shared one under a random prefix. Figures are printed (`--nocapture`) and quoted in
//! docs/redis.md.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ratatoskr_core::{Delta, Invalidation, Record, SessionKey, SessionStore, Token, now_ms};
use ratatoskr_redis::{RedisConfig, RedisStore};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::broadcast::{self, error::RecvError};

use common::{OwnRedis, closed_port};

const MINUTE: Duration = Duration::from_secs(60);
const NOTICE_WITHIN: Duration = Duration::from_secs(2);

fn key() -> SessionKey {
    Token::generate().key()
}

fn record(user: Option<&str>) -> Record {
    Record::new(user.map(str::to_owned), now_ms(), MINUTE, 10 * MINUTE)
}

/// The next notice, or `None` if none comes within `within`.
async fn next(
    rx: &mut broadcast::Receiver<Invalidation>,
    within: Duration,
) -> Option<Invalidation> {
    match tokio::time::timeout(within, rx.recv()).await {
        Ok(Ok(n)) => Some(n),
        Ok(Err(RecvError::Lagged(_))) => Some(Invalidation::All),
        Ok(Err(RecvError::Closed)) => panic!("the invalidation channel closed"),
        Err(_) => None,
    }
}

/// Wait for `Key(want)`, skipping other notices. Returns whether it came.
async fn key_notice(
    rx: &mut broadcast::Receiver<Invalidation>,
    want: &SessionKey,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next(rx, left).await {
            Some(Invalidation::Key(k)) if &k == want => return true,
            Some(_) => {}
            None => return false,
        }
    }
}

/// Wait for `All`, skipping key notices. Returns whether it came.
async fn all_notice(rx: &mut broadcast::Receiver<Invalidation>, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next(rx, left).await {
            Some(Invalidation::All) => return true,
            Some(_) => {}
            None => return false,
        }
    }
}

/// Drop every notice already queued.
fn drain(rx: &mut broadcast::Receiver<Invalidation>) {
    while !matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Empty)) {}
}

async fn tracked(config: RedisConfig) -> (RedisStore, broadcast::Receiver<Invalidation>) {
    let (store, mut rx) = RedisStore::connect_tracked(config).await.unwrap();
    // The first connection announces itself with `All`.
    assert_eq!(next(&mut rx, NOTICE_WITHIN).await, Some(Invalidation::All));
    drain(&mut rx);
    (store, rx)
}

fn own_config(redis: &OwnRedis, timeout: Duration) -> RedisConfig {
    RedisConfig {
        url: redis.url(),
        key_prefix: common::random_prefix(),
        response_timeout: timeout,
        connect_timeout: timeout,
        ..RedisConfig::default()
    }
}

fn start_own() -> OwnRedis {
    OwnRedis::start(closed_port())
}

#[tokio::test]
async fn tracking_is_off_by_default() {
    let store = common::store(&common::random_prefix()).await;
    assert!(store.subscribe_invalidations().is_none());
    assert_eq!(store.tracking_connections(), None);
}

/// A session loaded through store A is announced when another instance (store B, its own
/// connections) changes it in any way, and when A itself does on its write connection.
/// Sessions A never loaded, and the index keys, are not announced.
#[tokio::test]
async fn every_change_to_a_loaded_session_is_announced() {
    let prefix = common::random_prefix();
    let (a, mut rx) = tracked(common::config(&prefix)).await;
    let b = common::store(&prefix).await;

    // Each kind of change, by B, to a session A has loaded.
    for what in ["apply", "touch", "destroy", "rotate", "destroy_user"] {
        let k = key();
        b.create(&k, &record(Some(what))).await.unwrap();
        let r = a.load(&k).await.unwrap().unwrap();
        match what {
            "apply" => b
                .apply(&k, &Delta::default().set("x", b"1".to_vec()))
                .await
                .unwrap(),
            "touch" => assert!(b.touch(&k, &r.meta, now_ms() + 1000).await.unwrap()),
            "destroy" => assert!(b.destroy(&k).await.unwrap()),
            "rotate" => b.rotate(&k, &key(), &r.meta, now_ms()).await.unwrap(),
            _ => assert_eq!(b.destroy_user(what, None).await.unwrap(), 1),
        }
        assert!(
            key_notice(&mut rx, &k, NOTICE_WITHIN).await,
            "no notice after {what}"
        );
    }

    // A's own writes through its write connection are announced too (its `apply`, sent on
    // the tracked connection, is not: see the next test).
    for what in ["touch", "destroy"] {
        let k = key();
        a.create(&k, &record(None)).await.unwrap();
        let r = a.load(&k).await.unwrap().unwrap();
        match what {
            "touch" => assert!(a.touch(&k, &r.meta, now_ms() + 1000).await.unwrap()),
            _ => assert!(a.destroy(&k).await.unwrap()),
        }
        assert!(
            key_notice(&mut rx, &k, NOTICE_WITHIN).await,
            "own {what} on the write connection"
        );
    }

    // Default mode: a session A never read is not announced; nor is anything but sessions.
    drain(&mut rx);
    let unseen = key();
    b.create(&unseen, &record(Some("v"))).await.unwrap();
    b.apply(&unseen, &Delta::default().set("z", b"3".to_vec()))
        .await
        .unwrap();
    b.destroy(&unseen).await.unwrap();
    assert_eq!(next(&mut rx, Duration::from_millis(300)).await, None);

    // A load of a missing session, then its creation elsewhere: announced (a cache must not
    // keep an absence either; the tiered store does not cache absences, but others might).
    let later = key();
    assert!(a.load(&later).await.unwrap().is_none());
    b.create(&later, &record(None)).await.unwrap();
    assert!(key_notice(&mut rx, &later, NOTICE_WITHIN).await);
}

/// Whether a notice for `k` is queued once every notice Redis sent before now has arrived.
async fn announced(
    a: &RedisStore,
    rx: &mut broadcast::Receiver<Invalidation>,
    k: &SessionKey,
) -> bool {
    a.sync_invalidations().await.unwrap();
    let mut seen = false;
    loop {
        match rx.try_recv() {
            Ok(Invalidation::Key(x)) if x == *k => seen = true,
            Ok(Invalidation::All) => panic!("an unexpected All"),
            Ok(_) => {}
            Err(broadcast::error::TryRecvError::Empty) => return seen,
            Err(e) => panic!("the invalidation channel failed: {e}"),
        }
    }
}

/// Store A's own `apply` runs on its tracked connection (`NOLOOP`): it is not announced to A,
/// and — because the script reads the key after changing it — the key stays tracked, so a
/// later change by another client (store B) is announced, after every one of A's own writes
/// in a row. A's refused applies (too large, missing session) keep it tracked too.
#[tokio::test]
async fn an_own_apply_is_not_announced_and_later_changes_by_others_are() {
    let prefix = common::random_prefix();
    let (a, mut rx) = tracked(common::config(&prefix)).await;
    let b = common::store(&prefix).await;
    let k = key();
    a.create(&k, &record(None)).await.unwrap();
    assert!(a.load(&k).await.unwrap().is_some());
    for round in 0..20u32 {
        // Several own writes in a row, none announced.
        for n in 0..=(round % 3) {
            let delta = Delta::default().set("own", format!("{round}.{n}").into_bytes());
            a.apply(&k, &delta).await.unwrap();
            assert!(
                !announced(&a, &mut rx, &k).await,
                "round {round}: own apply announced"
            );
        }
        if round % 5 == 4 {
            // A refusal by the script (too large with the stored part; the client-side
            // check alone would pass it) writes nothing and still leaves the key tracked.
            let room = a.config().limits.max_record_bytes - 12 - 4 - 3 - 1;
            let big = Delta::default().set("big", vec![b'x'; room]);
            assert!(matches!(
                a.apply(&k, &big).await,
                Err(ratatoskr_core::StoreError::Codec(_))
            ));
        }
        // Another client's change after them: announced.
        let what = ["apply", "touch"][round as usize % 2];
        match what {
            "apply" => b
                .apply(
                    &k,
                    &Delta::default().set("theirs", round.to_string().into_bytes()),
                )
                .await
                .unwrap(),
            _ => {
                let r = b.load(&k).await.unwrap().unwrap();
                assert!(b.touch(&k, &r.meta, now_ms() + 1000).await.unwrap());
            }
        }
        assert!(
            announced(&a, &mut rx, &k).await,
            "round {round}: B's {what} after A's own apply was not announced"
        );
        // A's view is read again (as a cache would after the notice): tracked once more.
        let r = a.load(&k).await.unwrap().unwrap();
        assert_eq!(
            r.attrs["own"],
            format!("{round}.{}", round % 3).into_bytes()
        );
    }
    // The end of the session by another client, after an own apply: announced.
    a.apply(&k, &Delta::default().set("last", b"1".to_vec()))
        .await
        .unwrap();
    assert!(b.destroy(&k).await.unwrap());
    assert!(announced(&a, &mut rx, &k).await, "destroy after own apply");
}

/// `sync_invalidations` is a barrier: once it returns, the notice for a change another client
/// completed before the call is already on the channel, every time.
#[tokio::test]
async fn sync_invalidations_is_a_barrier() {
    let prefix = common::random_prefix();
    let (a, mut rx) = tracked(common::config(&prefix)).await;
    let b = common::store(&prefix).await;
    for _ in 0..200 {
        let k = key();
        b.create(&k, &record(None)).await.unwrap();
        assert!(a.load(&k).await.unwrap().is_some());
        drain(&mut rx);
        assert!(b.destroy(&k).await.unwrap());
        a.sync_invalidations().await.unwrap();
        assert_eq!(rx.try_recv().ok(), Some(Invalidation::Key(k)));
    }
    // Outside tracking mode it is a no-op.
    b.sync_invalidations().await.unwrap();
}

/// More receivers see the same notices; a session expiring in Redis is announced.
#[tokio::test]
async fn expiry_is_announced_to_every_receiver() {
    let prefix = common::random_prefix();
    let (a, mut rx) = tracked(common::config(&prefix)).await;
    let mut rx2 = a.subscribe_invalidations().unwrap();
    let k = key();
    let r = Record::new(None, now_ms(), Duration::from_millis(300), MINUTE);
    a.create(&k, &r).await.unwrap();
    assert!(a.load(&k).await.unwrap().is_some());
    // Redis expires keys lazily on access and actively by sampling, which on a shared server
    // holding many keys with long expiries can take seconds: past the deadline, a read makes
    // Redis expire it now. The read goes through the write connection: an expiry found by
    // the tracked connection's own read counts as its own change under NOLOOP and is not
    // announced to it (that read answers "absent" itself; see `tracking.rs`).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let exists: i64 = a
        .raw_command(redis::cmd("EXISTS").arg(a.session_key_name(&k)))
        .await
        .unwrap();
    assert_eq!(exists, 0);
    assert!(key_notice(&mut rx, &k, Duration::from_secs(3)).await);
    assert!(a.load(&k).await.unwrap().is_none());
    assert!(key_notice(&mut rx2, &k, Duration::from_millis(100)).await);
}

/// The figure behind "revocation propagation" in docs/redis.md: the time from another
/// instance's write returning to this instance's notice, on a private `redis-server`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_time_is_measured() {
    let redis = start_own();
    redis.wait_ready().await;
    let config = own_config(&redis, Duration::from_secs(2));
    let (a, mut rx) = tracked(config.clone()).await;
    let b = RedisStore::connect(config).await.unwrap();

    // A listener that stamps each notice on arrival, as the tiered store's listener would
    // drop the cached copy on arrival.
    let (stamps, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(Invalidation::Key(k)) => {
                    let _ = stamps.send((k, Instant::now()));
                }
                Ok(Invalidation::All) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });

    const ROUNDS: usize = 500;
    // Per operation: (write issued → notice, write reply → notice, write round trip).
    let mut by_op: HashMap<&str, Vec<(Duration, Duration, Duration)>> = HashMap::new();
    let mut early = 0;
    for round in 0..ROUNDS {
        let k = key();
        b.create(&k, &record(Some("u"))).await.unwrap();
        let r = a.load(&k).await.unwrap().unwrap();
        let op = ["apply", "touch", "destroy"][round % 3];
        let issued = Instant::now();
        match op {
            "apply" => b
                .apply(&k, &Delta::default().set("x", b"1".to_vec()))
                .await
                .unwrap(),
            "touch" => assert!(b.touch(&k, &r.meta, now_ms() + 1000).await.unwrap()),
            _ => assert!(b.destroy(&k).await.unwrap()),
        }
        let replied = Instant::now();
        let arrived = loop {
            let (got, at) = tokio::time::timeout(NOTICE_WITHIN, arrivals.recv())
                .await
                .unwrap_or_else(|_| panic!("no notice for {op}"))
                .unwrap();
            if got == k {
                break at;
            }
        };
        if arrived < replied {
            early += 1;
        }
        by_op.entry(op).or_default().push((
            arrived - issued,
            arrived.saturating_duration_since(replied),
            replied - issued,
        ));
        if op != "destroy" {
            b.destroy(&k).await.unwrap();
        }
    }
    listener.abort();

    let pct = |mut v: Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    };
    let column = |rows: &[(Duration, Duration, Duration)], i: usize| -> Vec<Duration> {
        rows.iter().map(|r| [r.0, r.1, r.2][i]).collect()
    };
    let all: Vec<_> = by_op.values().flatten().copied().collect();
    eprintln!(
        "propagation, {ROUNDS} rounds (apply/touch/destroy by B on sessions A loaded): \
         write issued → A's notice p50 {:?} p99 {:?}; write reply → A's notice p50 {:?} \
         p99 {:?} (notice before the reply in {early} rounds); B's write round trip p50 {:?}",
        pct(column(&all, 0), 0.5),
        pct(column(&all, 0), 0.99),
        pct(column(&all, 1), 0.5),
        pct(column(&all, 1), 0.99),
        pct(column(&all, 2), 0.5),
    );
    for (op, rows) in &by_op {
        eprintln!(
            "  {op}: issued → notice p50 {:?} p99 {:?}; reply → notice p50 {:?} p99 {:?}",
            pct(column(rows, 0), 0.5),
            pct(column(rows, 0), 0.99),
            pct(column(rows, 1), 0.5),
            pct(column(rows, 1), 0.99),
        );
    }
    assert!(pct(column(&all, 1), 0.99) < Duration::from_millis(100));
}

/// `FLUSHALL` (and `FLUSHDB`) invalidate everything: a null notice, passed on as `All`.
#[tokio::test]
async fn flushall_is_announced_as_all() {
    let redis = start_own();
    redis.wait_ready().await;
    let (a, mut rx) = tracked(own_config(&redis, Duration::from_secs(2))).await;
    let k = key();
    a.create(&k, &record(None)).await.unwrap();
    assert!(a.load(&k).await.unwrap().is_some());
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut raw).await.unwrap();
    assert_eq!(next(&mut rx, NOTICE_WITHIN).await, Some(Invalidation::All));
    // Nothing was lost: the same connection carries on, tracked.
    assert_eq!(a.tracking_connections(), Some(1));
    a.create(&k, &record(None)).await.unwrap();
    assert!(a.load(&k).await.unwrap().is_some());
    let _: () = redis::cmd("FLUSHDB").query_async(&mut raw).await.unwrap();
    assert!(all_notice(&mut rx, NOTICE_WITHIN).await);
}

/// A Redis killed with SIGKILL and restarted on the same port. With nothing in flight, the
/// loss is announced (`All`) at once; the first call on the tracked connection afterwards
/// fails, like the first call on the write connection; the next one reconnects, announces the
/// new connection (`All`) and is served tracked: a change by another client to a session read
/// after the restart is announced again.
#[tokio::test]
async fn a_restart_is_announced_and_tracking_resumes() {
    let redis = start_own();
    redis.wait_ready().await;
    let port = redis.port;
    let mut config = own_config(&redis, Duration::from_millis(500));
    config.tracking_heartbeat = Duration::ZERO; // the server's close alone must be enough
    let prefix = config.key_prefix.clone();
    let (a, mut rx) = tracked(config.clone()).await;
    let k = key();
    a.create(&k, &record(None)).await.unwrap();
    assert!(a.load(&k).await.unwrap().is_some());

    let killed = Instant::now();
    redis.kill9();
    assert!(
        all_notice(&mut rx, NOTICE_WITHIN).await,
        "no All after the kill"
    );
    eprintln!("kill -9 announced after {:?}", killed.elapsed());

    let redis = OwnRedis::start(port);
    redis.wait_ready().await;
    drain(&mut rx);

    // The first call after the restart reports it, whichever connection it uses.
    let err = a.load(&k).await.unwrap_err();
    assert!(err.is_backend(), "{err:?}");
    eprintln!("first load after the restart: {err}");
    let err = a.create(&key(), &record(None)).await.unwrap_err();
    assert!(err.is_backend(), "{err:?}");
    eprintln!("first write after the restart: {err}");

    // Then both reconnect; the new tracked connection is announced before it serves a read.
    assert!(a.load(&k).await.unwrap().is_none(), "Redis restarted empty");
    assert_eq!(next(&mut rx, NOTICE_WITHIN).await, Some(Invalidation::All));
    assert_eq!(a.tracking_connections(), Some(2));

    let mut other = config.clone();
    other.key_prefix = prefix;
    let b = RedisStore::connect(other).await.unwrap();
    let k2 = key();
    b.create(&k2, &record(None)).await.unwrap();
    assert!(a.load(&k2).await.unwrap().is_some());
    b.apply(&k2, &Delta::default().set("x", b"1".to_vec()))
        .await
        .unwrap();
    assert!(
        key_notice(&mut rx, &k2, NOTICE_WITHIN).await,
        "tracking was not re-enabled after the reconnect"
    );
}

/// A Redis that stops answering without closing the connection (SIGSTOP: what a network
/// partition looks like): the heartbeat declares the tracked connection lost within about
/// heartbeat + response timeout, so a cache does not wait for notices that cannot come.
#[tokio::test]
async fn the_heartbeat_detects_a_silent_connection() {
    let redis = start_own();
    redis.wait_ready().await;
    let mut config = own_config(&redis, Duration::from_millis(300));
    config.tracking_heartbeat = Duration::from_millis(200);
    let (a, mut rx) = tracked(config).await;
    let k = key();
    a.create(&k, &record(None)).await.unwrap();
    assert!(a.load(&k).await.unwrap().is_some());

    redis.signal("STOP");
    let frozen = Instant::now();
    let announced = all_notice(&mut rx, Duration::from_secs(3)).await;
    let took = frozen.elapsed();
    redis.signal("CONT");
    assert!(announced, "no All while Redis was frozen");
    eprintln!("a frozen Redis was announced after {took:?} (heartbeat 200 ms, timeout 300 ms)");
    assert!(took < Duration::from_millis(1500), "{took:?}");

    // Reported once, then served again on a new, tracked connection.
    assert!(a.load(&k).await.unwrap_err().is_backend());
    assert!(a.load(&k).await.unwrap().is_some());
    assert_eq!(a.tracking_connections(), Some(2));
}

/// What redis-rs 1.x itself does on a killed-and-restarted server, with nothing in flight:
///
/// - a RESP2 `ConnectionManager` (what `RedisStore` uses for writes) only notices the loss on
///   the next command, which fails; the command after that runs on a new connection.
/// - a RESP3 `ConnectionManager` sees the server close the connection and reconnects in the
///   background at once, so once the server is back the next command simply succeeds: the
///   restart is invisible to the caller. This is why `RedisStore` forces RESP2 for its write
///   connection, even when the URL asks for RESP3.
#[tokio::test]
async fn what_redis_rs_does_on_a_restart() {
    let redis = start_own();
    redis.wait_ready().await;
    let port = redis.port;
    let url = redis.url();
    let manager = |url: String| async move {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(6);
        ConnectionManager::new_with_config(redis::Client::open(url).unwrap(), config)
            .await
            .unwrap()
    };
    let ping = |mut c: ConnectionManager| async move {
        redis::cmd("PING").query_async::<String>(&mut c).await
    };
    let resp2 = manager(url.clone()).await;
    let resp3 = manager(format!("{url}?protocol=resp3")).await;
    let mut store_config = RedisConfig::new(format!("{url}?protocol=resp3"));
    store_config.key_prefix = common::random_prefix();
    let store = RedisStore::connect(store_config).await.unwrap();
    assert!(ping(resp2.clone()).await.is_ok());
    assert!(ping(resp3.clone()).await.is_ok());

    redis.kill9();
    let redis = OwnRedis::start(port);
    redis.wait_ready().await;
    // Wait (with a deadline, not a fixed sleep) until the RESP3 manager's background
    // reconnection has landed: the new server lists a RESP3 client. Nothing else here speaks
    // RESP3 (the store forces RESP2 and has no tracking connection).
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut raw)
            .await
            .unwrap();
        if clients.lines().any(|l| l.split(' ').any(|f| f == "resp=3")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the RESP3 manager did not reconnect in the background:\n{clients}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let first2 = ping(resp2.clone()).await;
    let first3 = ping(resp3.clone()).await;
    let first_store = store.ping().await;
    eprintln!(
        "after a restart: RESP2 manager {first2:?}, RESP3 manager {first3:?}, store {first_store:?}"
    );
    assert!(first2.is_err(), "RESP2: the first command fails");
    assert!(ping(resp2).await.is_ok(), "RESP2: the second reconnects");
    assert!(first3.is_ok(), "RESP3: the restart is invisible");
    assert!(
        first_store.is_err(),
        "the store's write connection is RESP2"
    );
    assert!(store.ping().await.is_ok());
    drop(redis);
}

/// `restore`: written only if absent, one script, no revocation check, indexed like `create`.
#[tokio::test]
async fn restore_writes_only_absent_keys_and_ignores_revocation() {
    let prefix = common::random_prefix();
    let store = common::store(&prefix).await;

    // Absent: written, and indexed.
    let k = key();
    let mut r = record(Some("u"));
    r.attrs.insert("a".into(), b"1".to_vec());
    assert!(store.restore(&k, &r).await.unwrap());
    assert_eq!(store.load(&k).await.unwrap(), Some(r.clone()));
    assert_eq!(store.list_user("u").await.unwrap().len(), 1);
    assert_eq!(store.count().await.unwrap(), 1);

    // Present: not written, the stored copy stays.
    let mut other = record(Some("u"));
    other.attrs.insert("a".into(), b"2".to_vec());
    assert!(!store.restore(&k, &other).await.unwrap());
    assert_eq!(store.load(&k).await.unwrap(), Some(r.clone()));

    // Revoked user: create is refused, restore writes (the copy is already authoritative).
    assert_eq!(store.destroy_user("u", None).await.unwrap(), 1);
    let old = Record::new(Some("u".into()), now_ms() - 1000, MINUTE, 10 * MINUTE);
    let k2 = key();
    assert!(matches!(
        store.create(&k2, &old).await,
        Err(ratatoskr_core::StoreError::Revoked)
    ));
    assert!(store.restore(&k2, &old).await.unwrap());
    assert_eq!(store.load(&k2).await.unwrap(), Some(old));
    let listed = store.list_user("u").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, k2);
    assert_eq!(store.count().await.unwrap(), 1);
    // ... and a restored session is revocable like any other.
    assert_eq!(store.destroy_user("u", None).await.unwrap(), 1);
    assert_eq!(store.count().await.unwrap(), 0);

    // A copy already past its deadline is not written.
    let expired = Record::new(None, now_ms() - 10_000, Duration::from_secs(1), MINUTE);
    assert!(!store.restore(&key(), &expired).await.unwrap());
    assert_eq!(store.count().await.unwrap(), 0);
}

/// `restore` on one server is one `EVALSHA`, for an anonymous session and for a user's (the
/// index entry and the session in one script; on a cluster, where they may live in different
/// slots, a user's takes two).
#[tokio::test]
async fn restore_on_one_server_is_one_script_call() {
    let redis = start_own();
    redis.wait_ready().await;
    let store = RedisStore::connect(own_config(&redis, Duration::from_secs(2)))
        .await
        .unwrap();
    // Both scripts loaded before counting.
    assert!(store.restore(&key(), &record(Some("u"))).await.unwrap());
    assert!(store.restore(&key(), &record(None)).await.unwrap());
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for (user, want) in [(Some("u"), 1), (None, 1)] {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(store.restore(&key(), &record(user)).await.unwrap());
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut raw)
            .await
            .unwrap();
        // Commands run inside the script are counted too (hset, zadd, ...); only the client's
        // own commands are looked at.
        let calls: Vec<&str> = stats
            .lines()
            .filter(|l| {
                [
                    "cmdstat_evalsha:",
                    "cmdstat_eval:",
                    "cmdstat_script:",
                    "cmdstat_exec:",
                ]
                .iter()
                .any(|c| l.starts_with(c))
            })
            .collect();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert!(
            calls[0].starts_with(&format!("cmdstat_evalsha:calls={want},")),
            "{user:?}: {calls:?}"
        );
    }
}

/// What tracking costs the server: the memory of its tracking table per session read, on a
/// private `redis-server`. Run with `--ignored --nocapture`; docs/redis.md quotes it.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn tracking_table_memory_report() {
    let redis = start_own();
    redis.wait_ready().await;
    let config = own_config(&redis, Duration::from_secs(5));
    let writer = RedisStore::connect(config.clone()).await.unwrap();
    let (reader, _rx) = tracked(config).await;
    const N: usize = 10_000;
    let keys: Vec<SessionKey> = (0..N).map(|_| key()).collect();
    for k in &keys {
        writer.create(k, &record(None)).await.unwrap();
    }
    let raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let info = |section: &'static str| {
        let mut raw = raw.clone();
        async move {
            redis::cmd("INFO")
                .arg(section)
                .query_async::<String>(&mut raw)
                .await
                .unwrap()
        }
    };
    let field = |info: &str, name: &str| -> i64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1)
    };
    let before = field(&info("memory").await, "used_memory");
    for k in &keys {
        reader.load(k).await.unwrap();
    }
    let after = field(&info("memory").await, "used_memory");
    let tracked_keys = field(&info("stats").await, "tracking_total_keys");
    // A second instance reading the same sessions adds its client id to each entry.
    let (second, _rx2) = RedisStore::connect_tracked(writer.config().clone())
        .await
        .unwrap();
    for k in &keys {
        second.load(k).await.unwrap();
    }
    let again = field(&info("memory").await, "used_memory");
    eprintln!(
        "tracking table: {tracked_keys} keys tracked, {} bytes per session read by one \
         instance, {} more per further instance ({N} sessions)",
        (after - before) / N as i64,
        (again - after) / N as i64
    );
}

/// A server's error reply (here `WRONGTYPE`, a key that is not a session hash) on the tracked
/// connection leaves it in service: the next load works at once (a connection taken out of
/// service fails its next call), and changes are still announced on it. (A failed load may
/// flush the caches with `All`; that is allowed.)
#[tokio::test]
async fn an_error_reply_on_the_tracked_connection_keeps_it_in_service() {
    let prefix = common::random_prefix();
    let (store, mut rx) = tracked(common::config(&prefix)).await;
    let mut con = common::raw_connection().await;
    let good = key();
    store.create(&good, &record(Some("u"))).await.unwrap();
    let bad = key();
    let _: () = redis::cmd("SET")
        .arg(store.session_key_name(&bad))
        .arg("not a hash")
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(store.load(&bad).await.is_err(), "a string is no session");
    assert!(store.load(&good).await.unwrap().is_some());
    // Changes are still announced on the same connection.
    store
        .apply(&good, &Delta::default().set("x", b"1".to_vec()))
        .await
        .unwrap();
    let other = common::store(&prefix).await;
    other
        .apply(&good, &Delta::default().set("x", b"2".to_vec()))
        .await
        .unwrap();
    loop {
        match next(&mut rx, NOTICE_WITHIN).await {
            Some(Invalidation::Key(k)) if k == good => break,
            Some(_) => {}
            None => panic!("the other instance's change was not announced"),
        }
    }
}

/// A create through a near cache (`create_cacheable`) runs on the tracked connection: it
/// answers `true`, and like every write it is refused once when another instance began a new
/// write epoch meanwhile and sent again with the epoch Redis named — for an anonymous session
/// (`create`) and a user's (`one_create`).
#[tokio::test]
async fn a_cacheable_create_from_an_old_write_epoch_is_sent_again_on_the_tracked_connection() {
    let redis = start_own();
    redis.wait_ready().await;
    let config = own_config(&redis, Duration::from_secs(2));
    let (a, _rx) = tracked(config.clone()).await;
    let b = RedisStore::connect(config).await.unwrap();
    for user in [None, Some("u")] {
        a.begin_epoch().await.unwrap();
        // Another instance recovers from an outage: a new epoch `a` has not seen.
        b.begin_epoch().await.unwrap();
        let k = key();
        assert!(
            a.create_cacheable(&k, &record(user)).await.unwrap(),
            "{user:?}: run on the tracked connection"
        );
        assert!(a.load(&k).await.unwrap().is_some(), "{user:?}");
    }
}

/// The tracked connection lost (killed by the server): a create through a near cache goes
/// through the write connection instead — written, but answered `false` (not cacheable: that
/// connection's write tracks nothing) — and the loss was announced with `All`.
#[tokio::test]
async fn a_cacheable_create_without_a_tracked_connection_is_written_but_not_cacheable() {
    let redis = start_own();
    redis.wait_ready().await;
    let config = own_config(&redis, Duration::from_secs(2));
    let (a, mut rx) = tracked(config).await;
    // Connect the tracked connection (a load does), then kill it from the server's side.
    assert!(a.load(&key()).await.unwrap().is_none());
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut raw)
        .await
        .unwrap();
    let tracking_ids: Vec<&str> = clients
        .lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('t'))
        })
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .collect();
    assert_eq!(tracking_ids.len(), 1, "one tracked connection:\n{clients}");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(tracking_ids[0])
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    assert!(
        all_notice(&mut rx, NOTICE_WITHIN).await,
        "the loss is announced"
    );
    let k = key();
    let cacheable = a.create_cacheable(&k, &record(Some("u"))).await.unwrap();
    assert!(
        !cacheable,
        "a create on the write connection is not cacheable"
    );
    assert!(a.load(&k).await.unwrap().is_some(), "but it was written");
}
