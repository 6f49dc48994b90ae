//! The tiered store's fallback logic with scripted faults (in-memory tiers; the same scenarios
//! against real redis-server processes are in `faults.rs`).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatoskr_core::{
    Delta, JournalTarget, MemoryJournal, MemoryStore, OutageJournal, Record, SessionStore,
    StoreError, Token, now_ms,
};
use ratatoskr_tiered::breaker::BreakerState;
use ratatoskr_tiered::{TieredConfig, TieredStore};
use support::{Control, DOWN, Faulty, HANG};

struct World {
    redis: Arc<MemoryStore>,
    redis_ctl: Arc<Control>,
    db: Arc<MemoryStore>,
    db_ctl: Arc<Control>,
    journal: Arc<MemoryJournal>,
}

fn config() -> TieredConfig {
    TieredConfig {
        redis_timeout: Duration::from_millis(100),
        breaker_open_for: Duration::from_millis(200),
        touch_flush_every: Duration::from_secs(3600),
        journal_poll_every: Duration::from_millis(100),
        ..TieredConfig::default()
    }
}

impl World {
    fn new() -> Self {
        World {
            redis: Arc::new(MemoryStore::default()),
            redis_ctl: Arc::default(),
            db: Arc::new(MemoryStore::default()),
            db_ctl: Arc::default(),
            journal: Arc::new(MemoryJournal::default()),
        }
    }

    /// A new application instance (its own connections, breaker and buffers).
    async fn instance(&self) -> TieredStore {
        self.instance_with(config()).await
    }

    async fn instance_with(&self, config: TieredConfig) -> TieredStore {
        let t = TieredStore::new(
            Faulty::new(self.redis.clone(), self.redis_ctl.clone()),
            Faulty::new(self.db.clone(), self.db_ctl.clone()),
            self.journal.clone(),
            None,
            config,
        );
        assert!(t.recover_now().await, "a fresh instance replays and closes");
        t
    }
}

