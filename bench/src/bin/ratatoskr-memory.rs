//! `ratatoskr-memory`: Redis memory per session, measured.
//!
//! Starts a private `redis-server`, creates N sessions through [`RedisStore`] — one user each
//! (`user-<i>`), one attribute `counter = 1`, the app's default timeouts (2 h idle, 24 h
//! absolute) — many at once on the store's multiplexed connection, then prints the growth of
//! `used_memory` divided by N, with `MEMORY USAGE` of one session's keys for comparison.
//!
//! ```sh
//! cargo run --release -p ratatoskr-bench --bin ratatoskr-memory -- --sessions 1000000
//! ```
//!
//! Flags: `--sessions N` (default 1,000,000), `--concurrency N` requests in flight (default
//! 512), `--redis-server PATH` (default `redis-server`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ratatoskr_bench::redis_server::RedisServer;
use ratatoskr_core::{Record, SessionStore, Token, now_ms};
use ratatoskr_redis::{RedisConfig, RedisStore};

struct Args {
    sessions: u64,
    concurrency: u64,
    redis_server: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sessions: 1_000_000,
        concurrency: 512,
        redis_server: "redis-server".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.replace(['_', ','], "")
                .parse::<u64>()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match flag.as_str() {
            "--sessions" => args.sessions = number(value()?)?,
            "--concurrency" => args.concurrency = number(value()?)?.max(1),
            "--redis-server" => args.redis_server = value()?,
            "-h" | "--help" => {
                println!("ratatoskr-memory [--sessions N] [--concurrency N] [--redis-server PATH]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    if args.sessions == 0 {
        return Err("--sessions must be at least 1".into());
    }
    Ok(args)
}

/// One field of `INFO memory`.
async fn info_memory(con: &mut redis::aio::MultiplexedConnection, field: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(con)
        .await
        .expect("INFO memory");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO memory has no {field}"))
}

async fn memory_usage(con: &mut redis::aio::MultiplexedConnection, key: &[u8]) -> u64 {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .arg("SAMPLES")
        .arg(0)
        .query_async::<Option<u64>>(con)
        .await
        .expect("MEMORY USAGE")
        .unwrap_or(0)
}

fn session(i: u64) -> Record {
    let mut r = Record::new(
        Some(format!("user-{i}")),
        now_ms(),
        Duration::from_secs(2 * 3600),
        Duration::from_secs(24 * 3600),
    );
    r.attrs.insert("counter".into(), b"1".to_vec());
    r
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ratatoskr-memory: {e}");
            std::process::exit(2);
        }
    };
    let server = RedisServer::start(&args.redis_server).unwrap_or_else(|e| {
        eprintln!("ratatoskr-memory: {e}");
        std::process::exit(1);
    });
    println!("{} on port {}", server.version, server.port);
    let mut config = RedisConfig::new(server.url());
    // Hundreds of scripts in flight on one connection queue behind each other; the default
    // 500 ms would time out under load, and a timed-out create is not a measured session.
    config.response_timeout = Duration::from_secs(10);
    let store = RedisStore::connect(config).await.expect("connect");
    let mut con = redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    // Measured from a connected store: what exists whatever N is stays out of the figure.
    store.ping().await.expect("ping");
    let before = info_memory(&mut con, "used_memory").await;

    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (store, next, done) = (store.clone(), next.clone(), done.clone());
            let n = args.sessions;
            tokio::spawn(async move {
                let mut sample = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return sample;
                    }
                    let key = Token::generate().key();
                    store.create(&key, &session(i)).await.unwrap_or_else(|e| {
                        panic!("create of session {i}: {e}");
                    });
                    done.fetch_add(1, Ordering::Relaxed);
                    sample.get_or_insert((key, i));
                }
            })
        })
        .collect();
    let progress = {
        let done = done.clone();
        let n = args.sessions;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let d = done.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "{d} / {n} sessions ({:.0} %), {:.0}/s",
                    d as f64 * 100.0 / n as f64,
                    d as f64 / secs
                );
            }
        })
    };
    let mut sample = None;
    for w in workers {
        if let Some(s) = w.await.expect("worker") {
            sample = Some(s);
        }
    }
    progress.abort();
    let took = started.elapsed();

    let after = info_memory(&mut con, "used_memory").await;
    let rss = info_memory(&mut con, "used_memory_rss").await;
    let n = args.sessions;
    let keys = server.dbsize().unwrap_or(0);
    println!(
        "created {n} sessions in {took:.1?} ({:.0}/s, {} in flight); {keys} keys",
        n as f64 / took.as_secs_f64(),
        args.concurrency
    );
    println!(
        "used_memory: {before} -> {after} bytes; {:.1} bytes per session (used_memory_rss {rss})",
        after.saturating_sub(before) as f64 / n as f64
    );
    if let Some((key, i)) = sample {
        let hash = memory_usage(&mut con, &store.session_key_name(&key)).await;
        let index = memory_usage(&mut con, &store.user_index_key_name(&format!("user-{i}"))).await;
        println!(
            "MEMORY USAGE of one session: hash {hash} bytes, its user's index {index} bytes \
             (the shared indexes of all sessions are in the used_memory figure only)"
        );
    }
}
