//! Session lifecycle through HTTP: creation, saving, rotation, logout, timeouts, limits,
//! revocation, store failures.
mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::*;
use ratatoskr_axum::SessionConfig;
use ratatoskr_core::{AuditKind, ManagerConfig, Token};
use serde_json::json;

fn kinds(app: &App) -> Vec<AuditKind> {
    app.audit.events().iter().map(|e| e.kind).collect()
}

#[tokio::test]
async fn a_session_is_created_on_first_write_and_kept_across_requests() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    assert_eq!(c.get("/count").await.body, "1");
    let cookie = c.cookie.clone();
    assert_eq!(c.get("/count").await.body, "2");
    assert_eq!(c.get("/count").await.body, "3");
    assert_eq!(
        c.cookie, cookie,
        "the token does not change without a reason"
    );
    assert_eq!(app.store.creates.load(SeqCst), 1);
    assert_eq!(kinds(&app), [AuditKind::Created]);
}

#[tokio::test]
async fn only_changed_attributes_are_written_and_unchanged_writes_are_skipped() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    c.get("/count").await;
    c.get("/api/session").await; // pick up a CSRF token for the PUTs below
    let r = c
        .send(Req::new("PUT", "/attr/theme").json(&json!("dark")))
        .await;
    assert_eq!(r.status, 204);
    let applies = app.store.applies.load(SeqCst);
    // The same value again: nothing to write.
    c.send(Req::new("PUT", "/attr/theme").json(&json!("dark")))
        .await;
    assert_eq!(app.store.applies.load(SeqCst), applies);
    // Removing an attribute that is not there: nothing to write either.
    c.send(Req::new("DELETE", "/attr/nope")).await;
    assert_eq!(app.store.applies.load(SeqCst), applies);
    c.send(Req::new("DELETE", "/attr/theme")).await;
    assert_eq!(app.store.applies.load(SeqCst), applies + 1);
    assert_eq!(c.get("/attr/theme").await.body, "null");
    assert_eq!(c.get("/read").await.body, "1", "other attributes untouched");
}

#[tokio::test]
async fn nothing_is_saved_after_a_5xx() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    // Cookieless: the 500 creates no session.
    let r = c.post("/fail500").await;
    assert_eq!(r.status, 500);
    assert_eq!(r.set_cookie(), None);
    assert_eq!(app.store.creates.load(SeqCst), 0);
    // With a session: the attribute written before the 500 is not saved.
    c.login("alice").await;
    let applies = app.store.applies.load(SeqCst);
    assert_eq!(c.post("/fail500").await.status, 500);
    assert_eq!(app.store.applies.load(SeqCst), applies);
    assert_eq!(c.get("/attr/doomed").await.body, "null");
}

#[tokio::test]
async fn a_store_outage_is_a_json_503_never_an_empty_500() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    c.login("alice").await;
    app.store.fail.store(true, SeqCst);
    for r in [
        c.get("/read").await,
        c.get("/me").await,
        c.get("/count").await,
        c.post("/logout").await,
        c.post("/count").await, // the layer's own load for the CSRF check
    ] {
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.error_code(), "session_store_unavailable");
        assert!(
            !r.body.contains("injected"),
            "backend detail stays in the log"
        );
    }
    // A cookieless write fails at creation, after the handler: still a JSON 503, no cookie.
    let r = Req::get("/count").send(&app.router).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.error_code(), "session_store_unavailable");
    assert_eq!(r.set_cookie(), None);
    // Routes that do not touch the session keep working.
    assert_eq!(c.get("/nothing").await.status, 200);
    app.store.fail.store(false, SeqCst);
    assert_eq!(c.get("/me").await.body, "alice");
}

#[tokio::test]
async fn login_changes_the_token_and_the_pre_login_token_is_dead() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    c.get("/count").await;
    let before = c.cookie.clone().unwrap();
    let r = c.login("alice").await;
    let after = r.cookie_pair().unwrap();
    assert_ne!(before, after);
    // The new session kept the pre-login attributes.
    assert_eq!(c.get("/read").await.body, "1");
    assert_eq!(c.get("/me").await.body, "alice");
    // The old cookie is anonymous now (session fixation defeated).
    let old = Req::get("/me")
        .header("Cookie", &before)
        .send(&app.router)
        .await;
    assert_eq!(old.status, 401);
    assert_eq!(old.error_code(), "unauthenticated");
    let old = Req::get("/read")
        .header("Cookie", &before)
        .send(&app.router)
        .await;
    assert_eq!(old.body, "none");
    assert!(kinds(&app).contains(&AuditKind::Rotated));
}

