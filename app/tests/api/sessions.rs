//! "Your sessions": listing with devices, revoking one, revoking the others, logging out
//! everywhere, the concurrent-session limit, fingerprints, and the session's preferences.

use serde_json::{Value, json};

use crate::helpers::{Backend, PASSWORD, assert_error};

const PHONE: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36";

async fn sessions_list_devices_addresses_and_the_current_one(backend: Backend) {
    let app = backend.spawn().await;
    let desk = app.logged_in("alice", false).await;
    let phone = app.client_ua(PHONE);
    assert_eq!(phone.login("alice", PASSWORD).await.0, 200);
    let (status, body) = desk.get_json("/api/sessions").await;
    assert_eq!(status, 200);
    let list = body["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let current: Vec<&Value> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["device"], "Firefox on Linux");
    assert_eq!(current[0]["device_class"], "desktop");
    let other = list.iter().find(|s| s["current"] == false).unwrap();
    assert_eq!(other["device"], "Chrome on Android");
    assert_eq!(other["device_class"], "mobile");
    assert_eq!(other["ip"], "127.0.0.1");
    assert_eq!(other["user_agent"], PHONE);
    for s in list {
        for field in [
            "handle",
            "created_at",
            "last_seen",
            "user_agent",
            "ip",
            "current",
        ] {
            assert!(s.get(field).is_some(), "{field} in {s}");
        }
    }
    // The device survives rotation (a second login on the same browser).
    assert_eq!(phone.login("alice", PASSWORD).await.0, 200);
    let (_, body) = phone.get_json("/api/sessions").await;
    let me = body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == true)
        .cloned()
        .unwrap();
    assert_eq!(me["device"], "Chrome on Android");
}

async fn revoking_one_session_logs_that_browser_out(backend: Backend) {
    let app = backend.spawn().await;
    let a = app.logged_in("alice", false).await;
    let b = app.client_ua(PHONE);
    assert_eq!(b.login("alice", PASSWORD).await.0, 200);
    let (_, body) = a.get_json("/api/sessions").await;
    let handle = body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .unwrap()["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        a.delete(&format!("/api/sessions/{handle}")).await.status(),
        204
    );
    let (_, s) = b.get_json("/api/session").await;
    assert_eq!(s["authenticated"], false);
    assert_error(
        a.delete(&format!("/api/sessions/{handle}")).await,
        404,
        "not_found",
    )
    .await;
    let (_, s) = a.get_json("/api/session").await;
    assert_eq!(s["authenticated"], true);
}

async fn another_users_session_is_not_found_and_stays_alive(backend: Backend) {
    let app = backend.spawn().await;
    let a = app.logged_in("alice", false).await;
    let b = app.logged_in("bob", false).await;
    let (_, s) = b.get_json("/api/session").await;
    let bobs = s["handle"].as_str().unwrap().to_owned();
    let m1 = assert_error(
        a.delete(&format!("/api/sessions/{bobs}")).await,
        404,
        "not_found",
    )
    .await;
    let m2 = assert_error(
        a.delete("/api/sessions/AAAAAAAAAAAAAAAA").await,
        404,
        "not_found",
    )
    .await;
    let m3 = assert_error(
        a.delete("/api/sessions/not%20a%20handle").await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(m1, m2);
    assert_eq!(m2, m3);
    let (_, s) = b.get_json("/api/session").await;
    assert_eq!(s["authenticated"], true);
}

async fn revoke_others_keeps_this_session_and_revoke_all_ends_it_too(backend: Backend) {
    let app = backend.spawn().await;
    let a = app.logged_in("alice", false).await;
    let b = app.client();
    let c = app.client();
    assert_eq!(b.login("alice", PASSWORD).await.0, 200);
    assert_eq!(c.login("alice", PASSWORD).await.0, 200);
    let r = a.post_empty("/api/sessions/revoke-others").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 2);
    assert_eq!(b.get_json("/api/session").await.1["authenticated"], false);
    assert_eq!(c.get_json("/api/session").await.1["authenticated"], false);
    assert_eq!(a.get_json("/api/session").await.1["authenticated"], true);
    assert_eq!(b.login("alice", PASSWORD).await.0, 200);
    let r = a.post_empty("/api/sessions/revoke-all").await;
    assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 2);
    assert!(a.cookie().is_none());
    assert_eq!(b.get_json("/api/session").await.1["authenticated"], false);
}

async fn the_concurrent_session_limit_evicts_the_oldest_at_login(backend: Backend) {
    let app = backend.spawn_args(&["--max-sessions-per-user", "2"]).await;
    app.create_user("alice", false).await;
    let clients: Vec<_> = (0..3).map(|_| app.client()).collect();
    for c in &clients {
        assert_eq!(c.login("alice", PASSWORD).await.0, 200);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        clients[0].get_json("/api/session").await.1["authenticated"],
        false
    );
    assert_eq!(
        clients[1].get_json("/api/session").await.1["authenticated"],
        true
    );
    assert_eq!(
        clients[2].get_json("/api/session").await.1["authenticated"],
        true
    );
}

async fn with_fingerprint_revoke_a_stolen_cookie_from_another_browser_is_dead(backend: Backend) {
    let app = backend.spawn_args(&["--fingerprint", "revoke"]).await;
    let a = app.logged_in("alice", false).await;
    let thief = app.client_ua("curl/8.5.0");
    thief.set_cookie(a.cookie());
    assert_eq!(
        thief.get_json("/api/session").await.1["authenticated"],
        false
    );
    // The mismatch ended the session for its owner too, and was audited.
    assert_eq!(a.get_json("/api/session").await.1["authenticated"], false);
    let events = app.state.stores.audit.recent(50).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == ratatoskr_core::AuditKind::FingerprintMismatch)
    );
}

