//! This process's own writes and the near cache, over a real Redis in tracking mode: the written
//! copy is put back into the near cache instead of being reloaded (when no notice for the key
//! came meanwhile), and a write racing another instance's write never leaves a stale copy —
//! for the Redis-only near cache ([`NearCachedStore`]) and the tiered store alike.
//!
//! Each test runs its own `redis-server` (its command statistics are the test's alone).
//! Figures are printed (`--nocapture`) and quoted in docs/performance.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatoskr_core::{
    Delta, Invalidation, MemoryJournal, MemoryStore, Record, SessionKey, SessionStore, Token,
    now_ms,
};
use ratatoskr_redis::{RedisConfig, RedisStore};
use ratatoskr_testkit::RedisProcess;
use ratatoskr_tiered::near_cache::NearCacheConfig;
use ratatoskr_tiered::{NearCachedStore, TieredConfig, TieredStore};
use tokio::sync::broadcast;

fn cli(server: &RedisProcess, args: &[&str]) -> String {
    std::process::Command::new("redis-cli")
        .args(["-p", &server.port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `calls` per command since the last `CONFIG RESETSTAT`; panics on an answer it cannot read,
/// so that a format change cannot read as "no commands".
fn command_calls(server: &RedisProcess) -> BTreeMap<String, u64> {
    let stats = cli(server, &["INFO", "commandstats"]);
    assert!(stats.contains("# Commandstats"), "{stats:?}");
    stats
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .map(|l| {
            let (name, rest) = l.split_once(":calls=").expect("a commandstats line");
            let calls = rest.split(',').next().and_then(|n| n.parse().ok());
            (name.to_owned(), calls.expect("a call count"))
        })
        .collect()
}

/// Redis reads of session data (a `load` is `HGETALL` and `PEXPIRETIME` in one `MULTI`/`EXEC`).
fn reads(server: &RedisProcess) -> u64 {
    command_calls(server).get("hgetall").copied().unwrap_or(0)
}

fn config(server: &RedisProcess, prefix: &str) -> RedisConfig {
    RedisConfig {
        key_prefix: prefix.to_owned(),
        response_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        ..RedisConfig::new(server.url())
    }
}

/// Which store stands in front.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Redis alone with a near cache ([`NearCachedStore`]).
    NearCached,
    /// Redis + a durable tier ([`TieredStore`]); the durable tier is shared by the instances.
    Tiered,
}

/// One application instance, and a receiver of the notices its near cache gets.
struct Instance {
    store: Arc<dyn SessionStore>,
    spy: broadcast::Receiver<Invalidation>,
}

async fn instance(
    kind: Kind,
    server: &RedisProcess,
    prefix: &str,
    durable: &Arc<MemoryStore>,
) -> Instance {
    let (redis, notices) = RedisStore::connect_tracked(config(server, prefix))
        .await
        .unwrap();
    let spy = redis.subscribe_invalidations().unwrap();
    let store: Arc<dyn SessionStore> = match kind {
        Kind::NearCached => Arc::new(NearCachedStore::new(
            Arc::new(redis),
            notices,
            &NearCacheConfig::default(),
        )),
        Kind::Tiered => {
            let tiered = TieredStore::new(
                Arc::new(redis),
                durable.clone(),
                Arc::new(MemoryJournal::default()),
                Some(notices),
                TieredConfig {
                    redis_timeout: Duration::from_secs(2),
                    ..TieredConfig::default()
                },
            );
            assert!(tiered.recover_now().await, "the breaker closes");
            Arc::new(tiered)
        }
    };
    Instance { store, spy }
}

fn record() -> Record {
    Record::new(
        Some("u".into()),
        now_ms(),
        Duration::from_secs(600),
        Duration::from_secs(3600),
    )
}

fn set(name: &str, value: u64) -> Delta {
    Delta::default().set(name, value.to_string().into_bytes())
}

fn attr(r: &Record, name: &str) -> Option<String> {
    r.attrs
        .get(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Wait until `spy` has passed on a notice for `key` (everything Redis sent on that connection
/// before it has been passed on too: notices travel in order).
async fn notice_for(spy: &mut broadcast::Receiver<Invalidation>, key: &SessionKey) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, spy.recv()).await {
            Ok(Ok(Invalidation::Key(k))) if k == *key => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("the notice channel failed: {e}"),
            Err(_) => panic!("no notice for the marker key within 5 s"),
        }
    }
}

/// A read right after this instance's own write is served from the near cache: the written
/// copy is put back, and no notice of the write comes to refuse it — the Redis store sends
/// `apply` on its tracked connection, which has `NOLOOP`, and the script reads the key again
/// afterwards so that it stays tracked (`a_write_racing_…` below is the safety check for that).
/// Asserted: at least 290 of the 300 reads come from the near cache (a reset, e.g. a tracked
/// connection re-established, may cost a few), never more than one Redis read per write,
/// every value read is the one just written, and — the positive control — a session this
/// instance never read does cost a Redis read.
async fn reads_after_own_writes(kind: Kind) {
    let server = RedisProcess::start();
    let durable = Arc::new(MemoryStore::default());
    let a = instance(kind, &server, "own:", &durable).await;
    let k = Token::generate().key();
    a.store.create(&k, &record()).await.unwrap();
    assert!(a.store.load(&k).await.unwrap().is_some());

    cli(&server, &["CONFIG", "RESETSTAT"]);
    const N: u64 = 300;
    let mut served_from_cache = 0;
    for i in 1..=N {
        a.store.apply(&k, &set("n", i)).await.unwrap();
        let before = reads(&server);
        let r = a.store.load(&k).await.unwrap().expect("alive");
        assert_eq!(attr(&r, "n").as_deref(), Some(i.to_string().as_str()));
        if reads(&server) == before {
            served_from_cache += 1;
        }
    }
    let total = reads(&server);
    println!(
        "{kind:?}: {served_from_cache} of {N} reads right after an own write served from the \
         near cache; {total} Redis reads in all"
    );
    assert!(
        total <= N,
        "{total} Redis reads for {N} write-then-read rounds"
    );
    assert!(
        served_from_cache >= 290,
        "{kind:?}: only {served_from_cache} of {N} reads after an own write were served from \
         the near cache"
    );

    // Positive control: the counting sees a read that does go to Redis (a session another
    // instance created).
    let b = instance(kind, &server, "own:", &durable).await;
    let cold = Token::generate().key();
    b.store.create(&cold, &record()).await.unwrap();
    let before = reads(&server);
    assert!(a.store.load(&cold).await.unwrap().is_some());
    assert_eq!(reads(&server), before + 1, "a cold read is counted");
    // And what it read is kept: the next read of it is the near cache's.
    assert!(a.store.load(&cold).await.unwrap().is_some());
    assert!(a.store.load_shared(&cold).await.unwrap().is_some());
    assert_eq!(reads(&server), before + 1, "a read session is cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_an_own_write_is_served_from_the_near_cache_near_cached() {
    reads_after_own_writes(Kind::NearCached).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_an_own_write_is_served_from_the_near_cache_tiered() {
    reads_after_own_writes(Kind::Tiered).await;
}

/// Instance A holds a warm copy and writes one attribute while instance B writes another, at
/// the same moment, many times over. Once every notice Redis sent before a marker change has
/// reached A, A's read must show both writes: a written copy put back without B's change would
/// show only A's.
async fn racing_writes(kind: Kind) {
    let server = RedisProcess::start();
    let durable = Arc::new(MemoryStore::default());
    let mut a = instance(kind, &server, "race:", &durable).await;
    let b = instance(kind, &server, "race:", &durable).await;
    let marker = Token::generate().key();
    a.store.create(&marker, &record()).await.unwrap();

    const ROUNDS: u64 = 300;
    for round in 1..=ROUNDS {
        let k = Token::generate().key();
        a.store.create(&k, &record()).await.unwrap();
        assert!(
            a.store.load(&k).await.unwrap().is_some(),
            "A's copy is warm"
        );
        assert!(b.store.load(&k).await.unwrap().is_some(), "so is B's");
        // The marker is read (and tracked) by A before the race, so its notice comes after
        // any notice of the race.
        assert!(a.store.load(&marker).await.unwrap().is_some());

        let (da, db) = (set("a", round), set("b", round));
        let (ra, rb) = tokio::join!(a.store.apply(&k, &da), b.store.apply(&k, &db));
        ra.unwrap();
        rb.unwrap();
        b.store.apply(&marker, &set("m", round)).await.unwrap();
        notice_for(&mut a.spy, &marker).await;

        let seen = a.store.load(&k).await.unwrap().expect("alive");
        assert_eq!(
            (attr(&seen, "a"), attr(&seen, "b")),
            (Some(round.to_string()), Some(round.to_string())),
            "round {round}: A serves a copy without one of the writes"
        );
    }
    println!("{kind:?}: {ROUNDS} racing rounds, A's reads all showed both writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_racing_another_instances_write_never_leaves_a_stale_copy_near_cached() {
    racing_writes(Kind::NearCached).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_racing_another_instances_write_never_leaves_a_stale_copy_tiered() {
    racing_writes(Kind::Tiered).await;
}

/// A session this instance creates is in its near cache at once (the Redis store writes it on
/// the tracked connection and reads it after, so the key is tracked from its first moment):
/// its first read costs no Redis round trip. And a change another instance makes right after
/// the create reaches that copy: once every notice Redis sent before a marker change has
/// arrived, the read shows the other instance's change — 300 rounds.
async fn new_sessions_are_cached_and_stay_correct(kind: Kind) {
    let server = RedisProcess::start();
    let durable = Arc::new(MemoryStore::default());
    let mut a = instance(kind, &server, "new:", &durable).await;
    let b = instance(kind, &server, "new:", &durable).await;
    let marker = Token::generate().key();
    a.store.create(&marker, &record()).await.unwrap();

    const ROUNDS: u64 = 300;
    let mut served_from_cache = 0;
    for round in 1..=ROUNDS {
        let k = Token::generate().key();
        // A user's session and an anonymous one (different scripts: an anonymous create
        // touches only the session key) in turn.
        let mut r = record();
        if round % 2 == 0 {
            r.meta.user_id = None;
        }
        a.store.create(&k, &r).await.unwrap();
        let before = reads(&server);
        assert!(a.store.load(&k).await.unwrap().is_some());
        if reads(&server) == before {
            served_from_cache += 1;
        }
        // B changes it; the marker (tracked by A) is changed after, so its notice comes after
        // the change's.
        assert!(a.store.load(&marker).await.unwrap().is_some());
        b.store.apply(&k, &set("b", round)).await.unwrap();
        b.store.apply(&marker, &set("m", round)).await.unwrap();
        notice_for(&mut a.spy, &marker).await;
        let seen = a.store.load(&k).await.unwrap().expect("alive");
        assert_eq!(
            attr(&seen, "b"),
            Some(round.to_string()),
            "round {round}: A serves its created copy without B's change"
        );
    }
    println!(
        "{kind:?}: {served_from_cache} of {ROUNDS} first reads of a session just created \
         served from the near cache; every later read showed the other instance's change"
    );
    assert!(
        served_from_cache >= 290,
        "{kind:?}: only {served_from_cache} of {ROUNDS} first reads after a create were served \
         from the near cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_is_served_from_the_near_cache_and_others_changes_reach_it_near_cached() {
    new_sessions_are_cached_and_stay_correct(Kind::NearCached).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_is_served_from_the_near_cache_and_others_changes_reach_it_tiered() {
    new_sessions_are_cached_and_stay_correct(Kind::Tiered).await;
}

/// A create the tracked connection did not run (it was lost: killed by the server) goes through
/// the write connection, which tracks nothing: that session must not be near-cached, or a later
/// change by another instance would never reach this one. B changes it; A's next successful read
/// shows the change.
async fn an_untracked_create_is_not_cached(kind: Kind) {
    let server = RedisProcess::start();
    let durable = Arc::new(MemoryStore::default());
    let mut a = instance(kind, &server, "lost:", &durable).await;
    let b = instance(kind, &server, "lost:", &durable).await;
    // Both instances' tracked connections (A has read through its own); the server kills
    // them all — A's is the one that matters, B's loss only costs B a reconnect.
    assert!(
        a.store
            .load(&Token::generate().key())
            .await
            .unwrap()
            .is_none()
    );
    let tracked: Vec<String> = cli(&server, &["CLIENT", "LIST"])
        .lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('t'))
        })
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect();
    assert_eq!(tracked.len(), 2, "two tracked connections (A's and B's)");
    for id in &tracked {
        cli(&server, &["CLIENT", "KILL", "ID", id]);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, a.spy.recv()).await {
            Ok(Ok(Invalidation::All)) => break,
            Ok(Ok(_)) => {}
            other => panic!("no All after the kill: {other:?}"),
        }
    }
    let k = Token::generate().key();
    a.store.create(&k, &record()).await.unwrap();
    b.store.apply(&k, &set("b", 1)).await.unwrap();
    // The first call on a lost tracked connection may report the loss; then it reconnects.
    let mut seen = None;
    for _ in 0..5 {
        if let Ok(r) = a.store.load(&k).await {
            seen = r;
            break;
        }
    }
    let seen = seen.expect("A reads the session");
    assert_eq!(
        attr(&seen, "b").as_deref(),
        Some("1"),
        "{kind:?}: A served a copy of its untracked create without B's change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untracked_create_is_not_cached_near_cached() {
    an_untracked_create_is_not_cached(Kind::NearCached).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untracked_create_is_not_cached_tiered() {
    an_untracked_create_is_not_cached(Kind::Tiered).await;
}

/// A near-cache hit through `load_shared` hands out the cache's own copy — the same allocation
/// for every read, nothing copied — and a change never shows in a copy a request already
/// holds: an own write and another instance's write each give later reads a new copy with the
/// change, while the copies held keep what they read. The positive control: `load` copies.
async fn shared_reads(kind: Kind) {
    let server = RedisProcess::start();
    let durable = Arc::new(MemoryStore::default());
    let mut a = instance(kind, &server, "shr:", &durable).await;
    let b = instance(kind, &server, "shr:", &durable).await;
    let k = Token::generate().key();
    a.store.create(&k, &record()).await.unwrap();
    a.store.apply(&k, &set("n", 1)).await.unwrap();

    let first = a.store.load_shared(&k).await.unwrap().expect("alive");
    let second = a.store.load_shared(&k).await.unwrap().expect("alive");
    assert!(
        Arc::ptr_eq(&first, &second),
        "{kind:?}: a hit copies nothing"
    );
    let owned = a.store.load(&k).await.unwrap().expect("alive");
    assert_eq!(owned, *first, "load gives the same record, owned");

    a.store.apply(&k, &set("n", 2)).await.unwrap();
    let after_own = a.store.load_shared(&k).await.unwrap().expect("alive");
    assert_eq!(attr(&after_own, "n").as_deref(), Some("2"));
    assert_eq!(
        attr(&first, "n").as_deref(),
        Some("1"),
        "a held copy keeps what it read"
    );
    assert!(!Arc::ptr_eq(&first, &after_own));

    // Another instance's change: the notice drops the copy, the next read has the change.
    b.store.load(&k).await.unwrap();
    b.store.apply(&k, &set("n", 3)).await.unwrap();
    notice_for(&mut a.spy, &k).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = a.store.load_shared(&k).await.unwrap().expect("alive");
        if attr(&now, "n").as_deref() == Some("3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{kind:?}: another instance's change never seen"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        attr(&after_own, "n").as_deref(),
        Some("2"),
        "held copies unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_read_copies_nothing_and_never_sees_later_changes_near_cached() {
    shared_reads(Kind::NearCached).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_read_copies_nothing_and_never_sees_later_changes_tiered() {
    shared_reads(Kind::Tiered).await;
}
