//! Metrics through the `metrics` facade: a minimal in-test recorder counts what the layer
//! reports while real HTTP requests run. (One test: the global recorder is per process.)
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use ratatoskr_axum::{RevokeReason, SessionConfig};
use ratatoskr_core::AuditKind;

#[derive(Default)]
struct Counts(Mutex<HashMap<String, Arc<Cell>>>);

#[derive(Default)]
struct Cell(AtomicU64);

impl metrics::CounterFn for Cell {
    fn increment(&self, v: u64) {
        self.0.fetch_add(v, Ordering::SeqCst);
    }
    fn absolute(&self, v: u64) {
        self.0.store(v, Ordering::SeqCst);
    }
}

fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl Counts {
    fn get(&self, name: &str) -> u64 {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |c| c.0.load(Ordering::SeqCst))
    }
}

struct Rec(&'static Counts);

impl Recorder for Rec {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let cell = self
            .0
            .0
            .lock()
            .unwrap()
            .entry(render(key))
            .or_default()
            .clone();
        Counter::from_arc(cell)
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[tokio::test]
async fn loads_creations_saves_errors_refusals_and_ended_sessions_are_counted() {
    let counts: &'static Counts = Box::leak(Box::default());
    metrics::set_global_recorder(Rec(counts)).unwrap();

    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    c.get("/count").await; // created + save ok
    c.get("/count").await; // load hit + save ok
    c.login("alice").await; // rotation (login)
    c.csrf = None;
    c.post("/count").await; // CSRF refusal: token missing
    Req::post("/count")
        .header("Sec-Fetch-Site", "cross-site")
        .send(&app.router)
        .await;
    Req::get("/read")
        .header("Cookie", format!("{COOKIE}=bad"))
        .send(&app.router)
        .await;
    app.store.fail.store(true, Ordering::SeqCst);
    c.get("/read").await; // load error → 503
    app.store.fail.store(false, Ordering::SeqCst);

    assert_eq!(counts.get("ratatoskr_sessions_created_total{}"), 1);
    assert!(counts.get("ratatoskr_session_loads_total{result=hit}") >= 2);
    assert_eq!(counts.get("ratatoskr_session_loads_total{result=error}"), 1);
    assert_eq!(counts.get("ratatoskr_session_saves_total{result=ok}"), 2);
    assert_eq!(
        counts.get("ratatoskr_session_rotations_total{cause=login}"),
        1
    );
    assert_eq!(
        counts.get("ratatoskr_csrf_refusals_total{reason=csrf_token_missing}"),
        1
    );
    assert_eq!(
        counts.get("ratatoskr_csrf_refusals_total{reason=cross_site_request}"),
        1
    );
    assert_eq!(
        counts.get("ratatoskr_session_cookies_refused_total{reason=malformed}"),
        1
    );
    assert_eq!(
        counts.get("ratatoskr_session_errors_total{code=session_store_unavailable}"),
        1
    );

    // Every ended session is counted under its cause and audited once, whichever path ended it.
    let mut bob: Vec<Client> = Vec::new();
    for _ in 0..3 {
        let mut device = app.client();
        device.login("bob").await;
        bob.push(device);
    }
    bob[2].post("/revoke-others").await; // 2 revoked by the user
    bob[2].post("/logout").await; // 1 logout
    app.control
        .revoke_user("alice", RevokeReason::Admin)
        .await
        .unwrap(); // 1 revoked by an administrator
    let audited =
        |kind: AuditKind| app.audit.events().iter().filter(|e| e.kind == kind).count() as u64;
    for (cause, kind, n) in [
        ("revoked_by_user", AuditKind::RevokedByUser, 2),
        ("logout", AuditKind::Destroyed, 1),
        ("revoked_by_admin", AuditKind::RevokedByAdmin, 1),
    ] {
        let counted = counts.get(&format!("ratatoskr_sessions_ended_total{{cause={cause}}}"));
        assert_eq!(counted, n, "{cause}");
        assert_eq!(audited(kind), n, "{kind:?}");
    }
}
