//! `ratatoskr-abuse`: a login storm against the `ratatoskr` binary, measuring what it does to
//! the server: peak memory (the kernel's high-water mark of its resident set), the latency of
//! `/livez` probes sent meanwhile, and the answers by status.
//!
//! ```sh
//! cargo run -p ratatoskr-bench --bin ratatoskr-abuse -- \
//!     --server before=/path/to/old/ratatoskr --server after=target/release/ratatoskr \
//!     [--logins 192] [--concurrency 64] [--rounds 3] [--out docs/abuse.md]
//! ```
//!
//! Each round starts the server afresh on an empty SQLite database in a temporary directory,
//! waits for `/livez`, then sends `--logins` logins for unknown user names (each a new
//! connection, `--concurrency` at a time) while one probe at a time asks `/livez`. A server
//! may be given environment settings after its path: `after-nolimit=target/release/ratatoskr
//! RATATOSKR_LOGIN_RATE_LIMIT=off` (many attacking addresses, so the per-client limit does not
//! apply and the hashing pool is what remains).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ratatoskr_bench::cpu;
use ratatoskr_bench::stats::{ms, percentile};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

struct Target {
    label: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
}

struct Options {
    targets: Vec<Target>,
    logins: usize,
    concurrency: usize,
    rounds: usize,
    out: Option<PathBuf>,
}

const USAGE: &str = "usage: ratatoskr-abuse --server LABEL=PATH[ VAR=VALUE…] [--server …] \
[--logins 192] [--concurrency 64] [--rounds 3] [--out docs/abuse.md]";

fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut o = Options {
        targets: Vec::new(),
        logins: 192,
        concurrency: 64,
        rounds: 3,
        out: None,
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--server" => {
                let v = value()?;
                let mut words = v.split_whitespace();
                let (label, path) = words
                    .next()
                    .and_then(|w| w.split_once('='))
                    .ok_or_else(|| format!("--server wants LABEL=PATH, got {v:?}"))?;
                let env = words
                    .map(|w| {
                        w.split_once('=')
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .ok_or_else(|| format!("{w:?} is not VAR=VALUE"))
                    })
                    .collect::<Result<_, _>>()?;
                o.targets.push(Target {
                    label: label.to_owned(),
                    binary: PathBuf::from(path),
                    env,
                });
            }
            "--logins" => o.logins = value()?.parse().map_err(|e| format!("--logins: {e}"))?,
            "--concurrency" => {
                o.concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?
            }
            "--rounds" => o.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.targets.is_empty() || o.logins == 0 || o.concurrency == 0 || o.rounds == 0 {
        return Err(USAGE.into());
    }
    Ok(o)
}