async fn with_fingerprint_log_a_mismatch_is_audited_and_the_session_kept(backend: Backend) {
    let app = backend.spawn().await; // the default policy is `log`
    let a = app.logged_in("alice", false).await;
    let other = app.client_ua("curl/8.5.0");
    other.set_cookie(a.cookie());
    assert_eq!(
        other.get_json("/api/session").await.1["authenticated"],
        true
    );
    let events = app.state.stores.audit.recent(50).await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == ratatoskr_core::AuditKind::FingerprintMismatch)
    );
}

async fn preferences_are_stored_in_the_session_and_bounded(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    let (status, prefs) = c.get_json("/api/session/preferences").await;
    assert_eq!(status, 200);
    assert_eq!(prefs, json!({}));
    assert_eq!(
        c.put("/api/session/preferences/theme", &json!("dark"))
            .await
            .status(),
        204
    );
    assert_eq!(
        c.put("/api/session/preferences/page-size", &json!(50))
            .await
            .status(),
        204
    );
    assert_eq!(
        c.put(
            "/api/session/preferences/filters",
            &json!({"nsfw": false, "tags": ["a"]})
        )
        .await
        .status(),
        204
    );
    let (_, prefs) = c.get_json("/api/session/preferences").await;
    assert_eq!(
        prefs,
        json!({"theme": "dark", "page-size": 50, "filters": {"nsfw": false, "tags": ["a"]}})
    );
    assert_eq!(
        c.delete("/api/session/preferences/theme").await.status(),
        204
    );
    let (_, prefs) = c.get_json("/api/session/preferences").await;
    assert!(prefs.get("theme").is_none());

    let big = json!("x".repeat(2000));
    assert_error(
        c.put("/api/session/preferences/big", &big).await,
        413,
        "preference_too_large",
    )
    .await;
    let huge = json!("x".repeat(100_000));
    assert_error(
        c.put("/api/session/preferences/huge", &huge).await,
        413,
        "payload_too_large",
    )
    .await;
    assert_error(
        c.put("/api/session/preferences/Bad%20Key", &json!(1)).await,
        400,
        "invalid_preference_key",
    )
    .await;
    let long_key = "k".repeat(33);
    assert_error(
        c.put(&format!("/api/session/preferences/{long_key}"), &json!(1))
            .await,
        400,
        "invalid_preference_key",
    )
    .await;
    for i in 0..14 {
        assert_eq!(
            c.put(&format!("/api/session/preferences/k{i}"), &json!(i))
                .await
                .status(),
            204
        );
    }
    assert_error(
        c.put("/api/session/preferences/one-too-many", &json!(1))
            .await,
        400,
        "too_many_preferences",
    )
    .await;
    // Overwriting an existing key is still fine.
    assert_eq!(
        c.put("/api/session/preferences/k0", &json!("again"))
            .await
            .status(),
        204
    );
    // Anonymous visitors have no preferences to change.
    assert_error(
        app.client()
            .put("/api/session/preferences/theme", &json!("x"))
            .await,
        401,
        "unauthenticated",
    )
    .await;
}

async fn idle_and_absolute_timeouts_are_enforced_by_the_server(backend: Backend) {
    use std::time::{Duration, Instant};
    let app = backend
        .spawn_args(&["--idle-timeout", "2s", "--absolute-timeout", "5s"])
        .await;
    let idle = app.logged_in("alice", false).await;
    let active = app.client();
    assert_eq!(active.login("alice", PASSWORD).await.0, 200);
    let logged_in = Instant::now();
    // The active session is used every 400 ms and slides past its idle timeout…
    while logged_in.elapsed() < Duration::from_millis(3500) {
        assert_eq!(
            active.get_json("/api/session").await.1["authenticated"],
            true
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // …while the idle one has ended.
    assert_eq!(
        idle.get_json("/api/session").await.1["authenticated"],
        false
    );
    // The absolute lifetime ends the active one too.
    tokio::time::sleep(Duration::from_millis(5300).saturating_sub(logged_in.elapsed())).await;
    assert_eq!(
        active.get_json("/api/session").await.1["authenticated"],
        false
    );
    // A cookie that names no live session names no user either: counted per hour.
    let counts = app
        .state
        .audit
        .counts_by_hour(ratatoskr_app::domain::time::Timestamp::EPOCH)
        .await
        .unwrap();
    assert!(
        counts
            .iter()
            .filter(|h| h.kind == ratatoskr_core::AuditKind::Expired)
            .map(|h| h.count)
            .sum::<u64>()
            >= 2,
        "{counts:?}"
    );
}

crate::on_backends!(
    sessions_list_devices_addresses_and_the_current_one,
    revoking_one_session_logs_that_browser_out,
    another_users_session_is_not_found_and_stays_alive,
    revoke_others_keeps_this_session_and_revoke_all_ends_it_too,
    the_concurrent_session_limit_evicts_the_oldest_at_login,
    with_fingerprint_revoke_a_stolen_cookie_from_another_browser_is_dead,
    with_fingerprint_log_a_mismatch_is_audited_and_the_session_kept,
    preferences_are_stored_in_the_session_and_bounded,
    idle_and_absolute_timeouts_are_enforced_by_the_server,
);
