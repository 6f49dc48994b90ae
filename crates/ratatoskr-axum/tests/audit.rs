//! The audit trail: every lifecycle event is recorded, and no token ever appears in it.
mod common;

use common::*;
use ratatoskr_axum::{FingerprintPolicy, IpBinding, RevokeReason, SessionConfig};
use ratatoskr_core::{AuditKind, ManagerConfig, Token};

#[tokio::test]
async fn lifecycle_events_are_audited_and_no_token_or_key_ever_appears() {
    let mc = ManagerConfig {
        max_sessions_per_user: Some(2),
        ..ManagerConfig::default()
    };
    let config = SessionConfig::default().with_fingerprint(FingerprintPolicy::Log, IpBinding::Off);
    let app = spawn_with(routes(), config, mc).await;
    let mut secrets: Vec<String> = Vec::new();
    let remember = |c: &Client, secrets: &mut Vec<String>| {
        if let Some(pair) = &c.cookie {
            let v = pair.split_once('=').unwrap().1.to_owned();
            let key = Token::parse(&v).unwrap().key();
            secrets.push(key.to_hex());
            secrets.push(v);
        }
        if let Some(t) = &c.csrf {
            secrets.push(t.clone());
        }
    };

    let mut a = app.client();
    a.get("/count").await; // created
    remember(&a, &mut secrets);
    a.login("alice").await; // rotated
    remember(&a, &mut secrets);
    a.post("/rotate").await; // rotated (privilege)
    remember(&a, &mut secrets);
    let mut b = app.client();
    b.login("alice").await; // created
    remember(&b, &mut secrets);
    let mut c = app.client();
    c.login("alice").await; // created + evicted_by_limit (a)
    remember(&c, &mut secrets);
    c.user_agent = "Other/1".into();
    c.get("/me").await; // fingerprint_mismatch (logged)
    c.csrf = None;
    c.post("/count").await; // csrf_refused
    c.get("/api/session").await;
    remember(&c, &mut secrets);
    let mut d = app.client();
    d.login("alice").await; // evicts b
    remember(&d, &mut secrets);
    d.post("/revoke-others").await; // revoked_by_user (c)
    d.post("/logout").await; // destroyed
    a.get("/read").await; // expired (a's cookie names no live session)
    let mut e = app.client();
    e.login("bob").await;
    remember(&e, &mut secrets);
    app.control
        .revoke_user("bob", RevokeReason::AccountDisabled)
        .await
        .unwrap(); // revoked_all
    let mut f = app.client();
    f.login("carol").await;
    remember(&f, &mut secrets);
    let h = app.control.list_user("carol").await.unwrap()[0].handle;
    app.control.revoke_handle("carol", &h).await.unwrap(); // revoked_by_admin

    let events = app.audit.events();
    let kinds: std::collections::HashSet<AuditKind> = events.iter().map(|e| e.kind).collect();
    for k in [
        AuditKind::Created,
        AuditKind::Rotated,
        AuditKind::Destroyed,
        AuditKind::Expired,
        AuditKind::EvictedByLimit,
        AuditKind::RevokedByUser,
        AuditKind::RevokedByAdmin,
        AuditKind::RevokedAll,
        AuditKind::FingerprintMismatch,
        AuditKind::CsrfRefused,
    ] {
        assert!(kinds.contains(&k), "{k:?} not audited: {events:#?}");
    }
    let text = audit_text(&app.audit);
    assert!(secrets.len() >= 15);
    for s in &secrets {
        assert!(
            !text.contains(s.as_str()),
            "a token, key or CSRF token leaked into the audit trail"
        );
    }
    // Events name sessions by handle.
    assert!(
        events
            .iter()
            .filter(|e| e.kind != AuditKind::CsrfRefused)
            .all(|e| e.handle.is_some())
    );
}
