//! Fingerprint binding policies through HTTP.
mod common;

use common::*;
use ratatoskr_axum::{FingerprintPolicy, IpBinding, SessionConfig};
use ratatoskr_core::AuditKind;

fn config(policy: FingerprintPolicy, ip: IpBinding) -> SessionConfig {
    SessionConfig::default().with_fingerprint(policy, ip)
}

fn mismatches(app: &App) -> Vec<ratatoskr_core::AuditEvent> {
    app.audit
        .events()
        .into_iter()
        .filter(|e| e.kind == AuditKind::FingerprintMismatch)
        .collect()
}

#[tokio::test]
async fn policy_off_records_and_compares_nothing() {
    let app = spawn(config(FingerprintPolicy::Off, IpBinding::Off)).await;
    let mut c = app.client();
    c.login("alice").await;
    c.user_agent = "SomethingElse/2.0".into();
    assert_eq!(c.get("/me").await.body, "alice");
    assert!(mismatches(&app).is_empty());
    let s = &app.control.list_user("alice").await.unwrap()[0];
    assert_eq!(s.meta.fingerprint, None);
}

#[tokio::test]
async fn policy_log_audits_a_mismatch_and_keeps_the_session() {
    let app = spawn(config(FingerprintPolicy::Log, IpBinding::Off)).await;
    let mut c = app.client();
    c.login("alice").await;
    assert!(
        app.control.list_user("alice").await.unwrap()[0]
            .meta
            .fingerprint
            .is_some()
    );
    assert_eq!(c.get("/me").await.body, "alice");
    assert!(mismatches(&app).is_empty(), "same User-Agent: no mismatch");
    c.user_agent = "Stolen/1.0".into();
    assert_eq!(c.get("/me").await.body, "alice");
    let m = mismatches(&app);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].user_id.as_deref(), Some("alice"));
    assert_eq!(m[0].detail.as_deref(), Some("logged only"));
}

#[tokio::test]
async fn policy_revoke_destroys_the_session_and_the_request_proceeds_anonymous() {
    let app = spawn(config(FingerprintPolicy::Revoke, IpBinding::Off)).await;
    let mut c = app.client();
    c.login("alice").await;
    let mut thief = app.client();
    thief.cookie = c.cookie.clone();
    thief.user_agent = "Stolen/1.0".into();
    let r = thief.get("/api/session").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["authenticated"], false);
    assert_eq!(mismatches(&app).len(), 1);
    // The session is gone for its owner too: the cookie was compromised.
    assert_eq!(c.get("/me").await.status, 401);
    assert!(app.control.list_user("alice").await.unwrap().is_empty());
}

#[tokio::test]
async fn the_fingerprint_survives_login_rotation() {
    let app = spawn(config(FingerprintPolicy::Revoke, IpBinding::Off)).await;
    let mut c = app.client();
    c.get("/count").await; // anonymous session, fingerprint recorded
    c.login("alice").await; // rotated: same fingerprint
    assert_eq!(c.get("/me").await.body, "alice");
    assert!(mismatches(&app).is_empty());
}

#[tokio::test]
async fn ip_binding_uses_the_configured_prefix_of_the_client_address() {
    use axum::extract::Request;
    use axum::middleware::{Next, from_fn};
    use ratatoskr_axum::ClientIp;
    // The app tells the layer the client address (as it would from a trusted proxy header).
    async fn client_ip(mut req: Request, next: Next) -> axum::response::Response {
        if let Some(ip) = req
            .headers()
            .get("x-test-client-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
        {
            req.extensions_mut().insert(ClientIp(ip));
        }
        next.run(req).await
    }
    // The ClientIp middleware runs outside (before) the session layer.
    let store = std::sync::Arc::new(TestStore::default());
    let audit = std::sync::Arc::new(ratatoskr_core::audit::MemoryAudit::default());
    let manager = ratatoskr_core::SessionManager::new(store.clone(), Default::default());
    let layer = ratatoskr_axum::SessionLayer::new(
        manager,
        SessionConfig::default()
            .with_fingerprint(
                FingerprintPolicy::Revoke,
                IpBinding::Prefix { v4: 24, v6: 64 },
            )
            .with_audit(audit.clone()),
    )
    .unwrap();
    let app = routes().layer(layer).layer(from_fn(client_ip));

    let mut c = Client::new(app);
    let login = Req::post("/login/alice").header("X-Test-Client-IP", "192.0.2.10");
    let r = c.send(login).await;
    assert_eq!(r.status, 200);
    let me = |ip: &str| Req::get("/me").header("X-Test-Client-IP", ip);
    assert_eq!(c.send(me("192.0.2.77")).await.body, "alice", "same /24");
    assert_eq!(
        c.send(me("198.51.100.7")).await.status,
        401,
        "another network"
    );
    assert!(
        audit
            .events()
            .iter()
            .any(|e| e.kind == AuditKind::FingerprintMismatch)
    );
}
