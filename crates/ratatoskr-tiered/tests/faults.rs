//! Fault injection against real servers: the test's own `redis-server` (killed with SIGKILL,
//! frozen with SIGSTOP, restarted empty or from a snapshot) and its own PostgreSQL cluster
//! (stopped while Redis is up). The shared services on 6379/5432 are never touched.
//!
//! Each test prints the figures it measured (`cargo test -p ratatoskr-tiered --test faults --
//! --nocapture`); `docs/architecture.md` records them.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use ratatoskr_core::{Delta, Record, SessionKey, SessionStore, Token, now_ms};
use ratatoskr_redis::{RedisConfig, RedisStore};
use ratatoskr_sql::SqlStore;
use ratatoskr_testkit::{PgProcess, RedisProcess};
use ratatoskr_tiered::breaker::BreakerState;
use ratatoskr_tiered::{TieredConfig, TieredStore};

const REDIS_TIMEOUT: Duration = Duration::from_millis(150);

fn config() -> TieredConfig {
    TieredConfig {
        redis_timeout: REDIS_TIMEOUT,
        breaker_open_for: Duration::from_millis(300),
        touch_flush_every: Duration::from_millis(200),
        journal_poll_every: Duration::from_millis(200),
        ..TieredConfig::default()
    }
}

fn redis_config(redis: &RedisProcess) -> RedisConfig {
    let mut c = RedisConfig::new(redis.url());
    c.response_timeout = REDIS_TIMEOUT;
    c.connect_timeout = Duration::from_millis(300);
    c
}

/// One application instance: its own Redis connection, database pool, breaker and caches.
async fn instance(redis: &RedisProcess, sql: &SqlStore) -> TieredStore {
    // Tracking on: each instance keeps a near cache that Redis invalidates.
    let mut c = redis_config(redis);
    c.tracking = true;
    let fast = RedisStore::connect_lazy(c).expect("redis config");
    let notices = fast.subscribe_invalidations();
    assert!(notices.is_some(), "tracking mode gives a notice channel");
    let t = TieredStore::new(
        Arc::new(fast),
        sql.store(),
        Arc::new(sql.journal()),
        notices,
        config(),
    );
    assert!(
        t.recover_now().await,
        "a new instance starts once the journal is replayed"
    );
    t
}

fn record(user: &str) -> Record {
    Record::new(
        Some(user.into()),
        now_ms(),
        Duration::from_secs(3600),
        Duration::from_secs(7200),
    )
}

