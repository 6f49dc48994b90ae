//! The read path: a warm near-cache hit against a Redis round trip.
//!
//! `cargo bench -p ratatoskr-tiered --bench read_path` (needs Redis at `RATATOSKR_TEST_REDIS_URL`,
//! default 127.0.0.1:6379). Under `cargo test` each benchmark runs once as a smoke test.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ratatoskr_core::{
    Delta, Invalidation, MemoryJournal, MemoryStore, Record, SessionStore, Token, now_ms,
};
use ratatoskr_redis::{RedisConfig, RedisStore};
use ratatoskr_tiered::{TieredConfig, TieredStore};

fn record() -> Record {
    let mut r = Record::new(
        Some("42".into()),
        now_ms(),
        Duration::from_secs(3600),
        Duration::from_secs(7200),
    );
    r.attrs.insert("counter".into(), b"1".to_vec());
    r
}

fn redis_url() -> String {
    std::env::var("RATATOSKR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn read_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("session_read");

    // A warm near cache: the fast tier is only asked once.
    let (tiered, key) = rt.block_on(async {
        let (_tx, rx) = tokio::sync::broadcast::channel::<Invalidation>(16);
        // Keep the sender alive for the whole benchmark so the cache stays on.
        std::mem::forget(_tx);
        let t = TieredStore::new(
            Arc::new(MemoryStore::default()),
            Arc::new(MemoryStore::default()),
            Arc::new(MemoryJournal::default()),
            Some(rx),
            TieredConfig::default(),
        );
        assert!(t.recover_now().await);
        let key = Token::generate().key();
        t.create(&key, &record()).await.expect("create");
        t.load(&key).await.expect("warm").expect("present");
        (t, key)
    });
    group.bench_function("near_cache_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { tiered.load(&key).await.expect("load").expect("present") })
    });

    // One Redis round trip on loopback.
    let (redis, rkey) = rt.block_on(async {
        let mut config = RedisConfig::new(redis_url());
        config.key_prefix = format!("bench:{}:", Token::generate().key().handle());
        let store = RedisStore::connect(config).await.expect("Redis reachable");
        let key = Token::generate().key();
        store.create(&key, &record()).await.expect("create");
        store
            .apply(&key, &Delta::default().set("theme", b"\"dark\"".to_vec()))
            .await
            .expect("apply");
        (store, key)
    });
    group.bench_function("redis_round_trip", |b| {
        b.to_async(&rt)
            .iter(|| async { redis.load(&rkey).await.expect("load").expect("present") })
    });
    group.finish();
    rt.block_on(async {
        let _ = redis.destroy(&rkey).await;
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = read_path
}
criterion_main!(benches);
