//! One test-owned `redis-server` process with arbitrary arguments, shared by the cluster and
//! Sentinel starters: its own temp dir, SIGKILL/SIGSTOP/SIGCONT, restart with the same
//! arguments, killed and deleted on drop. Also the `redis-cli` helper they poll with.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{REDIS_SERVER_MISSING, discard, free_port, fresh_dir, signal, wait_port};

/// A redis-server (or sentinel) process owned by a test.
pub(crate) struct Node {
    pub(crate) port: u16,
    pub(crate) dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    frozen: bool,
    /// The last lines of the log of a start that did not take (for the failure message).
    last_log: String,
}

/// How many times [`Node::start`] picks new ports before it gives up.
const ATTEMPTS: usize = 8;

impl Node {
    /// A new node on a free port in a fresh directory `ratatoskr-<what>-<port>-<pid>`; `args`
    /// come after the config file (if any) and before the standard ones.
    pub(crate) fn new(what: &str) -> Node {
        let port = free_port();
        let dir = fresh_dir(what, port);
        Node {
            port,
            dir,
            args: Vec::new(),
            child: None,
            frozen: false,
            last_log: String::new(),
        }
    }

    /// Start with these arguments (remembered for [`restart`](Self::restart)).
    ///
    /// Ports are picked by binding port 0 and releasing it, so another process (or another
    /// topology starting at the same moment) can take one before this server binds it. The
    /// server answering on the port must be this node's own child; when it is not, and the
    /// arguments name the ports (`--port`, `--cluster-port`), new ones are picked and the node
    /// starts again (at most eight times: a loaded machine running many topologies at once
    /// has been seen to lose three races in a row). A node that never starts fails the test
    /// with the tail of its last log, which says why.
    pub(crate) fn start(&mut self, args: Vec<String>) {
        self.args = args;
        for _ in 0..ATTEMPTS {
            self.spawn_child();
            if self.owns_its_port() {
                return;
            }
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            self.last_log = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
            let named = self.args.iter().any(|a| a == "--port");
            self.discard_child();
            assert!(
                named,
                "redis-server on port {} is not this test's own process",
                self.port
            );
            self.port = free_port();
            let port = self.port.to_string();
            let mut args = std::mem::take(&mut self.args);
            for i in 1..args.len() {
                match args[i - 1].as_str() {
                    "--port" => args[i] = port.clone(),
                    "--cluster-port" => args[i] = free_port().to_string(),
                    _ => {}
                }
            }
            self.args = args;
        }
        panic!(
            "redis-server did not start on a port of its own in {ATTEMPTS} attempts; its last \
             log, newest line first: {}",
            self.last_log
        );
    }

    fn spawn_child(&mut self) {
        let log = std::fs::File::create(self.dir.join("log")).expect("node log");
        let child = Command::new("redis-server")
            .args(&self.args)
            .current_dir(&self.dir)
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .expect(REDIS_SERVER_MISSING);
        self.child = Some(child);
        self.frozen = false;
    }

    fn spawn(&mut self) {
        self.spawn_child();
        wait_port(self.port, true, "redis-server");
    }

