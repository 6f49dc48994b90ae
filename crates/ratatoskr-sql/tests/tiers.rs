//! What the tiered store needs from the SQL stores, on both backends: the durable outage
//! journal, `touch_many` in one transaction, `restore` without a revocation check, and group
//! commit (every caller gets its own result, and its write is committed when it gets it).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{PgSchema, TempDb};
use ratatoskr_core::codec::CodecError;
use ratatoskr_core::{
    Delta, JournalTarget, OutageJournal, Record, SessionKey, SessionStore, StoreError, Token,
    now_ms,
};
use ratatoskr_sql::{GroupCommit, PgStore, SqlOptions, SqlStore, SqliteStore};
use sqlx::postgres::PgPoolOptions;

const MINUTE: Duration = Duration::from_secs(60);

fn record(user: Option<&str>) -> Record {
    Record::new(user.map(str::to_owned), now_ms(), MINUTE, 10 * MINUTE)
}

fn key() -> SessionKey {
    Token::generate().key()
}

/// A fresh database of either kind; every `store` call opens a new pool (a new instance).
enum Db {
    Sqlite(TempDb),
    Postgres(PgSchema),
}

impl Db {
    async fn sqlite() -> Self {
        Db::Sqlite(TempDb::new())
    }

    async fn postgres() -> Self {
        Db::Postgres(PgSchema::new().await)
    }

    async fn store_with(&self, group_commit: GroupCommit) -> SqlStore {
        let options = SqlOptions {
            group_commit,
            ..SqlOptions::default()
        };
        match self {
            Db::Sqlite(db) => SqlStore::Sqlite(
                SqliteStore::connect_with(&db.url(), &options)
                    .await
                    .expect("open sqlite store"),
            ),
            Db::Postgres(schema) => SqlStore::Postgres(
                PgStore::connect_with_options(schema.connect_options(), &options)
                    .await
                    .expect("open postgres store"),
            ),
        }
    }

    async fn store(&self) -> SqlStore {
        self.store_with(GroupCommit::default()).await
    }

    /// A store with these options (a new instance).
    async fn store_opts(&self, options: &SqlOptions) -> SqlStore {
        match self {
            Db::Sqlite(db) => SqlStore::Sqlite(
                SqliteStore::connect_with(&db.url(), options)
                    .await
                    .expect("open sqlite store"),
            ),
            Db::Postgres(schema) => SqlStore::Postgres(
                PgStore::connect_with_options(schema.connect_options(), options)
                    .await
                    .expect("open postgres store"),
            ),
        }
    }

    /// Another connection holding what a delta on `key` needs (SQLite: the write lock;
    /// PostgreSQL: the session's row), until [`Held::release`].
    async fn hold(&self, store: &SqlStore, key: &SessionKey) -> Held {
        match store {
            SqlStore::Sqlite(s) => {
                let mut c = s.pool().acquire().await.unwrap();
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut *c)
                    .await
                    .unwrap();
                Held::Sqlite(c)
            }
            SqlStore::Postgres(s) => {
                let mut c = s.pool().acquire().await.unwrap();
                sqlx::raw_sql("BEGIN").execute(&mut *c).await.unwrap();
                sqlx::query("SELECT 1 FROM ratatoskr_sessions WHERE session_key = $1 FOR UPDATE")
                    .bind(&key.as_bytes()[..])
                    .execute(&mut *c)
                    .await
                    .unwrap();
                Held::Postgres(c)
            }
        }
    }

    /// Run the writes `spawn` starts as one batch of a one-lane store: a first delta (on
    /// `blocker`, a live session) is made alone and stuck behind [`Db::hold`] while the writes
    /// queue; once it is let go the lane takes them all together. Checked with the store's
    /// write counters: two transactions, the stuck delta's and the batch's.
    async fn in_one_batch<T: Send + 'static>(
        &self,
        sql: &SqlStore,
        blocker: SessionKey,
        spawn: impl FnOnce() -> Vec<tokio::task::JoinHandle<T>>,
    ) -> Vec<T> {
        let store = sql.store();
        let before = write_stats(sql);
        let held = self.hold(sql, &blocker).await;
        let first = tokio::spawn(async move {
            store
                .apply(&blocker, &Delta::default().set("first", vec![1]))
                .await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let calls = spawn();
        let n = calls.len() as u64;
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.release().await;
        first.await.unwrap().expect("the stuck delta lands");
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.unwrap());
        }
        let after = write_stats(sql);
        assert_eq!(
            (
                after.transactions - before.transactions,
                after.operations - before.operations
            ),
            (2, n + 1),
            "the writes went as one batch"
        );
        out
    }

    /// Run a statement (backend-specific SQL) on the store's pool.
    async fn exec(&self, store: &SqlStore, sqlite: &str, postgres: &str) {
        match store {
            SqlStore::Sqlite(s) => {
                sqlx::raw_sql(sqlite).execute(s.pool()).await.expect(sqlite);
            }
            SqlStore::Postgres(s) => {
                sqlx::raw_sql(postgres)
                    .execute(s.pool())
                    .await
                    .expect(postgres);
            }
        }
    }

    /// `last_seen` and `expires_at` of a row, whether live or not.
    async fn times(&self, store: &SqlStore, key: &SessionKey) -> Option<(i64, i64)> {
        match store {
            SqlStore::Sqlite(s) => sqlx::query_as(
                "SELECT last_seen, expires_at FROM ratatoskr_sessions WHERE session_key = ?1",
            )
            .bind(&key.as_bytes()[..])
            .fetch_optional(s.pool())
            .await
            .unwrap(),
            SqlStore::Postgres(s) => sqlx::query_as(
                "SELECT last_seen, expires_at FROM ratatoskr_sessions WHERE session_key = $1",
            )
            .bind(&key.as_bytes()[..])
            .fetch_optional(s.pool())
            .await
            .unwrap(),
        }
    }

    /// Make a session's row expired (as if its idle deadline passed).
    async fn expire(&self, store: &SqlStore, key: &SessionKey) {
        match store {
            SqlStore::Sqlite(s) => {
                sqlx::query("UPDATE ratatoskr_sessions SET expires_at = 1 WHERE session_key = ?1")
                    .bind(&key.as_bytes()[..])
                    .execute(s.pool())
                    .await
                    .unwrap();
            }
            SqlStore::Postgres(s) => {
                sqlx::query("UPDATE ratatoskr_sessions SET expires_at = 1 WHERE session_key = $1")
                    .bind(&key.as_bytes()[..])
                    .execute(s.pool())
                    .await
                    .unwrap();
            }
        }
    }
}

