//! The near cache over a real Redis in tracking mode (`RedisStore::connect_tracked`): two
//! application instances share one Redis, one durable tier and one journal; a change through
//! either is seen through the other, and a warm read costs no Redis round trip.
//!
//! Each test runs its own `redis-server` (so its command statistics are the test's alone) and
//! talks to it out of band with `redis-cli`. Figures are printed (`--nocapture`) and quoted in
//! docs/redis.md ("revocation propagation").

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatoskr_core::{
    Delta, Invalidation, MemoryJournal, MemoryStore, OutageJournal, Record, SessionStore, Token,
    now_ms,
};
use ratatoskr_redis::{RedisConfig, RedisStore};
use ratatoskr_tiered::{TieredConfig, TieredStore};
use tokio::sync::broadcast;

/// A private `redis-server`, killed when dropped.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Server {
    /// Start one; panics with the test kit's message if `redis-server` cannot be run.
    fn start() -> Server {
        let port = ratatoskr_testkit::free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect(ratatoskr_testkit::REDIS_SERVER_MISSING);
        let server = Server { child, port };
        for _ in 0..100 {
            if server.cli(&["PING"]).trim() == "PONG" {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {port} did not start");
    }

    /// Run one command with `redis-cli`; its output.
    fn cli(&self, args: &[&str]) -> String {
        std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// `calls` of every command since the last `CONFIG RESETSTAT`, by name (`hgetall`,
    /// `config|resetstat`). Panics on output it cannot read, so a format change cannot read as
    /// "no commands".
    fn command_calls(&self) -> BTreeMap<String, u64> {
        let stats = self.cli(&["INFO", "commandstats"]);
        assert!(
            stats.contains("# Commandstats"),
            "not an INFO commandstats answer: {stats:?}"
        );
        stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_"))
            .map(|l| {
                let (name, rest) = l["cmdstat_".len()..]
                    .split_once(":calls=")
                    .unwrap_or_else(|| panic!("unreadable line {l:?}"));
                let calls = rest
                    .split(',')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unreadable line {l:?}"));
                (name.to_owned(), calls)
            })
            .collect()
    }

    /// `calls` of one command since the last `CONFIG RESETSTAT`.
    fn calls(&self, command: &str) -> u64 {
        self.command_calls().get(command).copied().unwrap_or(0)
    }

    /// Calls of commands that read or write session data: everything but connection upkeep
    /// (heartbeat pings, handshakes, client tracking) and the test's own statistics commands.
    fn data_commands(&self) -> u64 {
        self.command_calls()
            .iter()
            .filter(|(name, _)| {
                !matches!(name.as_str(), "ping" | "info" | "hello" | "select")
                    && !name.starts_with("client|")
                    && !name.starts_with("config|")
            })
            .map(|(_, n)| n)
            .sum()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One application instance: its own tracked Redis connections, near cache and breaker; the
/// durable tier and the journal are shared, as the database is. Also a receiver of the same
/// notices its near cache gets, for timing.
async fn instance(
    server: &Server,
    prefix: &str,
    durable: &Arc<MemoryStore>,
    journal: &Arc<MemoryJournal>,
) -> (TieredStore, broadcast::Receiver<Invalidation>) {
    let config = RedisConfig {
        key_prefix: prefix.to_owned(),
        response_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        ..RedisConfig::new(format!("redis://127.0.0.1:{}/", server.port))
    };
    let (redis, invalidations) = RedisStore::connect_tracked(config).await.unwrap();
    let spy = redis.subscribe_invalidations().unwrap();
    let durable: Arc<dyn SessionStore> = durable.clone();
    let journal: Arc<dyn OutageJournal> = journal.clone();
    let store = TieredStore::new(
        Arc::new(redis),
        durable,
        journal,
        Some(invalidations),
        TieredConfig {
            redis_timeout: Duration::from_secs(2),
            ..TieredConfig::default()
        },
    );
    assert!(store.recover_now().await, "the breaker closes");
    (store, spy)
}

fn record(user: &str) -> Record {
    Record::new(
        Some(user.into()),
        now_ms(),
        Duration::from_secs(600),
        Duration::from_secs(3600),
    )
}

fn cached(store: &TieredStore) -> usize {
    store.health().near_cache.expect("the near cache is on").0
}

/// Poll `f` until it holds; how long that took.
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f().await {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "timed out waiting for {what}"
        );
        tokio::task::yield_now().await;
    }
    started.elapsed()
}

/// A change through one instance is seen through the other, whose near cache held the old
/// copy; and a revocation reaches the other instance's near cache within the figures printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_instance_is_seen_through_the_other() {
    let server = Server::start();
    let durable = Arc::new(MemoryStore::default());
    let journal = Arc::new(MemoryJournal::default());
    let (one, _) = instance(&server, "rt:", &durable, &journal).await;
    let (two, mut notices) = instance(&server, "rt:", &durable, &journal).await;

    let k = Token::generate().key();
    one.create(&k, &record("u")).await.unwrap();
    let first = two.load(&k).await.unwrap().unwrap();
    assert_eq!(two.load(&k).await.unwrap(), Some(first.clone()));
    assert_eq!(cached(&two), 1, "two keeps a near copy");

    one.apply(&k, &Delta::default().set("theme", b"dark".to_vec()))
        .await
        .unwrap();
    let took = until("the delta to reach two", async || {
        let r = two.load(&k).await.unwrap().unwrap();
        r.attrs.get("theme").map(Vec::as_slice) == Some(&b"dark"[..])
    })
    .await;
    eprintln!("a delta through one was seen through two after {took:?}");

    one.destroy_user("u", None).await.unwrap();
    let took = until("the revocation to reach two", async || {
        two.load(&k).await.unwrap().is_none()
    })
    .await;
    eprintln!("a revoke-all through one was seen through two after {took:?}");

    // Revocation propagation, measured: two holds a warm near copy; one destroys the session;
    // how long until two stops serving it, counted from one's destroy returning. The wait
    // blocks on the notice (a receiver beside two's near cache), then polls two until its
    // listener has dropped the copy: a busy wait throughout would be preempted by the OS on
    // a loaded machine and measure that instead.
    const ROUNDS: usize = 300;
    let mut times = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let k = Token::generate().key();
        one.create(&k, &record("v")).await.unwrap();
        assert!(two.load(&k).await.unwrap().is_some());
        assert!(two.load(&k).await.unwrap().is_some(), "warm");
        while notices.try_recv().is_ok() {}
        assert!(one.destroy(&k).await.unwrap());
        let destroyed = Instant::now();
        loop {
            let n = tokio::time::timeout(Duration::from_secs(2), notices.recv()).await;
            match n.expect("a notice").expect("the channel is open") {
                Invalidation::Key(got) if got == k => break,
                _ => {}
            }
        }
        until("two to drop its copy", async || {
            two.load(&k).await.unwrap().is_none()
        })
        .await;
        times.push(destroyed.elapsed());
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    eprintln!(
        "revocation propagation to another instance's near cache, {ROUNDS} rounds: \
         p50 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        times[ROUNDS - 1]
    );
    assert!(pct(0.99) < Duration::from_millis(500));
}

/// A warm read is served by the near cache: Redis sees no command for it; nor after this
/// instance's own change (the written copy is put back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_read_makes_no_redis_round_trip() {
    let server = Server::start();
    let durable = Arc::new(MemoryStore::default());
    let journal = Arc::new(MemoryJournal::default());
    let (store, _) = instance(&server, "rt:", &durable, &journal).await;
    let (other, _) = instance(&server, "rt:", &durable, &journal).await;

    let k = Token::generate().key();
    store.create(&k, &record("u")).await.unwrap();
    // Created by another instance: this one has never read it.
    let cold = Token::generate().key();
    other.create(&cold, &record("u")).await.unwrap();
    assert!(
        store.load(&k).await.unwrap().is_some(),
        "created here, cached"
    );

    server.cli(&["CONFIG", "RESETSTAT"]);
    for _ in 0..1000 {
        assert!(store.load(&k).await.unwrap().is_some());
    }
    assert_eq!(server.data_commands(), 0, "1,000 warm reads, no Redis read");
    assert_eq!(server.calls("exec"), 0);
    assert_eq!(server.calls("hgetall"), 0);

    // Positive control: the same counting sees a read that does go to Redis (a session this
    // instance never read), so the zero above is a measurement, not a parser that says 0.
    assert!(store.load(&cold).await.unwrap().is_some());
    let after_cold = server.data_commands();
    assert!(
        after_cold >= 1,
        "a cold read was not counted: {:?}",
        server.command_calls()
    );
    assert!(
        server.calls("config|resetstat") == 1,
        "the statistics are the test's own"
    );
    for _ in 0..100 {
        assert!(store.load(&cold).await.unwrap().is_some());
    }
    assert_eq!(server.data_commands(), after_cold, "and is then cached too");

    store
        .apply(&k, &Delta::default().set("a", b"1".to_vec()))
        .await
        .unwrap();
    server.cli(&["CONFIG", "RESETSTAT"]);
    for _ in 0..100 {
        assert!(store.load(&k).await.unwrap().is_some());
    }
    // This instance's own change put the written copy back (no notice of its own comes
    // back: the Redis store writes deltas on its tracked connection, with NOLOOP).
    assert_eq!(server.calls("exec"), 0, "no Redis read after an own change");
}
