//! CSRF defences through the app: cross-site posts refused even with a valid token,
//! same-origin posts without a token refused, valid ones pass; nothing changes on a refusal.

use serde_json::Value;

use crate::helpers::{Backend, assert_error, platform};

async fn platform_count(c: &crate::helpers::Client) -> usize {
    c.get_json("/api/platforms").await.1["platforms"]
        .as_array()
        .unwrap()
        .len()
}

async fn a_cross_site_post_with_a_valid_token_is_refused_and_changes_nothing(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    let body = platform("One", "https://one.example", "alice");
    let r = c
        .request(
            reqwest::Method::POST,
            "/api/platforms",
            Some(&body),
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_error(r, 403, "cross_site_request").await;
    let r = c
        .request(
            reqwest::Method::POST,
            "/api/platforms",
            Some(&body),
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_error(r, 403, "origin_mismatch").await;
    let r = c
        .request(
            reqwest::Method::POST,
            "/api/platforms",
            Some(&body),
            &[("sec-fetch-site", "same-site")],
        )
        .await;
    assert_error(r, 403, "cross_site_request").await;
    assert_eq!(platform_count(&c).await, 0);
    // The refusals were counted and audited.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("ratatoskr_csrf_refusals_total"),
        "{metrics}"
    );
    // Refused before the session was read, they name no user: hourly counters, not rows.
    let counts = app
        .state
        .audit
        .counts_by_hour(ratatoskr_app::domain::time::Timestamp::EPOCH)
        .await
        .unwrap();
    assert!(
        counts
            .iter()
            .filter(|h| h.kind == ratatoskr_core::AuditKind::CsrfRefused)
            .map(|h| h.count)
            .sum::<u64>()
            >= 3,
        "{counts:?}"
    );
}

async fn a_same_origin_post_without_a_token_is_refused(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    let token = c.csrf().unwrap();
    *c.csrf.lock().unwrap() = None;
    let origin = app.address.clone();
    let body = platform("One", "https://one.example", "alice");
    let r = c
        .request(
            reqwest::Method::POST,
            "/api/platforms",
            Some(&body),
            &[("sec-fetch-site", "same-origin"), ("origin", &origin)],
        )
        .await;
    assert_error(r, 403, "csrf_token_missing").await;
    let r = c
        .request(
            reqwest::Method::DELETE,
            "/api/sessions/AAAAAAAAAAAAAAAA",
            None,
            &[],
        )
        .await;
    assert_error(r, 403, "csrf_token_missing").await;
    assert_eq!(platform_count(&c).await, 0);
    // With the token, the same request passes.
    let r = c
        .request(
            reqwest::Method::POST,
            "/api/platforms",
            Some(&body),
            &[
                ("sec-fetch-site", "same-origin"),
                ("origin", &origin),
                ("x-csrf-token", &token),
            ],
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(platform_count(&c).await, 1);
}

async fn a_token_from_another_session_is_invalid(backend: Backend) {
    let app = backend.spawn().await;
    let a = app.logged_in("alice", false).await;
    let b = app.logged_in("bob", false).await;
    let stolen = b.csrf().unwrap();
    let r = a
        .request(
            reqwest::Method::POST,
            "/api/platforms",
            Some(&platform("One", "https://one.example", "alice")),
            &[("x-csrf-token", &stolen)],
        )
        .await;
    assert_error(r, 403, "csrf_token_invalid").await;
    // A token from before login (rotation) is invalid afterwards.
    let old = a.csrf().unwrap();
    assert_eq!(a.login("alice", crate::helpers::PASSWORD).await.0, 200);
    let r = a
        .request(
            reqwest::Method::POST,
            "/api/sessions/revoke-others",
            None,
            &[("x-csrf-token", &old)],
        )
        .await;
    assert_error(r, 403, "csrf_token_invalid").await;
}

async fn a_cross_site_login_is_refused_even_anonymous(backend: Backend) {
    let app = backend.spawn().await;
    app.create_user("alice", false).await;
    let c = app.client();
    let r = c
        .request(
            reqwest::Method::POST,
            "/api/login",
            Some(&serde_json::json!({"username": "alice", "password": crate::helpers::PASSWORD})),
            &[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ],
        )
        .await;
    assert_error(r, 403, "cross_site_request").await;
    assert!(c.cookie().is_none());
}

async fn html_forms_carry_the_token_in_a_field_and_refusals_are_pages(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    // The page embeds a masked token in each form.
    let page = c.get("/platforms").await.text().await.unwrap();
    assert!(
        page.contains("name=\"csrf_token\" value=\""),
        "forms carry the token"
    );
    let fields = [
        ("platform_type", "mastodon"),
        ("name", "Form"),
        ("instance_url", "https://form.example"),
        ("username", "alice"),
        ("access_token", "tok-form"),
    ];
    let saved = c.csrf();
    *c.csrf.lock().unwrap() = None;
    let r = c.post_form("/platforms", &fields).await;
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // The application's own page (its refusal hook), not the library's bare one.
    let page = r.text().await.unwrap();
    assert!(
        page.contains("csrf_token_missing") && page.contains("Nothing was changed"),
        "{page}"
    );
    *c.csrf.lock().unwrap() = saved;
    let r = c.post_form("/platforms", &fields).await;
    assert_eq!(r.status(), 303);
    let list: Value = c.get_json("/api/platforms").await.1;
    assert_eq!(list["platforms"][0]["name"], "Form");
}

crate::on_backends!(
    a_cross_site_post_with_a_valid_token_is_refused_and_changes_nothing,
    a_same_origin_post_without_a_token_is_refused,
    a_token_from_another_session_is_invalid,
    a_cross_site_login_is_refused_even_anonymous,
    html_forms_carry_the_token_in_a_field_and_refusals_are_pages,
);