/// What [`Db::hold`] holds.
enum Held {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

impl Held {
    async fn release(self) {
        match self {
            Held::Sqlite(mut c) => {
                sqlx::raw_sql("COMMIT").execute(&mut *c).await.unwrap();
            }
            Held::Postgres(mut c) => {
                sqlx::raw_sql("COMMIT").execute(&mut *c).await.unwrap();
            }
        }
    }
}

fn write_stats(sql: &SqlStore) -> ratatoskr_sql::WriteStats {
    match sql {
        SqlStore::Sqlite(s) => s.write_stats(),
        SqlStore::Postgres(s) => s.write_stats(),
    }
}

/// One lane, so that writes queued behind a busy lane form one batch.
fn one_lane() -> SqlOptions {
    SqlOptions {
        group_commit: GroupCommit {
            max_batch: 64,
            lanes: 1,
        },
        ..SqlOptions::default()
    }
}

/// Declare one test per backend for an `async fn(Db)`.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Db::postgres().await).await;
                }
            )*
        }
    };
}

both!(
    journal_appends_in_order_and_acknowledges,
    journal_is_shared_by_instances,
    journal_skips_nothing_written_by_either_group_commit_mode,
    touch_many_is_one_transaction_and_never_moves_backwards,
    touch_many_skips_missing_and_expired_sessions,
    restore_writes_only_where_the_key_is_free,
    restore_ignores_revocations_that_create_respects,
    two_hundred_concurrent_deltas_each_get_their_own_answer,
    mixed_concurrent_writes_each_get_their_own_answer,
    hot_sessions_in_parallel_batches_do_not_deadlock,
    a_write_the_database_rejects_fails_alone,
    a_write_is_committed_when_its_caller_hears_of_it,
    the_journal_table_comes_with_an_upgrade,
    deltas_in_one_batch_are_refused_or_made_each_on_its_own,
    writes_of_every_kind_in_one_batch_are_answered_each_on_its_own,
    concurrent_deltas_on_one_session_lose_no_update_and_respect_the_limit,
    rotations_in_one_batch_are_a_run_of_fixed_statements,
);

// ---------------------------------------------------------------------------------------------
// The outage journal

async fn journal_appends_in_order_and_acknowledges(db: Db) {
    let sql = db.store().await;
    let journal = sql.journal();
    assert_eq!(journal.pending_count().await.unwrap(), 0);
    assert!(journal.pending(10).await.unwrap().is_empty());
    journal.append(&[]).await.unwrap();
    journal.acknowledge(&[]).await.unwrap();

    let (a, b) = (key(), key());
    let before = now_ms();
    journal
        .append(&[
            JournalTarget::Session(a),
            JournalTarget::User("alice".into()),
            JournalTarget::Session(b),
        ])
        .await
        .unwrap();
    journal
        .append(&[JournalTarget::User("bob".into())])
        .await
        .unwrap();
    assert_eq!(journal.pending_count().await.unwrap(), 4);

    let all = journal.pending(100).await.unwrap();
    let targets: Vec<_> = all.iter().map(|e| e.target.clone()).collect();
    assert_eq!(
        targets,
        [
            JournalTarget::Session(a),
            JournalTarget::User("alice".into()),
            JournalTarget::Session(b),
            JournalTarget::User("bob".into()),
        ],
        "oldest first, in the order appended"
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "ids grow");
    assert!(all.iter().all(|e| e.at >= before && e.at <= now_ms()));

    let first_two = journal.pending(2).await.unwrap();
    assert_eq!(first_two, all[..2]);

    journal
        .acknowledge(&[first_two[0].id, first_two[1].id, 999_999])
        .await
        .unwrap();
    assert_eq!(journal.pending_count().await.unwrap(), 2);
    assert_eq!(journal.pending(100).await.unwrap(), all[2..]);
    // Acknowledging twice (two replayers) is harmless.
    journal.acknowledge(&[first_two[0].id]).await.unwrap();
    assert_eq!(journal.pending_count().await.unwrap(), 2);

    // Ids are never reused, even after the newest entries were acknowledged.
    let last = all[3].id;
    journal.acknowledge(&[all[2].id, last]).await.unwrap();
    journal
        .append(&[JournalTarget::User("carol".into())])
        .await
        .unwrap();
    let again = journal.pending(10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].id > last, "{} > {last}", again[0].id);
}

async fn journal_is_shared_by_instances(db: Db) {
    // Two instances: two pools, two writers.
    let one = db.store().await;
    let two = db.store().await;
    let (j1, j2): (Arc<dyn OutageJournal>, Arc<dyn OutageJournal>) =
        (Arc::new(one.journal()), Arc::new(two.journal()));
    let k = key();
    j1.append(&[JournalTarget::Session(k)]).await.unwrap();
    j2.append(&[JournalTarget::User("u".into())]).await.unwrap();
    for j in [&j1, &j2] {
        assert_eq!(j.pending_count().await.unwrap(), 2);
        let seen: Vec<_> = j
            .pending(10)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.target)
            .collect();
        assert_eq!(
            seen,
            [JournalTarget::Session(k), JournalTarget::User("u".into())]
        );
    }
    // What one instance replayed is gone for the other.
    let ids: Vec<i64> = j2.pending(1).await.unwrap().iter().map(|e| e.id).collect();
    j2.acknowledge(&ids).await.unwrap();
    assert_eq!(j1.pending_count().await.unwrap(), 1);
    assert_eq!(
        j1.pending(10).await.unwrap()[0].target,
        JournalTarget::User("u".into())
    );

    // Appends racing from both instances all land, each exactly once.
    let appends: Vec<_> = (0..40)
        .map(|i| {
            let j = if i % 2 == 0 { j1.clone() } else { j2.clone() };
            tokio::spawn(
                async move { j.append(&[JournalTarget::User(format!("racer-{i}"))]).await },
            )
        })
        .collect();
    for a in appends {
        a.await.unwrap().unwrap();
    }
    assert_eq!(j2.pending_count().await.unwrap(), 41);
    let users: std::collections::BTreeSet<_> = j1
        .pending(100)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.target {
            JournalTarget::User(u) if u.starts_with("racer-") => Some(u),
            _ => None,
        })
        .collect();
    assert_eq!(users.len(), 40);
}

