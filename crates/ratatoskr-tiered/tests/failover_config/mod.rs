//! The Redis configuration files `docs/deployment.md` shows (`deploy/redis/`), started with
//! `redis-server` on loopback ports to prove that they load and that their settings take
//! effect: a cluster node and a Sentinel watching a test-owned master.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ratatoskr_testkit::{REDIS_SERVER_MISSING, RedisProcess, free_port};

/// `deploy/redis/<name>` in the repository.
fn deployed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/redis")
        .join(name)
}

/// A `redis-server` started from a configuration file; killed when dropped.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn start(conf: &Path, sentinel: bool, dir: PathBuf) -> Self {
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.arg(conf);
        if sentinel {
            cmd.arg("--sentinel");
        }
        // Only where it listens and keeps files is the test's; the rest is the file's.
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", dir.to_str().expect("utf-8 dir")]);
        if !sentinel {
            cmd.args(["--cluster-config-file", "nodes.conf"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(REDIS_SERVER_MISSING);
        let server = Server { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while server.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server with {} did not start",
                conf.display()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        server
    }

    fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `CONFIG GET name`'s value.
    fn config(&self, name: &str) -> String {
        let out = self.cli(&["CONFIG", "GET", name]).expect("CONFIG GET");
        out.lines().nth(1).unwrap_or("").to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ratatoskr-deploy-{what}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The cluster node file loads, and the settings the deployment guide relies on are in force.
pub fn check_cluster_node() {
    let node = Server::start(&deployed("cluster-node.conf"), false, temp_dir("node"));
    for (name, want) in [
        ("cluster-enabled", "yes"),
        ("cluster-node-timeout", "5000"),
        ("cluster-replica-validity-factor", "0"),
        ("maxmemory-policy", "noeviction"),
        ("save", ""),
        ("appendonly", "no"),
        ("tracking-table-max-keys", "1000000"),
        ("hash-max-listpack-value", "64"),
    ] {
        assert_eq!(node.config(name), want, "{name} in cluster-node.conf");
    }
    let info = node.cli(&["CLUSTER", "INFO"]).expect("CLUSTER INFO");
    assert!(info.contains("cluster_state"), "a cluster node: {info}");
}

/// The Sentinel file, pointed at a master of the test's own, watches it as `ratatoskr`.
pub fn check_sentinel() {
    let master = RedisProcess::start();
    let dir = temp_dir("sentinel");
    let text = std::fs::read_to_string(deployed("sentinel.conf")).expect("sentinel.conf");
    assert!(
        text.contains("10.0.0.21 6379"),
        "the example master address"
    );
    // Sentinel rewrites its file: it gets a copy, with the test's master in it.
    let conf = dir.join("sentinel.conf");
    let here = format!("127.0.0.1 {}", master.port);
    std::fs::write(&conf, text.replace("10.0.0.21 6379", &here)).expect("write conf");
    let sentinel = Server::start(&conf, true, dir);
    let addr = sentinel
        .cli(&["SENTINEL", "get-master-addr-by-name", "ratatoskr"])
        .expect("the master is named");
    assert_eq!(
        addr.lines().collect::<Vec<_>>(),
        ["127.0.0.1", &master.port.to_string()]
    );
    let settings = sentinel
        .cli(&["SENTINEL", "master", "ratatoskr"])
        .expect("SENTINEL master");
    let lines: Vec<&str> = settings.lines().collect();
    let get = |k: &str| {
        lines
            .iter()
            .position(|l| *l == k)
            .and_then(|i| lines.get(i + 1))
            .copied()
    };
    assert_eq!(get("quorum"), Some("2"));
    assert_eq!(get("down-after-milliseconds"), Some("5000"));
    assert_eq!(get("failover-timeout"), Some("60000"));
}
