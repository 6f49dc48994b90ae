//! One named regression test per way Redis and the database were found to disagree about which
//! sessions live (issue 8, and what the model-based test in `model.rs` found). Each builds the
//! state the divergence needed — on the real tiers: a test-owned or prefixed Redis in front of
//! a fresh SQLite file — and checks that the database's answer is the one every read gives.
//!
//! The clock is frozen (`test_clock`) so that "just before the deadline" is exact; the tests of
//! this binary therefore run one at a time.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ratatoskr_core::record::test_clock;
use ratatoskr_core::{Delta, Record, SessionKey, SessionStore, Token, now_ms};
use ratatoskr_redis::{RedisConfig, RedisStore};
use ratatoskr_sql::SqlStore;
use ratatoskr_testkit::RedisProcess;
use ratatoskr_tiered::{TieredConfig, TieredStore};
use support::{Control, DOWN, Faulty, UP};

const IDLE: Duration = Duration::from_secs(10);
const ABSOLUTE: Duration = Duration::from_secs(60);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One test at a time, on a frozen clock far ahead of the real one (so that Redis, which
/// expires keys by its own clock, keeps every copy until the test says otherwise).
async fn frozen() -> tokio::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().await;
    test_clock::set(Some(now_ms() + 86_400_000));
    guard
}

struct Tiers {
    /// The test's own redis-server, when it has one (dropped: killed).
    _server: Option<RedisProcess>,
    tiered: TieredStore,
    redis: RedisStore,
    sql: SqlStore,
    db: Arc<Control>,
    dir: std::path::PathBuf,
}

impl Drop for Tiers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config() -> TieredConfig {
    TieredConfig {
        redis_timeout: Duration::from_millis(150),
        breaker_open_for: Duration::from_millis(100),
        // Flushes and polls happen when the test says.
        touch_flush_every: Duration::from_secs(3600),
        journal_poll_every: Duration::from_secs(3600),
        touch_sync_margin: Duration::from_secs(3),
        ..TieredConfig::default()
    }
}

/// The tiers on `url` (a fresh key prefix) and a fresh SQLite file; the database can be taken
/// down through `db`.
async fn tiers_on(url: &str, config: TieredConfig) -> Tiers {
    let dir = std::env::temp_dir().join(format!("one-truth-{}", Token::generate().key().handle()));
    std::fs::create_dir_all(&dir).unwrap();
    let sql = SqlStore::connect(&format!("sqlite://{}", dir.join("s.db").display()))
        .await
        .expect("sqlite");
    let mut rc = RedisConfig::new(url);
    rc.key_prefix = format!("ot:{}:", Token::generate().key().handle());
    rc.response_timeout = Duration::from_millis(150);
    let (redis, notices) = RedisStore::connect_tracked(rc).await.expect("redis");
    let db = Arc::new(Control::default());
    let tiered = TieredStore::new(
        Arc::new(redis.clone()),
        Faulty::new(sql.store(), db.clone()),
        Arc::new(sql.journal()),
        Some(notices),
        config,
    );
    assert!(tiered.recover_now().await, "the tiers start");
    Tiers {
        _server: None,
        tiered,
        redis,
        sql,
        db,
        dir,
    }
}

/// The tiers on a redis-server of the test's own: the frozen clock is a day ahead, so the keys
/// these tests write would linger a day in a shared Redis (and slow its expiry of others').
async fn tiers() -> Tiers {
    let server = RedisProcess::start();
    let mut t = tiers_on(&server.url(), config()).await;
    t._server = Some(server);
    t
}

/// A second application instance over the same Redis prefix and database (its own
/// connections, breaker and near cache; the database goes down with the first's).
async fn second_instance(t: &Tiers) -> TieredStore {
    let (redis, notices) = RedisStore::connect_tracked(t.redis.config().clone())
        .await
        .unwrap();
    let b = TieredStore::new(
        Arc::new(redis),
        Faulty::new(t.sql.store(), t.db.clone()),
        Arc::new(t.sql.journal()),
        Some(notices),
        config(),
    );
    assert!(b.recover_now().await, "the second instance starts");
    b
}

