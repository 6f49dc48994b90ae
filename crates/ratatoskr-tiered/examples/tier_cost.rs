//! What the tiers cost per write and per touch, store-level, on this machine: Redis (the test
//! kit's own `redis-server`) in front of a fresh SQLite file.
//!
//! `cargo run --release -p ratatoskr-tiered --example tier_cost -- [SECONDS] [TASKS]`
//!
//! Three measurements, one after the other, each with `TASKS` tasks working on sessions of
//! their own for `SECONDS` (default 3 s, 32 tasks):
//! - `apply`: a one-attribute delta (database, then Redis);
//! - `touch, batched`: a touch with time to spare before the deadline (queued for the next
//!   batch; the batches are flushed to the database, then Redis, every second in the
//!   background);
//! - `touch, written through`: a touch near the deadline (database, then Redis, at once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatoskr_core::{Delta, Record, SessionKey, SessionStore, Token, now_ms};
use ratatoskr_redis::{RedisConfig, RedisStore};
use ratatoskr_sql::SqlStore;
use ratatoskr_testkit::RedisProcess;
use ratatoskr_tiered::{TieredConfig, TieredStore};

#[derive(Clone, Copy)]
enum Op {
    Apply,
    TouchBatched,
    TouchThrough,
}

async fn run(store: &TieredStore, keys: &[(SessionKey, Record)], op: Op, secs: u64) -> (f64, u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    let mut set = tokio::task::JoinSet::new();
    for (key, record) in keys.iter().cloned() {
        let store = store.clone();
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0u64;
            while Instant::now() < end {
                n += 1;
                let t = Instant::now();
                let now = now_ms();
                let ok = match op {
                    Op::Apply => store
                        .apply(&key, &Delta::default().set("n", n.to_string().into_bytes()))
                        .await
                        .is_ok(),
                    // Far from the deadline (an hour left) / near it (one second left).
                    Op::TouchBatched => store
                        .touch_with_deadline(&key, &record.meta, now, now + 3_600_000)
                        .await
                        .is_ok(),
                    Op::TouchThrough => store
                        .touch_with_deadline(&key, &record.meta, now, now + 1_000)
                        .await
                        .is_ok(),
                };
                assert!(ok, "the store answers");
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat
        });
    }
    let mut all = Vec::new();
    while let Some(l) = set.join_next().await {
        all.extend(l.expect("task"));
    }
    all.sort_unstable();
    let rate = all.len() as f64 / secs as f64;
    let p99 = all[(all.len() * 99 / 100).min(all.len() - 1)];
    (rate, p99)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let tasks: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let redis = RedisProcess::start();
    let dir = std::env::temp_dir().join(format!("tier-cost-{}", Token::generate().key().handle()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sql = SqlStore::connect(&format!("sqlite://{}", dir.join("s.db").display()))
        .await
        .expect("sqlite");
    let (fast, notices) = RedisStore::connect_tracked(RedisConfig::new(redis.url()))
        .await
        .expect("redis");
    let store = TieredStore::new(
        Arc::new(fast),
        sql.store(),
        Arc::new(sql.journal()),
        Some(notices),
        TieredConfig::default(),
    );
    assert!(store.recover_now().await);
    let mut keys = Vec::new();
    for i in 0..tasks {
        let key = Token::generate().key();
        let r = Record::new(
            Some(format!("u{i}")),
            now_ms(),
            Duration::from_secs(7200),
            Duration::from_secs(86_400),
        );
        store.create(&key, &r).await.expect("create");
        keys.push((key, r));
    }
    println!("| operation ({tasks} tasks, {secs} s) | per second | p99 |");
    println!("|---|---:|---:|");
    for (name, op) in [
        ("apply", Op::Apply),
        ("touch, batched", Op::TouchBatched),
        ("touch, written through", Op::TouchThrough),
    ] {
        let (rate, p99) = run(&store, &keys, op, secs).await;
        println!("| {name} | {rate:.0} | {:.2} ms |", p99 as f64 / 1000.0);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
