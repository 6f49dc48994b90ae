//! Batches against the same writes made one at a time, on both dialects (PostgreSQL at
//! `RATATOSKR_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`, in a schema of
//! its own): generated batches of rotations mixed with creates, restores, deltas and destroys
//! of the same few keys, and the statements a batch costs.

use std::str::FromStr;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use ratatoskr_core::codec::{self, Limits};
use ratatoskr_core::{Delta, JournalTarget, Record, SessionKey, SessionStore, Token, now_ms};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Postgres, Sqlite};

use super::Core;
use crate::dialect::Dialect;
use crate::driver::stmt;
use crate::group::{Batcher, Op};
use crate::{SqlOptions, Store};

const MINUTE: Duration = Duration::from_secs(60);
/// Keys a generated batch plays with.
const KEYS: usize = 6;

fn pg_url() -> String {
    std::env::var("RATATOSKR_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn suffix() -> String {
    let b: [u8; 8] = ratatoskr_core::token::random_bytes();
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A store (for setting up and reading back) and a second writer core on its pool (to run
/// batches exactly as given), with users `r-a` and `r-b` revoked at `revoked`.
struct Fixture<D: Dialect> {
    store: Store<D>,
    core: Core<D>,
    revoked: i64,
    schema: Option<String>,
}

impl<D: Dialect> Fixture<D> {
    async fn new(store: Store<D>, schema: Option<String>) -> Self {
        let core = Core::new(store.pool().clone());
        let revoked = now_ms();
        for user in ["r-a", "r-b"] {
            store.destroy_user(user, None).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        Fixture {
            store,
            core,
            revoked,
            schema,
        }
    }

    async fn batch(&self, ops: &[Op]) -> Vec<String> {
        let results = self.core.run_batch(ops).await;
        assert_eq!(results.len(), ops.len());
        results.iter().map(|r| format!("{r:?}")).collect()
    }

    /// The ops one at a time, each in a transaction of its own, in the order a batch makes
    /// them (stably sorted by kind).
    async fn one_at_a_time(&self, ops: &[Op]) -> Vec<String> {
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_by_key(|&i| ops[i].kind());
        let mut out = vec![String::new(); ops.len()];
        for i in order {
            let mut result = self.core.run_batch(std::slice::from_ref(&ops[i])).await;
            assert_eq!(result.len(), 1);
            out[i] = format!("{:?}", result.remove(0));
        }
        out
    }

    /// What each key holds: its user (without the set's suffix) and attributes, if live.
    async fn state(&self, keys: &[SessionKey]) -> Vec<Option<(Option<String>, Vec<String>)>> {
        let mut out = Vec::new();
        for key in keys {
            let record = self.store.load(key).await.unwrap();
            out.push(record.map(|r| {
                let user = r.meta.user_id.map(|u| u[..u.len() - 2].to_owned());
                let attrs = r.attrs.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
                (user, attrs)
            }));
        }
        out
    }
}

#[derive(Clone, Debug)]
enum Start {
    Absent,
    /// Live, of user `user` (see [`user`]), with `attrs` attributes.
    Live {
        user: u8,
        attrs: u8,
    },
    Expired,
}

#[derive(Clone, Debug)]
enum Step {
    Create {
        key: usize,
        user: u8,
    },
    Restore {
        key: usize,
        user: u8,
    },
    /// `revoked`: at a time before its user's revocation (refused if the user is `r`);
    /// `tight`: under a size limit only sessions of at most one attribute fit.
    Rotate {
        old: usize,
        new: usize,
        user: u8,
        revoked: bool,
        tight: bool,
    },
    Apply {
        key: usize,
        value: u8,
    },
    Destroy {
        key: usize,
    },
}

/// No user, `u`, or `r` (revoked at the fixture's start), in the key set `set`.
fn user(user: u8, set: char) -> Option<String> {
    match user % 3 {
        0 => None,
        1 => Some(format!("u-{set}")),
        _ => Some(format!("r-{set}")),
    }
}

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        1 => Just(Start::Absent),
        4 => (0..3u8, 0..3u8).prop_map(|(user, attrs)| Start::Live { user, attrs }),
        1 => Just(Start::Expired),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0..KEYS, 0..KEYS, 0..3u8, proptest::bool::weighted(0.2), proptest::bool::weighted(0.2))
            .prop_map(|(old, new, user, revoked, tight)| Step::Rotate { old, new, user, revoked, tight }),
        1 => (0..KEYS, 0..3u8).prop_map(|(key, user)| Step::Create { key, user }),
        1 => (0..KEYS, 0..3u8).prop_map(|(key, user)| Step::Restore { key, user }),
        1 => (0..KEYS, any::<u8>()).prop_map(|(key, value)| Step::Apply { key, value }),
        1 => (0..KEYS).prop_map(|key| Step::Destroy { key }),
    ]
}

fn case() -> impl Strategy<Value = (Vec<Start>, Vec<Step>)> {
    (
        proptest::collection::vec(start(), KEYS),
        proptest::collection::vec(step(), 2..32),
    )
}

fn record(user_id: Option<String>, attrs: u8) -> Record {
    let mut record = Record::new(user_id, now_ms(), MINUTE, 10 * MINUTE);
    for i in 0..attrs {
        record.attrs.insert(format!("a{i}"), vec![i; 10]);
    }
    record
}

fn blob(record: &Record) -> Vec<u8> {
    codec::encode_meta(&record.meta, &Limits::default()).unwrap()
}

impl<D: Dialect> Fixture<D> {
    /// Fresh keys for key set `set`, set up as `starts`, and the ops of `steps` on them.
    async fn prepare(
        &self,
        set: char,
        starts: &[Start],
        steps: &[Step],
        now: i64,
    ) -> (Vec<SessionKey>, Vec<Op>) {
        let keys: Vec<SessionKey> = (0..KEYS).map(|_| Token::generate().key()).collect();
        for (key, start) in keys.iter().zip(starts) {
            match start {
                Start::Absent => {}
                Start::Live { user: u, attrs } => {
                    self.store
                        .create(key, &record(user(*u, set), *attrs))
                        .await
                        .unwrap();
                }
                Start::Expired => {
                    self.store.create(key, &record(None, 1)).await.unwrap();
                    stmt::<D>(
                        "UPDATE ratatoskr_sessions SET expires_at = 1 WHERE session_key = $1",
                    )
                    .bind(key)
                    .execute_in(self.store.pool())
                    .await
                    .unwrap();
                }
            }
        }
        let ops = steps
            .iter()
            .map(|step| match *step {
                Step::Create { key, user: u } => {
                    let record = record(user(u, set), 1);
                    Op::Create {
                        key: keys[key],
                        meta_blob: blob(&record),
                        record,
                    }
                }
                Step::Restore { key, user: u } => {
                    let record = record(user(u, set), 2);
                    Op::Restore {
                        key: keys[key],
                        meta_blob: blob(&record),
                        record,
                    }
                }
                Step::Rotate {
                    old,
                    new,
                    user: u,
                    revoked,
                    tight,
                } => {
                    let record = record(user(u, set), 0);
                    let meta_blob = blob(&record);
                    let limits = if tight {
                        Limits {
                            max_record_bytes: meta_blob.len() + 12 + 16,
                            ..Limits::default()
                        }
                    } else {
                        Limits::default()
                    };
                    Op::Rotate {
                        old: keys[old],
                        new: keys[new],
                        meta: record.meta,
                        meta_blob,
                        now: if revoked { self.revoked - 1_000 } else { now },
                        limits,
                    }
                }
                Step::Apply { key, value } => Op::Apply {
                    key: keys[key],
                    delta: crate::common::normalize(&Delta::default().set("d", vec![value; 5])),
                    limits: Limits::default(),
                },
                Step::Destroy { key } => Op::Destroy(keys[key]),
            })
            .collect();
        (keys, ops)
    }

    /// One generated case: the batch on key set `a`, the same writes one at a time on key
    /// set `b`; the same answers and the same sessions left.
    async fn check(&self, starts: &[Start], steps: &[Step]) -> Result<(), TestCaseError> {
        let now = now_ms();
        let (keys_a, batch) = self.prepare('a', starts, steps, now).await;
        let (keys_b, alone) = self.prepare('b', starts, steps, now).await;
        let before = self.core.stats.snapshot().transactions;
        let answers = self.batch(&batch).await;
        prop_assert_eq!(
            self.core.stats.snapshot().transactions - before,
            1,
            "the batch was one transaction"
        );
        let expected = self.one_at_a_time(&alone).await;
        prop_assert_eq!(answers, expected);
        prop_assert_eq!(self.state(&keys_a).await, self.state(&keys_b).await);
        Ok(())
    }
}

fn check_generated<D: Dialect>(fixture: impl AsyncFnOnce() -> Fixture<D>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fixture = rt.block_on(fixture());
    let mut runner = TestRunner::new(Config {
        cases: 48,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&case(), |(starts, steps)| {
        rt.block_on(fixture.check(&starts, &steps))
    });
    rt.block_on(fixture.drop_schema());
    if let Err(e) = result {
        panic!("{e}");
    }
}

impl<D: Dialect> Fixture<D> {
    async fn drop_schema(&self) {
        if let Some(name) = &self.schema {
            self.store.pool().close().await;
            let mut admin = PgConnectOptions::from_str(&pg_url())
                .unwrap()
                .connect()
                .await
                .unwrap();
            sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .execute(&mut admin)
                .await
                .unwrap();
            let _ = admin.close().await;
        }
    }
}

async fn sqlite() -> Fixture<Sqlite> {
    let store = Store::<Sqlite>::connect("sqlite::memory:").await.unwrap();
    Fixture::new(store, None).await
}

async fn postgres() -> Fixture<Postgres> {
    let name = format!("ratatoskr_test_{}", suffix());
    let mut admin = PgConnectOptions::from_str(&pg_url())
        .unwrap()
        .connect()
        .await
        .expect("connect to the test PostgreSQL server");
    sqlx::query(&format!("CREATE SCHEMA \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap();
    let _ = admin.close().await;
    let connect = PgConnectOptions::from_str(&pg_url())
        .unwrap()
        .options([("search_path", name.as_str())]);
    let store = Store::<Postgres>::connect_with_options(connect, &SqlOptions::default())
        .await
        .unwrap();
    Fixture::new(store, Some(name)).await
}

#[test]
fn sqlite_batches_answer_as_one_write_at_a_time() {
    check_generated(sqlite);
}

#[test]
fn postgres_batches_answer_as_one_write_at_a_time() {
    check_generated(postgres);
}

/// The interacting cases by name (the generated ones cover them at random): a revoked
/// rotation onto a taken key; two rotations of one old key; a chain `a → b → c`; a rotation
/// and a destroy of one key; a rotation into a key created in the batch; a rotation into a
/// key an earlier rotation of the batch rotated away (made in a run of its own). One
/// transaction, and every answer the one alone would give.
async fn named_interactions<D: Dialect>(fixture: Fixture<D>) {
    use Start::*;
    use Step::*;
    let rotate = |old, new| Rotate {
        old,
        new,
        user: 1,
        revoked: false,
        tight: false,
    };
    let starts = [
        Live { user: 1, attrs: 2 },
        Live { user: 1, attrs: 1 },
        Absent,
        Live { user: 2, attrs: 0 },
        Absent,
        Absent,
    ];
    let steps = [
        // Revoked, onto a live key: Collision.
        Rotate {
            old: 3,
            new: 1,
            user: 2,
            revoked: true,
            tight: false,
        },
        rotate(0, 2),               // made
        rotate(0, 4),               // NotFound: 0 was rotated away
        Destroy { key: 2 },         // after the rotations, which moved 2 on: false
        Create { key: 5, user: 1 }, // creates come first: made
        rotate(1, 5),               // Collision with the create
        rotate(2, 4),               // the chain 0 → 2 → 4: made, with 0's attributes
        rotate(3, 0),               // into 0, rotated away above: made
    ];
    let now = now_ms();
    let (keys_a, batch) = fixture.prepare('a', &starts, &steps, now).await;
    let (keys_b, alone) = fixture.prepare('b', &starts, &steps, now).await;
    let before = fixture.core.stats.snapshot().transactions;
    let answers = fixture.batch(&batch).await;
    assert_eq!(fixture.core.stats.snapshot().transactions - before, 1);
    assert_eq!(answers, fixture.one_at_a_time(&alone).await);
    assert_eq!(
        answers,
        [
            "Err(Collision)",
            "Ok(true)",
            "Err(NotFound)",
            "Ok(false)",
            "Ok(true)",
            "Err(Collision)",
            "Ok(true)",
            "Ok(true)",
        ]
    );
    let state = fixture.state(&keys_a).await;
    assert_eq!(state, fixture.state(&keys_b).await);
    let attrs = |i: usize| state[i].as_ref().map(|(_, attrs)| attrs.len());
    assert_eq!(
        (0..KEYS).map(attrs).collect::<Vec<_>>(),
        [Some(0), Some(1), None, None, Some(2), Some(1)]
    );
    fixture.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_named_interactions_answer_as_one_at_a_time() {
    named_interactions(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_named_interactions_answer_as_one_at_a_time() {
    named_interactions(postgres().await).await;
}

/// The statements one batch of `n` writes of each kind costs (every write made).
async fn statements_for<D: Dialect>(fixture: &Fixture<D>, n: usize) -> u64 {
    let mut ops = Vec::new();
    for i in 0..n {
        let (old, new) = (Token::generate().key(), Token::generate().key());
        let live = record(user(1, 'a'), 2);
        fixture.store.create(&old, &live).await.unwrap();
        let touched = Token::generate().key();
        fixture.store.create(&touched, &live).await.unwrap();
        let fresh = record(user(i as u8, 'a'), 2);
        let restored = record(user(i as u8, 'a'), 1);
        ops.extend([
            Op::Rotate {
                old,
                new,
                meta: live.meta.clone(),
                meta_blob: blob(&live),
                now: now_ms(),
                limits: Limits::default(),
            },
            Op::Create {
                key: Token::generate().key(),
                meta_blob: blob(&fresh),
                record: fresh,
            },
            Op::Restore {
                key: Token::generate().key(),
                meta_blob: blob(&restored),
                record: restored,
            },
            Op::Apply {
                key: touched,
                delta: crate::common::normalize(&Delta::default().set("x", vec![1]).remove("a0")),
                limits: Limits::default(),
            },
            Op::Touch {
                key: touched,
                last_seen: now_ms(),
            },
            Op::Destroy(touched),
            Op::JournalAppend(vec![
                JournalTarget::Session(old),
                JournalTarget::Session(new),
            ]),
            Op::JournalAck(vec![i as i64]),
        ]);
    }
    let before = fixture.core.stats.snapshot();
    let answers = fixture.batch(&ops).await;
    let after = fixture.core.stats.snapshot();
    assert!(
        answers.iter().all(|a| a == "Ok(true)"),
        "every write made: {answers:?}"
    );
    assert_eq!(after.transactions - before.transactions, 1);
    after.statements - before.statements
}

/// A batch costs the same statements with 4 writes of each kind as with 48: each kind is a
/// run of a fixed number of statements (a write made one by one would add statements per
/// write). Rotations alone: at most six, plus PostgreSQL's two pre-locks.
async fn statements_per_batch_are_fixed<D: Dialect>(fixture: Fixture<D>, prelocks: u64) {
    let few = statements_for(&fixture, 4).await;
    let many = statements_for(&fixture, 48).await;
    assert_eq!(few, many, "statements per batch grow with the batch");
    let mut ops = Vec::new();
    for _ in 0..32 {
        let old = Token::generate().key();
        let live = record(user(1, 'a'), 2);
        fixture.store.create(&old, &live).await.unwrap();
        ops.push(Op::Rotate {
            old,
            new: Token::generate().key(),
            meta: live.meta.clone(),
            meta_blob: blob(&live),
            now: now_ms(),
            limits: Limits::default(),
        });
    }
    let before = fixture.core.stats.snapshot().statements;
    assert!(fixture.batch(&ops).await.iter().all(|a| a == "Ok(true)"));
    let statements = fixture.core.stats.snapshot().statements - before;
    assert_eq!(statements, 6 + prelocks, "32 rotations in one batch");
    fixture.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_statements_per_batch_are_fixed() {
    statements_per_batch_are_fixed(sqlite().await, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_statements_per_batch_are_fixed() {
    statements_per_batch_are_fixed(postgres().await, 2).await;
}
