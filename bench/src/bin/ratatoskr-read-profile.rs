//! The warm session read through the axum layer, for an instruction-count profile: the bench's
//! read route (`GET /read`, one attribute of a logged-in session) called in process — no sockets,
//! so that the count is the layer's and the store's, not the kernel's — on a current-thread
//! runtime, all inside [`measured_reads`].
//!
//! ```sh
//! cargo build --release -p ratatoskr-bench --bin ratatoskr-read-profile
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured_reads*' \
//!     target/release/ratatoskr-read-profile tiered 20000
//! ```
//!
//! The first argument picks the server: `tiered` (the bench's tiered store with its near cache;
//! the tiers are in-memory stores here, which a near-cache hit never reaches), `redis-near`
//! ([`NearCachedStore`](ratatoskr_tiered::NearCachedStore) in front of an in-memory store), or
//! `bare` (the bare axum handler). Instructions per read = the callgrind total / N. Without
//! valgrind it prints the time per read.

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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // Kept alive: a closed notice channel turns the near cache off.
    let (notices, _) = tokio::sync::broadcast::channel::<Invalidation>(16);
    let (router, cookie) = rt.block_on(async {
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
            other => panic!("unknown server `{other}`: tiered, redis-near or bare"),
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
        // Warm: the first read fills the near cache.
        read(&router, &cookie).await;
        (router, cookie)
    });
    let started = Instant::now();
    measured_reads(&rt, &router, &cookie, n);
    let took = started.elapsed();
    println!(
        "{which}: {n} reads, {:.2} µs each",
        took.as_secs_f64() * 1e6 / n as f64
    );
}

async fn read(router: &Router, cookie: &str) {
    let mut request = Request::get("/read");
    if !cookie.is_empty() {
        request = request.header(header::COOKIE, cookie);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).expect("a request"))
        .await
        .expect("read answered");
    assert!(
        response.status().is_success(),
        "read: {}",
        response.status()
    );
    // The body is consumed as a server would send it.
    axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("a body");
}

/// The reads callgrind counts (`--toggle-collect='*measured_reads*'`).
#[inline(never)]
fn measured_reads(rt: &tokio::runtime::Runtime, router: &Router, cookie: &str, n: usize) {
    rt.block_on(async {
        for _ in 0..n {
            read(router, cookie).await;
        }
    });
}
