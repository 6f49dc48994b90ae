//! Platform connections: add, list, remove, activate, switch; bad input; ownership; tokens
//! sealed at rest.

use serde_json::{Value, json};

use crate::helpers::{Backend, Client, assert_error, platform};

async fn add(c: &Client, name: &str, url: &str, user: &str) -> i64 {
    let r = c.post("/api/platforms", &platform(name, url, user)).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    body["platform"]["id"].as_i64().unwrap()
}

async fn platforms_are_added_listed_and_never_show_their_token(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    let r = c
        .post(
            "/api/platforms",
            &platform("Photos", "https://Pixel.Example/", "@alice"),
        )
        .await;
    assert_eq!(r.status(), 201);
    let text = r.text().await.unwrap();
    assert!(!text.contains("s3cr3t"), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["platform"]["instance_url"], "https://pixel.example");
    assert_eq!(body["platform"]["username"], "alice");
    assert_eq!(body["platform"]["active"], true);
    let r = c.get("/api/platforms").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("s3cr3t")
            && !text.contains("access_token")
            && !text.contains("token_sealed"),
        "{text}"
    );
    let list: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(list["platforms"].as_array().unwrap().len(), 1);
    assert!(list["active_platform_id"].is_null());
}

async fn bad_platform_input_is_refused_with_a_reason(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    for url in [
        "http://mastodon.social",
        "ftp://mastodon.social",
        "mastodon.social",
        "https://user:pw@mastodon.social",
        "https://mastodon.social/#frag",
        "https://mastodon.social/?q=1",
        "https://localhost",
        "https://127.0.0.1",
        "https://bad host.example",
        "",
    ] {
        let r = c.post("/api/platforms", &platform("x", url, "alice")).await;
        assert_error(r, 400, "invalid_instance_url").await;
    }
    let long_url = format!("https://{}.example", "a".repeat(250));
    assert_error(
        c.post("/api/platforms", &platform("x", &long_url, "alice"))
            .await,
        400,
        "invalid_instance_url",
    )
    .await;
    let long_name = "n".repeat(65);
    assert_error(
        c.post(
            "/api/platforms",
            &platform(&long_name, "https://a.example", "alice"),
        )
        .await,
        400,
        "invalid_name",
    )
    .await;
    assert_error(
        c.post(
            "/api/platforms",
            &platform("x", "https://a.example", &"u".repeat(65)),
        )
        .await,
        400,
        "invalid_account",
    )
    .await;
    let mut bad_type = platform("x", "https://a.example", "alice");
    bad_type["platform_type"] = json!("twitter");
    assert_error(
        c.post("/api/platforms", &bad_type).await,
        400,
        "invalid_platform_type",
    )
    .await;
    let mut long_token = platform("x", "https://a.example", "alice");
    long_token["access_token"] = json!("t".repeat(513));
    assert_error(
        c.post("/api/platforms", &long_token).await,
        400,
        "invalid_access_token",
    )
    .await;
    let mut missing = platform("x", "https://a.example", "alice");
    missing.as_object_mut().unwrap().remove("access_token");
    assert_error(
        c.post("/api/platforms", &missing).await,
        400,
        "invalid_body",
    )
    .await;
    let (_, list) = c.get_json("/api/platforms").await;
    assert!(list["platforms"].as_array().unwrap().is_empty());
}

async fn the_same_account_cannot_be_connected_twice(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    add(&c, "One", "https://a.example", "alice").await;
    let r = c
        .post(
            "/api/platforms",
            &platform("Two", "https://A.example/", "@alice"),
        )
        .await;
    assert_error(r, 409, "platform_exists").await;
    // Another user may connect the same account.
    let b = app.logged_in("bob", false).await;
    add(&b, "One", "https://a.example", "alice").await;
}