fn record(user: Option<&str>) -> Record {
    Record::new(user.map(str::to_owned), now_ms(), IDLE, ABSOLUTE)
}

async fn created(t: &Tiers, user: Option<&str>) -> (SessionKey, Record) {
    let key = Token::generate().key();
    let r = record(user);
    t.tiered.create(&key, &r).await.expect("create");
    // Read once through the tiers: Redis (and the near cache) hold it now.
    assert!(t.tiered.load(&key).await.unwrap().is_some());
    assert!(t.redis.load(&key).await.unwrap().is_some(), "in Redis");
    (key, r)
}

/// A request: load, then touch with the deadline of the copy it read (as `SessionManager`).
async fn use_session(t: &Tiers, key: &SessionKey) -> Option<Record> {
    let r = t.tiered.load(key).await.expect("load")?;
    t.tiered
        .touch_with_deadline(key, &r.meta, now_ms(), r.expires_at())
        .await
        .expect("touch");
    Some(r)
}

/// What the user sees: whether the session authenticates, and whether they can see it to end it.
async fn visible(t: &Tiers, key: &SessionKey, user: &str) -> (bool, bool) {
    let loads = t.tiered.load(key).await.unwrap().is_some();
    let listed = t
        .tiered
        .list_user(user)
        .await
        .unwrap()
        .iter()
        .any(|s| &s.key == key);
    (loads, listed)
}

#[tokio::test]
async fn a_touch_just_before_the_deadline_reaches_the_database_before_redis() {
    let _clock = frozen().await;
    let t = tiers().await;
    let (key, r) = created(&t, Some("ada")).await;
    test_clock::set(Some(r.expires_at() - 1));
    use_session(&t, &key)
        .await
        .expect("alive a millisecond before");
    let in_db = t
        .sql
        .store()
        .load(&key)
        .await
        .unwrap()
        .expect("in the database");
    assert_eq!(
        in_db.last_seen,
        now_ms(),
        "written through, not left for a batch"
    );
    // Past the old deadline, after the batch and the reaper: both tiers agree it lives.
    test_clock::advance(5_000);
    t.tiered.flush_touches().await.unwrap();
    t.tiered.reap().await.unwrap();
    assert_eq!(visible(&t, &key, "ada").await, (true, true));
    // And past the new one, neither serves it.
    test_clock::advance(IDLE.as_millis() as i64);
    t.tiered.reap().await.unwrap();
    assert_eq!(visible(&t, &key, "ada").await, (false, false));
    assert!(t.redis.load(&key).await.unwrap().is_none());
}

#[tokio::test]
async fn a_batched_touch_the_database_refuses_never_extends_redis() {
    let _clock = frozen().await;
    let t = tiers().await;
    let (key, r) = created(&t, Some("ada")).await;
    test_clock::advance(4_000);
    use_session(&t, &key).await.expect("alive");
    assert_eq!(
        t.redis.load(&key).await.unwrap().unwrap().last_seen,
        r.last_seen,
        "Redis waits for the database"
    );
    // The batch reaches the database only after the deadline: refused there, so the Redis
    // copy goes too.
    test_clock::set(Some(r.expires_at() + 1));
    t.tiered.flush_touches().await.unwrap();
    assert!(t.redis.load(&key).await.unwrap().is_none());
    t.tiered.reap().await.unwrap();
    assert_eq!(visible(&t, &key, "ada").await, (false, false));
}

