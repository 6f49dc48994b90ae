//! Command-line options.

use std::path::PathBuf;
use std::time::Duration;

/// Where `docs/benchmarks.md` is, whatever directory the bench is started from.
pub fn default_out() -> PathBuf {
    let bench = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    bench
        .parent()
        .unwrap_or(bench)
        .join("docs")
        .join("benchmarks.md")
}

pub const USAGE: &str = "\
ratatoskr-bench: HTTP and store throughput of Ratatoskr and its peers, in one run.

usage: ratatoskr-bench [--duration SECS] [--warmup SECS] [--connections N] [--store-tasks N]
                       [--server-threads N] [--client-threads N] [--pg-url URL|none]
                       [--redis-server PATH] [--only WORD[,WORD…]] [--wait-quiet SECS]
                       [--rounds N] [--out FILE.md] [--tiny]

  --duration SECS      measured time per scenario (default 5)
  --warmup SECS        unmeasured time before each scenario (default 1)
  --connections N      keep-alive HTTP connections, one session each (default 32)
  --store-tasks N      concurrent writers in the store-level scenario (default: --connections)
  --server-threads N   worker threads of each server under test (default 2)
  --client-threads N   threads of the load generator (default 2)
  --pg-url URL|none    PostgreSQL for the Redis + PostgreSQL tier
                       (default postgres://postgres@127.0.0.1:5432/test; skipped if unreachable)
  --redis-server PATH  the redis-server binary; the bench runs its own on a free port
  --only WORDS         run only contenders whose id contains one of the comma-separated words
  --wait-quiet SECS    before each scenario, wait up to SECS for other processes to use less
                       than 10 % of the CPU, and measure a scenario they disturbed again
                       (3 times at most, the least disturbed is kept); default 0: do not wait
                       (the report shows their share either way)
  --rounds N           measure every contender N times, the contenders interleaved, and report
                       each one's median round with the range (default 1)
  --out FILE.md        where to write the report (the SVG chart goes beside it, same stem)
                       (default docs/benchmarks.md; with --tiny, a temporary directory)
  --tiny               ~200 ms per scenario, 4 connections: checks the harness, measures nothing
";

#[derive(Clone, Debug)]
pub struct Options {
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: usize,
    pub store_tasks: usize,
    pub server_threads: usize,
    pub client_threads: usize,
    pub pg_url: Option<String>,
    pub redis_server: String,
    pub only: Vec<String>,
    pub wait_quiet: Duration,
    pub rounds: usize,
    pub out: PathBuf,
    pub tiny: bool,
    /// The arguments as given, for the report.
    pub args: Vec<String>,
}

impl Options {
    pub fn parse(args: Vec<String>) -> Result<Options, String> {
        let tiny = args.iter().any(|a| a == "--tiny");
        let mut o = Options {
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            connections: 32,
            store_tasks: 0,
            server_threads: 2,
            client_threads: 2,
            pg_url: Some("postgres://postgres@127.0.0.1:5432/test".into()),
            redis_server: "redis-server".into(),
            only: Vec::new(),
            wait_quiet: Duration::ZERO,
            rounds: 1,
            out: PathBuf::new(),
            tiny,
            args: args.clone(),
        };
        if tiny {
            o.duration = Duration::from_millis(200);
            o.warmup = Duration::from_millis(50);
            o.connections = 4;
        }
        let mut out = None;
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--tiny" => {}
                "--duration" => o.duration = secs(&flag, &value()?)?,
                "--warmup" => o.warmup = secs(&flag, &value()?)?,
                "--connections" => o.connections = count(&flag, &value()?)?,
                "--store-tasks" => o.store_tasks = count(&flag, &value()?)?,
                "--server-threads" => o.server_threads = count(&flag, &value()?)?,
                "--client-threads" => o.client_threads = count(&flag, &value()?)?,
                "--pg-url" => {
                    let v = value()?;
                    o.pg_url = (v != "none").then_some(v);
                }
                "--redis-server" => o.redis_server = value()?,
                "--only" => {
                    o.only = value()?
                        .split(',')
                        .filter(|w| !w.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                "--wait-quiet" => o.wait_quiet = secs(&flag, &value()?)?,
                "--rounds" => o.rounds = count(&flag, &value()?)?,
                "--out" => out = Some(PathBuf::from(value()?)),
                "--help" | "-h" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
            }
        }
        if o.store_tasks == 0 {
            o.store_tasks = o.connections;
        }
        o.out = match out {
            Some(p) => p,
            None if tiny => std::env::temp_dir()
                .join(format!("ratatoskr-bench-{}", std::process::id()))
                .join("benchmarks.md"),
            None => default_out(),
        };
        Ok(o)
    }

    /// Whether the contender `id` is selected by `--only`.
    pub fn selected(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| id.contains(w.as_str()))
    }

    /// The command that reproduces this run.
    pub fn command(&self) -> String {
        let mut cmd = String::from("cargo run --release -p ratatoskr-bench");
        if !self.args.is_empty() {
            cmd.push_str(" --");
            for a in &self.args {
                cmd.push(' ');
                cmd.push_str(a);
            }
        }
        cmd
    }
}

fn secs(flag: &str, v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{flag}: expected seconds in (0, 3600], got `{v}`")),
    }
}

fn count(flag: &str, v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(format!("{flag}: expected a number in 1..=4096, got `{v}`")),
    }
}
