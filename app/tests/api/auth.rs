//! Registration, login (rotation, lockout), logout, `GET /api/session`, password changes.

use serde_json::json;

use crate::helpers::{Backend, PASSWORD, assert_error};

async fn register_creates_a_user_and_refuses_duplicates_and_bad_input(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.client();
    let r = c
        .post(
            "/api/register",
            &json!({"username": "Alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["user"]["username"], "alice");
    assert_eq!(body["user"]["is_admin"], false);
    assert!(body["user"].get("password_hash").is_none());
    // Registration does not log in through the API and creates no session.
    assert!(c.cookie().is_none());

    let dup = c
        .post(
            "/api/register",
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_error(dup, 409, "username_taken").await;
    let bad = c
        .post(
            "/api/register",
            &json!({"username": "a b", "password": PASSWORD}),
        )
        .await;
    assert_error(bad, 400, "invalid_username").await;
    let long = c
        .post(
            "/api/register",
            &json!({"username": "a".repeat(33), "password": PASSWORD}),
        )
        .await;
    assert_error(long, 400, "invalid_username").await;
    let weak = c
        .post(
            "/api/register",
            &json!({"username": "bob", "password": "short"}),
        )
        .await;
    assert_error(weak, 400, "weak_password").await;
    let huge = c
        .post(
            "/api/register",
            &json!({"username": "bob", "password": "x".repeat(200)}),
        )
        .await;
    assert_error(huge, 400, "password_too_long").await;
    let missing = c.post("/api/register", &json!({"username": "bob"})).await;
    assert_error(missing, 400, "invalid_body").await;
}

async fn the_password_is_stored_as_an_argon2id_hash(backend: Backend) {
    let app = backend.spawn().await;
    app.create_user("alice", false).await;
    let hash = app
        .state
        .db
        .password_hash(ratatoskr_app::domain::user::UserId(1))
        .await
        .unwrap()
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    if backend.has_sqlite_file() {
        let bytes = app.database_bytes();
        assert!(bytes.len() > 1000, "the database file is read");
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes())
        );
    }
}

async fn registration_can_be_closed_by_configuration(backend: Backend) {
    let app = backend.spawn_args(&["--registration", "closed"]).await;
    let c = app.client();
    let r = c
        .post(
            "/api/register",
            &json!({"username": "alice", "password": PASSWORD}),
        )
        .await;
    assert_error(r, 403, "registration_closed").await;
    // The login page has no registration form.
    let page = c.get("/login").await.text().await.unwrap();
    assert!(page.contains("id=\"login-submit\""));
    assert!(!page.contains("id=\"register-submit\""));
    // And the form route refuses too.
    let r = c
        .post_form(
            "/register",
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 403);
    assert!(app.state.db.user_by_name("alice").await.unwrap().is_none());
}

async fn login_answers_the_user_and_a_csrf_token_and_sets_a_host_cookie(backend: Backend) {
    let app = backend.spawn().await;
    app.create_user("alice", false).await;
    let c = app.client();
    let r = c
        .request(
            reqwest::Method::POST,
            "/api/login",
            Some(&json!({"username": "alice", "password": PASSWORD})),
            &[],
        )
        .await;
    assert_eq!(r.status(), 200);
    let set_cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set_cookie.starts_with("__Host-ratatoskr="), "{set_cookie}");
    for attr in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(set_cookie.contains(attr), "{set_cookie} lacks {attr}");
    }
    assert!(!set_cookie.contains("Domain"), "{set_cookie}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["user"]["username"], "alice");
    assert_eq!(body["csrf_token"].as_str().unwrap().len(), 43);
    // Exactly one cookie is ever set.
    assert_eq!(set_cookie.matches("__Host-").count(), 1);
}

async fn logging_in_again_rotates_the_token_and_the_old_one_is_dead(backend: Backend) {
    let app = backend.spawn().await;
    app.create_user("alice", false).await;
    let c = app.client();
    assert_eq!(c.login("alice", PASSWORD).await.0, 200);
    let first = c.cookie().unwrap();
    assert_eq!(c.login("alice", PASSWORD).await.0, 200);
    let second = c.cookie().unwrap();
    assert_ne!(first, second);
    // The pre-login token names nothing any more.
    let old = app.client();
    old.set_cookie(Some(first));
    let (_, s) = old.get_json("/api/session").await;
    assert_eq!(s["authenticated"], false);
    assert_error(old.get("/api/platforms").await, 401, "unauthenticated").await;
    let (_, s) = c.get_json("/api/session").await;
    assert_eq!(s["authenticated"], true);
    assert_eq!(s["user"]["username"], "alice");
    assert!(s["idle_expires_at"].as_i64().unwrap() <= s["absolute_expires_at"].as_i64().unwrap());
}

async fn bad_credentials_are_401_and_do_not_say_which_part_was_wrong(backend: Backend) {
    let app = backend.spawn().await;
    app.create_user("alice", false).await;
    let c = app.client();
    let (s1, wrong_pw) = c.login("alice", "not the password").await;
    let (s2, no_user) = c.login("nobody", "not the password").await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(wrong_pw, no_user);
    assert_eq!(wrong_pw["error"]["code"], "invalid_credentials");
    assert!(c.cookie().is_none(), "a failed login creates no session");
}

async fn five_failures_lock_the_user_name_for_thirty_minutes(backend: Backend) {
    let app = backend.spawn().await;
    app.create_user("alice", false).await;
    let c = app.client();
    for _ in 0..4 {
        assert_eq!(c.login("alice", "wrong password").await.0, 401);
    }
    let (status, body) = c.login("alice", "wrong password").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_attempts");
    // Even the right password is refused while locked.
    let r = c
        .request(
            reqwest::Method::POST,
            "/api/login",
            Some(&json!({"username": "alice", "password": PASSWORD})),
            &[],
        )
        .await;
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1700..=1800).contains(&retry), "{retry}");
    assert_error(r, 429, "too_many_attempts").await;
    // Unknown names lock the same way, so a lock says nothing about existence.
    for _ in 0..4 {
        assert_eq!(c.login("ghost", "wrong password").await.0, 401);
    }
    assert_eq!(c.login("ghost", "wrong password").await.0, 429);
    // Another user is not affected.
    app.create_user("bob", false).await;
    assert_eq!(c.login("bob", PASSWORD).await.0, 200);
}

