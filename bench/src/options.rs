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

/// The command line (`--help` prints it).
#[derive(clap::Parser, Debug)]
#[command(
    name = "ratatoskr-bench",
    about = "HTTP and store throughput of Ratatoskr and its peers, in one run."
)]
struct Cli {
    /// Measured time per scenario, seconds (default 5)
    #[arg(long, value_name = "SECS", value_parser = secs)]
    duration: Option<Duration>,
    /// Unmeasured time before each scenario, seconds (default 1)
    #[arg(long, value_name = "SECS", value_parser = secs)]
    warmup: Option<Duration>,
    /// Keep-alive HTTP connections, one session each (default 32)
    #[arg(long, value_name = "N", value_parser = count)]
    connections: Option<usize>,
    /// Concurrent writers in the store-level scenario (default: --connections)
    #[arg(long, value_name = "N", value_parser = count)]
    store_tasks: Option<usize>,
    /// Worker threads of each server under test
    #[arg(long, value_name = "N", value_parser = count, default_value = "2")]
    server_threads: usize,
    /// Threads of the load generator
    #[arg(long, value_name = "N", value_parser = count, default_value = "2")]
    client_threads: usize,
    /// PostgreSQL for the Redis + PostgreSQL tier, or `none`
    #[arg(
        long,
        value_name = "URL|none",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pg_url: String,
    /// The redis-server binary; the bench runs its own on a free port (the test kit's starter,
    /// which runs `redis-server` from PATH)
    #[arg(long, value_name = "PATH", default_value = "redis-server")]
    redis_server: String,
    /// Run only contenders whose id contains one of the comma-separated words
    #[arg(long, value_name = "WORD[,WORD…]", value_delimiter = ',')]
    only: Vec<String>,
    /// Before each scenario, wait up to SECS for other processes to use less than 10 % of the
    /// CPU, and measure a scenario they disturbed again (3 times at most, the least disturbed
    /// is kept); default: do not wait (the report shows their share either way)
    #[arg(long, value_name = "SECS", value_parser = secs)]
    wait_quiet: Option<Duration>,
    /// Measure every contender N times, the contenders interleaved, and report each one's
    /// median round with the range
    #[arg(long, value_name = "N", value_parser = count, default_value = "1")]
    rounds: usize,
    /// Where to write the report (the SVG chart goes beside it, same stem); default
    /// docs/benchmarks.md, with --tiny a temporary directory
    #[arg(long, value_name = "FILE.md")]
    out: Option<PathBuf>,
    /// ~200 ms per scenario, 4 connections: checks the harness, measures nothing
    #[arg(long)]
    tiny: bool,
}

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
    /// Parse the arguments (without the program name). `Err` carries clap's message (the help
    /// text for `--help`) and whether it is one (exit 0) rather than a mistake (exit 2).
    pub fn parse(args: Vec<String>) -> Result<Options, (String, bool)> {
        use clap::Parser as _;
        let cli =
            Cli::try_parse_from(std::iter::once("ratatoskr-bench".to_owned()).chain(args.clone()))
                .map_err(|e| (e.render().to_string(), !e.use_stderr()))?;
        let tiny = cli.tiny;
        let connections = cli.connections.unwrap_or(if tiny { 4 } else { 32 });
        let out = match cli.out {
            Some(p) => p,
            None if tiny => std::env::temp_dir()
                .join(format!("ratatoskr-bench-{}", std::process::id()))
                .join("benchmarks.md"),
            None => default_out(),
        };
        Ok(Options {
            duration: cli.duration.unwrap_or(if tiny {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(5)
            }),
            warmup: cli.warmup.unwrap_or(if tiny {
                Duration::from_millis(50)
            } else {
                Duration::from_secs(1)
            }),
            connections,
            store_tasks: cli.store_tasks.unwrap_or(connections),
            server_threads: cli.server_threads,
            client_threads: cli.client_threads,
            pg_url: (cli.pg_url != "none").then_some(cli.pg_url),
            redis_server: cli.redis_server,
            only: cli.only.into_iter().filter(|w| !w.is_empty()).collect(),
            wait_quiet: cli.wait_quiet.unwrap_or(Duration::ZERO),
            rounds: cli.rounds,
            out,
            tiny,
            args,
        })
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

fn secs(v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 3600.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("expected seconds in (0, 3600], got `{v}`")),
    }
}

fn count(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(format!("expected a number in 1..=4096, got `{v}`")),
    }
}
