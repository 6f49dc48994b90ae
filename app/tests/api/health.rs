//! `/livez`, `/readyz`, `/health/sessions`, `/metrics`.

use serde_json::Value;

use crate::helpers::{Backend, PASSWORD, spawn_app};

async fn livez_answers_200_while_the_process_runs(backend: Backend) {
    let app = backend.spawn().await;
    let r = app.get("/livez").await;
    assert_eq!(r.status(), 200);
}

async fn readyz_answers_200_when_the_store_answers(backend: Backend) {
    let app = backend.spawn().await;
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn the_embedded_default_creates_its_database_file_in_wal_mode() {
    let app = spawn_app().await;
    assert!(app.dir.join("ratatoskr.db").exists());
    assert!(app.dir.join("ratatoskr.db-wal").exists(), "WAL mode");
}

async fn health_sessions_reports_tiers_fallback_and_sessions_to_admins(backend: Backend) {
    let app = backend.spawn().await;
    let admin = app.logged_in("root", true).await;
    let (status, h) = admin.get_json("/health/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["tiers"]["database"]["backend"], backend.database_name());
    assert_eq!(h["tiers"]["database"]["ok"], true);
    assert_eq!(
        h["tiers"]["redis"]["configured"],
        backend == Backend::Tiers,
        "{h}"
    );
    assert_eq!(h["fallback"]["active"], false);
    assert_eq!(h["sessions"]["active"], 1);
    assert_eq!(h["sessions"]["idle_timeout"], "2h");
    assert_eq!(h["sessions"]["absolute_timeout"], "1day");
    assert_eq!(h["sessions"]["max_per_user"], 5);
}

async fn metrics_expose_sessions_logins_and_csrf_refusals(backend: Backend) {
    let app = backend.spawn().await;
    app.create_user("alice", false).await;
    let c = app.client();
    assert_eq!(c.login("alice", PASSWORD).await.0, 200);
    c.request(
        reqwest::Method::POST,
        "/api/logout",
        None,
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    ratatoskr_app::analytics::sample(&app.state).await.unwrap();
    let r = app.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for name in [
        "ratatoskr_active_sessions",
        "ratatoskr_app_logins_total",
        "ratatoskr_csrf_refusals_total",
        "ratatoskr_sessions_created_total",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

crate::on_backends!(
    livez_answers_200_while_the_process_runs,
    readyz_answers_200_when_the_store_answers,
    health_sessions_reports_tiers_fallback_and_sessions_to_admins,
    metrics_expose_sessions_logins_and_csrf_refusals,
);