async fn a_success_resets_the_failure_count(backend: Backend) {
    let app = backend.spawn().await;
    app.create_user("alice", false).await;
    let c = app.client();
    for _ in 0..4 {
        assert_eq!(c.login("alice", "wrong password").await.0, 401);
    }
    assert_eq!(c.login("alice", PASSWORD).await.0, 200);
    for _ in 0..4 {
        assert_eq!(c.login("alice", "wrong password").await.0, 401);
    }
    assert_eq!(c.login("alice", PASSWORD).await.0, 200);
}

async fn logout_destroys_the_session_and_a_replayed_cookie_is_anonymous(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    let cookie = c.cookie().unwrap();
    let r = c.post_empty("/api/logout").await;
    assert_eq!(r.status(), 204);
    assert!(c.cookie().is_none(), "the removal cookie was sent");
    let replay = app.client();
    replay.set_cookie(Some(cookie));
    let (_, s) = replay.get_json("/api/session").await;
    assert_eq!(s["authenticated"], false);
    assert_error(replay.get("/api/sessions").await, 401, "unauthenticated").await;
    // Logging out without a session is harmless.
    assert_eq!(app.client().post_empty("/api/logout").await.status(), 204);
}

async fn the_session_route_describes_anonymous_visitors(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.client();
    let (status, s) = c.get_json("/api/session").await;
    assert_eq!(status, 200);
    assert_eq!(s["authenticated"], false);
    assert!(s["user"].is_null() && s["active_platform"].is_null() && s["csrf_token"].is_null());
    assert!(c.cookie().is_none(), "cookieless requests create nothing");
}

async fn changing_the_password_ends_every_session(backend: Backend) {
    let app = backend.spawn().await;
    let a = app.logged_in("alice", false).await;
    let b = app.client();
    assert_eq!(b.login("alice", PASSWORD).await.0, 200);
    let wrong = a
        .post(
            "/api/password",
            &json!({"current_password": "nope nope", "new_password": "a new password"}),
        )
        .await;
    assert_error(wrong, 400, "wrong_password").await;
    let weak = a
        .post(
            "/api/password",
            &json!({"current_password": PASSWORD, "new_password": "short"}),
        )
        .await;
    assert_error(weak, 400, "weak_password").await;
    let r = a
        .post(
            "/api/password",
            &json!({"current_password": PASSWORD, "new_password": "a new password"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["revoked"], 2);
    assert!(a.cookie().is_none());
    let (_, s) = b.get_json("/api/session").await;
    assert_eq!(s["authenticated"], false);
    assert_eq!(app.client().login("alice", PASSWORD).await.0, 401);
    assert_eq!(app.client().login("alice", "a new password").await.0, 200);
}

async fn a_disabled_account_cannot_log_in_and_loses_its_sessions(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    let user = app.state.db.user_by_name("alice").await.unwrap().unwrap();
    let n = app
        .state
        .accounts()
        .set_disabled(&user, true)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (_, s) = c.get_json("/api/session").await;
    assert_eq!(s["authenticated"], false);
    let (status, body) = app.client().login("alice", PASSWORD).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_credentials");
}

async fn malformed_requests_get_the_json_error_shape(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.client();
    let r = c
        .request(
            reqwest::Method::POST,
            "/api/login",
            None,
            &[("content-type", "application/json")],
        )
        .await;
    assert_error(r, 400, "invalid_json").await;
    let r = c
        .request(
            reqwest::Method::POST,
            "/api/login",
            None,
            &[("content-type", "text/plain")],
        )
        .await;
    assert_error(r, 415, "unsupported_media_type").await;
    let r = c
        .post("/api/login", &json!({"username": 1, "password": []}))
        .await;
    assert_error(r, 400, "invalid_body").await;
    assert_error(c.get("/api/nothing-here").await, 404, "not_found").await;
    assert_error(c.delete("/api/login").await, 405, "method_not_allowed").await;
    let big = json!({"username": "alice", "password": "x".repeat(100_000)});
    assert_error(c.post("/api/login", &big).await, 413, "payload_too_large").await;
}

crate::on_backends!(
    register_creates_a_user_and_refuses_duplicates_and_bad_input,
    the_password_is_stored_as_an_argon2id_hash,
    registration_can_be_closed_by_configuration,
    login_answers_the_user_and_a_csrf_token_and_sets_a_host_cookie,
    logging_in_again_rotates_the_token_and_the_old_one_is_dead,
    bad_credentials_are_401_and_do_not_say_which_part_was_wrong,
    five_failures_lock_the_user_name_for_thirty_minutes,
    a_success_resets_the_failure_count,
    logout_destroys_the_session_and_a_replayed_cookie_is_anonymous,
    the_session_route_describes_anonymous_visitors,
    changing_the_password_ends_every_session,
    a_disabled_account_cannot_log_in_and_loses_its_sessions,
    malformed_requests_get_the_json_error_shape,
);
