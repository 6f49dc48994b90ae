//! The HTML pages and their forms.

use crate::helpers::{Backend, PASSWORD};

async fn pages_redirect_visitors_to_the_login_page(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.client();
    for path in ["/", "/platforms", "/sessions", "/admin"] {
        let r = c.get(path).await;
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()["location"], "/login?reason=login_required");
    }
    let r = c.get("/login?reason=login_required").await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("Please log in to continue."));
    assert!(html.contains("<label for=\"login-username\">"));
    assert!(
        c.cookie().is_none(),
        "showing the login page creates no session"
    );
}

async fn the_form_login_rotates_and_lands_on_the_dashboard(backend: Backend) {
    let app = backend.spawn().await;
    app.create_user("alice", false).await;
    let c = app.client();
    let r = c
        .post_form("/login", &[("username", "alice"), ("password", "wrong")])
        .await;
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Wrong user name or password.")
    );
    let r = c
        .post_form("/login", &[("username", "alice"), ("password", PASSWORD)])
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/");
    assert!(c.cookie().is_some());
    let html = c.get("/").await.text().await.unwrap();
    assert!(html.contains("Hello, alice"));
    assert!(html.contains("No platform is active in this session."));
    // The login page sends a logged-in visitor home.
    assert_eq!(c.get("/login").await.status(), 303);
    // Log out through the form.
    c.refresh_csrf().await;
    let r = c.post_form("/logout", &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?reason=logged_out");
    assert!(c.cookie().is_none());
}

async fn registering_through_the_form_logs_in(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.client();
    let r = c
        .post_form("/register", &[("username", "x"), ("password", PASSWORD)])
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("a user name is 3 to 32"));
    let r = c
        .post_form(
            "/register",
            &[("username", "newbie"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/platforms");
    let html = c.get("/platforms").await.text().await.unwrap();
    assert!(html.contains("Welcome, newbie!"));
}

async fn platform_forms_show_errors_in_the_page_and_switch_updates_the_dashboard(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    let mut fields = vec![
        ("platform_type", "pixelfed"),
        ("name", "My <b>photos</b>"),
        ("instance_url", "http://pix.example"),
        ("username", "alice"),
        ("access_token", "tok-123-secret"),
    ];
    let r = c.post_form("/platforms", &fields).await;
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("it must start with https:"),
        "the error is shown"
    );
    assert!(
        html.contains("My &lt;b&gt;photos&lt;&#x2f;b&gt;"),
        "what was typed comes back, escaped"
    );
    assert!(!html.contains("<b>photos"));
    assert!(
        !html.contains("tok-123-secret"),
        "the token is never echoed"
    );
    fields[2] = ("instance_url", "https://pix.example");
    assert_eq!(c.post_form("/platforms", &fields).await.status(), 303);
    fields[1] = ("name", "Toots");
    fields[0] = ("platform_type", "mastodon");
    fields[2] = ("instance_url", "https://toot.example");
    assert_eq!(c.post_form("/platforms", &fields).await.status(), 303);
    let html = c.get("/platforms").await.text().await.unwrap();
    assert!(html.contains("Connected Toots."));
    let r = c
        .post_form("/platforms/switch", &[("platform_id", "2")])
        .await;
    assert_eq!(r.status(), 303);
    let html = c.get("/").await.text().await.unwrap();
    assert!(html.contains("Switched to Toots."));
    assert!(html.contains("data-platform-id=\"2\""));
    // Someone else's or unknown ids are refused with a message, nothing switched.
    let r = c
        .post_form("/platforms/switch", &[("platform_id", "99")])
        .await;
    assert_eq!(r.status(), 303);
    let html = c.get("/platforms").await.text().await.unwrap();
    assert!(html.contains("no such platform"), "{html}");
    let r = c.post_form("/platforms/1/delete", &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(c.post_form("/platforms/1/delete", &[]).await.status(), 404);
}

async fn the_sessions_page_lists_and_revokes(backend: Backend) {
    let app = backend.spawn().await;
    let c = app.logged_in("alice", false).await;
    let other = app.client_ua("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Version/17.5 Mobile/15E148 Safari/604.1");
    assert_eq!(other.login("alice", PASSWORD).await.0, 200);
    let html = c.get("/sessions").await.text().await.unwrap();
    assert!(html.contains("Safari on iOS"));
    assert!(html.contains("Firefox on Linux"));
    assert!(html.contains("This session"));
    let r = c.post_form("/sessions/revoke-others", &[]).await;
    assert_eq!(r.status(), 303);
    let html = c.get("/sessions").await.text().await.unwrap();
    assert!(html.contains("Logged out 1 other session."));
    assert!(!html.contains("Safari on iOS"));
    assert_eq!(other.get("/").await.status(), 303);
}

async fn the_admin_page_shows_health_charts_and_users(backend: Backend) {
    let app = backend.spawn().await;
    let admin = app.logged_in("root", true).await;
    app.logged_in("alice", false).await;
    let html = admin.get("/admin").await.text().await.unwrap();
    assert!(html.contains("id=\"health-status\">ok<"));
    assert!(html.contains("data-user=\"alice\""));
    assert!(html.contains("Revoke all of alice"));
    let r = admin
        .post_form("/admin/users/alice/sessions/revoke", &[])
        .await;
    assert_eq!(r.status(), 303);
    let html = admin.get("/admin").await.text().await.unwrap();
    assert!(html.contains("Revoked 1 session(s) of alice."));
}

async fn unknown_pages_are_html_404s_and_assets_are_served(backend: Backend) {
    let app = backend.spawn().await;
    let r = app.get("/nothing").await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("There is no page here."));
    let css = app.get("/static/app.css").await;
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    let js = app.get("/static/app.js").await;
    assert_eq!(js.status(), 200);
}

async fn every_response_carries_the_security_headers(backend: Backend) {
    let app = backend.spawn().await;
    for path in ["/login", "/api/session", "/nothing", "/static/app.css"] {
        let r = app.get(path).await;
        let h = r.headers();
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "same-origin", "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
    }
}

crate::on_backends!(
    pages_redirect_visitors_to_the_login_page,
    the_form_login_rotates_and_lands_on_the_dashboard,
    registering_through_the_form_logs_in,
    platform_forms_show_errors_in_the_page_and_switch_updates_the_dashboard,
    the_sessions_page_lists_and_revokes,
    the_admin_page_shows_health_charts_and_users,
    unknown_pages_are_html_404s_and_assets_are_served,
    every_response_carries_the_security_headers,
);
