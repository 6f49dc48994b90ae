//! Failover under load: a Redis master SIGKILLed while several tasks create, read, write and
//! revoke sessions, on the test's own Redis deployment (the testkit's six-node cluster, or its
//! Sentinel group) in front of PostgreSQL (a fresh schema on the test server).
//!
//! - On the tiers: every session acknowledged alive still loads with its last acknowledged
//!   counter, every acknowledged destroy stays destroyed (0 lost, 0 resurrected), and the
//!   errors the callers saw fall inside a window that is measured and printed.
//! - On Redis alone (no database behind): what is lost and resurrected is measured and
//!   printed; replication is asynchronous, so an acknowledged write can die with its master.
//!
//! - The Redis configuration files of `deploy/redis/` load and take effect.
//!
//! `cargo test -p ratatoskr-tiered --test failover -- --nocapture` prints the figures;
//! `docs/deployment.md` records them.

mod failover_config;
mod failover_load;

use std::sync::Arc;
use std::time::{Duration, Instant};

use failover_load::{Load, Model, Verdict, verify};
use ratatoskr_core::{SessionStore, Token};
use ratatoskr_redis::{RedisConfig, RedisStore};
use ratatoskr_sql::SqlStore;
use ratatoskr_testkit::{RedisCluster, RedisSentinel};
use ratatoskr_tiered::breaker::BreakerState;
use ratatoskr_tiered::{TieredConfig, TieredStore};

/// Tasks issuing requests, and sessions each creates before the fault.
const WORKERS: u64 = 8;
const INITIAL: usize = 40;
/// Load before the kill, and after the store has recovered.
const BEFORE: Duration = Duration::from_millis(1500);
const AFTER: Duration = Duration::from_millis(1500);
/// The loose bound on the window in which callers of the tiers see errors.
const ERROR_WINDOW_BOUND: Duration = Duration::from_secs(30);

/// The Redis deployment under test, owned by the test (its master gets killed).
enum Topology {
    /// Six nodes: three masters, a replica each (`REDIS_CLUSTER_NODES`).
    Cluster(RedisCluster),
    /// One master, two replicas, three Sentinels (`REDIS_SENTINEL`).
    Sentinel(RedisSentinel),
}

impl Topology {
    /// Start one (blocking: call it from `spawn_blocking`).
    fn start(cluster: bool) -> Self {
        if cluster {
            Topology::Cluster(RedisCluster::start())
        } else {
            Topology::Sentinel(RedisSentinel::start())
        }
    }

    async fn start_async(cluster: bool) -> Self {
        tokio::task::spawn_blocking(move || Self::start(cluster))
            .await
            .expect("the Redis deployment starts")
    }

    fn redis_config(&self) -> RedisConfig {
        let mut c = match self {
            Topology::Cluster(c) => RedisConfig::cluster(c.addrs()),
            Topology::Sentinel(s) => RedisConfig::sentinel(s.sentinel_addrs(), s.master_name()),
        };
        c.response_timeout = Duration::from_millis(250);
        c.connect_timeout = Duration::from_millis(500);
        c
    }

    /// SIGKILL a master that holds part of the keys (on a cluster: a third of the slots), then
    /// wait (blocking) until a replica serves its data; says what happened.
    fn kill_a_master_and_wait(mut self) -> (Self, String) {
        let what = match &mut self {
            Topology::Cluster(c) => {
                let victim = c.masters()[0];
                c.kill(victim);
                let promoted = c.wait_failover(victim);
                format!("cluster master node {victim} SIGKILLed, replica node {promoted} promoted")
            }
            Topology::Sentinel(s) => {
                let victim = s.master();
                s.kill(victim);
                let promoted = s.wait_failover(victim);
                format!("sentinel master server {victim} SIGKILLed, replica {promoted} promoted")
            }
        };
        (self, what)
    }
}

fn pg_url() -> String {
    std::env::var("RATATOSKR_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh schema on the test PostgreSQL server, dropped at the end of the test.
struct Schema {
    name: String,
    url: String,
}

impl Schema {
    async fn create() -> Self {
        let name = format!("failover_{}", Token::generate().key().handle())
            .to_lowercase()
            .replace('-', "_");
        let admin = sqlx::PgPool::connect(&pg_url())
            .await
            .expect("the test PostgreSQL server is reachable (scripts/test.sh starts it)");
        sqlx::query(&format!("CREATE SCHEMA \"{name}\""))
            .execute(&admin)
            .await
            .expect("create schema");
        admin.close().await;
        let base = pg_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        Schema { name, url }
    }

    async fn drop_it(self) {
        if let Ok(admin) = sqlx::PgPool::connect(&pg_url()).await {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name))
                .execute(&admin)
                .await;
            admin.close().await;
        }
    }
}