#[tokio::test]
async fn login_without_a_session_creates_one_bound_to_the_user() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    let r = c.login("bob").await;
    assert!(r.cookie_pair().is_some());
    assert_eq!(c.get("/me").await.body, "bob");
    let e = &app.audit.events()[0];
    assert_eq!(e.kind, AuditKind::Created);
    assert_eq!(e.user_id.as_deref(), Some("bob"));
}

#[tokio::test]
async fn logging_in_as_another_user_starts_a_fresh_session() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    c.login("alice").await;
    c.get("/count").await;
    c.login("mallory").await;
    assert_eq!(c.get("/me").await.body, "mallory");
    assert_eq!(
        c.get("/read").await.body,
        "none",
        "alice's data does not carry over"
    );
}

#[tokio::test]
async fn privilege_change_rotates_the_token() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    c.login("alice").await;
    let before = c.cookie.clone().unwrap();
    let r = c.post("/rotate").await;
    assert_eq!(r.status, 200);
    assert_ne!(c.cookie.clone().unwrap(), before);
    assert_eq!(c.get("/me").await.body, "alice");
    let old = Req::get("/me")
        .header("Cookie", &before)
        .send(&app.router)
        .await;
    assert_eq!(old.status, 401);
}

#[tokio::test]
async fn replaying_the_cookie_after_logout_is_anonymous() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    c.login("alice").await;
    let cookie = c.cookie.clone().unwrap();
    assert_eq!(c.post("/logout").await.status, 204);
    assert_eq!(c.cookie, None, "the browser dropped the cookie");
    let r = Req::get("/me")
        .header("Cookie", &cookie)
        .send(&app.router)
        .await;
    assert_eq!(r.status, 401);
    let r = Req::get("/api/session")
        .header("Cookie", &cookie)
        .send(&app.router)
        .await;
    assert_eq!(r.json()["authenticated"], false);
    assert_eq!(r.set_cookie(), None);
    let k = kinds(&app);
    assert!(k.contains(&AuditKind::Destroyed));
    assert_eq!(
        k.last(),
        Some(&AuditKind::Expired),
        "the dead cookie is audited"
    );
}

#[tokio::test]
async fn an_unknown_token_is_never_adopted() {
    let app = spawn(SessionConfig::default()).await;
    let forged = Token::generate().as_cookie_value();
    let cookie = format!("{COOKIE}={forged}");
    let r = Req::get("/count")
        .header("Cookie", &cookie)
        .send(&app.router)
        .await;
    assert_eq!(r.body, "1");
    let issued = r.cookie_pair().unwrap();
    assert_ne!(
        issued, cookie,
        "a fresh server-generated token, not the one presented"
    );
    // A read with the forged token stays anonymous and creates nothing.
    let before = app.store.creates.load(SeqCst);
    let r = Req::get("/read")
        .header("Cookie", &cookie)
        .send(&app.router)
        .await;
    assert_eq!(r.body, "none");
    assert_eq!(r.set_cookie(), None);
    assert_eq!(app.store.creates.load(SeqCst), before);
}

fn short_timeouts(idle_ms: u64, absolute_ms: u64) -> ManagerConfig {
    ManagerConfig {
        idle_timeout: Duration::from_millis(idle_ms),
        absolute_timeout: Duration::from_millis(absolute_ms),
        touch_interval: Duration::from_millis(50),
        ..ManagerConfig::default()
    }
}

#[tokio::test]
async fn the_idle_timeout_is_enforced_by_the_server() {
    let app = spawn_with(
        routes(),
        SessionConfig::default(),
        short_timeouts(600, 60_000),
    )
    .await;
    let mut c = app.client();
    c.login("alice").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        c.get("/me").await.body,
        "alice",
        "use within the idle timeout"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    let r = c.get("/me").await;
    assert_eq!(r.status, 401, "idle for longer than the timeout");
    assert_eq!(app.audit.events().last().unwrap().kind, AuditKind::Expired);
}