fn record(user: &str) -> Record {
    Record::new(
        Some(user.into()),
        now_ms(),
        Duration::from_secs(600),
        Duration::from_secs(3600),
    )
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sessions_keep_working_while_redis_is_down() {
    let w = World::new();
    let t = w.instance().await;
    let k = Token::generate().key();
    t.create(&k, &record("u")).await.unwrap();
    assert!(
        w.redis.load(&k).await.unwrap().is_some(),
        "written through to Redis"
    );

    w.redis_ctl.set(DOWN);
    assert!(
        t.load(&k).await.unwrap().is_some(),
        "read from the database"
    );
    t.apply(&k, &Delta::default().set("a", b"1".to_vec()))
        .await
        .unwrap();
    let k2 = Token::generate().key();
    t.create(&k2, &record("u")).await.unwrap();
    assert_eq!(t.load(&k).await.unwrap().unwrap().attrs["a"], b"1");
    assert!(t.health().fallbacks >= 2);
    assert_eq!(t.health().breaker, BreakerState::Open);
}

/// The count of Redis calls decides this test, not a stopwatch: the window is a minute, so it
/// cannot close (and let a probe through) however slowly a loaded machine runs the 50 reads.
/// The time is checked only against what one timeout per request would cost (50 x 100 ms),
/// with a margin of two for the scheduler.
#[tokio::test]
async fn a_hung_redis_costs_one_timeout_per_window_not_one_per_request() {
    let w = World::new();
    let t = w
        .instance_with(TieredConfig {
            breaker_open_for: Duration::from_secs(60),
            ..config()
        })
        .await;
    let k = Token::generate().key();
    t.create(&k, &record("u")).await.unwrap();
    w.redis_ctl.set(HANG);
    let calls_before = w.redis_ctl.calls();
    let started = Instant::now();
    for _ in 0..50 {
        assert!(t.load(&k).await.unwrap().is_some());
    }
    let took = started.elapsed();
    assert_eq!(
        w.redis_ctl.calls() - calls_before,
        1,
        "only the first request waited on Redis"
    );
    assert_eq!(t.health().breaker, BreakerState::Open);
    assert!(
        took >= Duration::from_millis(100),
        "the first read waited for the 100 ms timeout ({took:?})"
    );
    assert!(
        took < Duration::from_millis(2_500),
        "50 reads took {took:?}: one timeout per request would be 5 s"
    );
}

#[tokio::test]
async fn redis_returning_empty_logs_nobody_out_and_is_repopulated() {
    let w = World::new();
    let t = w.instance().await;
    let keys: Vec<_> = (0..20).map(|_| Token::generate().key()).collect();
    for k in &keys {
        t.create(k, &record("u")).await.unwrap();
    }
    // Redis dies and comes back empty.
    w.redis_ctl.set(DOWN);
    for k in &keys {
        w.redis.destroy(k).await.unwrap();
    }
    w.redis_ctl.restart();
    for k in &keys {
        // The first call after the restart may see the reset connection; never an error.
        assert!(t.load(k).await.unwrap().is_some(), "nobody is logged out");
    }
    wait_for("recovery", async || t.recover_now().await).await;
    for k in &keys {
        assert!(t.load(k).await.unwrap().is_some());
    }
    let back = futures_count(&w.redis, &keys).await;
    assert_eq!(back, keys.len(), "reads repopulated Redis");
}

async fn futures_count(store: &MemoryStore, keys: &[ratatoskr_core::SessionKey]) -> usize {
    let mut n = 0;
    for k in keys {
        n += usize::from(store.load(k).await.unwrap().is_some());
    }
    n
}

#[tokio::test]
async fn a_revocation_during_an_outage_survives_redis_returning_with_old_data() {
    let w = World::new();
    let a = w.instance().await;
    let b = w.instance().await;
    let k = Token::generate().key();
    let other = Token::generate().key();
    a.create(&k, &record("victim")).await.unwrap();
    a.create(&other, &record("victim")).await.unwrap();
    assert!(b.load(&k).await.unwrap().is_some());

    // Redis becomes unreachable; instance A revokes one session and the whole user.
    w.redis_ctl.set(DOWN);
    assert!(a.destroy(&k).await.unwrap());
    a.destroy_user("victim", None).await.unwrap();
    assert!(
        w.journal.pending_count().await.unwrap() >= 2,
        "the revocations are journalled"
    );
    // A stops before Redis returns.
    drop(a);

    // Redis returns WITH its old data (as from a snapshot taken before the revocation).
    assert!(
        w.redis.load(&k).await.unwrap().is_some(),
        "Redis still holds the old session"
    );
    w.redis_ctl.restart();

    // B never sees the revoked sessions, not even on its first read after the return.
    for _ in 0..20 {
        assert!(
            b.load(&k).await.unwrap().is_none(),
            "revoked session came back"
        );
        assert!(
            b.load(&other).await.unwrap().is_none(),
            "revoked-all session came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for("journal replay", async || {
        w.journal.pending_count().await.unwrap() == 0
    })
    .await;
    assert!(
        w.redis.load(&k).await.unwrap().is_none(),
        "replay removed it from Redis"
    );
    assert!(w.redis.load(&other).await.unwrap().is_none());
}

#[tokio::test]
async fn an_instance_that_never_saw_the_outage_stops_reading_redis_once_the_journal_has_entries() {
    let w = World::new();
    let b = w.instance().await;
    let k = Token::generate().key();
    b.create(&k, &record("u")).await.unwrap();
    // Another instance (not modelled) destroyed k in the database but could not reach Redis.
    w.db.destroy(&k).await.unwrap();
    w.journal
        .append(&[JournalTarget::Session(k)])
        .await
        .unwrap();
    // Within one poll interval B replays the journal.
    wait_for("replay by the poller", async || {
        b.load(&k).await.unwrap().is_none()
    })
    .await;
    assert_eq!(w.journal.pending_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_new_instance_replays_the_journal_before_it_reads_redis() {
    let w = World::new();
    let k = Token::generate().key();
    // Redis holds a session the database no longer has, and the journal says so.
    w.redis.create(&k, &record("u")).await.unwrap();
    w.journal
        .append(&[JournalTarget::Session(k)])
        .await
        .unwrap();
    let t = TieredStore::new(
        Faulty::new(w.redis.clone(), w.redis_ctl.clone()),
        Faulty::new(w.db.clone(), w.db_ctl.clone()),
        w.journal.clone(),
        None,
        config(),
    );
    // No waiting: the very first read must not come from Redis.
    assert!(t.load(&k).await.unwrap().is_none());
}

/// A touch with time to spare waits for the next batch (no round trip now); the batch writes
/// the database and then extends Redis to the same deadline. A plain `touch` writes through.
#[tokio::test]
async fn touches_reach_the_database_in_batches() {
    let w = World::new();
    let t = w.instance().await;
    let k = Token::generate().key();
    let r = record("u");
    t.create(&k, &r).await.unwrap();
    let later = r.last_seen + 5_000;
    let far = r.meta.idle_deadline(later);
    assert!(
        t.touch_with_deadline(&k, &r.meta, later, far)
            .await
            .unwrap()
    );
    assert_eq!(t.health().touches_pending, 1);
    assert_eq!(
        w.db.load(&k).await.unwrap().unwrap().last_seen,
        r.last_seen,
        "database later"
    );
    t.flush_touches().await.unwrap();
    assert_eq!(t.health().touches_pending, 0);
    assert_eq!(w.db.load(&k).await.unwrap().unwrap().last_seen, later);
    assert_eq!(
        w.redis.load(&k).await.unwrap().unwrap().last_seen,
        later,
        "Redis extended after the database"
    );

    let latest = later + 5_000;
    assert!(t.touch(&k, &r.meta, latest).await.unwrap());
    assert_eq!(t.health().touches_pending, 0, "written through");
    assert_eq!(w.db.load(&k).await.unwrap().unwrap().last_seen, latest);
    assert_eq!(w.redis.load(&k).await.unwrap().unwrap().last_seen, latest);
}

#[tokio::test]
async fn with_the_database_down_reads_work_and_writes_fail_loudly_without_touching_redis() {
    let w = World::new();
    let t = w.instance().await;
    let k = Token::generate().key();
    t.create(&k, &record("u")).await.unwrap();
    w.db_ctl.set(DOWN);
    assert!(
        t.load(&k).await.unwrap().is_some(),
        "reads are served by Redis"
    );
    let err = t
        .apply(&k, &Delta::default().set("a", b"1".to_vec()))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    assert!(
        !w.redis
            .load(&k)
            .await
            .unwrap()
            .unwrap()
            .attrs
            .contains_key("a"),
        "a write the database refused is not applied to Redis either"
    );
    assert!(
        t.create(&Token::generate().key(), &record("u"))
            .await
            .is_err()
    );
    assert!(t.ping().await.is_ok(), "still ready: sessions can be read");
}

#[test]
fn the_fault_harness_can_run_its_own_redis_and_postgres() {
    let mut r = ratatoskr_testkit::RedisProcess::start();
    r.freeze();
    r.thaw();
    r.kill();
    r.restart();
    let pg = ratatoskr_testkit::PgProcess::start();
    pg.stop();
    pg.restart();
    assert!(std::net::TcpStream::connect(("127.0.0.1", pg.port)).is_ok());
    assert!(std::net::TcpStream::connect(("127.0.0.1", r.port)).is_ok());
}

/// With both tiers answering, nothing is journalled: a revoke-all, a destroy, a write and a
/// rotation leave the outage journal empty (an entry would make every instance stop reading
/// Redis until it is replayed). The positive control: the same revoke-all with Redis down is
/// journalled.
#[tokio::test]
async fn with_both_tiers_up_nothing_is_journalled() {
    let w = World::new();
    let t = w.instance().await;
    let keys: Vec<_> = (0..3).map(|_| Token::generate().key()).collect();
    for k in &keys {
        t.create(k, &record("ann")).await.unwrap();
    }
    t.apply(&keys[0], &Delta::default().set("a", b"1".to_vec()))
        .await
        .unwrap();
    let rotated = Token::generate().key();
    let mut meta = record("ann").meta;
    meta.version += 1;
    t.rotate(&keys[1], &rotated, &meta, now_ms()).await.unwrap();
    assert!(t.destroy(&keys[2]).await.unwrap());
    assert_eq!(t.destroy_user("ann", None).await.unwrap(), 2);
    assert!(w.journal.pending(10).await.unwrap().is_empty());

    t.create(&keys[2], &record("bob")).await.unwrap();
    w.redis_ctl.set(DOWN);
    assert_eq!(t.destroy_user("bob", None).await.unwrap(), 1);
    let owed = w.journal.pending(10).await.unwrap();
    assert!(
        owed.iter()
            .any(|e| e.target == JournalTarget::User("bob".into())),
        "{owed:?}"
    );
}
