//! A private `redis-server` for the run, so that nothing else on the machine disturbs the
//! numbers and the peers' keys never touch a shared Redis.
//!
//! A thin wrapper over the test kit's [`RedisProcess`] (which starts `redis-server` from `PATH`
//! on a free loopback port, without persistence, and kills it when dropped): the bench also
//! needs the server's process id (to tell its CPU use from other processes') and version (for
//! the report), which the test kit does not expose; both are read from `INFO server`.

use ratatoskr_testkit::RedisProcess;

pub struct RedisServer {
    _process: RedisProcess,
    pub port: u16,
    pub version: String,
    pid: u32,
}

impl RedisServer {
    /// Start `redis-server` (the only `binary` supported: the test kit runs it from `PATH`).
    /// Panics with the test kit's message if it cannot be run.
    pub fn start(binary: &str) -> Result<RedisServer, String> {
        if binary != "redis-server" {
            return Err(format!(
                "`{binary}`: the bench starts `redis-server` from PATH (put the one to measure \
                 first on PATH)"
            ));
        }
        let process = RedisProcess::start();
        let port = process.port;
        let info = info_server(&process.url())?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_owned())
                .ok_or_else(|| format!("INFO server has no `{name}`"))
        };
        let pid = field("process_id")?
            .parse()
            .map_err(|e| format!("process_id: {e}"))?;
        let version = format!(
            "Redis server v={} bits={}",
            field("redis_version")?,
            field("arch_bits").unwrap_or_default()
        );
        Ok(RedisServer {
            _process: process,
            port,
            version,
            pid,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A synchronous connection for the bench's own queries.
    pub fn connection(&self) -> Result<redis::Connection, String> {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .map_err(|e| format!("Redis: {e}"))
    }

    /// Keys in db0, for the report's sanity line.
    pub fn dbsize(&self) -> Option<u64> {
        redis::cmd("DBSIZE")
            .query(&mut self.connection().ok()?)
            .ok()
    }

    /// Remove every key (between contenders, so that each one's memory is its own).
    pub fn flush(&self) -> Result<(), String> {
        redis::cmd("FLUSHALL")
            .query::<()>(&mut self.connection()?)
            .map_err(|e| format!("FLUSHALL: {e}"))
    }

    /// The memory Redis attributes to every key it holds (`MEMORY USAGE`, all samples), and the
    /// number of keys.
    pub fn bytes_of_all_keys(&self) -> Result<(u64, u64), String> {
        let mut con = self.connection()?;
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut con)
            .map_err(|e| format!("KEYS: {e}"))?;
        let mut total = 0u64;
        for k in &keys {
            let bytes: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(k)
                .arg("SAMPLES")
                .arg(0)
                .query(&mut con)
                .map_err(|e| format!("MEMORY USAGE: {e}"))?;
            total += bytes.unwrap_or(0);
        }
        Ok((total, keys.len() as u64))
    }
}

fn info_server(url: &str) -> Result<String, String> {
    let mut con = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .map_err(|e| format!("Redis: {e}"))?;
    redis::cmd("INFO")
        .arg("server")
        .query(&mut con)
        .map_err(|e| format!("INFO server: {e}"))
}
