//! A representative subset on PostgreSQL: login, platforms, switching, sessions.

use serde_json::Value;

use crate::helpers::{PASSWORD, assert_error, platform, spawn_pg_app};

#[tokio::test]
async fn login_platforms_switch_and_sessions_on_postgres() {
    let app = spawn_pg_app().await;
    let c = app.logged_in("alice", false).await;
    let first = c.cookie().unwrap();
    assert_eq!(c.login("alice", PASSWORD).await.0, 200);
    assert_ne!(c.cookie().unwrap(), first);
    let r = c
        .post(
            "/api/platforms",
            &platform("One", "https://one.example", "alice"),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["platform"]["id"]
        .as_i64()
        .unwrap();
    assert_error(
        c.post(
            "/api/platforms",
            &platform("Dup", "https://one.example", "alice"),
        )
        .await,
        409,
        "platform_exists",
    )
    .await;
    assert_eq!(
        c.post_empty(&format!("/api/platforms/{id}/switch"))
            .await
            .status(),
        200
    );
    assert_eq!(
        c.get_json("/api/session").await.1["active_platform"]["id"],
        id
    );
    let other = app.client();
    assert_eq!(other.login("alice", PASSWORD).await.0, 200);
    assert_eq!(
        other
            .post_empty(&format!("/api/platforms/{id}/switch"))
            .await
            .status(),
        200
    );
    assert_eq!(
        c.delete(&format!("/api/platforms/{id}")).await.status(),
        204
    );
    assert!(other.get_json("/api/session").await.1["active_platform"].is_null());
    let (_, list) = c.get_json("/api/sessions").await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
    let r = c.post_empty("/api/sessions/revoke-others").await;
    assert_eq!(r.json::<Value>().await.unwrap()["revoked"], 1);
    assert_eq!(
        other.get_json("/api/session").await.1["authenticated"],
        false
    );
    let bob = app.logged_in("bob", false).await;
    assert_error(
        bob.post_empty(&format!("/api/platforms/{id}/switch")).await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(c.post_empty("/api/logout").await.status(), 204);
}

#[tokio::test]
async fn lockout_and_admin_on_postgres() {
    let app = spawn_pg_app().await;
    let admin = app.logged_in("root", true).await;
    app.create_user("alice", false).await;
    let c = app.client();
    for _ in 0..4 {
        assert_eq!(c.login("alice", "wrong password").await.0, 401);
    }
    assert_eq!(c.login("alice", "wrong password").await.0, 429);
    let (status, h) = admin.get_json("/health/sessions").await;
    assert_eq!(status, 200);
    assert_eq!(h["tiers"]["database"]["backend"], "postgres");
    let (status, f) = admin.get_json("/api/admin/analytics").await;
    assert_eq!(status, 200);
    assert_eq!(
        f["failed_logins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        5
    );
}
