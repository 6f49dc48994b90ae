//! Durable write throughput with group commit off and on.
//!
//! N concurrent writers (tasks) each apply deltas to a session of their own, as fast as the
//! store answers, for a fixed time; then the same with group commit. Prints writes per second,
//! latency percentiles, and the mean numbers of writes and of statements per transaction.
//!
//! ```text
//! cargo run --release -p ratatoskr-sql --example write_throughput -- \
//!     [--url sqlite|postgres://user@host/db] [--writers 64] [--seconds 5] \
//!     [--batch 64] [--lanes 4] [--connections 8] [--rounds 1] [--op delta|touch|login] \
//!     [--on-only]
//! ```
//!
//! `--op` picks the write: `delta` (default; two attributes set), `touch` (the session's
//! `last_seen` moved), or `login` (a fresh session created with two attributes, then rotated to
//! a new key: two writes, both counted).
//!
//! Rounds alternate off and on, so a change in the machine's load hits both.
//!
//! `--url sqlite` (the default) uses a fresh database file in a temporary directory for each run.
//! With a PostgreSQL URL each run gets a scratch schema of its own, dropped at the end, so the
//! database named needs `CREATE` rights (as the tests do).

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatoskr_core::token::random_bytes;
use ratatoskr_core::{Delta, Record, SessionStore, StoreError, Token, now_ms};
use ratatoskr_sql::{GroupCommit, PgStore, SqlOptions, SqliteStore, WriteStats};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

