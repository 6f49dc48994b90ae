//! What the conformance suite does not cover: connecting, migrations, SQLite settings, the audit
//! log, the reaper, URL dispatch and failure modes. Each test uses its own database file or
//! PostgreSQL schema.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{PgSchema, TempDb, random_name};
use ratatoskr_core::codec::CodecError;
use ratatoskr_core::{
    AuditEvent, AuditKind, AuditSink, Record, SessionStore, StoreError, Token, now_ms,
};
use ratatoskr_sql::{
    HOUR_MS, HourlyCount, PgStore, SCHEMA_VERSION, SqlAudit, SqlOptions, SqlStore, SqliteStore,
    connect_any, spawn_reaper,
};

const MINUTE: Duration = Duration::from_secs(60);

fn record(user: Option<&str>, idle: Duration) -> Record {
    Record::new(user.map(str::to_owned), now_ms(), idle, 10 * MINUTE)
}

async fn applied_versions_sqlite(store: &SqliteStore) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM ratatoskr_schema_migrations ORDER BY version")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

async fn applied_versions_pg(store: &PgStore) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM ratatoskr_schema_migrations ORDER BY version")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

fn all_versions() -> Vec<i64> {
    (1..=SCHEMA_VERSION).collect()
}

// ---------------------------------------------------------------------------------------------
// SQLite