async fn switching_stores_the_platform_in_the_session(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    let one = add(&c, "One", "https://one.example", "alice").await;
    let two = add(&c, "Two", "https://two.example", "alice").await;
    let r = c.post_empty(&format!("/api/platforms/{two}/switch")).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["active_platform"]["id"], two);
    let (_, s) = c.get_json("/api/session").await;
    assert_eq!(s["active_platform"]["name"], "Two");
    assert_eq!(
        c.post_empty(&format!("/api/platforms/{one}/switch"))
            .await
            .status(),
        200
    );
    let (_, s) = c.get_json("/api/session").await;
    assert_eq!(s["active_platform"]["id"], one);
    let (_, list) = c.get_json("/api/platforms").await;
    assert_eq!(list["active_platform_id"], one);
}

async fn another_users_platform_is_not_found_and_unknown_ids_too(backend: Backend) {
    let app = backend.spawn().await;
    let a = app.logged_in("alice", false).await;
    let b = app.logged_in("bob", false).await;
    let theirs = add(&b, "Bob's", "https://b.example", "bob").await;
    let not_theirs = assert_error(
        a.post_empty(&format!("/api/platforms/{theirs}/switch"))
            .await,
        404,
        "not_found",
    )
    .await;
    let unknown = assert_error(
        a.post_empty("/api/platforms/999999/switch").await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(not_theirs, unknown, "nothing tells the two apart");
    assert_error(
        a.delete(&format!("/api/platforms/{theirs}")).await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        a.patch(
            &format!("/api/platforms/{theirs}"),
            &json!({"active": false}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        a.delete("/api/platforms/not-a-number").await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        a.post_empty("/api/platforms/-1/switch").await,
        404,
        "not_found",
    )
    .await;
    // Bob's platform is untouched.
    let (_, list) = b.get_json("/api/platforms").await;
    assert_eq!(list["platforms"][0]["active"], true);
}

async fn an_inactive_platform_cannot_be_switched_to(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    let id = add(&c, "One", "https://one.example", "alice").await;
    assert_eq!(
        c.post_empty(&format!("/api/platforms/{id}/switch"))
            .await
            .status(),
        200
    );
    let r = c
        .patch(&format!("/api/platforms/{id}"), &json!({"active": false}))
        .await;
    assert_eq!(r.status(), 200);
    // Deactivating clears it from the session.
    let (_, s) = c.get_json("/api/session").await;
    assert!(s["active_platform"].is_null());
    assert_error(
        c.post_empty(&format!("/api/platforms/{id}/switch")).await,
        409,
        "platform_inactive",
    )
    .await;
    assert_eq!(
        c.patch(&format!("/api/platforms/{id}"), &json!({"active": true}))
            .await
            .status(),
        200
    );
    assert_eq!(
        c.post_empty(&format!("/api/platforms/{id}/switch"))
            .await
            .status(),
        200
    );
}

async fn removing_a_platform_clears_it_from_every_session_of_the_user(backend: Backend) {
    let app = backend.spawn().await;
    let a = app.logged_in("alice", false).await;
    let other =
        app.client_ua("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile Safari/604.1");
    assert_eq!(other.login("alice", crate::helpers::PASSWORD).await.0, 200);
    let id = add(&a, "One", "https://one.example", "alice").await;
    assert_eq!(
        a.post_empty(&format!("/api/platforms/{id}/switch"))
            .await
            .status(),
        200
    );
    assert_eq!(
        other
            .post_empty(&format!("/api/platforms/{id}/switch"))
            .await
            .status(),
        200
    );
    let (_, s) = other.get_json("/api/session").await;
    assert_eq!(s["active_platform"]["id"], id);
    assert_eq!(
        a.delete(&format!("/api/platforms/{id}")).await.status(),
        204
    );
    let (_, s) = a.get_json("/api/session").await;
    assert!(s["active_platform"].is_null());
    // The other session no longer shows it either, and its stored reference is gone.
    let (_, s) = other.get_json("/api/session").await;
    assert!(s["active_platform"].is_null(), "{s}");
    let (_, sessions) = a.get_json("/api/sessions").await;
    for sess in sessions["sessions"].as_array().unwrap() {
        assert!(sess["platform_type"].is_null(), "{sess}");
    }
    assert_error(
        a.delete(&format!("/api/platforms/{id}")).await,
        404,
        "not_found",
    )
    .await;
}

async fn access_tokens_are_sealed_at_rest_and_never_in_the_session(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    let token = "plain-token-9f8e7d6c5b4a";
    let mut body = platform("One", "https://one.example", "alice");
    body["access_token"] = json!(token);
    let r = c.post("/api/platforms", &body).await;
    let id = r.json::<Value>().await.unwrap()["platform"]["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        c.post_empty(&format!("/api/platforms/{id}/switch"))
            .await
            .status(),
        200
    );
    c.get("/").await;
    if backend.has_sqlite_file() {
        let bytes = app.database_bytes();
        assert!(bytes.len() > 1000);
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the plaintext token is in the database file"
        );
    }
    // The sealed form opens with the app's key and the row's associated data.
    let sealed = app
        .state
        .db
        .platform_token(
            ratatoskr_app::domain::user::UserId(1),
            ratatoskr_app::domain::platform::PlatformId(id),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        !sealed.windows(token.len()).any(|w| w == token.as_bytes()),
        "the stored token is the plaintext"
    );
    let aad = ratatoskr_app::services::tokens::token_aad(
        ratatoskr_app::domain::user::UserId(1),
        ratatoskr_app::domain::platform::PlatformType::Mastodon,
        &ratatoskr_app::domain::urls::InstanceUrl::parse("https://one.example").unwrap(),
        "alice",
    );
    assert_eq!(app.state.cipher.open(&sealed, &aad).as_deref(), Some(token));
    // The generated key file is private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(app.dir.join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn a_token_sealed_under_another_key_is_reported_not_used() {
    let dir = crate::helpers::fresh_dir();
    let s1 = crate::helpers::test_settings(
        &dir,
        &["--secret-key", "first key: a long enough random string"],
    );
    let app1 = crate::helpers::spawn_app_with(s1, dir.clone(), None).await;
    let c = app1.logged_in("alice", false).await;
    let id = add(&c, "One", "https://one.example", "alice").await;
    let s2 = crate::helpers::test_settings(
        &dir,
        &["--secret-key", "second key: another long random string"],
    );
    let app2 = crate::helpers::spawn_app_with(s2, crate::helpers::fresh_dir(), None).await;
    let c2 = app2.client();
    assert_eq!(c2.login("alice", crate::helpers::PASSWORD).await.0, 200);
    assert_error(
        c2.post_empty(&format!("/api/platforms/{id}/switch")).await,
        409,
        "platform_token_unreadable",
    )
    .await;
    drop(app2);
}

async fn platform_routes_need_a_login_and_a_csrf_token(backend: Backend) {
    let app = backend.spawn().await;
    let anon = app.client();
    assert_error(anon.get("/api/platforms").await, 401, "unauthenticated").await;
    assert_error(
        anon.post("/api/platforms", &platform("x", "https://a.example", "a"))
            .await,
        401,
        "unauthenticated",
    )
    .await;
    let c = app.logged_in("alice", false).await;
    let r = c
        .request(
            reqwest::Method::POST,
            "/api/platforms",
            Some(&platform("x", "https://a.example", "a")),
            &[("x-csrf-token", "forged")],
        )
        .await;
    assert_error(r, 403, "csrf_token_invalid").await;
}

crate::on_backends!(
    platforms_are_added_listed_and_never_show_their_token,
    bad_platform_input_is_refused_with_a_reason,
    the_same_account_cannot_be_connected_twice,
    switching_stores_the_platform_in_the_session,
    another_users_platform_is_not_found_and_unknown_ids_too,
    an_inactive_platform_cannot_be_switched_to,
    removing_a_platform_clears_it_from_every_session_of_the_user,
    access_tokens_are_sealed_at_rest_and_never_in_the_session,
    platform_routes_need_a_login_and_a_csrf_token,
);
