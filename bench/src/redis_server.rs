//! A private `redis-server` for the run, so that nothing else on the machine disturbs the
//! numbers and the peers' keys never touch a shared Redis.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    pub version: String,
}

impl RedisServer {
    /// Start `binary` on a free loopback port, without persistence, and wait for `PING`.
    pub fn start(binary: &str) -> Result<RedisServer, String> {
        let version = Command::new(binary)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run `{binary} --version`: {e}"))?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        let port = free_port().map_err(|e| format!("no free port: {e}"))?;
        let child = Command::new(binary)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "yes"])
            .args(["--loglevel", "warning"])
            .args(["--logfile", ""])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {binary}: {e}"))?;
        let mut server = RedisServer {
            child,
            port,
            version,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if server.ping() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("{binary} exited at start-up: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{binary} did not answer PING on port {port} within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// One inline command; the first line of the reply.
    pub fn command(&self, cmd: &str) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if reply.ends_with(b"\r\n") {
                break;
            }
        }
        Some(String::from_utf8_lossy(&reply).trim().to_owned())
    }

    fn ping(&self) -> bool {
        self.command("PING").is_some_and(|r| r == "+PONG")
    }

    /// Keys in the server (all databases' db0), for the report's sanity line.
    pub fn dbsize(&self) -> Option<u64> {
        self.command("DBSIZE")?.strip_prefix(':')?.parse().ok()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Only our own child: SHUTDOWN NOSAVE, then make sure.
        let _ = self.command("SHUTDOWN NOSAVE");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
