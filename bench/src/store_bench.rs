//! Store-level write throughput, no HTTP: N tasks, each with a session of its own, apply a
//! one-attribute delta as fast as the store answers, for a fixed time after a warm-up.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatoskr_core::{Delta, Record, SessionStore, Token, now_ms};
use ratatoskr_sql::{PgStore, SqlOptions, SqlStore};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::stats::Summary;

/// A store-level contender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    RedisOnly,
    TieredSqlite,
    TieredPostgres,
    SqliteOnly,
    PostgresOnly,
}

pub const STORE_CONTENDERS: &[(&str, &str, StoreKind)] = &[
    ("store-redis", "Redis only", StoreKind::RedisOnly),
    (
        "store-tiered-sqlite",
        "tiered: Redis + SQLite",
        StoreKind::TieredSqlite,
    ),
    (
        "store-tiered-pg",
        "tiered: Redis + PostgreSQL",
        StoreKind::TieredPostgres,
    ),
    (
        "store-sqlite",
        "SQLite only (reference)",
        StoreKind::SqliteOnly,
    ),
    (
        "store-pg",
        "PostgreSQL only (reference)",
        StoreKind::PostgresOnly,
    ),
];

/// A scratch PostgreSQL schema, dropped at the end.
pub struct PgScratch {
    url: String,
    schema: String,
}

impl PgScratch {
    /// Create a schema of our own; an error (unreachable, no rights) says why.
    pub async fn create(url: &str) -> Result<(PgScratch, String), String> {
        let options = PgConnectOptions::from_str(url).map_err(|e| e.to_string())?;
        let mut admin = tokio::time::timeout(Duration::from_secs(3), options.connect())
            .await
            .map_err(|_| format!("no connection to PostgreSQL at {} within 3 s", redact(url)))?
            .map_err(|e| format!("PostgreSQL at {}: {e}", redact(url)))?;
        let version: String = sqlx::query_scalar("SHOW server_version")
            .fetch_one(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
        let suffix: [u8; 6] = ratatoskr_core::token::random_bytes();
        let schema = format!(
            "ratatoskr_bench_{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
            .execute(&mut admin)
            .await
            .map_err(|e| e.to_string())?;
        let _ = admin.close().await;
        Ok((
            PgScratch {
                url: url.to_owned(),
                schema,
            },
            version,
        ))
    }

    pub async fn connect(&self) -> Result<SqlStore, String> {
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|e| e.to_string())?
            .options([("search_path", self.schema.as_str())]);
        let pg = PgStore::connect_with_options(options, &SqlOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        Ok(SqlStore::Postgres(pg))
    }

    pub async fn drop_schema(self) {
        if let Ok(options) = PgConnectOptions::from_str(&self.url)
            && let Ok(mut admin) = options.connect().await
        {
            let _ = sqlx::query(&format!(
                "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
                self.schema
            ))
            .execute(&mut admin)
            .await;
            let _ = admin.close().await;
        }
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// `tasks` writers on `store` for `warmup + duration`.
pub async fn writes(
    store: Arc<dyn SessionStore>,
    tasks: usize,
    warmup: Duration,
    duration: Duration,
    redis_pid: u32,
) -> Result<Summary, String> {
    let mut keys = Vec::with_capacity(tasks);
    for i in 0..tasks {
        let key = Token::generate().key();
        let record = Record::new(
            Some(format!("store-user-{i}")),
            now_ms(),
            Duration::from_secs(2 * 3600),
            Duration::from_secs(24 * 3600),
        );
        store
            .create(&key, &record)
            .await
            .map_err(|e| format!("create: {e}"))?;
        keys.push(key);
    }
    // Sampled here, while the store's connections (and PostgreSQL's backends) are alive: the
    // CPU time of a process that exits before the second sample could not be told apart from
    // another program's.
    let cpu_before = crate::cpu::sample(Some(redis_pid));
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut set = tokio::task::JoinSet::new();
    for key in keys {
        let store = store.clone();
        set.spawn(async move {
            let mut ok = 0u64;
            let mut errors = 0u64;
            let mut first_error = None;
            let mut latencies = Vec::with_capacity(16 * 1024);
            let mut n = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                n += 1;
                let delta = Delta::default().set("counter", n.to_string().into_bytes());
                let result = store.apply(&key, &delta).await;
                let done = Instant::now();
                let counted = sent >= measure_from && done <= end;
                match result {
                    Ok(()) if counted => {
                        ok += 1;
                        latencies.push(
                            u32::try_from(done.duration_since(sent).as_micros())
                                .unwrap_or(u32::MAX),
                        );
                    }
                    Ok(()) => {}
                    Err(e) => {
                        if counted {
                            errors += 1;
                        }
                        first_error.get_or_insert_with(|| e.to_string());
                        // Do not spin on a failing store.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            // The last write must be what the store now holds.
            let stored = store.load(&key).await.ok().flatten().and_then(|r| {
                r.attrs
                    .get("counter")
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
            });
            let lost = first_error.is_none() && stored != Some(n);
            (ok, errors, latencies, first_error, lost)
        });
    }
    let (mut ok, mut errors, mut latencies, mut first_error, mut lost) =
        (0, 0, Vec::new(), None, 0usize);
    while let Some(joined) = set.join_next().await {
        let (o, e, l, f, x) = joined.map_err(|e| e.to_string())?;
        ok += o;
        errors += e;
        latencies.extend_from_slice(&l);
        if first_error.is_none() {
            first_error = f;
        }
        lost += usize::from(x);
    }
    let other_load = crate::cpu::others(cpu_before, crate::cpu::sample(Some(redis_pid)));
    if lost > 0 {
        return Err(format!(
            "{lost} sessions do not hold their last written value"
        ));
    }
    let mut summary = Summary::new(ok, errors, duration, latencies, first_error);
    summary.other_load = other_load;
    Ok(summary)
}
