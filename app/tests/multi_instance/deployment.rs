//! A deployment as an operator would run it, started by the test: one fresh PostgreSQL database,
//! one shared Redis (the backend is a parameter), three `ratatoskr serve` processes and HAProxy
//! in round-robin in front of them, configured by `deploy/haproxy.cfg` — the very file
//! `docs/deployment.md` shows — through its environment variables. Dropped: every process is
//! killed and the database dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ratatoskr_testkit::{PgProcess, RedisCluster, RedisProcess, RedisSentinel, free_port};

/// What a test says when HAProxy cannot be started.
pub const HAPROXY_MISSING: &str = "haproxy is installed (scripts/test.sh installs it)";
/// What a test says when `psql` cannot be run.
pub const PSQL_MISSING: &str = "psql is installed (scripts/test.sh installs PostgreSQL)";

/// How long a process may take to become ready on a loaded machine.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

/// Which Redis the instances share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedisKind {
    /// One `redis-server` of the test's own (`REDIS_URL=redis://…`).
    Standalone,
    /// The testkit's six-node cluster, 3 masters and 3 replicas (`REDIS_CLUSTER_NODES`).
    Cluster,
    /// The testkit's Sentinel group, 1 master, 2 replicas, 3 sentinels
    /// (`REDIS_URL=redis+sentinel://…`).
    Sentinel,
}

/// The shared Redis, kept alive as long as the deployment.
pub enum SharedRedis {
    /// See [`RedisKind::Standalone`].
    Standalone(RedisProcess),
    /// See [`RedisKind::Cluster`].
    Cluster(RedisCluster),
    /// See [`RedisKind::Sentinel`].
    Sentinel(RedisSentinel),
}

impl SharedRedis {
    async fn start(kind: RedisKind) -> Self {
        // The cluster and Sentinel starters wait by polling: off the runtime's threads.
        tokio::task::spawn_blocking(move || match kind {
            RedisKind::Standalone => SharedRedis::Standalone(RedisProcess::start()),
            RedisKind::Cluster => SharedRedis::Cluster(RedisCluster::start()),
            RedisKind::Sentinel => SharedRedis::Sentinel(RedisSentinel::start()),
        })
        .await
        .expect("Redis starts")
    }

    /// The environment that points an instance at this Redis.
    fn env(&self) -> Vec<(String, String)> {
        match self {
            SharedRedis::Standalone(r) => vec![("REDIS_URL".into(), r.url())],
            SharedRedis::Cluster(c) => vec![("REDIS_CLUSTER_NODES".into(), c.nodes_env())],
            SharedRedis::Sentinel(s) => vec![("REDIS_URL".into(), s.url())],
        }
    }
}

/// The PostgreSQL server the tests use (`RATATOSKR_TEST_PG_URL`, as the API tests).
pub fn pg_url() -> String {
    std::env::var("RATATOSKR_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect(PSQL_MISSING);
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A name no other test run uses.
fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{what}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database of its own on the test PostgreSQL server; dropped with it.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    /// The URL the instances get as `DATABASE_URL`.
    pub url: String,
}

impl PgDatabase {
    fn create() -> Self {
        let admin_url = pg_url();
        let name = unique("ratatoskr_multi");
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        // Same server and options, another database: replace the path after the authority.
        let (base, query) = match admin_url.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin_url.as_str(), String::new()),
        };
        let authority_end = base
            .find("://")
            .map(|i| i + 3)
            .and_then(|start| base[start..].find('/').map(|j| start + j))
            .unwrap_or(base.len());
        let url = format!("{}/{name}{query}", &base[..authority_end]);
        PgDatabase {
            admin_url,
            name,
            url,
        }
    }
}

/// Where the instances' database lives.
pub enum Database {
    /// A database of its own on the test server.
    Shared(PgDatabase),
    /// A PostgreSQL cluster of the test's own, which it may stop and start.
    Own(PgProcess),
}