#[tokio::test]
async fn touches_the_database_cannot_take_never_extend_redis() {
    let _clock = frozen().await;
    let server = RedisProcess::start();
    let t = tiers_on(
        &server.url(),
        TieredConfig {
            touch_buffer_max: 1,
            ..config()
        },
    )
    .await;
    let (a, ra) = created(&t, Some("ada")).await;
    let (b, _) = created(&t, Some("ada")).await;
    t.db.set(DOWN);
    // Near the deadline: `a` is written through, the database fails, the touch waits in the
    // buffer (now full); `b` then finds the buffer full, fails the same way and is dropped.
    test_clock::set(Some(ra.expires_at() - 1_000));
    use_session(&t, &a).await.expect("served from Redis");
    use_session(&t, &b).await.expect("served from Redis");
    for key in [&a, &b] {
        assert_eq!(
            t.redis.load(key).await.unwrap().unwrap().last_seen,
            ra.last_seen,
            "nothing extended Redis while the database was down"
        );
    }
    // Past the deadlines the database knows: gone everywhere once it is back.
    test_clock::set(Some(ra.expires_at() + 1));
    t.db.set(UP);
    let _ = t.tiered.flush_touches().await;
    t.tiered.reap().await.unwrap();
    for key in [&a, &b] {
        assert_eq!(visible(&t, key, "ada").await, (false, false));
        assert!(t.redis.load(key).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn a_write_the_database_refuses_as_not_found_removes_the_redis_copy() {
    let _clock = frozen().await;
    let t = tiers().await;
    let (a, _) = created(&t, Some("ada")).await;
    let (b, r) = created(&t, Some("ada")).await;
    // The database ended both (as its reaper would an expired row) without Redis knowing.
    t.sql.store().destroy(&a).await.unwrap();
    t.sql.store().destroy(&b).await.unwrap();
    let delta = Delta::default().set("x", b"1".to_vec());
    assert!(matches!(
        t.tiered.apply(&a, &delta).await,
        Err(ratatoskr_core::StoreError::NotFound)
    ));
    assert!(t.redis.load(&a).await.unwrap().is_none(), "apply");
    let new = Token::generate().key();
    assert!(t.tiered.rotate(&b, &new, &r.meta, now_ms()).await.is_err());
    assert!(t.redis.load(&b).await.unwrap().is_none(), "rotate");
    for key in [&a, &b] {
        assert_eq!(visible(&t, key, "ada").await, (false, false));
    }
}

#[tokio::test]
async fn revoke_others_ends_every_copy_redis_holds_for_the_user() {
    let _clock = frozen().await;
    let t = tiers().await;
    let (keep, _) = created(&t, Some("ada")).await;
    let (other, _) = created(&t, Some("ada")).await;
    // A login whose database row the revoke deleted but whose Redis write landed first: in
    // Redis only, so no list of the database names it.
    let racing = Token::generate().key();
    t.redis.create(&racing, &record(Some("ada"))).await.unwrap();
    let n = t.tiered.destroy_user("ada", Some(&keep)).await.unwrap();
    assert_eq!(n, 1, "the database ended the one it had");
    assert!(t.redis.load(&other).await.unwrap().is_none());
    assert!(
        t.redis.load(&racing).await.unwrap().is_none(),
        "the racing login's copy is gone"
    );
    assert!(t.tiered.load(&racing).await.unwrap().is_none());
    assert_eq!(visible(&t, &keep, "ada").await, (true, true));
}

#[tokio::test]
async fn a_login_racing_log_out_everywhere_leaves_no_copy_in_redis() {
    let _clock = frozen().await;
    let t = tiers().await;
    // The login began (its record is dated) before the revoke-all, whose Redis part then ran
    // before the login's own Redis write.
    let key = Token::generate().key();
    let r = record(Some("ada"));
    test_clock::advance(5);
    t.redis.destroy_user("ada", None).await.unwrap();
    t.tiered.create(&key, &r).await.unwrap();
    assert!(
        t.redis.load(&key).await.unwrap().is_none(),
        "Redis refused a session its revocation marker ended"
    );
}

#[tokio::test]
async fn a_rotation_redis_refuses_still_ends_the_old_copy() {
    // Found by the model: a revoke-all whose database part failed (database down) still raised
    // the marker in Redis; a later login (rotation to that user) passes in the database and is
    // refused in Redis. The old, anonymous key has ended all the same.
    let _clock = frozen().await;
    let t = tiers().await;
    t.db.set(DOWN);
    assert!(t.tiered.destroy_user("bo", None).await.is_err());
    t.db.set(UP);
    let (old, r) = created(&t, None).await;
    let new = Token::generate().key();
    let mut meta = r.meta.clone();
    meta.user_id = Some("bo".into());
    meta.version += 1;
    t.tiered.rotate(&old, &new, &meta, now_ms()).await.unwrap();
    assert!(t.redis.load(&old).await.unwrap().is_none());
    assert!(t.tiered.load(&old).await.unwrap().is_none());
    assert_eq!(visible(&t, &new, "bo").await, (true, true));
}

#[tokio::test]
async fn a_redis_restarted_from_an_old_snapshot_never_serves_a_session_destroyed_after_it() {
    let _clock = frozen().await;
    let mut redis = RedisProcess::start();
    let t = tiers_on(&redis.url(), config()).await;
    let (key, _) = created(&t, Some("ada")).await;
    let (kept, _) = created(&t, Some("ada")).await;
    redis.snapshot();
    // Destroyed while Redis was up: Redis took the deletion, no journal entry was written.
    assert!(t.tiered.destroy(&key).await.unwrap());
    redis.kill();
    redis.restart();
    // The snapshot brought the copy back; the tiers must never believe it, from the first
    // read on, while they notice the restart and recover.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(t.tiered.load(&key).await.unwrap().is_none());
        let recovered = t.tiered.recover_now().await;
        if recovered && matches!(t.redis.load(&key).await, Ok(None)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the tiers recover and discard what the old snapshot brought back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(t.tiered.load(&key).await.unwrap().is_none());
    assert_eq!(visible(&t, &kept, "ada").await, (true, true));
}

#[tokio::test]
async fn an_instance_that_missed_an_outage_stops_serving_what_it_ended_after_one_poll() {
    let _clock = frozen().await;
    let redis = RedisProcess::start();
    let a = tiers_on(&redis.url(), config()).await;
    let b = second_instance(&a).await;
    let (key, _) = created(&a, Some("ada")).await;
    assert!(b.load(&key).await.unwrap().is_some(), "warm on b");
    redis.freeze();
    // a ends it; Redis cannot be told, a journals it.
    assert!(a.tiered.destroy(&key).await.unwrap());
    b.poll_journal_now().await;
    assert!(
        b.load(&key).await.unwrap().is_none(),
        "after one poll, b no longer serves it"
    );
    redis.thaw();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_racing_logins_and_revocations_on_two_instances_every_session_that_loads_is_listed() {
    // Real time here: the races are about what lands first, not about deadlines.
    let _one = SERIAL.lock().await;
    test_clock::set(None);
    let a = tiers().await;
    let b = second_instance(&a).await;
    let instances = [a.tiered.clone(), b];
    let mut keys = Vec::new();
    for round in 0..15 {
        let user = format!("racer{round}");
        let (keep, _) = created(&a, Some(&user)).await;
        keys.push((keep, user.clone()));
        let mut set = tokio::task::JoinSet::new();
        for n in 0..12 {
            let t = instances[n % 2].clone();
            let login = user.clone();
            set.spawn(async move {
                let key = Token::generate().key();
                let r = Record::new(Some(login), now_ms(), IDLE, ABSOLUTE);
                let _ = t.create(&key, &r).await;
                // Read it at once, as the login's next request would (fills Redis and caches).
                let _ = t.load(&key).await;
                Some(key)
            });
            if n == 4 {
                let t = instances[1].clone();
                let user = user.clone();
                set.spawn(async move {
                    let _ = t.destroy_user(&user, Some(&keep)).await;
                    None
                });
            }
            if n == 8 {
                let t = instances[0].clone();
                let user = user.clone();
                set.spawn(async move {
                    let _ = t.destroy_user(&user, None).await;
                    None
                });
            }
        }
        while let Some(k) = set.join_next().await {
            if let Some(key) = k.unwrap() {
                keys.push((key, user.clone()));
            }
        }
    }
    for t in &instances {
        t.poll_journal_now().await;
    }
    a.redis.sync_invalidations().await.unwrap();
    for (key, user) in &keys {
        let listed = a
            .tiered
            .list_user(user)
            .await
            .unwrap()
            .iter()
            .any(|s| &s.key == key);
        for (i, t) in instances.iter().enumerate() {
            let loads = t.load(key).await.unwrap().is_some();
            assert_eq!(
                loads,
                listed,
                "instance {i}: session {} of {user} loads: {loads}, listed: {listed}",
                key.handle()
            );
        }
        let in_redis = a.redis.load(key).await.unwrap().is_some();
        assert!(
            !in_redis || listed,
            "a copy in Redis of an ended session {}",
            key.handle()
        );
    }
}

#[tokio::test]
async fn a_rotation_never_copies_attributes_redis_holds_older_than_the_database() {
    // Found by the model: another instance's change could not reach Redis (journalled, not yet
    // replayed here); rotating inside Redis copied the old attributes to the new key, which no
    // journal entry names, so the change was lost for as long as the new session lived.
    let _clock = frozen().await;
    let t = tiers().await;
    let (old, r) = created(&t, Some("ada")).await;
    // The database has the change; Redis does not.
    t.sql
        .store()
        .apply(&old, &Delta::default().set("a0", b"145".to_vec()))
        .await
        .unwrap();
    let new = Token::generate().key();
    let mut meta = r.meta.clone();
    meta.version += 1;
    t.tiered.rotate(&old, &new, &meta, now_ms()).await.unwrap();
    let loaded = t
        .tiered
        .load(&new)
        .await
        .unwrap()
        .expect("the new key lives");
    assert_eq!(
        loaded.attrs.get("a0").map(Vec::as_slice),
        Some(&b"145"[..]),
        "the rotated session has the database's attributes"
    );
    assert!(t.redis.load(&old).await.unwrap().is_none());
}

/// Found by the concurrent-logins conformance case: a create writes the database, then its
/// Redis copy. Another instance's login listed the user in between, saw the new session and
/// evicted it (database row and Redis copy — there was none yet); the copy's write then landed
/// and the evicted session went on loading from Redis. The eviction's removal now leaves a
/// tombstone that the late copy (a create, or a read's restore) cannot land on.
#[tokio::test]
async fn a_copy_written_after_its_session_was_evicted_never_lands() {
    let _clock = frozen().await;
    let t = tiers().await;
    let b = second_instance(&t).await;
    for late in ["create", "restore"] {
        let key = Token::generate().key();
        let r = record(Some("zed"));
        // Instance a's create: the database took it; its Redis write is still on the way.
        t.sql.store().create(&key, &r).await.unwrap();
        // Instance b's login evicts it: the database row, and the copy Redis does not hold yet.
        assert!(b.destroy(&key).await.unwrap(), "{late}: evicted");
        // The late copy.
        let landed = match late {
            "create" => t.redis.create(&key, &r).await.is_ok(),
            _ => t.redis.restore(&key, &r).await.unwrap(),
        };
        assert!(!landed, "the late {late} landed on an evicted session");
        assert!(t.redis.load(&key).await.unwrap().is_none());
        assert!(
            t.tiered.load(&key).await.unwrap().is_none(),
            "{late}: a loads it"
        );
        assert!(b.load(&key).await.unwrap().is_none(), "{late}: b loads it");
    }
    // The positive control: without the eviction the same write lands.
    let key = Token::generate().key();
    let r = record(Some("zed"));
    t.sql.store().create(&key, &r).await.unwrap();
    t.redis.create(&key, &r).await.unwrap();
    assert!(b.load(&key).await.unwrap().is_some());
}
