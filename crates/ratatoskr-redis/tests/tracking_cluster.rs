//! Client-side caching on a Redis Cluster: one tracked connection per master, each load on the
//! master serving its key, and a failover announced as "flush everything".

mod common;

use std::time::{Duration, Instant};

use ratatoskr_core::{Delta, Invalidation, Record, SessionKey, SessionStore, Token, now_ms};
use ratatoskr_redis::{RedisConfig, RedisStore};
use ratatoskr_testkit::RedisCluster;
use tokio::sync::broadcast;

fn config(cluster: &RedisCluster, prefix: &str) -> RedisConfig {
    RedisConfig {
        cluster_nodes: cluster.addrs(),
        tracking: true,
        ..common::config(prefix)
    }
}

fn record() -> Record {
    Record::new(
        Some("ada".into()),
        now_ms(),
        Duration::from_secs(600),
        Duration::from_secs(3600),
    )
}

/// Wait (with a deadline) for a notice that satisfies `want`.
async fn notice(
    rx: &mut broadcast::Receiver<Invalidation>,
    within: Duration,
    want: impl Fn(&Invalidation) -> bool,
) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(n)) if want(&n) => return true,
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return false,
        }
    }
}

/// Sessions until every master serves at least one of them.
async fn sessions_on_every_master(
    cluster: &RedisCluster,
    store: &RedisStore,
) -> Vec<(SessionKey, usize)> {
    let mut out: Vec<(SessionKey, usize)> = Vec::new();
    let masters = cluster.masters();
    while !masters.iter().all(|m| out.iter().any(|(_, n)| n == m)) {
        let k = Token::generate().key();
        store.create(&k, &record()).await.unwrap();
        out.push((k, cluster.master_of_key(&store.session_key_name(&k))));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_every_master_are_announced_to_the_instance_that_read_them() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .unwrap();
    let prefix = common::random_prefix();
    let (a, mut rx) = RedisStore::connect_tracked(config(cluster, &prefix))
        .await
        .unwrap();
    let b = RedisStore::connect(RedisConfig {
        tracking: false,
        ..config(cluster, &prefix)
    })
    .await
    .unwrap();
    let sessions = sessions_on_every_master(cluster, &b).await;
    assert!(a.tracking_connections().unwrap() >= 3, "one per master");
    for (k, master) in &sessions {
        assert!(a.load(k).await.unwrap().is_some());
        a.sync_invalidations().await.unwrap();
        while rx.try_recv().is_ok() {}
        b.apply(k, &Delta::default().set("x", b"1".to_vec()))
            .await
            .unwrap();
        assert!(
            notice(&mut rx, Duration::from_secs(5), |n| *n
                == Invalidation::Key(*k))
            .await,
            "a change on master {master} was not announced"
        );
    }
}

/// Whether a notice for `k` is queued once every notice sent before now, by every master,
/// has arrived.
async fn announced(
    a: &RedisStore,
    rx: &mut broadcast::Receiver<Invalidation>,
    k: &SessionKey,
) -> bool {
    a.sync_invalidations().await.unwrap();
    let mut seen = false;
    loop {
        match rx.try_recv() {
            Ok(n) if n == Invalidation::Key(*k) => seen = true,
            Ok(Invalidation::All) => panic!("an unexpected All"),
            Ok(_) => {}
            Err(broadcast::error::TryRecvError::Empty) => return seen,
            Err(e) => panic!("the invalidation channel failed: {e}"),
        }
    }
}

/// On every master: A's own `apply` goes to that master's tracked connection (`NOLOOP`) and is
/// not announced to A, while a later change by another client (B) still is — the script's
/// read after its change keeps the key tracked there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_own_apply_is_not_announced_on_any_master_and_later_changes_by_others_are() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::shared)
        .await
        .unwrap();
    let prefix = common::random_prefix();
    let (a, mut rx) = RedisStore::connect_tracked(config(cluster, &prefix))
        .await
        .unwrap();
    let b = RedisStore::connect(RedisConfig {
        tracking: false,
        ..config(cluster, &prefix)
    })
    .await
    .unwrap();
    let sessions = sessions_on_every_master(cluster, &b).await;
    for (k, master) in &sessions {
        assert!(a.load(k).await.unwrap().is_some());
        a.sync_invalidations().await.unwrap();
        while rx.try_recv().is_ok() {}
        for n in 0..3 {
            a.apply(k, &Delta::default().set("own", vec![b'0' + n]))
                .await
                .unwrap();
            assert!(
                !announced(&a, &mut rx, k).await,
                "own apply announced on master {master}"
            );
        }
        b.apply(k, &Delta::default().set("theirs", b"1".to_vec()))
            .await
            .unwrap();
        assert!(
            announced(&a, &mut rx, k).await,
            "B's change after A's own apply not announced on master {master}"
        );
        let r = a.load(k).await.unwrap().unwrap();
        assert_eq!(
            (r.attrs["own"].as_slice(), r.attrs["theirs"].as_slice()),
            (&b"2"[..], &b"1"[..])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_flushes_the_caches_and_tracking_resumes_on_the_promoted_master() {
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .unwrap();
    let prefix = common::random_prefix();
    let (a, mut rx) = RedisStore::connect_tracked(config(&cluster, &prefix))
        .await
        .unwrap();
    let b = RedisStore::connect(RedisConfig {
        tracking: false,
        ..config(&cluster, &prefix)
    })
    .await
    .unwrap();
    let k = Token::generate().key();
    b.create(&k, &record()).await.unwrap();
    assert!(a.load(&k).await.unwrap().is_some());
    a.sync_invalidations().await.unwrap();
    while rx.try_recv().is_ok() {}
    let victim = cluster.master_of_key(&a.session_key_name(&k));
    cluster.kill(victim);
    assert!(
        notice(&mut rx, Duration::from_secs(5), |n| *n == Invalidation::All).await,
        "the lost master was not announced"
    );
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_failover(victim);
        cluster
    })
    .await
    .unwrap();
    // The promoted replica may lack the session (asynchronous replication): write it again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let restored = loop {
        let _ = b.destroy(&k).await;
        if b.create(&k, &record()).await.is_ok() {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(restored, "writes reach the promoted master");
    let loaded = loop {
        if let Ok(r) = a.load(&k).await {
            break r;
        }
        assert!(Instant::now() < deadline, "loads reach the promoted master");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(loaded.is_some());
    a.sync_invalidations().await.unwrap();
    while rx.try_recv().is_ok() {}
    b.apply(&k, &Delta::default().set("y", b"2".to_vec()))
        .await
        .unwrap();
    assert!(
        notice(&mut rx, Duration::from_secs(5), |n| *n
            == Invalidation::Key(k))
        .await,
        "a change after the failover was not announced"
    );
    drop(cluster);
}