/// One round's figures.
struct Round {
    /// Resident set before the storm, KiB.
    rss_idle_kib: u64,
    /// High-water mark of the resident set at the end, KiB.
    rss_peak_kib: u64,
    /// `/livez` latencies during the storm, microseconds, sorted.
    livez_us: Vec<u32>,
    /// `/livez` probes that failed (no answer or not 200).
    livez_failed: usize,
    /// Login answers by status (0: no answer).
    statuses: BTreeMap<u16, usize>,
    /// How long the storm took.
    storm: Duration,
    /// Login latencies, microseconds, sorted.
    login_us: Vec<u32>,
    /// The share of the machine's CPU that other processes used during the storm.
    other_load: Option<f64>,
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One HTTP/1.1 request on a new connection (`Connection: close`): the status, or an error.
async fn request(addr: SocketAddr, head: &str, body: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "{head}\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    s.read_to_end(&mut buf).await?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf) {
        Ok(_) => resp
            .code
            .ok_or_else(|| std::io::Error::other("no status line")),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

async fn login(addr: SocketAddr, i: usize) -> std::io::Result<u16> {
    let body = format!(r#"{{"username":"ghost{i:05}","password":"guess number {i}"}}"#);
    request(
        addr,
        "POST /api/login HTTP/1.1\r\nContent-Type: application/json\r\nUser-Agent: ratatoskr-abuse",
        &body,
    )
    .await
}

async fn livez(addr: SocketAddr) -> std::io::Result<u16> {
    request(addr, "GET /livez HTTP/1.1", "").await
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(target: &Target, round: usize) -> Result<(Server, SocketAddr), String> {
    let dir = std::env::temp_dir().join(format!(
        "ratatoskr-abuse-{}-{}-{round}",
        std::process::id(),
        target.label
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = free_port().map_err(|e| e.to_string())?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = Command::new(&target.binary);
    cmd.arg("serve")
        .current_dir(&dir)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("ratatoskr.db").display()),
        )
        .env("RATATOSKR_BIND", addr.to_string())
        .env("RUST_LOG", "error")
        .env_remove("REDIS_URL")
        .env_remove("RATATOSKR_SECRET_KEY")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in &target.env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", target.binary.display()))?;
    let server = Server { child, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(200) = livez(addr).await {
            return Ok((server, addr));
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not answer /livez", target.label));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn round(target: &Target, o: &Options, n: usize) -> Result<Round, String> {
    let (server, addr) = start(target, n).await?;
    let pid = server.child.id();
    // Let start-up settle (the first sample, the reaper) before taking the idle figure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle_kib = proc_status_kib(pid, "VmRSS:").ok_or("no VmRSS")?;
    // Other work on the machine (builds…) distorts latencies: wait for a quiet moment (up to a
    // minute) and report the share other processes used anyway.
    tokio::task::block_in_place(|| {
        cpu::wait_quiet(Some(pid), 0.15, Duration::from_secs(60), |m| {
            println!("{m}")
        })
    });
    let cpu_before = cpu::sample(Some(pid));

    let storming = Arc::new(AtomicBool::new(true));
    let prober = {
        let storming = storming.clone();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0;
            while storming.load(Ordering::Relaxed) {
                let t = Instant::now();
                match tokio::time::timeout(Duration::from_secs(30), livez(addr)).await {
                    Ok(Ok(200)) => {
                        lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX))
                    }
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (lat, failed)
        })
    };

    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(o.concurrency));
    let mut tasks = Vec::with_capacity(o.logins);
    for i in 0..o.logins {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = tokio::time::timeout(Duration::from_secs(120), login(addr, i)).await;
            drop(permit);
            let status = match r {
                Ok(Ok(s)) => s,
                _ => 0,
            };
            (
                status,
                u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX),
            )
        }));
    }
    let mut statuses = BTreeMap::new();
    let mut login_us = Vec::with_capacity(o.logins);
    for t in tasks {
        let (status, us) = t.await.map_err(|e| e.to_string())?;
        *statuses.entry(status).or_insert(0) += 1;
        login_us.push(us);
    }
    let storm = started.elapsed();
    let other_load = cpu::others(cpu_before, cpu::sample(Some(pid)));
    storming.store(false, Ordering::Relaxed);
    let (mut livez_us, livez_failed) = prober.await.map_err(|e| e.to_string())?;
    let rss_peak_kib = proc_status_kib(pid, "VmHWM:").ok_or("no VmHWM")?;
    drop(server);
    livez_us.sort_unstable();
    login_us.sort_unstable();
    Ok(Round {
        rss_idle_kib,
        rss_peak_kib,
        livez_us,
        livez_failed,
        statuses,
        storm,
        login_us,
        other_load,
    })
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn statuses(s: &BTreeMap<u16, usize>) -> String {
    s.iter()
        .map(|(code, n)| {
            if *code == 0 {
                format!("{n}× no answer")
            } else {
                format!("{n}× {code}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let o = match parse(std::env::args().skip(1).collect()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut rows = Vec::new();
    for n in 0..o.rounds {
        // Servers interleaved round by round, so a drift in the machine's speed hits all alike.
        for t in &o.targets {
            println!(
                "round {}/{}: {} ({})",
                n + 1,
                o.rounds,
                t.label,
                t.binary.display()
            );
            match rt.block_on(round(t, &o, n)) {
                Ok(r) => {
                    let row = format!(
                        "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {} | {} |",
                        t.label,
                        n + 1,
                        mib(r.rss_idle_kib),
                        mib(r.rss_peak_kib),
                        mib(r.rss_peak_kib.saturating_sub(r.rss_idle_kib)),
                        ms(percentile(&r.livez_us, 0.5)),
                        ms(percentile(&r.livez_us, 0.99)),
                        if r.livez_failed == 0 {
                            format!("{}", r.livez_us.len())
                        } else {
                            format!("{} ({} failed)", r.livez_us.len(), r.livez_failed)
                        },
                        r.storm.as_secs_f64(),
                        statuses(&r.statuses),
                        r.other_load
                            .map_or_else(|| "?".into(), |l| format!("{:.0} %", l * 100.0)),
                    );
                    println!(
                        "  peak RSS {} (idle {}), /livez p99 {} over {} probes, login p50 {}, answers {}",
                        mib(r.rss_peak_kib),
                        mib(r.rss_idle_kib),
                        ms(percentile(&r.livez_us, 0.99)),
                        r.livez_us.len(),
                        ms(percentile(&r.login_us, 0.5)),
                        statuses(&r.statuses)
                    );
                    rows.push(row);
                }
                Err(e) => {
                    eprintln!("  failed: {e}");
                    rows.push(format!(
                        "| {} | {} | failed: {e} | | | | | | | | |",
                        t.label,
                        n + 1
                    ));
                }
            }
        }
    }
    let table = format!(
        "| server | round | RSS idle | peak RSS | growth | /livez p50 | /livez p99 | /livez probes | storm | login answers | other CPU |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    println!("\n{table}");
    if let Some(path) = &o.out {
        let servers: Vec<String> = o
            .targets
            .iter()
            .map(|t| {
                let env: Vec<String> = t.env.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
                format!(
                    "- **{}**: `{}`{}",
                    t.label,
                    t.binary.display(),
                    if env.is_empty() {
                        String::new()
                    } else {
                        format!(" with {}", env.join(", "))
                    }
                )
            })
            .collect();
        let text = format!(
            "# Login storm\n\n\
             Written by `ratatoskr-abuse` (`bench/src/abuse.rs`): {logins} logins for unknown user \
             names, {conc} at a time, each on a new connection from 127.0.0.1, against a fresh \
             `ratatoskr serve` on an empty SQLite database; meanwhile one `/livez` probe at a time \
             (10 ms apart). Peak RSS is the kernel's high-water mark of the server's resident set \
             (`VmHWM`) after the storm; growth is that minus the resident set before it. \
             \"Other CPU\" is the share of the machine other processes used during the storm \
             (the tool waits up to a minute for it to drop under 15 % first). \
             {rounds} rounds, servers interleaved. Machine: {cores} CPU cores.\n\n{}\n\n{table}",
            servers.join("\n"),
            logins = o.logins,
            conc = o.concurrency,
            rounds = o.rounds,
            cores = std::thread::available_parallelism().map_or(0, usize::from),
        );
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
        println!("wrote {}", path.display());
    }
}
