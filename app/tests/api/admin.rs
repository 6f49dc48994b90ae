//! Administration: every user's sessions, revocation, disabling, analytics; 403 for others.

use serde_json::Value;

use crate::helpers::{Backend, PASSWORD, assert_error, platform};

async fn admin_routes_are_403_for_normal_users_and_401_for_visitors(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    let anon = app.client();
    for path in [
        "/api/admin/sessions",
        "/api/admin/sessions?user=alice",
        "/api/admin/analytics",
        "/health/sessions",
    ] {
        assert_error(c.get(path).await, 403, "forbidden").await;
        assert_error(anon.get(path).await, 401, "unauthenticated").await;
    }
    assert_error(
        c.delete("/api/admin/users/alice/sessions").await,
        403,
        "forbidden",
    )
    .await;
    assert_error(
        c.delete("/api/admin/users/alice/sessions/AAAAAAAAAAAAAAAA")
            .await,
        403,
        "forbidden",
    )
    .await;
    assert_error(
        c.post_empty("/api/admin/users/alice/disable").await,
        403,
        "forbidden",
    )
    .await;
    // The page answers 403 too.
    let r = c.get("/admin").await;
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("this needs an administrator")
    );
}

async fn an_admin_sees_and_revokes_any_users_sessions(backend: Backend) {
    let app = backend.spawn().await;
    let admin = app.logged_in("root", true).await;
    let alice = app.logged_in("alice", false).await;
    let alice2 = app.client();
    assert_eq!(alice2.login("alice", PASSWORD).await.0, 200);
    let (status, body) = admin.get_json("/api/admin/sessions?user=alice").await;
    assert_eq!(status, 200);
    let sessions = body["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(body["user"]["username"], "alice");
    let (_, all) = admin.get_json("/api/admin/sessions").await;
    let names: Vec<&str> = all["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"]["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "root"]);
    assert_error(
        admin.get("/api/admin/sessions?user=nobody").await,
        404,
        "not_found",
    )
    .await;

    let handle = sessions[0]["handle"].as_str().unwrap();
    assert_eq!(
        admin
            .delete(&format!("/api/admin/users/alice/sessions/{handle}"))
            .await
            .status(),
        204
    );
    assert_error(
        admin
            .delete(&format!("/api/admin/users/alice/sessions/{handle}"))
            .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        admin
            .delete(&format!(
                "/api/admin/users/root/sessions/{}",
                sessions[1]["handle"].as_str().unwrap()
            ))
            .await,
        404,
        "not_found",
    )
    .await;
    let r = admin.delete("/api/admin/users/alice/sessions").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 1);
    assert_eq!(
        alice.get_json("/api/session").await.1["authenticated"],
        false
    );
    assert_eq!(
        alice2.get_json("/api/session").await.1["authenticated"],
        false
    );
    assert_error(
        admin.delete("/api/admin/users/nobody/sessions").await,
        404,
        "not_found",
    )
    .await;
    // Audited as admin revocations.
    let events = app.state.stores.audit.recent(100).await.unwrap();
    assert!(
        events
            .iter()
            .filter(|e| e.kind == ratatoskr_core::AuditKind::RevokedByAdmin)
            .count()
            >= 2
    );
}

async fn an_admin_disables_an_account_and_its_sessions_end(backend: Backend) {
    let app = backend.spawn().await;
    let admin = app.logged_in("root", true).await;
    let alice = app.logged_in("alice", false).await;
    let r = admin.post_empty("/api/admin/users/alice/disable").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 1);
    assert_eq!(
        alice.get_json("/api/session").await.1["authenticated"],
        false
    );
    assert_eq!(app.client().login("alice", PASSWORD).await.0, 401);
    assert_error(
        admin.post_empty("/api/admin/users/root/disable").await,
        409,
        "cannot_disable_self",
    )
    .await;
    assert_eq!(
        admin
            .post_empty("/api/admin/users/alice/enable")
            .await
            .status(),
        204
    );
    assert_eq!(app.client().login("alice", PASSWORD).await.0, 200);
}

async fn analytics_report_what_the_app_recorded(backend: Backend) {
    let app = backend.spawn().await;
    let admin = app.logged_in("root", true).await;
    let alice = app.logged_in("alice", false).await;
    let r = alice
        .post(
            "/api/platforms",
            &platform("Pix", "https://pix.example", "alice"),
        )
        .await;
    let id = r.json::<Value>().await.unwrap()["platform"]["id"]
        .as_i64()
        .unwrap();
    alice
        .post_empty(&format!("/api/platforms/{id}/switch"))
        .await;
    assert_eq!(app.client().login("alice", "wrong password").await.0, 401);
    let phone = app.client_ua("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Version/17.5 Mobile/15E148 Safari/604.1");
    assert_eq!(phone.login("alice", PASSWORD).await.0, 200);
    phone.post_empty("/api/sessions/revoke-others").await;
    // A cookie that names an ended session counts as an expiry.
    let dead = app.client();
    dead.set_cookie(alice.cookie());
    dead.get("/api/session").await;
    ratatoskr_app::analytics::sample(&app.state).await.unwrap();

    let (status, f) = admin.get_json("/api/admin/analytics?hours=24").await;
    assert_eq!(status, 200);
    assert_eq!(f["hours"], 24);
    assert_eq!(f["logins"].as_array().unwrap().len(), 24);
    let sum = |k: &str| {
        f[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum("logins"), 3);
    assert_eq!(sum("failed_logins"), 1);
    assert!(sum("revocations") >= 1, "{f}");
    assert!(sum("expiries") >= 1, "{f}");
    assert!(!f["active_over_time"].as_array().unwrap().is_empty());
    assert_eq!(f["active_sessions"], 2);
    assert_eq!(f["sessions_by_device_class"]["mobile"], 1);
    assert_eq!(f["sessions_by_device_class"]["desktop"], 1);
    assert_eq!(f["sessions_by_platform_type"]["none"], 2);
    assert_eq!(f["platforms_by_type"]["mastodon"], 1);
    assert_error(
        admin.get("/api/admin/analytics?hours=abc").await,
        400,
        "invalid_query",
    )
    .await;
    // The page draws the charts inline.
    let page = admin.get("/admin").await.text().await.unwrap();
    for id in [
        "chart-active",
        "chart-logins",
        "chart-ends",
        "chart-platforms",
        "chart-devices",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id}");
    }
    assert!(page.contains("<svg"));
}

crate::on_backends!(
    admin_routes_are_403_for_normal_users_and_401_for_visitors,
    an_admin_sees_and_revokes_any_users_sessions,
    an_admin_disables_an_account_and_its_sessions_end,
    analytics_report_what_the_app_recorded,
);
