//! The warm session read — or write — through the axum layer, for an instruction-count profile:
//! the bench's read route (`GET /read`, one attribute of a logged-in session) or write route
//! (`POST /write`: the counter attribute read and incremented, with the bench's CSRF headers)
//! called in process — no HTTP sockets, so that the count is the layer's and the store's, not
//! the kernel's — on a current-thread runtime, all inside [`measured_reads`] /
//! [`measured_writes`].
//!
//! ```sh
//! cargo build --release -p ratatoskr-bench --bin ratatoskr-read-profile
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_reads*' \
//!     target/release/ratatoskr-read-profile tiered 20000
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_writes*' \
//!     target/release/ratatoskr-read-profile redis 5000 write
//! ```
//!
//! The first argument picks the server: `tiered` (the bench's tiered store with its near cache;
//! the tiers are in-memory stores here, which a near-cache hit never reaches), `redis-near`
//! ([`NearCachedStore`](ratatoskr_tiered::NearCachedStore) in front of an in-memory store),
//! `redis` (the bench's "Redis only (near cache)": `NearCachedStore` in front of a tracked
//! [`RedisStore`](ratatoskr_redis::RedisStore) on `RATATOSKR_TEST_REDIS_URL`, default
//! 127.0.0.1:6379, keys under a fresh prefix, deleted at the end), or `bare` (the bare axum
//! handler). The third picks the request: `read` (default) or `write`. A write on `redis` makes
//! its one `EVALSHA` round trip to Redis: the client's side of it (redis-rs, the multiplexed
//! connection's task, the syscalls' user-space part) runs on this thread and is counted; the
//! server's is not. Instructions per request = the callgrind total / N. Without valgrind it
//! prints the time per request.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use ratatoskr_core::{Invalidation, MemoryJournal, MemoryStore, SessionStore};
use tower::ServiceExt;

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "tiered".into());
    let n: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let op = args.next().unwrap_or_else(|| "read".into());
    assert!(
        op == "read" || op == "write",
        "unknown request `{op}`: read or write"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // Kept alive: a closed notice channel turns the near cache off.
    let (notices, _) = tokio::sync::broadcast::channel::<Invalidation>(16);
    let prefix = format!("prof:{}:", ratatoskr_core::Token::generate().key().handle());
    let mut redis = None;
    let (router, client) = rt.block_on(async {
        let store: Option<Arc<dyn SessionStore>> = match which.as_str() {
            "bare" => None,
            "tiered" => {
                let tiered = ratatoskr_tiered::TieredStore::new(
                    Arc::new(MemoryStore::default()),
                    Arc::new(MemoryStore::default()),
                    Arc::new(MemoryJournal::default()),
                    Some(notices.subscribe()),
                    ratatoskr_tiered::TieredConfig::default(),
                );
                assert!(tiered.recover_now().await, "the breaker closes");
                Some(Arc::new(tiered))
            }
            "redis-near" => Some(Arc::new(ratatoskr_tiered::NearCachedStore::new(
                Arc::new(MemoryStore::default()),
                notices.subscribe(),
                &ratatoskr_tiered::near_cache::NearCacheConfig::default(),
            ))),
            "redis" => {
                let url = std::env::var("RATATOSKR_TEST_REDIS_URL")
                    .unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
                let config = ratatoskr_redis::RedisConfig {
                    key_prefix: prefix.clone(),
                    ..ratatoskr_redis::RedisConfig::new(url)
                };
                let (store, invalidations) = ratatoskr_redis::RedisStore::connect_tracked(config)
                    .await
                    .expect("Redis answers");
                redis = Some(store.clone());
                Some(Arc::new(ratatoskr_tiered::NearCachedStore::new(
                    Arc::new(store),
                    invalidations,
                    &ratatoskr_tiered::near_cache::NearCacheConfig::default(),
                )))
            }
            other => panic!("unknown server `{other}`: tiered, redis-near, redis or bare"),
        };
        let router = match store {
            Some(store) => ratatoskr_bench::servers::ratatoskr_router(store).expect("a router"),
            None => ratatoskr_bench::servers::bare_router(),
        };
        let login = router
            .clone()
            .oneshot(
                Request::post("/login/1")
                    .header("sec-fetch-site", "same-origin")
                    .body(Body::empty())
                    .expect("a request"),
            )
            .await
            .expect("login answered");
        assert!(login.status().is_success(), "login: {}", login.status());
        let cookie = login
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
            .collect::<Vec<_>>()
            .join("; ");
        let csrf = axum::body::to_bytes(login.into_body(), 1 << 16)
            .await
            .expect("a body");
        let client = Client {
            cookie,
            csrf: String::from_utf8_lossy(&csrf).trim().to_owned(),
        };
        // Warm: the first request fills the near cache (and loads the write's script).
        client.send(&router, &op).await;
        (router, client)
    });
    let started = Instant::now();
    if op == "write" {
        measured_writes(&rt, &router, &client, n);
    } else {
        measured_reads(&rt, &router, &client, n);
    }
    let took = started.elapsed();
    println!(
        "{which}: {n} {op}s, {:.2} µs each",
        took.as_secs_f64() * 1e6 / n as f64
    );
    if let Some(store) = redis {
        rt.block_on(async {
            let keys: Vec<Vec<u8>> = store
                .raw_command(redis::cmd("KEYS").arg(format!("{prefix}*")))
                .await
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<i64, _> = store.raw_command(redis::cmd("DEL").arg(keys)).await;
            }
        });
    }
}

/// The logged-in client: its cookie header and its CSRF token.
struct Client {
    cookie: String,
    csrf: String,
}

impl Client {
    async fn send(&self, router: &Router, op: &str) {
        let mut request = if op == "write" {
            let mut r = Request::post("/write").header("sec-fetch-site", "same-origin");
            if !self.csrf.is_empty() {
                r = r.header("x-csrf-token", &self.csrf);
            }
            r
        } else {
            Request::get("/read")
        };
        if !self.cookie.is_empty() {
            request = request.header(header::COOKIE, &self.cookie);
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).expect("a request"))
            .await
            .expect("answered");
        assert!(
            response.status().is_success(),
            "{op}: {}",
            response.status()
        );
        // The body is consumed as a server would send it.
        axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("a body");
    }
}

/// The reads callgrind counts (`--toggle-collect='*measured_reads*'`).
#[inline(never)]
fn measured_reads(rt: &tokio::runtime::Runtime, router: &Router, client: &Client, n: usize) {
    rt.block_on(async {
        for _ in 0..n {
            client.send(router, "read").await;
        }
    });
}

/// The writes callgrind counts (`--toggle-collect='*measured_writes*'`).
#[inline(never)]
fn measured_writes(rt: &tokio::runtime::Runtime, router: &Router, client: &Client, n: usize) {
    rt.block_on(async {
        for _ in 0..n {
            client.send(router, "write").await;
        }
    });
}