#[tokio::test]
async fn activity_extends_the_idle_deadline_with_a_rate_limited_touch() {
    let app = spawn_with(
        routes(),
        SessionConfig::default(),
        short_timeouts(800, 60_000),
    )
    .await;
    let mut c = app.client();
    c.login("alice").await;
    let touches = app.store.touches.load(SeqCst);
    // Several reads inside the touch interval: at most one touch.
    for _ in 0..5 {
        c.get("/me").await;
    }
    assert!(app.store.touches.load(SeqCst) <= touches + 1);
    // Keep using it past the original idle deadline.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(c.get("/me").await.body, "alice");
    }
    assert!(
        app.store.touches.load(SeqCst) > touches,
        "touches were written"
    );
}

#[tokio::test]
async fn the_absolute_timeout_ends_even_an_active_session() {
    let app = spawn_with(
        routes(),
        SessionConfig::default(),
        short_timeouts(60_000, 1_200),
    )
    .await;
    let mut c = app.client();
    c.login("alice").await;
    let info = c.get("/api/session").await.json();
    let (idle, abs) = (
        info["idle_expires_at"].as_i64().unwrap(),
        info["absolute_expires_at"].as_i64().unwrap(),
    );
    assert!(idle <= abs);
    let mut ended = false;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if c.get("/me").await.status == 401 {
            ended = true;
            break;
        }
    }
    assert!(ended, "active use does not extend the absolute deadline");
}

#[tokio::test]
async fn the_concurrent_session_limit_evicts_the_oldest_at_login_and_audits_it() {
    let mc = ManagerConfig {
        max_sessions_per_user: Some(2),
        ..ManagerConfig::default()
    };
    let app = spawn_with(routes(), SessionConfig::default(), mc).await;
    let mut devices = Vec::new();
    for _ in 0..3 {
        let mut c = app.client();
        c.login("alice").await;
        devices.push(c);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(devices[0].get("/me").await.status, 401, "oldest evicted");
    assert_eq!(devices[1].get("/me").await.body, "alice");
    assert_eq!(devices[2].get("/me").await.body, "alice");
    let evicted: Vec<_> = app
        .audit
        .events()
        .into_iter()
        .filter(|e| e.kind == AuditKind::EvictedByLimit)
        .collect();
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].user_id.as_deref(), Some("alice"));
}