impl Database {
    fn url(&self) -> String {
        match self {
            Database::Shared(d) => d.url.clone(),
            Database::Own(p) => p.url(),
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.admin_url.as_str(),
                "-qAtc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// A child process killed (SIGKILL) when dropped, with its output in a log file.
struct Supervised {
    child: Option<Child>,
    log: PathBuf,
}

impl Supervised {
    fn spawn(mut cmd: Command, log: PathBuf, missing: &str) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect(missing);
        Supervised {
            child: Some(child),
            log,
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `ratatoskr serve` process.
pub struct Instance {
    /// `127.0.0.1:PORT`, its `RATATOSKR_BIND`.
    pub addr: String,
    process: Supervised,
}

impl Instance {
    /// `http://127.0.0.1:PORT`: to ask this instance directly, bypassing the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: the instance dies without finishing anything.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}

/// The HAProxy process.
pub struct Proxy {
    /// `127.0.0.1:PORT`, where clients connect.
    pub addr: String,
    process: Supervised,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl Proxy {
    /// The configuration file the test runs, as shipped.
    pub fn config_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg")
    }

    fn start(addr: String, instances: &[Instance], log: PathBuf) -> Self {
        let mut env = vec![("RATATOSKR_PROXY_BIND".to_owned(), addr.clone())];
        for (i, instance) in instances.iter().enumerate() {
            env.push((format!("RATATOSKR_APP{}", i + 1), instance.addr.clone()));
        }
        let process = Self::spawn(&env, log.clone());
        Proxy {
            addr,
            process,
            env,
            log,
        }
    }

    fn spawn(env: &[(String, String)], log: PathBuf) -> Supervised {
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db")
            .arg("-f")
            .arg(Self::config_path())
            .envs(env.iter().map(|(k, v)| (k, v)));
        Supervised::spawn(cmd, log, HAPROXY_MISSING)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL the proxy, then start a new one on the same address and configuration.
    pub async fn kill_and_restart(&mut self) {
        self.process.kill();
        self.process = Self::spawn(&self.env, self.log.clone());
        wait_ready(&self.url(), &mut self.process, "haproxy").await;
    }
}

/// How to start a deployment.
pub struct Options {
    /// Which Redis the instances share.
    pub redis: RedisKind,
    /// Extra environment for every instance (`RATATOSKR_LOGIN_RATE_LIMIT`, …).
    pub env: Vec<(&'static str, String)>,
    /// A PostgreSQL server of the deployment's own (to stop it), instead of a database on the
    /// shared test server.
    pub own_postgres: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            // Scale-out runs on a cluster (issue 11).
            redis: RedisKind::Cluster,
            // Tests register and log in many users from one address.
            env: vec![
                ("RATATOSKR_LOGIN_RATE_LIMIT", "off".into()),
                ("RATATOSKR_REGISTER_RATE_LIMIT", "off".into()),
            ],
            own_postgres: false,
        }
    }
}

/// Three instances behind HAProxy, one database, one Redis.
pub struct Deployment {
    /// The entrance clients use.
    pub proxy: Proxy,
    /// The instances, in the proxy's order (`app1`..`app3`).
    pub instances: Vec<Instance>,
    /// The shared Redis (held for the deployment's lifetime).
    #[allow(dead_code)]
    pub redis: SharedRedis,
    /// The shared database.
    pub db: Database,
    env: Vec<(String, String)>,
    dir: PathBuf,
}

async fn wait_ready(base: &str, process: &mut Supervised, what: &str) {
    if let Err(log) = wait_ready_or_exit(base, process, what).await {
        panic!("{what} exited:\n{log}");
    }
}

/// The port picked for a process is free when picked (bound to port 0, then released), but
/// another process on the machine may take it before ours binds: such a start is retried on a
/// new port instead of failing the test.
fn port_was_taken(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("cannot bind socket")
}

/// Wait until `base` answers `/readyz`; `Err(log)` if the process exited first.
async fn wait_ready_or_exit(
    base: &str,
    process: &mut Supervised,
    what: &str,
) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let started = Instant::now();
    loop {
        if let Some(c) = &mut process.child
            && let Ok(Some(status)) = c.try_wait()
        {
            return Err(format!(
                "({status}) {}",
                std::fs::read_to_string(&process.log).unwrap_or_default()
            ));
        }
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().as_u16() == 200
        {
            return Ok(());
        }
        assert!(
            started.elapsed() < START_DEADLINE,
            "{what} at {base} not ready after {START_DEADLINE:?}:\n{}",
            std::fs::read_to_string(&process.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Deployment {
    /// Start everything and wait until the proxy answers `/readyz`.
    pub async fn start(options: Options) -> Self {
        let dir = std::env::temp_dir().join(unique("ratatoskr-multi"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let redis = SharedRedis::start(options.redis).await;
        let db = if options.own_postgres {
            Database::Own(
                tokio::task::spawn_blocking(PgProcess::start)
                    .await
                    .expect("PostgreSQL starts"),
            )
        } else {
            Database::Shared(PgDatabase::create())
        };
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), db.url()),
            // Every instance must read the platform tokens the others sealed: one key for all.
            (
                "RATATOSKR_SECRET_KEY".into(),
                unique("multi-instance-test-key"),
            ),
            ("RUST_LOG".into(), "warn".into()),
        ];
        env.extend(redis.env());
        env.extend(options.env.into_iter().map(|(k, v)| (k.to_owned(), v)));
        // All three start at once, as after a deploy: migrations are serialized by the app.
        let spawn_instance = |i: usize| {
            let addr = format!("127.0.0.1:{}", free_port());
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_ratatoskr"));
            cmd.arg("serve")
                .env_clear()
                .env("RATATOSKR_BIND", &addr)
                .envs(env.iter().map(|(k, v)| (k, v)));
            let process = Supervised::spawn(
                cmd,
                dir.join(format!("app{i}.log")),
                "the ratatoskr binary runs",
            );
            Instance { addr, process }
        };
        let mut instances: Vec<Instance> = (1..=3).map(spawn_instance).collect();
        for (i, instance) in instances.iter_mut().enumerate() {
            let what = format!("app{}", i + 1);
            let mut attempt = 1;
            loop {
                match wait_ready_or_exit(&instance.url(), &mut instance.process, &what).await {
                    Ok(()) => break,
                    Err(log) if port_was_taken(&log) && attempt < 3 => {
                        attempt += 1;
                        *instance = spawn_instance(i + 1);
                    }
                    Err(log) => panic!("{what} exited:\n{log}"),
                }
            }
        }
        let mut attempt = 1;
        let proxy = loop {
            let mut proxy = Proxy::start(
                format!("127.0.0.1:{}", free_port()),
                &instances,
                dir.join("haproxy.log"),
            );
            match wait_ready_or_exit(&proxy.url(), &mut proxy.process, "haproxy").await {
                Ok(()) => break proxy,
                Err(log) if port_was_taken(&log) && attempt < 3 => attempt += 1,
                Err(log) => panic!("haproxy exited:\n{log}"),
            }
        };
        Deployment {
            proxy,
            instances,
            redis,
            db,
            env,
            dir,
        }
    }

    /// Create a user with the admin CLI (`ratatoskr user add NAME [--admin]`, password on stdin).
    pub fn add_user(&self, name: &str, admin: bool) {
        use std::io::Write as _;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ratatoskr"));
        cmd.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["user", "add", name]);
        if admin {
            cmd.arg("--admin");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the ratatoskr binary runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .expect("password written");
        let out = child.wait_with_output().expect("user add finishes");
        assert!(
            out.status.success(),
            "user add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The sum of a Prometheus counter (every label set) on each instance, asked directly.
    pub async fn counter_per_instance(&self, name: &str) -> Vec<f64> {
        let http = reqwest::Client::new();
        let mut out = Vec::new();
        for instance in &self.instances {
            let text = http
                .get(format!("{}/metrics", instance.url()))
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("metrics text");
            out.push(counter_sum(&text, name));
        }
        out
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // The processes first (fields drop after this), then nothing is left to read the logs.
        self.proxy.process.kill();
        for i in &mut self.instances {
            i.kill();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

/// The sum of every sample of counter `name` in a Prometheus text exposition.
pub fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
