//! Time per rotation in one group-commit batch of N rotations (a login burst).
//!
//! Each round creates N sessions (two attributes each, users spread over eight names), then
//! makes their N rotations one batch of a one-lane store: a first delta on another session is
//! held up by a second connection (SQLite: its write lock; PostgreSQL: the session's row lock)
//! while the rotations queue behind it; once it is let go and has committed, the lane takes the
//! N rotations together. The time from that delta's answer to the last rotation's answer,
//! divided by N, is the round's time per rotation. The store's write counters check that the
//! rotations were one transaction. Prints the median and range over the rounds.
//!
//! ```text
//! cargo run --release -p ratatoskr-sql --example rotation_batch -- \
//!     [--url sqlite|postgres://user@host/db] [--rotations 64] [--rounds 30]
//! ```
//!
//! `--url sqlite` (the default) uses a fresh database file in a temporary directory. With a
//! PostgreSQL URL the run gets a scratch schema of its own, dropped at the end.

use std::str::FromStr;
use std::time::{Duration, Instant};

use ratatoskr_core::token::random_bytes;
use ratatoskr_core::{Delta, Record, SessionKey, Token, now_ms};
use ratatoskr_sql::{GroupCommit, PgStore, SqlOptions, SqlStore, SqliteStore};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

const MINUTE: Duration = Duration::from_secs(60);

fn suffix() -> String {
    let b: [u8; 6] = random_bytes();
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// What holds up the first delta.
enum Held {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

async fn hold(sql: &SqlStore, key: &SessionKey) -> Held {
    match sql {
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

async fn release(held: Held) {
    match held {
        Held::Sqlite(mut c) => drop(sqlx::raw_sql("COMMIT").execute(&mut *c).await.unwrap()),
        Held::Postgres(mut c) => drop(sqlx::raw_sql("COMMIT").execute(&mut *c).await.unwrap()),
    }
}

/// One round: seconds per rotation.
async fn round(sql: &SqlStore, n: usize) -> f64 {
    let store = sql.store();
    let blocker = Token::generate().key();
    store
        .create(&blocker, &Record::new(None, now_ms(), MINUTE, 10 * MINUTE))
        .await
        .unwrap();
    let mut olds = Vec::with_capacity(n);
    for i in 0..n {
        let key = Token::generate().key();
        let mut record = Record::new(
            Some(format!("user{}", i % 8)),
            now_ms(),
            MINUTE,
            MINUTE * 10,
        );
        record.attrs.insert("csrf".into(), vec![7; 32]);
        record.attrs.insert("cart".into(), vec![1; 200]);
        store.create(&key, &record).await.unwrap();
        olds.push((key, record.meta));
    }
    let before = sql.write_stats();
    let held = hold(sql, &blocker).await;
    let first = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .apply(&blocker, &Delta::default().set("first", vec![1]))
                .await
                .unwrap();
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let calls: Vec<_> = olds
        .into_iter()
        .map(|(old, meta)| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .rotate(&old, &Token::generate().key(), &meta, now_ms())
                    .await
                    .unwrap();
                Instant::now()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    release(held).await;
    let start = first.await.unwrap();
    let mut end = start;
    for c in calls {
        end = end.max(c.await.unwrap());
    }
    let after = sql.write_stats();
    assert_eq!(
        (
            after.transactions - before.transactions,
            after.operations - before.operations
        ),
        (2, n as u64 + 1),
        "the rotations were one batch"
    );
    (end - start).as_secs_f64() / n as f64
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (mut url, mut n, mut rounds) = ("sqlite".to_owned(), 64usize, 30usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => url = value,
            "--rotations" => n = value.parse()?,
            "--rounds" => rounds = value.parse()?,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let options = SqlOptions {
        group_commit: GroupCommit {
            max_batch: n.max(2),
            lanes: 1,
        },
        ..SqlOptions::default()
    };
    let dir = std::env::temp_dir().join(format!("ratatoskr_rotation_batch_{}", suffix()));
    let mut schema = None;
    let sql = if url == "sqlite" {
        let file = dir.join("sessions.db");
        SqlStore::Sqlite(
            SqliteStore::connect_with(&format!("sqlite://{}", file.display()), &options).await?,
        )
    } else {
        let name = format!("ratatoskr_bench_{}", suffix());
        let mut admin = PgConnectOptions::from_str(&url)?.connect().await?;
        sqlx::query(&format!("CREATE SCHEMA \"{name}\""))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let connect = PgConnectOptions::from_str(&url)?.options([("search_path", &name)]);
        schema = Some(name);
        SqlStore::Postgres(PgStore::connect_with_options(connect, &options).await?)
    };
    round(&sql, n).await; // warm-up
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        times.push(round(&sql, n).await);
    }
    times.sort_by(f64::total_cmp);
    let us = |s: f64| s * 1e6;
    println!(
        "{}: {n} rotations per batch, {rounds} rounds: median {:.1} µs per rotation \
         (range {:.1}–{:.1}), median batch {:.2} ms",
        sql.backend_name(),
        us(times[times.len() / 2]),
        us(times[0]),
        us(times[times.len() - 1]),
        times[times.len() / 2] * n as f64 * 1e3,
    );
    drop(sql);
    if let Some(name) = schema {
        let mut admin = PgConnectOptions::from_str(&url)?.connect().await?;
        sqlx::query(&format!("DROP SCHEMA \"{name}\" CASCADE"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