    /// Whether the server answering on this node's port is its own child: waits (20 s at most)
    /// until either the child answers there, another process does, or the child has exited.
    fn owns_its_port(&mut self) -> bool {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return false;
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && !matches!(child.try_wait(), Ok(None))
            {
                return false;
            }
            if let Some(info) = cli(self.port, &["INFO", "server"]) {
                return info
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("process_id:"))
                    .is_some_and(|id| id.trim() == pid.to_string());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    fn discard_child(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Make this node outlive its owner until the test process exits (for a topology kept in
    /// a `static`, which Rust never drops): it is killed and its directory deleted at exit.
    pub(crate) fn kill_at_exit(&self) {
        if let Some(c) = &self.child {
            at_exit(c.id(), self.dir.clone());
        }
    }

    pub(crate) fn running(&self) -> bool {
        self.child.is_some()
    }

    pub(crate) fn frozen(&self) -> bool {
        self.frozen
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "-KILL");
            let _ = c.wait();
            self.frozen = false;
            wait_port(self.port, false, "redis-server");
        }
    }

    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "node {} is still running", self.port);
        self.spawn();
    }

    pub(crate) fn freeze(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), "-STOP");
            self.frozen = true;
        }
    }

    pub(crate) fn thaw(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), "-CONT");
            self.frozen = false;
        }
    }

    /// A command through `redis-cli` (None if the node does not answer within 2 s).
    pub(crate) fn cli(&self, args: &[&str]) -> Option<String> {
        if !self.running() || self.frozen {
            return None;
        }
        cli(self.port, args)
    }

    /// The node's `INFO <section>` as `name → value` lines.
    pub(crate) fn info(&self, section: &str) -> Option<Vec<(String, String)>> {
        let text = self.cli(&["INFO", section])?;
        Some(
            text.lines()
                .filter_map(|l| l.trim().split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    pub(crate) fn info_field(&self, section: &str, field: &str) -> Option<String> {
        self.info(section)?
            .into_iter()
            .find_map(|(k, v)| (k == field).then_some(v))
    }

    /// The node's log so far (for failure messages).
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// The options every test-owned data server starts with: this node's port on loopback, no
    /// protected mode, nothing saved to disk, its own directory. Callers append their own.
    pub(crate) fn base_args(&self) -> Vec<String> {
        [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &self.path(""),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// `127.0.0.1:PORT`, as clients are given it.
    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn path(&self, name: &str) -> String {
        path_str(&self.dir.join(name))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        discard(self.child.take(), &self.dir);
    }
}

/// Processes (and their directories) to kill at process exit: those of shared topologies.
static AT_EXIT: std::sync::Mutex<Vec<(u32, PathBuf)>> = std::sync::Mutex::new(Vec::new());

unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> std::os::raw::c_int;
}

extern "C" fn kill_registered() {
    let list = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()));
    for (pid, dir) in list {
        let _ = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn at_exit(pid: u32, dir: PathBuf) {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function with the C runtime; it runs once at
        // normal process exit (the test harness returns from `main`).
        unsafe {
            atexit(kill_registered);
        }
    });
    AT_EXIT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((pid, dir));
}

pub(crate) fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_owned()
}

/// `redis-cli -p PORT args…` with a 2 s bound; `None` when it fails or times out.
pub(crate) fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("timeout")
        .arg("2")
        .arg("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect(REDIS_SERVER_MISSING);
    let status = out.status;
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    if !status.success() || out.starts_with("Could not connect") {
        return None;
    }
    Some(out)
}

/// Poll `done` every 50 ms until it returns `Some`, or panic with `what` (and `context()`)
/// after `limit`.
pub(crate) fn poll<T>(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = done() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another redis-server already answering on the port a node picked (what a concurrent
    /// topology or an unrelated test can do between the pick and the bind): the node moves to
    /// ports of its own instead of taking the other server for itself.
    #[test]
    fn a_node_whose_port_was_taken_meanwhile_starts_on_ports_of_its_own() {
        let mut squatter = Node::new("squatter");
        let args = squatter.base_args();
        squatter.start(args);
        let taken = squatter.port;

        let mut node = Node::new("moved");
        node.port = taken;
        let mut args = node.base_args();
        args.extend(["--cluster-port".to_owned(), taken.to_string()]);
        args.extend(["--cluster-enabled".to_owned(), "yes".to_owned()]);
        node.start(args);

        assert_ne!(node.port, taken, "the node moved off the taken port");
        assert!(
            node.owns_its_port(),
            "the server on its new port is its own"
        );
        let info = node.cli(&["INFO", "cluster"]).expect("the node answers");
        assert!(info.contains("cluster_enabled:1"), "{info}");
        assert!(squatter.owns_its_port(), "the other server was left alone");
    }
}
