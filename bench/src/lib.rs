//! # ratatoskr-bench
//!
//! One run, every contender: HTTP session reads and writes through Ratatoskr (tiered and
//! Redis-only), tower-sessions and actix-session, against bare axum and actix-web handlers;
//! then store-level write throughput of the Redis store against the tiered store. The results
//! go to `docs/benchmarks.md` with an SVG chart beside it.
//!
//! `cargo run --release -p ratatoskr-bench -- --help` lists the flags.

pub mod cpu;
pub mod loadgen;
pub mod options;
pub mod redis_server;
pub mod report;
pub mod servers;
pub mod stats;
pub mod store_bench;

use std::sync::Arc;
use std::time::{Duration, Instant};

use loadgen::Op;
use options::Options;
use redis_server::RedisServer;
use report::{HttpRow, Machine, Report, StoreRow};
use servers::{CONTENDERS, Contender, Server};
use stats::{Summary, ms, thousands};
use store_bench::{PgScratch, STORE_CONTENDERS, StoreKind};

fn progress(msg: impl AsRef<str>) {
    println!("{}", msg.as_ref());
}

fn line(what: &str, s: &Result<Summary, String>) -> String {
    match s {
        Ok(s) => format!(
            "{what}: {:>9}/s  p50 {:>9}  p99 {:>9}  errors {}{}",
            thousands(s.per_sec),
            ms(s.p50_us),
            ms(s.p99_us),
            s.errors,
            s.other_load
                .map(|l| format!("  (other processes: {:.0} % CPU)", l * 100.0))
                .unwrap_or_default()
        ),
        Err(e) => format!("{what}: not measured: {e}"),
    }
}