async fn wait_until(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_empty_loses_no_session_and_logs_nobody_out() {
    let mut redis = RedisProcess::start();
    let pg = PgProcess::start();
    let sql = SqlStore::connect(&pg.url()).await.expect("postgres");
    let t = instance(&redis, &sql).await;

    let keys: Arc<Vec<SessionKey>> =
        Arc::new((0..1_000).map(|_| Token::generate().key()).collect());
    for (i, k) in keys.iter().enumerate() {
        t.create(k, &record(&format!("user-{}", i % 100)))
            .await
            .expect("create");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let logged_out = Arc::new(AtomicU64::new(0));
    let slowest_us = Arc::new(AtomicU64::new(0));
    let first_failure_ms = Arc::new(AtomicU64::new(u64::MAX));
    let last_failure_ms = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    // increments[i]: successful counter increments of session i (to prove none was lost).
    let increments: Arc<Vec<AtomicU64>> =
        Arc::new((0..keys.len()).map(|_| AtomicU64::new(0)).collect());

    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            let (t, keys, stop) = (t.clone(), keys.clone(), stop.clone());
            let (requests, failures, logged_out) =
                (requests.clone(), failures.clone(), logged_out.clone());
            let (slowest_us, increments) = (slowest_us.clone(), increments.clone());
            let (first_failure_ms, last_failure_ms) =
                (first_failure_ms.clone(), last_failure_ms.clone());
            tokio::spawn(async move {
                let mut n = w;
                while !stop.load(SeqCst) {
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    // Each worker writes only its own sessions, so counters are exact.
                    let i = ((n >> 33) as usize % (keys.len() / 8)) * 8 + w as usize;
                    let started = Instant::now();
                    let outcome = if n % 10 == 0 {
                        let value = increments[i].load(SeqCst) + 1;
                        match t
                            .apply(
                                &keys[i],
                                &Delta::default().set("counter", value.to_string().into_bytes()),
                            )
                            .await
                        {
                            Ok(()) => {
                                increments[i].store(value, SeqCst);
                                Ok(true)
                            }
                            Err(e) => Err(e),
                        }
                    } else {
                        t.load(&keys[i]).await.map(|r| r.is_some())
                    };
                    let took = started.elapsed();
                    slowest_us.fetch_max(took.as_micros() as u64, SeqCst);
                    requests.fetch_add(1, SeqCst);
                    match outcome {
                        Ok(true) => {}
                        Ok(false) => {
                            logged_out.fetch_add(1, SeqCst);
                        }
                        Err(_) => {
                            failures.fetch_add(1, SeqCst);
                            let at = epoch.elapsed().as_millis() as u64;
                            first_failure_ms.fetch_min(at, SeqCst);
                            last_failure_ms.fetch_max(at, SeqCst);
                        }
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let killed_at = epoch.elapsed();
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    redis.discard_snapshot();
    redis.restart();
    let restarted_at = epoch.elapsed();
    let recovery = wait_until(
        "the breaker to close",
        Duration::from_secs(15),
        async || t.health().breaker == BreakerState::Closed,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    stop.store(true, SeqCst);
    for w in workers {
        w.await.expect("worker");
    }

    let total = requests.load(SeqCst);
    let failed = failures.load(SeqCst);
    let first = first_failure_ms.load(SeqCst);
    let window = if failed > 0 {
        Duration::from_millis(last_failure_ms.load(SeqCst) - first)
    } else {
        Duration::ZERO
    };
    eprintln!(
        "redis SIGKILL at {killed_at:?}, restarted empty at {restarted_at:?}: {total} requests, \
         {failed} failed (over {window:?}), {} logged out, slowest {} ms, breaker closed {recovery:?} \
         after restart, {} fallbacks",
        logged_out.load(SeqCst),
        slowest_us.load(SeqCst) / 1000,
        t.health().fallbacks
    );
    assert_eq!(logged_out.load(SeqCst), 0, "a user was logged out");
    assert_eq!(failed, 0, "requests failed during the outage");
    assert!(t.health().fallbacks > 0, "the outage was noticed");

    // Every session survives with every increment that was acknowledged.
    for (i, k) in keys.iter().enumerate() {
        let r = t.load(k).await.expect("load").expect("session lost");
        let want = increments[i].load(SeqCst);
        let got = r
            .attrs
            .get("counter")
            .map(|v| String::from_utf8_lossy(v).parse::<u64>().expect("counter"))
            .unwrap_or(0);
        assert_eq!(got, want, "session {i} lost an acknowledged write");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_during_an_outage_stays_revoked_when_redis_returns_with_its_old_data() {
    let mut redis = RedisProcess::start();
    let pg = PgProcess::start();
    let sql = SqlStore::connect(&pg.url()).await.expect("postgres");
    let a = instance(&redis, &sql).await;
    let b = instance(&redis, &sql).await;

    let revoked = Token::generate().key();
    let everywhere: Vec<SessionKey> = (0..3).map(|_| Token::generate().key()).collect();
    let untouched = Token::generate().key();
    a.create(&revoked, &record("alice")).await.unwrap();
    for k in &everywhere {
        a.create(k, &record("bob")).await.unwrap();
    }
    a.create(&untouched, &record("carol")).await.unwrap();
    for k in everywhere.iter().chain([&revoked, &untouched]) {
        assert!(b.load(k).await.unwrap().is_some());
    }
    // Redis's state before the revocations is what it will come back with.
    redis.snapshot();
    redis.kill();

    // Instance A revokes while Redis is unreachable, then stops before Redis returns.
    assert!(a.destroy(&revoked).await.unwrap());
    assert_eq!(a.destroy_user("bob", None).await.unwrap(), 3);
    drop(a);

    redis.restart();
    let raw = RedisStore::connect(redis_config(&redis))
        .await
        .expect("redis back");
    assert!(
        raw.load(&revoked).await.unwrap().is_some(),
        "the restarted Redis holds the old (revoked) session"
    );

    // From its very first read after Redis returns, B never serves a revoked session.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        assert!(
            b.load(&revoked).await.unwrap().is_none(),
            "revoked session resurrected"
        );
        for k in &everywhere {
            assert!(
                b.load(k).await.unwrap().is_none(),
                "revoked-all session resurrected"
            );
        }
        assert!(
            b.load(&untouched).await.unwrap().is_some(),
            "an unrelated user was logged out"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    wait_until("the journal replay", Duration::from_secs(10), async || {
        b.health().breaker == BreakerState::Closed
    })
    .await;
    assert!(
        raw.load(&revoked).await.unwrap().is_none(),
        "replay deleted it from Redis"
    );
    for k in &everywhere {
        assert!(raw.load(k).await.unwrap().is_none());
    }
    assert!(b.load(&revoked).await.unwrap().is_none());
    // A new instance started now (after the replay) agrees.
    let c = instance(&redis, &sql).await;
    assert!(c.load(&revoked).await.unwrap().is_none());
    assert!(c.load(&untouched).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_never_hangs_a_request() {
    let redis = RedisProcess::start();
    let pg = PgProcess::start();
    let sql = SqlStore::connect(&pg.url()).await.expect("postgres");
    let t = instance(&redis, &sql).await;
    let keys: Vec<SessionKey> = (0..50).map(|_| Token::generate().key()).collect();
    for k in &keys {
        t.create(k, &record("u")).await.unwrap();
    }

    redis.freeze();
    let bound = REDIS_TIMEOUT + Duration::from_millis(350);
    let mut slowest = Duration::ZERO;
    let mut tasks = Vec::new();
    for round in 0..10 {
        for (i, k) in keys.iter().enumerate() {
            let (t, k) = (t.clone(), *k);
            tasks.push(tokio::spawn(async move {
                let started = Instant::now();
                let ok = if (i + round) % 5 == 0 {
                    t.apply(&k, &Delta::default().set("r", vec![round as u8]))
                        .await
                        .is_ok()
                } else {
                    matches!(t.load(&k).await, Ok(Some(_)))
                };
                (ok, started.elapsed())
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ok = 0;
    for task in tasks {
        let (success, took) = task.await.unwrap();
        ok += usize::from(success);
        slowest = slowest.max(took);
    }
    redis.thaw();
    eprintln!(
        "redis SIGSTOP: 500 requests, {ok} succeeded, slowest {slowest:?} (timeout {REDIS_TIMEOUT:?}, bound {bound:?})"
    );
    assert_eq!(
        ok, 500,
        "every request completed successfully from the database"
    );
    assert!(
        slowest <= bound,
        "a request took {slowest:?}, over {bound:?}"
    );
    wait_until(
        "recovery after SIGCONT",
        Duration::from_secs(10),
        async || t.health().breaker == BreakerState::Closed,
    )
    .await;
    for k in &keys {
        assert!(t.load(k).await.unwrap().is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_stopped_reads_work_writes_are_refused_and_nothing_is_lost() {
    let redis = RedisProcess::start();
    let pg = PgProcess::start();
    let sql = SqlStore::connect_with(
        &pg.url(),
        &ratatoskr_sql::SqlOptions {
            acquire_timeout: Duration::from_millis(500),
            ..ratatoskr_sql::SqlOptions::default()
        },
    )
    .await
    .expect("postgres");
    let t = instance(&redis, &sql).await;
    let k = Token::generate().key();
    let r = record("u");
    t.create(&k, &r).await.unwrap();
    t.apply(&k, &Delta::default().set("before", b"1".to_vec()))
        .await
        .unwrap();

    pg.stop();
    // Reads keep working from Redis.
    for _ in 0..20 {
        let got = t
            .load(&k)
            .await
            .expect("reads work without the database")
            .expect("present");
        assert_eq!(got.attrs["before"], b"1");
    }
    // Durable writes are refused (the documented policy): the caller gets an error, and Redis
    // is not changed behind the database's back.
    let err = t
        .apply(&k, &Delta::default().set("during", b"1".to_vec()))
        .await
        .expect_err("a write the database cannot take is refused");
    assert!(err.is_backend(), "{err:?}");
    assert!(
        !t.load(&k)
            .await
            .unwrap()
            .unwrap()
            .attrs
            .contains_key("during")
    );
    assert!(
        t.create(&Token::generate().key(), &record("u"))
            .await
            .is_err()
    );
    // Touches still extend the session in Redis and wait for the database.
    let later = now_ms();
    assert!(t.touch(&k, &r.meta, later).await.unwrap());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        t.health().touches_pending >= 1,
        "the touch waits for the database"
    );
    assert!(t.ping().await.is_ok(), "ready: sessions can still be read");

    pg.restart();
    wait_until(
        "buffered touches to reach the database",
        Duration::from_secs(15),
        async || t.health().touches_pending == 0,
    )
    .await;
    let durable = sql
        .store()
        .load(&k)
        .await
        .unwrap()
        .expect("in the database");
    assert_eq!(
        durable.last_seen, later,
        "the buffered touch reached the database"
    );
    assert_eq!(durable.attrs["before"], b"1");
    assert!(!durable.attrs.contains_key("during"));
    t.apply(&k, &Delta::default().set("after", b"1".to_vec()))
        .await
        .expect("writes work again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_one_instance_is_visible_through_another() {
    let redis = RedisProcess::start();
    let pg = PgProcess::start();
    let sql = SqlStore::connect(&pg.url()).await.expect("postgres");
    let a = instance(&redis, &sql).await;
    let b = instance(&redis, &sql).await;

    let mut propagation = Vec::new();
    let mut updates = Vec::new();
    for i in 0..100 {
        let k = Token::generate().key();
        a.create(&k, &record("u")).await.unwrap();
        assert!(
            b.load(&k).await.unwrap().is_some(),
            "created through A, seen through B"
        );
        // B now has k in its near cache; A changes it.
        let value = i.to_string().into_bytes();
        a.apply(&k, &Delta::default().set("n", value.clone()))
            .await
            .unwrap();
        updates.push(
            wait_until(
                "the change to reach B",
                Duration::from_secs(5),
                async || {
                    b.load(&k)
                        .await
                        .unwrap()
                        .and_then(|r| r.attrs.get("n").cloned())
                        == Some(value.clone())
                },
            )
            .await,
        );
        assert!(a.destroy(&k).await.unwrap());
        propagation.push(
            wait_until(
                "revocation to reach B",
                Duration::from_secs(5),
                async || b.load(&k).await.unwrap().is_none(),
            )
            .await,
        );
    }
    updates.sort();
    eprintln!(
        "change propagation A→B over 100 sessions: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&updates, 0.5),
        percentile(&updates, 0.99),
        updates.last().unwrap()
    );
    propagation.sort();
    eprintln!(
        "revocation propagation A→B over 100 sessions: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&propagation, 0.5),
        percentile(&propagation, 0.99),
        propagation.last().unwrap()
    );
}