#[tokio::test]
async fn sqlite_migrations_are_idempotent() {
    let db = TempDb::new();
    let first = db.store().await;
    let key = Token::generate().key();
    first
        .create(&key, &record(Some("u"), MINUTE))
        .await
        .unwrap();
    drop(first);
    let second = db.store().await;
    assert_eq!(applied_versions_sqlite(&second).await, all_versions());
    assert!(
        second.load(&key).await.unwrap().is_some(),
        "data survives a reconnect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stores_starting_at_once_all_succeed() {
    let db = Arc::new(TempDb::new());
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let url = db.url();
            tokio::spawn(async move { SqliteStore::connect(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for s in starts {
        stores.push(s.await.unwrap().expect("every concurrent start succeeds"));
    }
    assert_eq!(applied_versions_sqlite(&stores[0]).await, all_versions());
    for s in &stores {
        assert_eq!(s.journal_mode().await.unwrap(), "wal");
    }
}

/// Two instances (two pools, two writer queues) hammering one file: the busy timeout, not the
/// in-process queue, does the waiting, and nothing is lost or refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writers_in_two_instances_never_fail_busy() {
    let db = TempDb::new();
    let a: Arc<dyn SessionStore> = Arc::new(db.store().await);
    let b: Arc<dyn SessionStore> = Arc::new(db.store().await);
    let key = Token::generate().key();
    a.create(&key, &record(Some("u"), MINUTE)).await.unwrap();
    let writes: Vec<_> = (0..60)
        .map(|i| {
            let s = if i % 2 == 0 {
                Arc::clone(&a)
            } else {
                Arc::clone(&b)
            };
            tokio::spawn(async move {
                let delta = ratatoskr_core::Delta::default().set(format!("k{i}"), vec![i as u8]);
                s.apply(&key, &delta).await?;
                s.touch(&key, &record(None, MINUTE).meta, now_ms()).await?;
                // Other users' sessions come and go meanwhile.
                let other = Token::generate().key();
                s.create(&other, &record(Some("v"), MINUTE)).await?;
                s.destroy(&other).await.map(drop)
            })
        })
        .collect();
    for w in writes {
        w.await
            .unwrap()
            .expect("no write fails under cross-instance contention");
    }
    assert_eq!(b.load(&key).await.unwrap().unwrap().attrs.len(), 60);
}

#[tokio::test]
async fn sqlite_file_is_in_wal_mode_with_normal_sync_and_foreign_keys() {
    let db = TempDb::new();
    let store = db.store().await;
    assert_eq!(store.journal_mode().await.unwrap(), "wal");
    let mut conn = store.pool().acquire().await.unwrap();
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(sync, 1, "synchronous=NORMAL");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(fk, 1, "foreign keys on");
    drop(conn);
    store
        .create(&Token::generate().key(), &record(None, MINUTE))
        .await
        .unwrap();
    let wal = db.file.with_extension("db-wal");
    assert!(wal.exists(), "{} exists", wal.display());
}

#[tokio::test]
async fn sqlite_creates_the_file_and_its_directories() {
    let db = TempDb::new();
    let nested = db.dir.join("a").join("b").join("sessions.db");
    let store = SqliteStore::connect(&format!("sqlite://{}", nested.display()))
        .await
        .unwrap();
    store.ping().await.unwrap();
    assert!(nested.exists());
}

#[tokio::test]
async fn sqlite_in_memory_works_for_tests() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    assert_eq!(store.journal_mode().await.unwrap(), "memory");
    let key = Token::generate().key();
    store
        .create(&key, &record(Some("u"), MINUTE))
        .await
        .unwrap();
    assert!(store.load(&key).await.unwrap().is_some());
    assert_eq!(store.list_user("u").await.unwrap().len(), 1);
}

#[tokio::test]
async fn sqlite_path_that_cannot_be_created_is_a_backend_error() {
    let db = TempDb::new();
    std::fs::create_dir_all(&db.dir).unwrap();
    let blocker = db.dir.join("not-a-dir");
    std::fs::write(&blocker, b"file").unwrap();
    let url = format!("sqlite://{}", blocker.join("sessions.db").display());
    match SqliteStore::connect(&url).await {
        Err(StoreError::Backend { backend, .. }) => assert_eq!(backend, "sqlite"),
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_edited_migration_is_refused() {
    let db = TempDb::new();
    let store = db.store().await;
    sqlx::query("UPDATE ratatoskr_schema_migrations SET checksum = checksum + 1 WHERE version = 1")
        .execute(store.pool())
        .await
        .unwrap();
    drop(store);
    match SqliteStore::connect(&db.url()).await {
        Err(StoreError::Backend { message, .. }) => {
            assert!(message.contains("migration 1"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn sqlite_limits_are_configurable() {
    let db = TempDb::new();
    let options = SqlOptions {
        limits: ratatoskr_core::Limits {
            max_record_bytes: 200,
            ..Default::default()
        },
        ..SqlOptions::default()
    };
    let store = SqliteStore::connect_with(&db.url(), &options)
        .await
        .unwrap();
    assert_eq!(store.limits().max_record_bytes, 200);
    let key = Token::generate().key();
    store.create(&key, &record(None, MINUTE)).await.unwrap();
    let big = ratatoskr_core::Delta::default().set("a", vec![0; 300]);
    assert!(matches!(
        store.apply(&key, &big).await,
        Err(StoreError::Codec(CodecError::TooLarge { limit: 200, .. }))
    ));
    let mut r = record(Some(&"u".repeat(300)), MINUTE);
    r.meta.user_id = Some("u".repeat(300));
    assert!(matches!(
        store.create(&Token::generate().key(), &r).await,
        Err(StoreError::Codec(CodecError::NameTooLong { .. }))
    ));
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

#[tokio::test]
async fn pg_migrations_are_idempotent() {
    let schema = PgSchema::new().await;
    let first = schema.store().await;
    let key = Token::generate().key();
    first
        .create(&key, &record(Some("u"), MINUTE))
        .await
        .unwrap();
    let second = schema.store().await;
    assert_eq!(applied_versions_pg(&second).await, all_versions());
    assert!(second.load(&key).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_stores_starting_at_once_all_succeed() {
    let schema = PgSchema::new().await;
    let starts: Vec<_> = (0..6)
        .map(|_| {
            let options = schema.connect_options();
            tokio::spawn(async move {
                PgStore::connect_with_options(options, &SqlOptions::default()).await
            })
        })
        .collect();
    let mut stores = Vec::new();
    for s in starts {
        stores.push(s.await.unwrap().expect("every concurrent start succeeds"));
    }
    assert_eq!(applied_versions_pg(&stores[0]).await, all_versions());
}

#[tokio::test]
async fn pg_connects_by_url_into_the_schema_it_names() {
    let schema = PgSchema::new().await;
    let store = PgStore::connect(&schema.url()).await.unwrap();
    let current: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(current, schema.name);
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables
         WHERE table_schema = $1 AND table_name LIKE 'ratatoskr_%'",
    )
    .bind(&schema.name)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        n, 6,
        "sessions, attrs, revocations, audit, redis journal, migrations"
    );
    // The default statement timeout is added to the URL's own options, not instead of them.
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(timeout, "5s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_concurrent_creates_of_one_key_collide_cleanly() {
    let schema = PgSchema::new().await;
    let store = Arc::new(schema.store().await);
    let key = Token::generate().key();
    let tries: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let user = format!("user-{}", i % 2);
                store.create(&key, &record(Some(&user), MINUTE)).await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Collision) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1, "exactly one create wins");
}

/// A closed port: refused connections are retried only until the acquire timeout.
#[tokio::test]
async fn unreachable_postgres_is_a_backend_error_quickly() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let options = SqlOptions {
        acquire_timeout: Duration::from_secs(1),
        ..SqlOptions::default()
    };
    let started = Instant::now();
    let result = PgStore::connect_with(
        &format!("postgres://postgres@127.0.0.1:{port}/test"),
        &options,
    )
    .await;
    let elapsed = started.elapsed();
    match result {
        Err(StoreError::Backend { backend, .. }) => assert_eq!(backend, "postgres"),
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");

    // The default options are bounded too.
    let started = Instant::now();
    let result = connect_any(&format!("postgres://postgres@127.0.0.1:{port}/test")).await;
    assert!(matches!(result, Err(StoreError::Backend { .. })));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Both

#[tokio::test]
async fn connect_any_dispatches_on_the_scheme_and_rejects_others() {
    match connect_any("mysql://root:secret@127.0.0.1/db").await {
        Err(e @ StoreError::Backend { .. }) => {
            let text = e.to_string();
            assert!(text.contains("mysql"), "{text}");
            assert!(
                !text.contains("secret"),
                "the URL's password is not echoed: {text}"
            );
        }
        Err(e) => panic!("expected a backend error, got {e:?}"),
        Ok(_) => panic!("mysql accepted"),
    }
    let db = TempDb::new();
    assert_eq!(
        connect_any(&db.url()).await.unwrap().backend_name(),
        "sqlite"
    );
    let schema = PgSchema::new().await;
    let pg = connect_any(&schema.url()).await.unwrap();
    assert_eq!(pg.backend_name(), "postgres");
    pg.ping().await.unwrap();
    let sql = SqlStore::connect(&schema.url()).await.unwrap();
    assert_eq!(sql.backend_name(), "postgres");
}

async fn find_by_handle_finds_live_sessions(
    store: &dyn SessionStore,
    find: impl AsyncFn(&ratatoskr_core::Handle) -> Option<ratatoskr_core::SessionSummary>,
) {
    let key = Token::generate().key();
    let r = record(Some("admin-view"), MINUTE);
    store.create(&key, &r).await.unwrap();
    let found = find(&key.handle()).await.expect("found by handle");
    assert_eq!(found.key, key);
    assert_eq!(found.meta, r.meta);
    assert!(find(&Token::generate().key().handle()).await.is_none());
    store.destroy(&key).await.unwrap();
    assert!(find(&key.handle()).await.is_none());
}

#[tokio::test]
async fn find_by_handle_on_both_backends() {
    let db = TempDb::new();
    let sqlite = db.store().await;
    find_by_handle_finds_live_sessions(&sqlite, async |h| sqlite.find_by_handle(h).await.unwrap())
        .await;
    let schema = PgSchema::new().await;
    let pg = schema.store().await;
    find_by_handle_finds_live_sessions(&pg, async |h| pg.find_by_handle(h).await.unwrap()).await;
}

async fn audit_round_trips(audit: SqlAudit) {
    let base = (now_ms() / HOUR_MS - 3) * HOUR_MS; // three hours ago, on the hour
    let h1 = Token::generate().key().handle();
    let h2 = Token::generate().key().handle();
    let events = [
        AuditEvent {
            at: base + 10,
            kind: AuditKind::Created,
            handle: Some(h1),
            user_id: Some("alice".into()),
            detail: None,
        },
        AuditEvent {
            at: base + 20,
            kind: AuditKind::Created,
            handle: Some(h2),
            user_id: Some("bob".into()),
            detail: None,
        },
        AuditEvent {
            at: base + HOUR_MS + 5,
            kind: AuditKind::Rotated,
            handle: Some(h1),
            user_id: Some("alice".into()),
            detail: Some("login".into()),
        },
        AuditEvent {
            at: base + 2 * HOUR_MS,
            kind: AuditKind::CsrfRefused,
            handle: None,
            user_id: None,
            detail: Some("origin mismatch".into()),
        },
        AuditEvent {
            at: base + 2 * HOUR_MS + 1,
            kind: AuditKind::Created,
            handle: Some(h1),
            user_id: Some("alice".into()),
            detail: None,
        },
    ];
    for e in &events {
        audit.record(e.clone()).await;
    }

    let recent = audit.recent(10).await.unwrap();
    let mut newest_first = events.to_vec();
    newest_first.reverse();
    assert_eq!(recent, newest_first, "events round-trip, newest first");
    assert_eq!(audit.recent(2).await.unwrap(), newest_first[..2]);

    let alice = audit.recent_for_user("alice", 10).await.unwrap();
    assert_eq!(alice.len(), 3);
    assert!(alice.iter().all(|e| e.user_id.as_deref() == Some("alice")));

    let hourly = audit.counts_by_hour(None, base).await.unwrap();
    let c = |hour: i64, kind, count| HourlyCount {
        hour: base + hour * HOUR_MS,
        kind,
        count,
    };
    assert_eq!(
        hourly,
        [
            c(0, AuditKind::Created, 2),
            c(1, AuditKind::Rotated, 1),
            c(2, AuditKind::Created, 1),
            c(2, AuditKind::CsrfRefused, 1),
        ]
    );
    let created = audit
        .counts_by_hour(Some(AuditKind::Created), base + HOUR_MS)
        .await
        .unwrap();
    assert_eq!(created, [c(2, AuditKind::Created, 1)]);

    assert_eq!(audit.prune(base + HOUR_MS).await.unwrap(), 2);
    assert_eq!(audit.recent(10).await.unwrap().len(), 3);
}

#[tokio::test]
async fn audit_log_round_trips_and_counts_by_hour_on_sqlite() {
    let db = TempDb::new();
    let store = db.store().await;
    audit_round_trips(store.audit()).await;
    // A sink over a pool of the application's own also works (and migrates).
    let other = SqlAudit::from_sqlite_pool(store.pool().clone())
        .await
        .unwrap();
    assert_eq!(other.backend(), "sqlite");
}

#[tokio::test]
async fn audit_log_round_trips_and_counts_by_hour_on_postgres() {
    let schema = PgSchema::new().await;
    let audit = SqlAudit::from_pg_pool(schema.pool().await).await.unwrap();
    assert_eq!(audit.backend(), "postgres");
    audit_round_trips(audit).await;
}

#[tokio::test]
async fn audit_failures_are_logged_not_raised() {
    let db = TempDb::new();
    let store = db.store().await;
    let audit = store.audit();
    store.pool().close().await;
    // Must return (and not panic) although the database is gone.
    audit.record(AuditEvent::new(AuditKind::Created)).await;
    assert!(
        audit
            .try_record(&AuditEvent::new(AuditKind::Created))
            .await
            .is_err()
    );
}

async fn reaper_removes_expired_rows(store: Arc<dyn SessionStore>, rows: impl AsyncFn() -> i64) {
    let user = random_name("reaped");
    // Each short-lived session has a user of its own: a login prunes its user's expired rows,
    // and on a slow machine the first may expire before the fifth is created.
    for i in 0..5 {
        store
            .create(
                &Token::generate().key(),
                &record(Some(&format!("{user}-{i}")), Duration::from_millis(100)),
            )
            .await
            .unwrap();
    }
    let live = Token::generate().key();
    store
        .create(&live, &record(Some(&user), MINUTE))
        .await
        .unwrap();
    assert_eq!(rows().await, 6);
    let reaper = spawn_reaper(Arc::clone(&store), Duration::from_millis(100));
    let deadline = Instant::now() + Duration::from_secs(5);
    while rows().await > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reaper.abort();
    assert_eq!(rows().await, 1, "only the live session's row is left");
    assert!(store.load(&live).await.unwrap().is_some());
}

#[tokio::test]
async fn the_reaper_removes_expired_rows_on_both_backends() {
    let db = TempDb::new();
    let sqlite = db.store().await;
    let pool = sqlite.pool().clone();
    reaper_removes_expired_rows(Arc::new(sqlite), async || {
        sqlx::query_scalar("SELECT count(*) FROM ratatoskr_sessions")
            .fetch_one(&pool)
            .await
            .unwrap()
    })
    .await;

    let schema = PgSchema::new().await;
    let pg = schema.store().await;
    let pool = pg.pool().clone();
    reaper_removes_expired_rows(Arc::new(pg), async || {
        sqlx::query_scalar("SELECT count(*) FROM ratatoskr_sessions")
            .fetch_one(&pool)
            .await
            .unwrap()
    })
    .await;
}

async fn expired_rows_are_replaced_not_collided(store: &dyn SessionStore) {
    let key = Token::generate().key();
    store
        .create(&key, &record(None, Duration::from_millis(50)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // create over an expired row replaces it
    let fresh = record(Some("again"), MINUTE);
    store.create(&key, &fresh).await.unwrap();
    assert_eq!(store.load(&key).await.unwrap(), Some(fresh.clone()));
    // rotate onto a key whose row expired replaces it as well
    let stale = Token::generate().key();
    store
        .create(&stale, &record(None, Duration::from_millis(50)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut meta = fresh.meta.clone();
    meta.version += 1;
    store.rotate(&key, &stale, &meta, now_ms()).await.unwrap();
    assert_eq!(store.load(&stale).await.unwrap().unwrap().meta, meta);
    // a touch never moves last_seen backwards
    let before = store.load(&stale).await.unwrap().unwrap().last_seen;
    assert!(store.touch(&stale, &meta, before - 10_000).await.unwrap());
    assert_eq!(store.load(&stale).await.unwrap().unwrap().last_seen, before);
}

#[tokio::test]
async fn expired_rows_are_replaced_on_both_backends() {
    let db = TempDb::new();
    expired_rows_are_replaced_not_collided(&db.store().await).await;
    let schema = PgSchema::new().await;
    expired_rows_are_replaced_not_collided(&schema.store().await).await;
}

/// A write waiting on one locked row (another transaction holds it) does not hold up writes to
/// other users' sessions: each batch locks only the users and rows it names, so the next batch
/// runs on another lane meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_a_write_stuck_on_a_locked_row_does_not_hold_up_another_users_writes() {
    use ratatoskr_core::Delta;
    let schema = PgSchema::new().await;
    let store = Arc::new(schema.store().await);
    let stuck = Token::generate().key();
    let free = Token::generate().key();
    store
        .create(&stuck, &record(Some("stuck"), MINUTE))
        .await
        .unwrap();
    store
        .create(&free, &record(Some("free"), MINUTE))
        .await
        .unwrap();
    let delta = |v: &[u8]| {
        let mut d = Delta::default();
        d.set.push(("n".into(), v.to_vec()));
        d
    };

    // Another transaction holds the stuck session's row.
    let pool = schema.pool().await;
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM ratatoskr_sessions WHERE session_key = $1 FOR UPDATE")
        .bind(&stuck.as_bytes()[..])
        .execute(&mut *blocker)
        .await
        .unwrap();
    let xid: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(&mut *blocker)
        .await
        .unwrap();
    let waiting = {
        let store = Arc::clone(&store);
        let d = delta(b"1");
        tokio::spawn(async move { store.apply(&stuck, &d).await })
    };
    // Wait (with a deadline) until the store's write is queued behind the blocker's lock.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks
             WHERE locktype = 'transactionid' AND NOT granted AND transactionid::text = $1",
        )
        .bind(xid.to_string())
        .fetch_one(&pool)
        .await
        .unwrap();
        if n > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the write never waited on the locked row"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Meanwhile another user's write goes through.
    tokio::time::timeout(Duration::from_secs(5), store.apply(&free, &delta(b"2")))
        .await
        .expect("another user's write waited for the stuck one")
        .unwrap();
    assert!(
        !waiting.is_finished(),
        "the stuck write cannot have finished"
    );

    // Released, the stuck write lands too.
    blocker.commit().await.unwrap();
    waiting.await.unwrap().unwrap();
    let r = store.load(&stuck).await.unwrap().unwrap();
    assert_eq!(r.attrs.get("n").map(Vec::as_slice), Some(&b"1"[..]));
}