async fn journal_skips_nothing_written_by_either_group_commit_mode(db: Db) {
    let grouped = db.store().await.journal();
    let single = db.store_with(GroupCommit::off()).await.journal();
    grouped
        .append(&[JournalTarget::User("a".into())])
        .await
        .unwrap();
    single
        .append(&[JournalTarget::User("b".into())])
        .await
        .unwrap();
    let ids: Vec<_> = grouped
        .pending(10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids.len(), 2);
    single.acknowledge(&ids).await.unwrap();
    assert_eq!(grouped.pending_count().await.unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------
// touch_many

async fn touch_many_is_one_transaction_and_never_moves_backwards(db: Db) {
    // Group commit off, so the counters show exactly what touch_many itself did.
    let sql = db.store_with(GroupCommit::off()).await;
    let store = sql.store();
    let t0 = now_ms();
    let mut keys = Vec::new();
    for _ in 0..5 {
        let k = key();
        store.create(&k, &record(Some("u"))).await.unwrap();
        keys.push(k);
    }
    let meta = record(None).meta;
    // Session 0 was already seen later than the touch that arrives now.
    store.touch(&keys[0], &meta, t0 + 5_000).await.unwrap();
    let before = sql.write_stats();
    let mut batch: Vec<_> = keys
        .iter()
        .map(|k| (*k, meta.clone(), t0 + 1_000))
        .collect();
    // A key twice: the later time wins, whatever the order.
    batch.push((keys[1], meta.clone(), t0 + 2_000));
    batch.push((keys[1], meta.clone(), t0 + 1_500));
    store.touch_many(&batch).await.unwrap();
    let after = sql.write_stats();
    assert_eq!(
        after.transactions - before.transactions,
        1,
        "all the touches in one transaction"
    );

    let (seen0, _) = db.times(&sql, &keys[0]).await.unwrap();
    assert_eq!(seen0, t0 + 5_000, "last_seen never moves backwards");
    let (seen1, exp1) = db.times(&sql, &keys[1]).await.unwrap();
    assert_eq!(seen1, t0 + 2_000);
    let record1 = store.load(&keys[1]).await.unwrap().unwrap();
    assert_eq!(exp1, record1.meta.idle_deadline(t0 + 2_000));
    for k in &keys[2..] {
        assert_eq!(db.times(&sql, k).await.unwrap().0, t0 + 1_000);
    }
    // Never past the absolute deadline.
    let far = t0 + 1_000_000_000;
    store
        .touch_many(&[(keys[2], meta.clone(), far)])
        .await
        .unwrap();
    let r2 = store.load(&keys[2]).await.unwrap().unwrap();
    assert_eq!(
        db.times(&sql, &keys[2]).await.unwrap().1,
        r2.meta.absolute_deadline
    );
    // Nothing to do: no transaction.
    let before = sql.write_stats();
    store.touch_many(&[]).await.unwrap();
    assert_eq!(sql.write_stats(), before);
}

async fn touch_many_skips_missing_and_expired_sessions(db: Db) {
    let sql = db.store().await;
    let store = sql.store();
    let (live, expired, missing) = (key(), key(), key());
    store.create(&live, &record(Some("u"))).await.unwrap();
    store.create(&expired, &record(Some("u"))).await.unwrap();
    db.expire(&sql, &expired).await;
    let meta = record(None).meta;
    let at = now_ms() + 3_000;
    store
        .touch_many(&[
            (missing, meta.clone(), at),
            (expired, meta.clone(), at),
            (live, meta.clone(), at),
        ])
        .await
        .unwrap();
    assert_eq!(db.times(&sql, &live).await.unwrap().0, at);
    assert!(db.times(&sql, &missing).await.is_none(), "nothing created");
    assert_eq!(
        db.times(&sql, &expired).await.unwrap().1,
        1,
        "an expired session is not revived"
    );
    assert!(store.load(&expired).await.unwrap().is_none());
    assert!(store.load(&missing).await.unwrap().is_none());
    // A large batch (several statements' worth on PostgreSQL) goes through too.
    let mut many = Vec::new();
    for _ in 0..50 {
        let k = key();
        store.create(&k, &record(None)).await.unwrap();
        many.push(k);
    }
    let batch: Vec<_> = (0..5_000)
        .map(|i| {
            let k = if i % 100 == 0 { many[i / 100] } else { key() };
            (k, meta.clone(), at + 7)
        })
        .collect();
    store.touch_many(&batch).await.unwrap();
    for k in &many {
        assert_eq!(db.times(&sql, k).await.unwrap().0, at + 7);
    }
    assert_eq!(store.count().await.unwrap(), 51);
}

// ---------------------------------------------------------------------------------------------
// restore

async fn restore_writes_only_where_the_key_is_free(db: Db) {
    let sql = db.store().await;
    let store = sql.store();
    // Absent: written, with its attributes and times.
    let k = key();
    let mut r = record(Some("u"));
    r.attrs.insert("theme".into(), b"dark".to_vec());
    r.last_seen += 10;
    assert!(store.restore(&k, &r).await.unwrap());
    assert_eq!(store.load(&k).await.unwrap().unwrap(), r);
    assert_eq!(store.list_user("u").await.unwrap().len(), 1);

    // Present: not written, the stored record is untouched.
    let mut other = record(Some("v"));
    other.attrs.insert("theme".into(), b"light".to_vec());
    assert!(!store.restore(&k, &other).await.unwrap());
    assert_eq!(store.load(&k).await.unwrap().unwrap(), r);

    // An expired row under the key: replaced.
    db.expire(&sql, &k).await;
    assert!(store.restore(&k, &other).await.unwrap());
    assert_eq!(store.load(&k).await.unwrap().unwrap(), other);
    assert!(store.list_user("u").await.unwrap().is_empty());

    // A record that has itself expired is not written.
    let stale = Record::new(None, now_ms() - 120_000, MINUTE, 10 * MINUTE);
    let k2 = key();
    assert!(!store.restore(&k2, &stale).await.unwrap());
    assert!(db.times(&sql, &k2).await.is_none());

    // Over the size limit: a typed error, nothing written.
    let mut big = record(None);
    big.attrs.insert("blob".into(), vec![0; 70_000]);
    let k3 = key();
    assert!(matches!(
        store.restore(&k3, &big).await,
        Err(StoreError::Codec(CodecError::TooLarge { .. }))
    ));
    assert!(db.times(&sql, &k3).await.is_none());
}

async fn restore_ignores_revocations_that_create_respects(db: Db) {
    let store = db.store().await.store();
    // A record created (built) before the user's revoke-all.
    let r = record(Some("victim"));
    tokio::time::sleep(Duration::from_millis(3)).await;
    store.destroy_user("victim", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    let k = key();
    assert!(
        matches!(store.create(&k, &r).await, Err(StoreError::Revoked)),
        "create refuses a session begun before the revoke-all"
    );
    assert!(store.load(&k).await.unwrap().is_none());
    assert!(
        store.restore(&k, &r).await.unwrap(),
        "restore writes it: the copy is authoritative"
    );
    assert_eq!(store.load(&k).await.unwrap().unwrap(), r);
    assert_eq!(store.list_user("victim").await.unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Group commit

/// 200 deltas at once through the grouped path: 150 on live sessions (all land), 25 on
/// sessions that were destroyed or never existed (`NotFound`), 25 too large (`TooLarge`, and
/// their sessions keep what they had).
async fn two_hundred_concurrent_deltas_each_get_their_own_answer(db: Db) {
    let sql = db.store().await;
    assert!(sql_group_commit(&sql).is_on());
    let store = sql.store();
    let mut live = Vec::new();
    for _ in 0..50 {
        let k = key();
        store.create(&k, &record(Some("u"))).await.unwrap();
        live.push(k);
    }
    let gone = key();
    store.create(&gone, &record(None)).await.unwrap();
    store.destroy(&gone).await.unwrap();
    let before = sql.write_stats();

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Expect {
        Lands,
        NotFound,
        TooLarge,
    }
    let calls: Vec<_> = (0..200usize)
        .map(|i| {
            let (k, delta, expect) = match i % 8 {
                0 => (
                    if i % 16 == 0 { gone } else { key() },
                    Delta::default().set("x", b"1".to_vec()),
                    Expect::NotFound,
                ),
                1 => (
                    live[i % 50],
                    Delta::default().set(format!("big{i}"), vec![0; 70_000]),
                    Expect::TooLarge,
                ),
                _ => (
                    live[i % 50],
                    Delta::default().set(format!("a{i}"), i.to_le_bytes().to_vec()),
                    Expect::Lands,
                ),
            };
            let s = store.clone();
            tokio::spawn(async move { (i, k, expect, s.apply(&k, &delta).await) })
        })
        .collect();
    let mut landed: BTreeMap<SessionKey, Vec<usize>> = BTreeMap::new();
    for c in calls {
        let (i, k, expect, result) = c.await.unwrap();
        match (expect, result) {
            (Expect::Lands, Ok(())) => landed.entry(k).or_default().push(i),
            (Expect::NotFound, Err(StoreError::NotFound)) => {}
            (Expect::TooLarge, Err(StoreError::Codec(CodecError::TooLarge { .. }))) => {}
            (expect, got) => panic!("delta {i}: expected {expect:?}, got {got:?}"),
        }
    }
    assert_eq!(landed.values().map(Vec::len).sum::<usize>(), 150);
    for k in &live {
        let r = store.load(k).await.unwrap().unwrap();
        let mut want: Vec<String> = landed[k].iter().map(|i| format!("a{i}")).collect();
        want.sort();
        let have: Vec<String> = r.attrs.keys().cloned().collect();
        assert_eq!(have, want, "exactly the deltas that landed");
        for i in &landed[k] {
            assert_eq!(r.attrs[&format!("a{i}")], i.to_le_bytes());
        }
    }
    assert!(
        store.load(&gone).await.unwrap().is_none(),
        "no resurrection"
    );
    let after = sql.write_stats();
    let (tx, ops) = (
        after.transactions - before.transactions,
        after.operations - before.operations,
    );
    assert_eq!(ops, 200, "every delta went through the writer");
    assert!(tx < ops, "deltas shared transactions: {tx} for {ops}");
}

fn sql_group_commit(sql: &SqlStore) -> GroupCommit {
    match sql {
        SqlStore::Sqlite(s) => s.group_commit(),
        SqlStore::Postgres(s) => s.group_commit(),
    }
}

/// Creates, collisions, revoked creates, rotations, deltas, touches and destroys at once, so
/// batches mix every kind of write; each caller gets the answer its write alone would get.
async fn mixed_concurrent_writes_each_get_their_own_answer(db: Db) {
    let sql = db.store().await;
    let store = sql.store();
    let taken = key();
    store.create(&taken, &record(Some("a"))).await.unwrap();
    let early = record(Some("revoked"));
    tokio::time::sleep(Duration::from_millis(3)).await;
    store.destroy_user("revoked", None).await.unwrap();
    let mut sessions = Vec::new();
    for i in 0..30 {
        let k = key();
        store
            .create(&k, &record(Some(&format!("user{}", i % 3))))
            .await
            .unwrap();
        sessions.push(k);
    }
    let mut calls = Vec::new();
    for (i, k) in sessions.iter().copied().enumerate() {
        let s = store.clone();
        let early = early.clone();
        calls.push(tokio::spawn(async move {
            let meta = record(Some(&format!("user{}", i % 3))).meta;
            let outcome = match i % 6 {
                0 => {
                    let new = key();
                    s.rotate(&k, &new, &meta, now_ms())
                        .await
                        .map(|()| "rotated")
                }
                1 => s.destroy(&k).await.map(|existed| {
                    assert!(existed);
                    "destroyed"
                }),
                2 => s.touch(&k, &meta, now_ms()).await.map(|existed| {
                    assert!(existed);
                    "touched"
                }),
                3 => s
                    .create(&key(), &record(Some(&format!("user{}", i % 3))))
                    .await
                    .map(|()| "created"),
                4 => match s.create(&key(), &early).await {
                    Err(StoreError::Revoked) => Ok("revoked"),
                    other => panic!("a create begun before the revoke-all: {other:?}"),
                },
                _ => match s.create(&taken, &record(Some("a"))).await {
                    Err(StoreError::Collision) => Ok("collision"),
                    other => panic!("a create onto a taken key: {other:?}"),
                },
            };
            let delta = Delta::default().set("after", b"1".to_vec());
            let applied = s.apply(&k, &delta).await;
            match (outcome.unwrap(), applied) {
                ("rotated" | "destroyed", Err(StoreError::NotFound)) => {}
                ("rotated" | "destroyed", other) => panic!("delta on a dead key: {other:?}"),
                (_, Ok(())) => {}
                (what, other) => panic!("delta after {what}: {other:?}"),
            }
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
    // 30 created + 5 more, minus 5 destroyed; rotations keep the count.
    assert_eq!(store.count().await.unwrap(), 1 + 30 + 5 - 5);
    assert!(store.list_user("revoked").await.unwrap().is_empty());
}

/// Parallel deltas on a few hot sessions, from two instances with several lanes each: batches
/// on different connections name the same rows in different orders and must queue, not
/// deadlock (a deadlock would cost PostgreSQL's `deadlock_timeout`, a second, each time).
async fn hot_sessions_in_parallel_batches_do_not_deadlock(db: Db) {
    let config = GroupCommit {
        max_batch: 8,
        lanes: 4,
    };
    let one = db.store_with(config.clone()).await.store();
    let two = db.store_with(config).await.store();
    let hot: Vec<SessionKey> = (0..4).map(|_| key()).collect();
    for k in &hot {
        one.create(k, &record(Some("hot"))).await.unwrap();
    }
    let started = Instant::now();
    let calls: Vec<_> = (0..240usize)
        .map(|i| {
            let s = if i % 2 == 0 { one.clone() } else { two.clone() };
            // Each task writes two hot sessions in an order of its own, creating and rotating
            // others of the same user meanwhile (user locks beside row locks).
            let (a, b) = (hot[i % 4], hot[(i / 4 + 1 + i) % 4]);
            tokio::spawn(async move {
                s.apply(&a, &Delta::default().set(format!("k{i}"), vec![1]))
                    .await?;
                if i % 10 == 0 {
                    let fresh = key();
                    s.create(&fresh, &record(Some("hot"))).await?;
                    s.rotate(&fresh, &key(), &record(Some("hot")).meta, now_ms())
                        .await?;
                }
                s.apply(&b, &Delta::default().set(format!("j{i}"), vec![2]))
                    .await
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap().expect("every write lands");
    }
    let took = started.elapsed();
    let total: usize = {
        let mut n = 0;
        for k in &hot {
            n += one.load(k).await.unwrap().unwrap().attrs.len();
        }
        n
    };
    assert_eq!(total, 480);
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

/// A write the database rejects (here: a trigger refuses one attribute name) fails alone: the
/// batch it was in is run again write by write, and every other caller succeeds.
async fn a_write_the_database_rejects_fails_alone(db: Db) {
    let sql = db.store().await;
    db.exec(
        &sql,
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON ratatoskr_session_attrs
         WHEN NEW.name = 'boom' BEGIN SELECT RAISE(ABORT, 'boom refused'); END;",
        "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.name = 'boom' THEN RAISE EXCEPTION 'boom refused'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER refuse_boom BEFORE INSERT ON ratatoskr_session_attrs
         FOR EACH ROW EXECUTE FUNCTION refuse_boom();",
    )
    .await;
    let store = sql.store();
    let mut keys = Vec::new();
    for _ in 0..20 {
        let k = key();
        store.create(&k, &record(None)).await.unwrap();
        keys.push(k);
    }
    for _round in 0..3 {
        let calls: Vec<_> = (0..60usize)
            .map(|i| {
                let s = store.clone();
                let k = keys[i % 20];
                let name = if i == 17 {
                    "boom".to_owned()
                } else {
                    format!("n{i}")
                };
                tokio::spawn(
                    async move { (i, s.apply(&k, &Delta::default().set(name, vec![1])).await) },
                )
            })
            .collect();
        for c in calls {
            match c.await.unwrap() {
                (17, Err(StoreError::Backend { message, .. })) => {
                    assert!(message.contains("boom refused"), "{message}")
                }
                (17, other) => panic!("the rejected write: {other:?}"),
                (i, r) => r.unwrap_or_else(|e| panic!("write {i} failed: {e}")),
            }
        }
    }
    for (j, k) in keys.iter().enumerate() {
        let r = store.load(k).await.unwrap().unwrap();
        let expect = if j == 17 { 2 } else { 3 };
        assert_eq!(r.attrs.len(), expect, "session {j}");
        assert!(!r.attrs.contains_key("boom"));
    }
}

/// When `apply` returns, another instance (another pool) reads the change.
async fn a_write_is_committed_when_its_caller_hears_of_it(db: Db) {
    let writer = db.store().await.store();
    let reader = db.store().await.store();
    let k = key();
    writer.create(&k, &record(None)).await.unwrap();
    let calls: Vec<_> = (0..100usize)
        .map(|i| {
            let (w, r) = (writer.clone(), reader.clone());
            tokio::spawn(async move {
                let name = format!("c{i}");
                w.apply(&k, &Delta::default().set(name.clone(), vec![i as u8]))
                    .await
                    .unwrap();
                let seen = r.load(&k).await.unwrap().unwrap();
                assert_eq!(seen.attrs.get(&name), Some(&vec![i as u8]), "write {i}");
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    // The same for a create, a rotation and a destroy.
    let fresh = key();
    writer.create(&fresh, &record(Some("u"))).await.unwrap();
    assert!(reader.load(&fresh).await.unwrap().is_some());
    let rotated = key();
    writer
        .rotate(&fresh, &rotated, &record(Some("u")).meta, now_ms())
        .await
        .unwrap();
    assert!(reader.load(&fresh).await.unwrap().is_none());
    assert!(reader.load(&rotated).await.unwrap().is_some());
    assert!(writer.destroy(&rotated).await.unwrap());
    assert!(reader.load(&rotated).await.unwrap().is_none());
}

/// A database at schema version 2 (no journal table) gets it on the next connect.
async fn the_journal_table_comes_with_an_upgrade(db: Db) {
    let sql = db.store().await;
    db.exec(
        &sql,
        "DROP TABLE ratatoskr_redis_journal; DELETE FROM ratatoskr_schema_migrations WHERE version = 3;",
        "DROP TABLE ratatoskr_redis_journal; DELETE FROM ratatoskr_schema_migrations WHERE version = 3;",
    )
    .await;
    drop(sql);
    let sql = db.store().await;
    let journal = sql.journal();
    journal
        .append(&[JournalTarget::User("u".into())])
        .await
        .unwrap();
    assert_eq!(journal.pending_count().await.unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// Backend-specific

/// The journal's CHECK constraints refuse malformed rows, and entries of kinds this build does
/// not know (a newer version's) are neither returned nor counted.
#[tokio::test]
async fn postgres_journal_refuses_malformed_rows_and_leaves_unknown_kinds() {
    let schema = PgSchema::new().await;
    let store = schema.store().await;
    let pool = store.pool();
    for bad in [
        "INSERT INTO ratatoskr_redis_journal (at, kind) VALUES (1, 'session')",
        "INSERT INTO ratatoskr_redis_journal (at, kind, session_key) VALUES (1, 'session', '\\x01')",
        "INSERT INTO ratatoskr_redis_journal (at, kind) VALUES (1, 'user')",
    ] {
        assert!(sqlx::query(bad).execute(pool).await.is_err(), "{bad}");
    }
    sqlx::query("INSERT INTO ratatoskr_redis_journal (at, kind) VALUES (1, 'everything')")
        .execute(pool)
        .await
        .unwrap();
    let journal = store.journal();
    assert_eq!(journal.pending_count().await.unwrap(), 0);
    assert!(journal.pending(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_journal_refuses_malformed_rows() {
    let db = TempDb::new();
    let store = db.store().await;
    for bad in [
        "INSERT INTO ratatoskr_redis_journal (at, kind) VALUES (1, 'session')",
        "INSERT INTO ratatoskr_redis_journal (at, kind, session_key) VALUES (1, 'session', X'01')",
        "INSERT INTO ratatoskr_redis_journal (at, kind) VALUES (1, 'user')",
    ] {
        assert!(
            sqlx::query(bad).execute(store.pool()).await.is_err(),
            "{bad}"
        );
    }
}

/// `SqlStore::journal` works for a store chosen by URL.
#[tokio::test]
async fn sql_store_by_url_has_a_journal() {
    let db = TempDb::new();
    let sql = SqlStore::connect(&db.url()).await.unwrap();
    let journal: Arc<dyn OutageJournal> = Arc::new(sql.journal());
    journal
        .append(&[JournalTarget::Session(key())])
        .await
        .unwrap();
    assert_eq!(journal.pending_count().await.unwrap(), 1);
}

/// A statement that waits longer than `pg_statement_timeout` (here: for a row another
/// connection holds locked) fails fast with a backend error instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_statement_timeout_fails_stuck_writes_fast() {
    let schema = PgSchema::new().await;
    let options = SqlOptions {
        pg_statement_timeout: Some(Duration::from_millis(300)),
        group_commit: GroupCommit::off(),
        ..SqlOptions::default()
    };
    let store = PgStore::connect_with_options(schema.connect_options(), &options)
        .await
        .unwrap();
    let k = key();
    store.create(&k, &record(None)).await.unwrap();
    // Another client holds the session's row.
    let other = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(schema.connect_options())
        .await
        .unwrap();
    let mut tx = other.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM ratatoskr_sessions WHERE session_key = $1 FOR UPDATE")
        .bind(&k.as_bytes()[..])
        .execute(&mut *tx)
        .await
        .unwrap();
    let started = Instant::now();
    let result = store
        .apply(&k, &Delta::default().set("x", b"1".to_vec()))
        .await;
    let took = started.elapsed();
    match result {
        Err(StoreError::Backend { message, .. }) => {
            assert!(message.contains("statement timeout"), "{message}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(took < Duration::from_secs(3), "took {took:?}");
    tx.rollback().await.unwrap();
    // Once the row is free, the same write goes through.
    store
        .apply(&k, &Delta::default().set("x", b"1".to_vec()))
        .await
        .unwrap();
    // The setting reached the session.
    let shown: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(shown, "300ms");
    // `None` leaves the server's default alone.
    let plain = PgStore::connect_with_options(
        schema.connect_options(),
        &SqlOptions {
            pg_statement_timeout: None,
            ..SqlOptions::default()
        },
    )
    .await
    .unwrap();
    let shown: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(plain.pool())
        .await
        .unwrap();
    assert_eq!(shown, "0");
}

// ---------------------------------------------------------------------------------------------
// Runs: the writes of one kind in a batch are made by one statement per step

/// One batch of deltas (made as one run): on a live session, on a destroyed one, on one that
/// never existed, too large alone, too large only after an earlier delta of the same batch,
/// and several on one session. Each gets the answer it would get alone, in queue order, and
/// exactly the accepted ones are stored.
async fn deltas_in_one_batch_are_refused_or_made_each_on_its_own(db: Db) {
    let sql = db.store_opts(&one_lane()).await;
    let store = sql.store();
    let blocker = key();
    let (live, full, gone) = (key(), key(), key());
    for k in [blocker, live, full, gone] {
        store.create(&k, &record(Some("u"))).await.unwrap();
    }
    store.destroy(&gone).await.unwrap();
    // The default limit is 64 KiB: 40 KB fits once, not twice.
    let steps: Vec<(SessionKey, Delta, &str)> = vec![
        (live, Delta::default().set("a", b"1".to_vec()), "lands"),
        (gone, Delta::default().set("x", b"1".to_vec()), "not found"),
        (
            full,
            Delta::default().set("big", vec![0; 70_000]),
            "too large",
        ),
        (key(), Delta::default().set("x", b"1".to_vec()), "not found"),
        (full, Delta::default().set("h1", vec![1; 40_000]), "lands"),
        (
            live,
            Delta::default().set("b", b"2".to_vec()).remove("a"),
            "lands",
        ),
        (
            full,
            Delta::default().set("h2", vec![2; 40_000]),
            "too large",
        ),
        (full, Delta::default().set("h1", vec![3; 20_000]), "lands"),
    ];
    let store2 = store.clone();
    let results = db
        .in_one_batch(&sql, blocker, move || {
            let mut calls = Vec::new();
            for (i, (k, delta, expect)) in steps.into_iter().enumerate() {
                let s = store2.clone();
                calls.push(tokio::spawn(async move {
                    (i, expect, s.apply(&k, &delta).await)
                }));
                // Queue order is the order of the steps (each answer depends on the earlier).
                std::thread::sleep(Duration::from_millis(5));
            }
            calls
        })
        .await;
    for (i, expect, result) in results {
        match (expect, result) {
            ("lands", Ok(())) => {}
            ("not found", Err(StoreError::NotFound)) => {}
            ("too large", Err(StoreError::Codec(CodecError::TooLarge { .. }))) => {}
            (expect, got) => panic!("delta {i}: expected {expect}, got {got:?}"),
        }
    }
    let live = store.load(&live).await.unwrap().unwrap();
    assert_eq!(live.attrs.keys().collect::<Vec<_>>(), ["b"]);
    let full = store.load(&full).await.unwrap().unwrap();
    assert_eq!(full.attrs.keys().collect::<Vec<_>>(), ["h1"]);
    assert_eq!(full.attrs["h1"], vec![3; 20_000]);
    assert!(
        store.load(&gone).await.unwrap().is_none(),
        "no resurrection"
    );
}

/// One batch with every kind of write, several of each (so each kind is a run), refusals
/// beside successes: touches of a live, an expired and a missing session (true, false, false);
/// destroys of a live session, a missing one, and the same live one twice (one true); creates
/// that land, onto a taken key, for a revoked user, for a revoked user onto a taken key, and
/// twice with one key (one lands); a rotation. Every answer is the one alone would give.
async fn writes_of_every_kind_in_one_batch_are_answered_each_on_its_own(db: Db) {
    let sql = db.store_opts(&one_lane()).await;
    let store = sql.store();
    let blocker = key();
    let [touched, expired, destroyed, twice, taken, rotated] = [(); 6].map(|_| key());
    for k in [blocker, touched, destroyed, twice, taken, rotated] {
        store.create(&k, &record(Some("u"))).await.unwrap();
    }
    // Anonymous: the creates of user "u" in the batch delete that user's expired rows.
    store.create(&expired, &record(None)).await.unwrap();
    db.expire(&sql, &expired).await;
    let early = record(Some("revoked"));
    tokio::time::sleep(Duration::from_millis(3)).await;
    store.destroy_user("revoked", None).await.unwrap();
    let (fresh, dup, new_key) = (key(), key(), key());
    let before = db.times(&sql, &touched).await.unwrap();
    let at = now_ms() + 5_000;

    type Call = std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>;
    let s = store.clone();
    let meta = record(Some("u")).meta;
    let early2 = early.clone();
    let calls: Vec<(&str, Call)> = vec![
        ("touch live", {
            let (s, m) = (s.clone(), meta.clone());
            Box::pin(async move { format!("{:?}", s.touch(&touched, &m, at).await) })
        }),
        ("touch expired", {
            let (s, m) = (s.clone(), meta.clone());
            Box::pin(async move { format!("{:?}", s.touch(&expired, &m, at).await) })
        }),
        ("touch missing", {
            let (s, m) = (s.clone(), meta.clone());
            Box::pin(async move { format!("{:?}", s.touch(&key(), &m, at).await) })
        }),
        ("destroy live", {
            let s = s.clone();
            Box::pin(async move { format!("{:?}", s.destroy(&destroyed).await) })
        }),
        ("destroy missing", {
            let s = s.clone();
            Box::pin(async move { format!("{:?}", s.destroy(&key()).await) })
        }),
        ("destroy twice", {
            let s = s.clone();
            Box::pin(async move { format!("{:?}", s.destroy(&twice).await) })
        }),
        ("destroy twice", {
            let s = s.clone();
            Box::pin(async move { format!("{:?}", s.destroy(&twice).await) })
        }),
        ("create", {
            let s = s.clone();
            Box::pin(async move { format!("{:?}", s.create(&fresh, &record(Some("u"))).await) })
        }),
        ("create taken", {
            let s = s.clone();
            Box::pin(async move { format!("{:?}", s.create(&taken, &record(Some("u"))).await) })
        }),
        ("create revoked", {
            let (s, e) = (s.clone(), early.clone());
            Box::pin(async move { format!("{:?}", s.create(&key(), &e).await) })
        }),
        ("create revoked taken", {
            let (s, e) = (s.clone(), early2);
            Box::pin(async move { format!("{:?}", s.create(&taken, &e).await) })
        }),
        ("create twice", {
            let s = s.clone();
            Box::pin(async move { format!("{:?}", s.create(&dup, &record(None)).await) })
        }),
        ("create twice", {
            let s = s.clone();
            Box::pin(async move { format!("{:?}", s.create(&dup, &record(None)).await) })
        }),
        ("rotate", {
            let (s, m) = (s.clone(), meta.clone());
            Box::pin(
                async move { format!("{:?}", s.rotate(&rotated, &new_key, &m, now_ms()).await) },
            )
        }),
    ];
    let results = db
        .in_one_batch(&sql, blocker, move || {
            calls
                .into_iter()
                .map(|(what, call)| tokio::spawn(async move { (what, call.await) }))
                .collect()
        })
        .await;
    let mut answers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (what, answer) in results {
        answers.entry(what).or_default().push(answer);
    }
    for list in answers.values_mut() {
        list.sort();
    }
    let expect: BTreeMap<&str, Vec<&str>> = [
        ("touch live", vec!["Ok(true)"]),
        ("touch expired", vec!["Ok(false)"]),
        ("touch missing", vec!["Ok(false)"]),
        ("destroy live", vec!["Ok(true)"]),
        ("destroy missing", vec!["Ok(false)"]),
        ("destroy twice", vec!["Ok(false)", "Ok(true)"]),
        ("create", vec!["Ok(())"]),
        ("create taken", vec!["Err(Collision)"]),
        ("create revoked", vec!["Err(Revoked)"]),
        ("create revoked taken", vec!["Err(Collision)"]),
        ("create twice", vec!["Err(Collision)", "Ok(())"]),
        ("rotate", vec!["Ok(())"]),
    ]
    .into_iter()
    .collect();
    let answers: BTreeMap<&str, Vec<&str>> = answers
        .iter()
        .map(|(k, v)| (*k, v.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(answers, expect);
    // The touch moved the live session only, and not backwards.
    let after = db.times(&sql, &touched).await.unwrap();
    assert_eq!(after.0, at);
    assert!(after.1 > before.1);
    assert_eq!(
        db.times(&sql, &expired).await.unwrap().1,
        1,
        "expired stays expired"
    );
    assert!(store.load(&fresh).await.unwrap().is_some());
    assert!(store.load(&destroyed).await.unwrap().is_none());
    assert!(store.load(&twice).await.unwrap().is_none());
    assert!(store.load(&dup).await.unwrap().is_some());
    assert!(store.load(&rotated).await.unwrap().is_none());
    assert!(store.load(&new_key).await.unwrap().is_some());
    assert!(store.list_user("revoked").await.unwrap().is_empty());
}

/// Many concurrent deltas on two sessions, from two instances with several lanes each (so
/// runs of one session's deltas are made in parallel batches on different connections), each
/// adding a 1 KB attribute under an 8 KB limit: every delta answered `Ok` is stored (no lost
/// update), every refusal is `TooLarge`, and the stored record never exceeds the limit (no
/// delta decided on sizes another batch had changed meanwhile).
async fn concurrent_deltas_on_one_session_lose_no_update_and_respect_the_limit(db: Db) {
    let options = SqlOptions {
        limits: ratatoskr_core::codec::Limits {
            max_record_bytes: 8_192,
            ..Default::default()
        },
        group_commit: GroupCommit {
            max_batch: 16,
            lanes: 4,
        },
        ..SqlOptions::default()
    };
    let one = db.store_opts(&options).await.store();
    let two = db.store_opts(&options).await.store();
    let hot = [key(), key()];
    for k in &hot {
        one.create(k, &record(Some("hot"))).await.unwrap();
    }
    let calls: Vec<_> = (0..120usize)
        .map(|i| {
            let s = if i % 2 == 0 { one.clone() } else { two.clone() };
            let k = hot[(i / 2) % 2];
            tokio::spawn(async move {
                let delta = Delta::default()
                    .set(format!("n{i:03}"), vec![i as u8; 1_000])
                    .set("last", i.to_le_bytes().to_vec());
                (i, k, s.apply(&k, &delta).await)
            })
        })
        .collect();
    let mut accepted: BTreeMap<SessionKey, Vec<String>> = BTreeMap::new();
    for c in calls {
        match c.await.unwrap() {
            (i, k, Ok(())) => accepted.entry(k).or_default().push(format!("n{i:03}")),
            (_, _, Err(StoreError::Codec(CodecError::TooLarge { .. }))) => {}
            (i, _, other) => panic!("delta {i}: {other:?}"),
        }
    }
    for k in &hot {
        let r = one.load(k).await.unwrap().unwrap();
        let mut stored: Vec<String> = r
            .attrs
            .keys()
            .filter(|n| n.starts_with('n'))
            .cloned()
            .collect();
        stored.sort();
        let mut want = accepted.remove(k).unwrap_or_default();
        want.sort();
        assert_eq!(stored, want, "exactly the accepted deltas are stored");
        assert!(!want.is_empty() && want.len() < 60, "some fit, not all");
        let meta_len = ratatoskr_core::codec::encode_meta(&r.meta, &Default::default())
            .unwrap()
            .len();
        let size = ratatoskr_core::codec::record_size(meta_len, &r.attrs);
        assert!(size <= 8_192, "{size} bytes stored under an 8 KB limit");
    }
}

/// `n` logins' rotations in one batch through the public API, with the interacting cases
/// beside them: two rotations of one old key (one made, one `NotFound`), a rotation and a
/// destroy of one key (rotations come first: made, then the destroy finds nothing), a
/// rotation into a key created in the same batch (creates come first: `Collision`). The
/// statements the batch sent (`WriteStats::statements`, with the stuck delta's transaction).
async fn rotation_batch_statements(db: &Db, n: usize) -> u64 {
    let sql = db.store_opts(&one_lane()).await;
    let store = sql.store();
    let blocker = key();
    store.create(&blocker, &record(None)).await.unwrap();
    let mut olds = Vec::new();
    for i in 0..n + 3 {
        let k = key();
        let mut r = record(Some(if i % 2 == 0 { "a" } else { "b" }));
        r.attrs.insert("csrf".into(), vec![i as u8; 16]);
        store.create(&k, &r).await.unwrap();
        olds.push((k, r.meta));
    }
    let (twice, destroyed, blocked) = (olds[n].clone(), olds[n + 1].clone(), olds[n + 2].clone());
    let created = key();
    let before = write_stats(&sql);
    let s = store.clone();
    let results = db
        .in_one_batch(&sql, blocker, move || {
            let mut calls = Vec::new();
            let mut rotate = |what: &'static str, old: SessionKey, new: SessionKey, meta| {
                let s = s.clone();
                calls.push(tokio::spawn(async move {
                    (
                        what,
                        format!("{:?}", s.rotate(&old, &new, &meta, now_ms()).await),
                    )
                }));
            };
            for (old, meta) in olds.into_iter().take(n) {
                rotate("rotate", old, key(), meta);
            }
            rotate("rotate twice", twice.0, key(), twice.1.clone());
            rotate("rotate twice", twice.0, key(), twice.1);
            rotate("rotate destroyed", destroyed.0, key(), destroyed.1);
            rotate("rotate into created", blocked.0, created, blocked.1);
            let s2 = s.clone();
            calls.push(tokio::spawn(async move {
                (
                    "destroy rotated",
                    format!("{:?}", s2.destroy(&destroyed.0).await),
                )
            }));
            let s3 = s.clone();
            calls.push(tokio::spawn(async move {
                (
                    "create",
                    format!("{:?}", s3.create(&created, &record(None)).await),
                )
            }));
            calls
        })
        .await;
    let mut answers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (what, answer) in results {
        answers.entry(what).or_default().push(answer);
    }
    for list in answers.values_mut() {
        list.sort();
        list.dedup();
    }
    let expect: BTreeMap<&str, Vec<String>> = [
        ("rotate", vec!["Ok(())"]),
        ("rotate twice", vec!["Err(NotFound)", "Ok(())"]),
        ("rotate destroyed", vec!["Ok(())"]),
        ("destroy rotated", vec!["Ok(false)"]),
        ("rotate into created", vec!["Err(Collision)"]),
        ("create", vec!["Ok(())"]),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(answers, expect);
    assert!(store.load(&blocked.0).await.unwrap().is_some());
    write_stats(&sql).statements - before.statements
}

/// A batch of rotations costs the same statements with 4 rotations as with 40: they are one
/// run, not one rotation after another (each would add five statements, seven on
/// PostgreSQL).
async fn rotations_in_one_batch_are_a_run_of_fixed_statements(db: Db) {
    let few = rotation_batch_statements(&db, 4).await;
    let many = rotation_batch_statements(&db, 40).await;
    assert_eq!(few, many, "statements per batch grew with the rotations");
}