#[tokio::test]
async fn a_user_can_list_sessions_and_revoke_one_of_them() {
    let app = spawn(SessionConfig::default()).await;
    let mut phone = app.client();
    let mut laptop = app.client();
    phone.login("alice").await;
    laptop.login("alice").await;
    let list = laptop.get("/sessions").await.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let other = list.iter().find(|s| s["current"] == false).unwrap()["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = laptop
        .send(Req::new("DELETE", &format!("/sessions/{other}")))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(phone.get("/me").await.status, 401);
    assert_eq!(laptop.get("/me").await.body, "alice");
    // Someone else's handle is a 404, and nothing happens to it.
    let mut bob = app.client();
    bob.login("bob").await;
    let mine = laptop.get("/sessions").await.json()[0]["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        bob.send(Req::new("DELETE", &format!("/sessions/{mine}")))
            .await
            .status,
        404
    );
    assert_eq!(laptop.get("/me").await.body, "alice");
    assert!(kinds(&app).contains(&AuditKind::RevokedByUser));
}

#[tokio::test]
async fn revoke_others_keeps_only_the_current_session() {
    let app = spawn(SessionConfig::default()).await;
    let mut devices = Vec::new();
    for _ in 0..3 {
        let mut c = app.client();
        c.login("alice").await;
        devices.push(c);
    }
    let mut bob = app.client();
    bob.login("bob").await;
    let r = devices[2].post("/revoke-others").await;
    assert_eq!(r.json()["revoked"], 2);
    assert_eq!(devices[0].get("/me").await.status, 401);
    assert_eq!(devices[1].get("/me").await.status, 401);
    assert_eq!(devices[2].get("/me").await.body, "alice");
    assert_eq!(bob.get("/me").await.body, "bob", "other users untouched");
    let revoked = app
        .audit
        .events()
        .into_iter()
        .filter(|e| e.kind == AuditKind::RevokedByUser)
        .count();
    assert_eq!(revoked, 2);
}

#[tokio::test]
async fn logout_everywhere_ends_every_session_including_this_one() {
    let app = spawn(SessionConfig::default()).await;
    let mut a = app.client();
    let mut b = app.client();
    a.login("alice").await;
    b.login("alice").await;
    let r = b.post("/logout-everywhere").await;
    assert_eq!(r.json()["revoked"], 2);
    assert_eq!(
        r.cookie().unwrap().max_age(),
        Some(cookie::time::Duration::ZERO),
        "the removal cookie"
    );
    assert_eq!(a.get("/me").await.status, 401);
    let mut b2 = app.client();
    b2.cookie = Some(r.cookie_pair().unwrap());
    assert_eq!(b2.get("/me").await.status, 401);
}

#[tokio::test]
async fn a_password_change_revokes_all_sessions_of_the_user() {
    let app = spawn(SessionConfig::default()).await;
    let mut a = app.client();
    let mut b = app.client();
    a.login("alice").await;
    b.login("alice").await;
    let r = b.post("/change-password").await;
    assert_eq!(r.json()["revoked"], 2);
    assert_eq!(a.get("/me").await.status, 401);
    assert_eq!(b.get("/me").await.status, 401);
    let revoked: Vec<_> = app
        .audit
        .events()
        .into_iter()
        .filter(|e| e.kind == AuditKind::RevokedAll)
        .collect();
    assert_eq!(revoked.len(), 2);
    assert_eq!(revoked[0].detail.as_deref(), Some("password_changed"));
}

#[tokio::test]
async fn an_admin_can_revoke_a_users_sessions_from_outside_a_request() {
    use ratatoskr_axum::RevokeReason;
    let app = spawn(SessionConfig::default()).await;
    let mut a = app.client();
    let mut b = app.client();
    a.login("alice").await;
    // Sessions are listed oldest first by creation time (ms): keep the two logins apart.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    b.login("alice").await;
    let sessions = app.control.list_user("alice").await.unwrap();
    assert!(
        app.control
            .revoke_handle("alice", &sessions[0].handle)
            .await
            .unwrap()
    );
    assert!(
        !app.control
            .revoke_handle("bob", &sessions[1].handle)
            .await
            .unwrap()
    );
    assert_eq!(a.get("/me").await.status, 401);
    assert_eq!(b.get("/me").await.body, "alice");
    let n = app
        .control
        .revoke_user("alice", RevokeReason::AccountDisabled)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(b.get("/me").await.status, 401);
    // The account is disabled: an old cookie cannot come back either.
    assert!(kinds(&app).contains(&AuditKind::RevokedByAdmin));
    assert!(kinds(&app).contains(&AuditKind::RevokedAll));
}

#[tokio::test]
async fn anonymous_requests_to_authenticated_extractors_get_a_json_401() {
    let app = spawn(SessionConfig::default()).await;
    let r = Req::get("/me").send(&app.router).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "unauthenticated");
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
}

/// The handler has loaded the session when the revocation happens, and writes only after it:
/// two gates order the steps (no sleep decides which comes first).
#[tokio::test]
async fn a_write_to_a_session_revoked_while_the_handler_runs_is_refused_not_resurrected() {
    use axum::routing::get;
    use ratatoskr_axum::{Session, SessionError};
    use std::sync::Arc;
    use tokio::sync::Notify;
    let loaded = Arc::new(Notify::new());
    let revoked = Arc::new(Notify::new());
    let slow_write = {
        let (loaded, revoked) = (loaded.clone(), revoked.clone());
        move |session: Session| async move {
            let _ = session.user_id().await?; // loaded now
            loaded.notify_one();
            revoked.notified().await;
            session.insert("late", &true).await?;
            Ok::<_, SessionError>("done")
        }
    };
    let app = spawn_with(
        routes().route("/slow-write", get(slow_write)),
        SessionConfig::default(),
        ManagerConfig::default(),
    )
    .await;
    let mut c = app.client();
    c.login("alice").await;
    let cookie = c.cookie.clone().unwrap();
    let router = app.router.clone();
    let pending = tokio::spawn(async move {
        Req::get("/slow-write")
            .header("Cookie", cookie)
            .send(&router)
            .await
    });
    tokio::time::timeout(Duration::from_secs(30), loaded.notified())
        .await
        .expect("the handler loads the session");
    let handle = app.control.list_user("alice").await.unwrap()[0].handle;
    assert!(app.control.revoke_handle("alice", &handle).await.unwrap());
    revoked.notify_one();
    let r = pending.await.unwrap();
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.error_code(), "session_ended");
    assert!(app.control.list_user("alice").await.unwrap().is_empty());
    assert_eq!(app.store.inner_count_sync(), 0, "no session came back");
}