struct Args {
    url: String,
    writers: usize,
    seconds: f64,
    batch: usize,
    lanes: usize,
    connections: u32,
    rounds: usize,
    op: Workload,
    /// Run group commit off too (`--on-only` skips it, to compare builds).
    off: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Delta,
    Touch,
    Login,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        url: "sqlite".into(),
        writers: 64,
        seconds: 5.0,
        batch: GroupCommit::default().max_batch,
        lanes: GroupCommit::default().lanes,
        connections: SqlOptions::default().max_connections,
        rounds: 1,
        op: Workload::Delta,
        off: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--url" => args.url = value()?,
            "--writers" => args.writers = value()?.parse().map_err(|e| bad(&e))?,
            "--seconds" => args.seconds = value()?.parse().map_err(|e| bad(&e))?,
            "--batch" => args.batch = value()?.parse().map_err(|e| bad(&e))?,
            "--lanes" => args.lanes = value()?.parse().map_err(|e| bad(&e))?,
            "--connections" => args.connections = value()?.parse().map_err(|e| bad(&e))?,
            "--rounds" => args.rounds = value()?.parse().map_err(|e| bad(&e))?,
            "--on-only" => args.off = false,
            "--op" => {
                args.op = match value()?.as_str() {
                    "delta" => Workload::Delta,
                    "touch" => Workload::Touch,
                    "login" => Workload::Login,
                    other => return Err(format!("--op: unknown write {other}")),
                }
            }
            "--help" | "-h" => {
                return Err(
                    "usage: write_throughput [--url sqlite|postgres://…] [--writers N] \
                            [--seconds S] [--batch N] [--lanes N] [--connections N] [--rounds N] \
                            [--op delta|touch|login] [--on-only]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// A fresh database for one run, and how to remove it afterwards.
enum Scratch {
    Sqlite(std::path::PathBuf),
    Postgres { url: String, schema: String },
}

fn random_suffix() -> String {
    let bytes: [u8; 6] = random_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Scratch {
    async fn open(
        url: &str,
        options: &SqlOptions,
    ) -> Result<(Self, Arc<dyn SessionStore>, StatsFn), Box<dyn std::error::Error>> {
        if url == "sqlite" || url.starts_with("sqlite:") {
            let dir = std::env::temp_dir().join(format!("ratatoskr_bench_{}", random_suffix()));
            let file = dir.join("sessions.db");
            let store =
                SqliteStore::connect_with(&format!("sqlite://{}", file.display()), options).await?;
            let stats = {
                let s = store.clone();
                Box::new(move || (s.write_stats(), s.group_commit())) as StatsFn
            };
            Ok((Scratch::Sqlite(dir), Arc::new(store), stats))
        } else {
            let schema = format!("ratatoskr_bench_{}", random_suffix());
            let mut admin = PgConnectOptions::from_str(url)?.connect().await?;
            sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
                .execute(&mut admin)
                .await?;
            admin.close().await?;
            let connect = PgConnectOptions::from_str(url)?.options([("search_path", &schema)]);
            let store = PgStore::connect_with_options(connect, options).await?;
            let stats = {
                let s = store.clone();
                Box::new(move || (s.write_stats(), s.group_commit())) as StatsFn
            };
            Ok((
                Scratch::Postgres {
                    url: url.to_owned(),
                    schema,
                },
                Arc::new(store),
                stats,
            ))
        }
    }

    async fn remove(self) {
        match self {
            Scratch::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Scratch::Postgres { url, schema } => {
                if let Ok(options) = PgConnectOptions::from_str(&url)
                    && let Ok(mut admin) = options.connect().await
                {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            }
        }
    }
}

/// A login's two writes: create an anonymous-looking session with two attributes, then
/// rotate it to a new key for `user`. Each write's latency is recorded on its own.
async fn login(
    store: &dyn SessionStore,
    user: &str,
    latencies: &mut Vec<Duration>,
) -> Result<(), StoreError> {
    let t = Instant::now();
    let mut record = Record::new(
        Some(user.to_owned()),
        now_ms(),
        Duration::from_secs(3600),
        Duration::from_secs(86_400),
    );
    record.attrs.insert("csrf".into(), vec![1u8; 32]);
    record.attrs.insert("device".into(), vec![2u8; 64]);
    let key = Token::generate().key();
    store.create(&key, &record).await?;
    latencies.push(t.elapsed());
    let t = Instant::now();
    let new = Token::generate().key();
    let rotated = store.rotate(&key, &new, &record.meta, now_ms()).await;
    latencies.push(t.elapsed());
    rotated
}

/// The store's write counters and its group-commit settings in effect.
type StatsFn = Box<dyn Fn() -> (WriteStats, GroupCommit) + Send + Sync>;

struct Outcome {
    writes: u64,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    stats: WriteStats,
    config: GroupCommit,
}

async fn run(
    args: &Args,
    group_commit: GroupCommit,
) -> Result<Outcome, Box<dyn std::error::Error>> {
    let options = SqlOptions {
        max_connections: args.connections,
        group_commit,
        ..SqlOptions::default()
    };
    let (scratch, store, stats) = Scratch::open(&args.url, &options).await?;
    let mut keys = Vec::with_capacity(args.writers);
    for _ in 0..args.writers {
        let key = Token::generate().key();
        let record = Record::new(
            Some(format!("user-{}", random_suffix())),
            now_ms(),
            Duration::from_secs(3600),
            Duration::from_secs(86_400),
        );
        store.create(&key, &record).await?;
        keys.push(key);
    }
    let (before, config) = stats();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|key| {
            let store = Arc::clone(&store);
            let op = args.op;
            tokio::spawn(async move {
                let mut writes = 0u64;
                let mut errors = 0u64;
                let mut latencies = Vec::new();
                let user = format!("user-{}", random_suffix());
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let result = match op {
                        Workload::Delta => {
                            let delta = Delta::default()
                                .set("counter", writes.to_le_bytes().to_vec())
                                .set(format!("a{}", writes % 8), vec![7u8; 64]);
                            store.apply(&key, &delta).await
                        }
                        Workload::Touch => {
                            let meta = Record::new(None, 0, Duration::ZERO, Duration::ZERO).meta;
                            store.touch(&key, &meta, now_ms()).await.map(drop)
                        }
                        Workload::Login => login(&*store, &user, &mut latencies).await,
                    };
                    match result {
                        Ok(()) => writes += if op == Workload::Login { 2 } else { 1 },
                        Err(e) => {
                            errors += 1;
                            if errors == 1 {
                                eprintln!("write failed: {e}");
                            }
                            if matches!(e, StoreError::Backend { .. }) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                    if op != Workload::Login {
                        latencies.push(t.elapsed());
                    }
                }
                (writes, errors, latencies)
            })
        })
        .collect();
    let mut outcome = Outcome {
        writes: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        stats: WriteStats::default(),
        config,
    };
    for t in tasks {
        let (w, e, l) = t.await?;
        outcome.writes += w;
        outcome.errors += e;
        outcome.latencies.extend(l);
    }
    outcome.elapsed = started.elapsed();
    let (after, _) = stats();
    outcome.stats = WriteStats {
        transactions: after.transactions - before.transactions,
        operations: after.operations - before.operations,
        statements: after.statements - before.statements,
    };
    drop(store);
    scratch.remove().await;
    Ok(outcome)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn report(mut o: Outcome) {
    o.latencies.sort_unstable();
    let label = if o.config.is_on() {
        format!(
            "group commit on ({} x {})",
            o.config.max_batch, o.config.lanes
        )
    } else {
        "group commit off".to_owned()
    };
    let per_tx = if o.stats.transactions == 0 {
        0.0
    } else {
        o.stats.operations as f64 / o.stats.transactions as f64
    };
    let statements_per_tx = if o.stats.transactions == 0 {
        0.0
    } else {
        o.stats.statements as f64 / o.stats.transactions as f64
    };
    println!(
        "{label:<28} {:>9.0} writes/s  p50 {:>7.2} ms  p99 {:>7.2} ms  {:>5.1} writes/tx  {:>4.1} statements/tx  ({} writes, {} errors, {:.1} s)",
        o.writes as f64 / o.elapsed.as_secs_f64(),
        percentile(&o.latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&o.latencies, 0.99).as_secs_f64() * 1e3,
        per_tx,
        statements_per_tx,
        o.writes,
        o.errors,
        o.elapsed.as_secs_f64(),
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let backend = if args.url == "sqlite" || args.url.starts_with("sqlite:") {
        "sqlite (temp file)"
    } else {
        "postgres"
    };
    println!(
        "{backend}: {} writers, {} s per run, {} connections; {} on distinct sessions",
        args.writers,
        args.seconds,
        args.connections,
        match args.op {
            Workload::Delta => "deltas",
            Workload::Touch => "touches",
            Workload::Login => "logins (create + rotate)",
        }
    );
    let on = GroupCommit {
        max_batch: args.batch,
        lanes: args.lanes,
    };
    for _ in 0..args.rounds {
        let configs = if args.off {
            vec![GroupCommit::off(), on.clone()]
        } else {
            vec![on.clone()]
        };
        for config in configs {
            match run(&args, config).await {
                Ok(o) => report(o),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
        }
    }
}