fn tiered_config() -> TieredConfig {
    TieredConfig {
        redis_timeout: Duration::from_millis(250),
        breaker_open_for: Duration::from_millis(300),
        journal_poll_every: Duration::from_millis(200),
        ..TieredConfig::default()
    }
}

/// One application instance on the tiers, with its near cache (tracking on every master).
async fn tiers(topology: &Topology, sql: &SqlStore) -> TieredStore {
    let mut config = topology.redis_config();
    config.tracking = true;
    let redis = RedisStore::connect(config).await.expect("redis");
    let notices = redis.subscribe_invalidations();
    let t = TieredStore::new(
        Arc::new(redis),
        sql.store(),
        Arc::new(sql.journal()),
        notices,
        tiered_config(),
    );
    assert!(t.recover_now().await, "a new instance replays the journal");
    t
}

/// What one run measured.
struct Run {
    verdicts: Vec<(&'static str, Verdict)>,
    calls: u64,
    acked: u64,
    errors: u64,
    missing_during_run: u64,
    /// From the kill: the first and last error the callers saw.
    error_span: Option<(Duration, Duration)>,
    /// From the kill until the data was served again (failover done).
    failover: Duration,
    /// When the master was killed, from the start of the run (histories count from there).
    killed_at: Duration,
    /// From the failover until the store used Redis again (the tiers' breaker closed); `None`
    /// when there was nothing to wait for (Redis alone).
    recovered_after: Option<Duration>,
    what: String,
}

impl Run {
    fn window(&self) -> Duration {
        self.error_span.map_or(Duration::ZERO, |(a, b)| b - a)
    }

