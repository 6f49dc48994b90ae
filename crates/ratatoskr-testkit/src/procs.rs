//! The tests' own server processes: a `redis-server` and a PostgreSQL cluster on free
//! loopback ports, which the tests kill, freeze and restart. The shared services on 6379 and
//! 5432 are never touched.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a test says when `redis-server` cannot be started: a missing prerequisite fails the test
/// (never a silent pass). Every crate's tests use this message.
pub const REDIS_SERVER_MISSING: &str = "redis-server is installed (scripts/test.sh installs it)";

/// What a test says when PostgreSQL's programs cannot be found.
pub const POSTGRES_MISSING: &str = "PostgreSQL is installed (scripts/test.sh installs it)";

/// A free TCP port on 127.0.0.1 (bound and released; good enough for a test).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

pub(crate) fn wait_port(port: u16, up: bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if open == up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} on port {port} did not {}",
            if up { "start" } else { "stop" }
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A new, empty directory `ratatoskr-<what>-<port>-<pid>` under the temp dir (a leftover of an
/// earlier run with the same port and pid is deleted first).
pub(crate) fn fresh_dir(what: &str, port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ratatoskr-{what}-{port}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{what} dir {}: {e}", dir.display()));
    dir
}

/// Kill a test-owned process and delete its directory (on drop). A frozen process is sent
/// SIGCONT first so that it dies at once.
pub(crate) fn discard(child: Option<Child>, dir: &Path) {
    if let Some(mut c) = child {
        let _ = Command::new("kill")
            .args(["-CONT", &c.id().to_string()])
            .status();
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = std::fs::remove_dir_all(dir);
}

pub(crate) fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}

/// A test-owned redis-server. Dropped: killed.
pub struct RedisProcess {
    /// The loopback port it listens on.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisProcess {
    /// Start a fresh, empty redis-server on a free port, keeping nothing on disk unless
    /// [`snapshot`](Self::snapshot) is called.
    pub fn start() -> Self {
        let port = free_port();
        let dir = fresh_dir("redis", port);
        let mut r = RedisProcess {
            port,
            dir,
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir.to_str().expect("utf-8 dir"),
                "--dbfilename",
                "snapshot.rdb",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(REDIS_SERVER_MISSING);
        self.child = Some(child);
        wait_port(self.port, true, "redis-server");
    }

    /// `redis://127.0.0.1:PORT/`, with RESP3 when asked.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Write the dataset to disk now (what a restart will load).
    pub fn snapshot(&self) {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "SAVE"])
            .output()
            .expect("redis-cli runs");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("OK"),
            "SAVE failed"
        );
    }

    /// Forget any snapshot, so the next start is empty.
    pub fn discard_snapshot(&self) {
        let _ = std::fs::remove_file(self.dir.join("snapshot.rdb"));
    }

    /// SIGKILL: no chance to save or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "-KILL");
            let _ = c.wait();
        }
        wait_port(self.port, false, "redis-server");
    }

    /// Start again on the same port (empty, or with the snapshot if one was taken).
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// SIGSTOP: the process holds its sockets open and answers nothing.
    pub fn freeze(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), "-STOP");
        }
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        if let Some(c) = &self.child {
            signal(c.id(), "-CONT");
        }
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        discard(self.child.take(), &self.dir);
    }
}

/// A test-owned PostgreSQL cluster (initdb in a temp dir, run as the `postgres` OS user, since
/// PostgreSQL refuses to run as root). Dropped: stopped and deleted.
pub struct PgProcess {
    /// The loopback port it listens on.
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .expect(POSTGRES_MISSING)
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version").join("bin")
}

fn as_postgres(cmd: &str) -> std::process::Output {
    let running_as_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let out = if running_as_root {
        Command::new("runuser")
            .args(["-u", "postgres", "--", "sh", "-c", cmd])
            .output()
    } else {
        Command::new("sh").args(["-c", cmd]).output()
    };
    out.expect("a shell runs")
}

impl PgProcess {
    /// initdb and start a new cluster on a free port.
    pub fn start() -> Self {
        let port = free_port();
        let dir = fresh_dir("pg", port);
        let _ = Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status();
        let bin = pg_bin();
        let out = as_postgres(&format!(
            "{}/initdb -D {}/data -A trust -U postgres --no-sync >/dev/null",
            bin.display(),
            dir.display()
        ));
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = PgProcess { port, dir, bin };
        pg.start_server();
        pg
    }

    fn start_server(&self) {
        let out = as_postgres(&format!(
            "{}/pg_ctl -D {d}/data -l {d}/log -w -o \"-p {p} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off\" start >/dev/null",
            self.bin.display(),
            d = self.dir.display(),
            p = self.port
        ));
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_port(self.port, true, "postgres");
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stop immediately (like a crash: no checkpoint).
    pub fn stop(&self) {
        as_postgres(&format!(
            "{}/pg_ctl -D {}/data -m immediate -w stop >/dev/null",
            self.bin.display(),
            self.dir.display()
        ));
        wait_port(self.port, false, "postgres");
    }

    /// Start again.
    pub fn restart(&self) {
        self.start_server();
    }
}

impl Drop for PgProcess {
    fn drop(&mut self) {
        as_postgres(&format!(
            "{}/pg_ctl -D {}/data -m immediate -w stop >/dev/null 2>&1",
            self.bin.display(),
            self.dir.display()
        ));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