/// Run everything `o` selects and write the report. Returns the report's path.
pub fn run(o: &Options) -> Result<std::path::PathBuf, String> {
    let started = Instant::now();
    let date = report::utc_now();
    progress(format!(
        "ratatoskr-bench: {} connections, {:.2} s warm-up + {:.2} s per scenario{}",
        o.connections,
        o.warmup.as_secs_f64(),
        o.duration.as_secs_f64(),
        if cfg!(debug_assertions) {
            " (debug build: numbers are not representative; use --release)"
        } else {
            ""
        }
    ));
    let redis = RedisServer::start(&o.redis_server)?;
    progress(format!(
        "started a private Redis on 127.0.0.1:{} ({})",
        redis.port, redis.version
    ));
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.client_threads)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;

    let selected: Vec<&Contender> = CONTENDERS.iter().filter(|c| o.selected(c.id)).collect();
    let stores: Vec<_> = STORE_CONTENDERS
        .iter()
        .filter(|(id, ..)| o.selected(id))
        .collect();
    let total = (selected.len() + stores.len()) * o.rounds;
    let mut step = 0;
    let round_tag = |round: usize| {
        if o.rounds > 1 {
            format!(" (round {round}/{})", o.rounds)
        } else {
            String::new()
        }
    };

    // Rounds interleave the contenders, so that a slow spell of the machine does not fall on
    // one contender only; each contender's median round is reported.
    let mut http_rounds: Vec<Vec<HttpRow>> = vec![Vec::new(); selected.len()];
    for round in 1..=o.rounds {
        for (i, c) in selected.iter().enumerate() {
            step += 1;
            progress(format!(
                "[{step}/{total}] HTTP: {}{}",
                c.name,
                round_tag(round)
            ));
            http_rounds[i].push(http_contender(o, c, &redis, &client_rt));
        }
    }
    drop(client_rt);
    let http: Vec<HttpRow> = http_rounds.into_iter().map(HttpRow::median).collect();

    // Store level.
    let store_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.server_threads)
        .thread_name("store")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let pg_needed = stores
        .iter()
        .any(|(_, _, k)| matches!(k, StoreKind::TieredPostgres | StoreKind::PostgresOnly));
    let postgres: Result<String, String> = match (&o.pg_url, pg_needed) {
        (None, _) => Err("disabled with --pg-url none".into()),
        (Some(_), false) => Err("not selected".into()),
        (Some(url), true) => store_rt.block_on(async {
            let (scratch, version) = PgScratch::create(url).await?;
            scratch.drop_schema().await;
            Ok(format!("PostgreSQL {version}"))
        }),
    };
    if let Err(e) = &postgres {
        progress(format!("PostgreSQL: {e}"));
    }
    let mut store_rounds: Vec<Vec<Result<Summary, String>>> = vec![Vec::new(); stores.len()];
    for round in 1..=o.rounds {
        for (i, (_, name, kind)) in stores.iter().enumerate() {
            step += 1;
            progress(format!(
                "[{step}/{total}] store: {name}{}",
                round_tag(round)
            ));
            let ((), result) = measure(o, &redis, "writes", (), |()| {
                (
                    (),
                    store_rt.block_on(store_contender(o, *kind, &redis, &postgres)),
                )
            });
            store_rounds[i].push(result);
        }
    }
    let store: Vec<StoreRow> = stores
        .iter()
        .zip(store_rounds)
        .map(|((id, name, _), results)| StoreRow {
            id,
            name,
            result: stats::median(results),
        })
        .collect();
    store_rt.shutdown_timeout(Duration::from_secs(2));

    let machine = Machine::probe(redis.version.clone(), postgres);
    drop(redis);
    let report = Report {
        date,
        machine,
        http,
        store,
        elapsed: started.elapsed(),
    };
    let md_path = o.out.clone();
    let svg_path = md_path.with_extension("svg");
    let svg_name = svg_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "benchmarks.svg".into());
    if let Some(dir) = md_path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&md_path, report.markdown(o, &svg_name))
        .map_err(|e| format!("{}: {e}", md_path.display()))?;
    std::fs::write(&svg_path, report.svg(o)).map_err(|e| format!("{}: {e}", svg_path.display()))?;
    progress(format!(
        "wrote {} and {} in {:.0} s",
        md_path.display(),
        svg_path.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(md_path)
}

fn http_contender(
    o: &Options,
    c: &Contender,
    redis: &RedisServer,
    client_rt: &tokio::runtime::Runtime,
) -> HttpRow {
    let scratch =
        std::env::temp_dir().join(format!("ratatoskr-bench-{}-{}", std::process::id(), c.id));
    let failed = |e: String| {
        progress(format!("    not measured: {e}"));
        HttpRow {
            contender: *c,
            read: Err(e.clone()),
            write: Err(e.clone()),
            login: Err(e.clone()),
            redis_bytes: c.has_sessions().then_some(Err(e)),
            notes: Vec::new(),
        }
    };
    // Each contender's Redis memory is its own.
    if let Err(e) = redis.flush() {
        return failed(e);
    }
    let server = match Server::start(
        c,
        &redis.url(),
        o.pg_url.as_deref(),
        o.server_threads,
        scratch,
    ) {
        Ok(s) => s,
        Err(e) => return failed(format!("server did not start: {e}")),
    };
    let clients = client_rt.block_on(async {
        let clients = tokio::time::timeout(
            Duration::from_secs(30),
            loadgen::login_all(server.addr, o.connections),
        )
        .await
        .map_err(|_| "logging the connections in took over 30 s".to_owned())?
        .map_err(|e| format!("login: {e}"))?;
        // Every connection must see its own session before anything is measured.
        let mut checked = Vec::with_capacity(clients.len());
        for mut cl in clients {
            let resp = cl
                .request(Op::Read)
                .await
                .map_err(|e| format!("first read: {e}"))?;
            let want = if c.has_sessions() {
                format!("user {}", cl.user)
            } else {
                "user".to_owned()
            };
            if resp.status != 200 || resp.body != want.as_bytes() {
                return Err(format!(
                    "first read answered {} `{}`, expected 200 `{want}`",
                    resp.status,
                    String::from_utf8_lossy(&resp.body)
                ));
            }
            checked.push(cl);
        }
        Ok::<_, String>(checked)
    });
    let clients = match clients {
        Ok(c) => c,
        Err(e) => {
            server.stop();
            return failed(e);
        }
    };
    // One logged-in session per connection (per user), each read once: what Redis holds per
    // session, everything included (indexes, counters, the store's own keys, shared out).
    let redis_bytes = c.has_sessions().then(|| {
        let (bytes, keys) = redis.bytes_of_all_keys()?;
        progress(format!(
            "    Redis: {bytes} bytes in {keys} keys for {} sessions",
            clients.len()
        ));
        Ok(bytes as f64 / clients.len().max(1) as f64)
    });
    let (clients, read) = http_phase(o, redis, client_rt, clients, Op::Read);
    let after_reads = server.report();
    let (clients, write) = http_phase(o, redis, client_rt, clients, Op::Write);

    let mut notes = Vec::new();
    if c.has_sessions() {
        let wrong: Vec<String> = clients
            .iter()
            .filter(|cl| cl.last_counter != Some(cl.writes_ok))
            .map(|cl| {
                format!(
                    "connection {} made {} writes, counter says {:?}",
                    cl.user, cl.writes_ok, cl.last_counter
                )
            })
            .collect();
        let lost = o.connections - clients.len();
        if wrong.is_empty() && lost == 0 {
            notes.push(format!(
                "every connection's counter equals its number of successful writes \
                 ({} connections)",
                clients.len()
            ));
        } else {
            let n = note_limit(&wrong);
            notes.push(format!(
                "write check FAILED: {} counters wrong, {lost} connections lost{n}",
                wrong.len()
            ));
            progress(format!("    write check failed: {}", wrong.join("; ")));
        }
    }
    if let Some(r) = after_reads {
        progress(format!("    after the reads: {r}"));
        notes.push(format!("after the reads, {r}"));
    }
    if let Some(r) = server.report() {
        progress(format!("    after the writes: {r}"));
        notes.push(format!("after the writes, {r}"));
    }
    let (clients, login) = http_phase(o, redis, client_rt, clients, Op::Login);
    drop(clients);
    server.stop();
    HttpRow {
        contender: *c,
        read: Ok(read),
        write: Ok(write),
        login: Ok(login),
        redis_bytes,
        notes,
    }
}

/// Other processes may use this share of the CPU during a measurement before it counts as
/// disturbed (with `--wait-quiet`).
pub const QUIET: f64 = 0.10;

/// With `--wait-quiet`, how many times a disturbed scenario is measured at most.
pub const QUIET_ATTEMPTS: usize = 3;

/// With `--wait-quiet`, wait for other processes to calm down before a scenario.
fn quiet(o: &Options, redis: &RedisServer) {
    if !o.wait_quiet.is_zero() {
        cpu::wait_quiet(Some(redis.pid()), QUIET, o.wait_quiet, progress);
    }
}

/// Measure `f` (with `--wait-quiet`: after waiting for quiet, and again, up to
/// [`QUIET_ATTEMPTS`] times, while other processes disturbed it); keep the least disturbed.
fn measure<S>(
    o: &Options,
    redis: &RedisServer,
    what: &str,
    mut state: S,
    mut f: impl FnMut(S) -> (S, Result<Summary, String>),
) -> (S, Result<Summary, String>) {
    let attempts = if o.wait_quiet.is_zero() {
        1
    } else {
        QUIET_ATTEMPTS
    };
    let mut best: Option<Result<Summary, String>> = None;
    for attempt in 1..=attempts {
        quiet(o, redis);
        let before = cpu::sample(Some(redis.pid()));
        let (s, mut result) = f(state);
        state = s;
        let load = cpu::others(before, cpu::sample(Some(redis.pid())));
        if let Ok(summary) = &mut result {
            // A measurement that sampled its own window (the store level) keeps its figure.
            summary.other_load = summary.other_load.or(load);
        }
        progress(format!("    {}", line(what, &result)));
        let load_of = |r: &Result<Summary, String>| {
            r.as_ref()
                .map_or(f64::INFINITY, |s| s.other_load.unwrap_or(0.0))
        };
        let better = best.as_ref().is_none_or(|b| load_of(&result) < load_of(b));
        let disturbed = load_of(&result) > QUIET && result.is_ok();
        if better {
            best = Some(result);
        }
        if !disturbed {
            break;
        }
        if attempt < attempts {
            progress("    disturbed by other processes: measuring again");
        }
    }
    (state, best.expect("measured at least once"))
}

fn http_phase(
    o: &Options,
    redis: &RedisServer,
    client_rt: &tokio::runtime::Runtime,
    clients: Vec<loadgen::Client>,
    op: Op,
) -> (Vec<loadgen::Client>, Summary) {
    let what = match op {
        Op::Read => "read ",
        Op::Write => "write",
        Op::Login => "login",
    };
    let (clients, result) = measure(o, redis, what, clients, |clients| {
        let (clients, summary) =
            client_rt.block_on(loadgen::phase(clients, op, o.warmup, o.duration));
        (clients, Ok(summary))
    });
    (clients, result.expect("a phase always has a summary"))
}

fn note_limit(wrong: &[String]) -> String {
    match wrong.first() {
        Some(first) => format!(" (e.g. {first})"),
        None => String::new(),
    }
}

async fn store_contender(
    o: &Options,
    kind: StoreKind,
    redis: &RedisServer,
    postgres: &Result<String, String>,
) -> Result<Summary, String> {
    use ratatoskr_core::SessionStore;
    let pg = || -> Result<&str, String> {
        match postgres {
            Ok(_) => Ok(o.pg_url.as_deref().unwrap_or_default()),
            Err(e) => Err(format!("PostgreSQL {e}")),
        }
    };
    let dir = std::env::temp_dir().join(format!(
        "ratatoskr-bench-{}-store-{kind:?}",
        std::process::id()
    ));
    let run = |store: Arc<dyn SessionStore>| {
        store_bench::writes(store, o.store_tasks, o.warmup, o.duration, redis.pid())
    };
    match kind {
        StoreKind::RedisOnly => {
            let config = ratatoskr_redis::RedisConfig {
                key_prefix: "sr:".into(),
                ..ratatoskr_redis::RedisConfig::new(redis.url())
            };
            let store = ratatoskr_redis::RedisStore::connect(config)
                .await
                .map_err(|e| e.to_string())?;
            run(Arc::new(store)).await
        }
        StoreKind::TieredSqlite => {
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let result = async {
                let tiered = servers::tiered_sqlite(&redis.url(), "st:", &dir).await?;
                run(Arc::new(tiered)).await
            }
            .await;
            let _ = std::fs::remove_dir_all(&dir);
            result
        }
        StoreKind::SqliteOnly => {
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let result = async {
                let sql = ratatoskr_sql::SqlStore::connect(&format!(
                    "sqlite://{}",
                    dir.join("sessions.db").display()
                ))
                .await
                .map_err(|e| e.to_string())?;
                run(sql.store()).await
            }
            .await;
            let _ = std::fs::remove_dir_all(&dir);
            result
        }
        StoreKind::TieredPostgres | StoreKind::PostgresOnly => {
            let (scratch, _) = PgScratch::create(pg()?).await?;
            let result = async {
                let sql = scratch.connect().await?;
                if kind == StoreKind::PostgresOnly {
                    run(sql.store()).await
                } else {
                    let tiered = servers::tiered_over(&redis.url(), "sp:", sql).await?;
                    run(Arc::new(tiered)).await
                }
            }
            .await;
            scratch.drop_schema().await;
            result
        }
    }
}