    fn print(&self, title: &str) {
        let back = self
            .recovered_after
            .map(|d| format!(", the store back on Redis {d:.2?} later"))
            .unwrap_or_default();
        eprintln!(
            "{title}: {} at {:.2?} into the run ({:.1?} from the kill to failover done{back}); \
             {} calls, {} acknowledged, {} errors, error window {:.2?} (first {:?}, last {:?} \
             after the kill), {} acknowledged sessions found missing during the run",
            self.what,
            self.killed_at,
            self.failover,
            self.calls,
            self.acked,
            self.errors,
            self.window(),
            self.error_span.map(|s| s.0),
            self.error_span.map(|s| s.1),
            self.missing_during_run,
        );
        for (through, v) in &self.verdicts {
            eprintln!(
                "  read back through {through}: {} sessions, {} lost, {} lost writes, {} \
                 resurrected, {} unreadable",
                v.sessions, v.lost, v.lost_writes, v.resurrected, v.unreadable
            );
            for e in &v.examples {
                eprintln!("    {e}");
            }
        }
    }
}

/// Load `store`, kill a master, let it fail over, load on until `recovered` holds and a while
/// more; then stop and hand back what the store acknowledged.
async fn run(
    topology: Topology,
    store: Arc<dyn SessionStore>,
    recovered: impl Fn() -> Result<(), String>,
) -> (Topology, Run, Model) {
    let load = Load::start(store, WORKERS, INITIAL).await;
    tokio::time::sleep(BEFORE).await;
    let killed = Instant::now();
    let killed_at = load.epoch.elapsed();
    let (topology, what) = tokio::task::spawn_blocking(move || topology.kill_a_master_and_wait())
        .await
        .expect("failover");
    let failover = killed.elapsed();
    let promoted = Instant::now();
    let deadline = promoted + Duration::from_secs(30);
    while let Err(state) = recovered() {
        assert!(
            Instant::now() < deadline,
            "the store did not recover within 30 s of the failover: {state}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let recovered_after =
        (promoted.elapsed() > Duration::from_millis(1)).then(|| promoted.elapsed());
    tokio::time::sleep(AFTER).await;
    let tally = load.tally.clone();
    let model = load.stop().await;
    use std::sync::atomic::Ordering::SeqCst;
    let run = Run {
        verdicts: Vec::new(),
        calls: tally.calls.load(SeqCst),
        acked: tally.acked.load(SeqCst),
        errors: tally.errors.load(SeqCst),
        missing_during_run: tally.missing_during_run.load(SeqCst),
        error_span: tally
            .error_span()
            .map(|(a, b)| (a.saturating_sub(killed_at), b.saturating_sub(killed_at))),
        failover,
        killed_at,
        recovered_after,
        what,
    };
    (topology, run, model)
}

async fn on_the_tiers(topology: Topology, title: &str) {
    let schema = Schema::create().await;
    let sql = SqlStore::connect(&schema.url).await.expect("postgres");
    let t = tiers(&topology, &sql).await;
    let probe = t.clone();
    let (topology, mut run, model) = run(topology, Arc::new(t.clone()), move || {
        let h = probe.health();
        if h.breaker == BreakerState::Closed {
            Ok(())
        } else {
            Err(format!("{h:?}"))
        }
    })
    .await;
    // Through the instance that lived through it, through an instance started afterwards, and
    // in the database itself.
    let later = tiers(
        &topology,
        &SqlStore::connect(&schema.url).await.expect("postgres"),
    )
    .await;
    run.verdicts
        .push(("the same instance", verify(&t, &model).await));
    run.verdicts
        .push(("a new instance", verify(&later, &model).await));
    run.verdicts
        .push(("the database", verify(sql.store().as_ref(), &model).await));
    run.print(title);
    for (through, v) in &run.verdicts {
        assert!(v.clean(), "through {through}: {v:#?}");
    }
    assert_eq!(
        run.missing_during_run, 0,
        "an acknowledged session went missing"
    );
    assert!(
        run.window() < ERROR_WINDOW_BOUND,
        "errors over {:?}",
        run.window()
    );
    assert!(run.acked > 0, "the load ran");
    drop(topology);
    schema.drop_it().await;
}

/// Redis alone: the same load straight on the Redis store; what it lost is printed.
async fn on_redis_alone(topology: Topology, title: &str) {
    let redis = RedisStore::connect(topology.redis_config())
        .await
        .expect("redis");
    // The failover is done when `run` asks: Redis alone has no state of its own to wait for.
    let (topology, mut run, model) = run(topology, Arc::new(redis.clone()), || Ok(())).await;
    run.verdicts
        .push(("the same store", verify(&redis, &model).await));
    run.print(title);
    assert!(run.acked > 0, "the load ran");
    drop(topology);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_killed_under_load_loses_and_resurrects_nothing_on_the_tiers() {
    let topology = Topology::start_async(true).await;
    on_the_tiers(topology, "cluster, tiers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_master_killed_under_load_loses_and_resurrects_nothing_on_the_tiers() {
    let topology = Topology::start_async(false).await;
    on_the_tiers(topology, "sentinel, tiers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_killed_under_load_on_redis_alone_loses_what_is_measured() {
    let topology = Topology::start_async(true).await;
    on_redis_alone(topology, "cluster, Redis alone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_master_killed_under_load_on_redis_alone_loses_what_is_measured() {
    let topology = Topology::start_async(false).await;
    on_redis_alone(topology, "sentinel, Redis alone").await;
}

/// The race behind the cluster failure above, without a failover: a recovery that finds the
/// owner changed discards every copy (a `SCAN` per master, then `UNLINK`) while creates write
/// their two keys (the index entry in the user's slot, then the hash in the session's). The
/// scan can delete the index entry and miss the hash written after it passed: a copy no
/// revoke-all can find, served after the user was logged out everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discard_of_old_copies_racing_creates_leaves_no_copy_out_of_its_index() {
    let topology = Topology::start_async(true).await;
    let Topology::Cluster(cluster) = &topology else {
        unreachable!("a cluster")
    };
    let port = cluster.port(0).to_string();
    let schema = Schema::create().await;
    let sql = SqlStore::connect(&schema.url).await.expect("postgres");
    let t = tiers(&topology, &sql).await;
    let owner = String::from_utf8(
        RedisStore::connect(topology.redis_config())
            .await
            .expect("redis")
            .owner_key_name(),
    )
    .expect("a text key");
    let load = Load::start(Arc::new(t.clone()), WORKERS, INITIAL).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        // What a failover looks like to the recovery: the owner no longer matches.
        let out = std::process::Command::new("redis-cli")
            .args(["-c", "-p", &port, "DEL", &owner])
            .output()
            .expect(ratatoskr_testkit::REDIS_SERVER_MISSING);
        assert!(out.status.success());
        t.fast_tier().begin_epoch().await.expect("a recovery");
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let model = load.stop().await;
    let v = verify(&t, &model).await;
    eprintln!("discards under load: {v:#?}");
    assert!(v.clean(), "{v:#?}");
    drop(topology);
    schema.drop_it().await;
}

/// `deploy/redis/cluster-node.conf` and `deploy/redis/sentinel.conf`, the files
/// `docs/deployment.md` shows, load and their settings take effect.
#[test]
fn the_deployed_redis_configurations_load_and_take_effect() {
    failover_config::check_cluster_node();
    failover_config::check_sentinel();
}
