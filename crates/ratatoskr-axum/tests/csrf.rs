//! CSRF defences through HTTP: masked synchronizer token, Fetch Metadata, Origin, exemptions.
mod common;

use common::*;
use ratatoskr_axum::{CsrfConfig, SessionConfig};
use ratatoskr_core::AuditKind;

/// A logged-in browser with its CSRF token.
async fn logged_in(app: &App) -> Client {
    let mut c = app.client();
    c.login("alice").await;
    assert!(c.csrf.is_some());
    c
}

/// A POST with the client's cookie and exactly the given extra headers (no automatic
/// Fetch Metadata, Origin or token).
fn bare_post(c: &Client, path: &str) -> Req {
    Req::post(path).header("Cookie", c.cookie.clone().unwrap())
}

#[tokio::test]
async fn a_same_origin_post_with_a_valid_token_passes() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = logged_in(&app).await;
    let r = c.post("/count").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "1");
}

#[tokio::test]
async fn a_same_origin_post_without_a_token_is_refused() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = logged_in(&app).await;
    c.csrf = None;
    let r = c.post("/count").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "csrf_token_missing");
    assert_eq!(c.get("/read").await.body, "none", "the handler did not run");
}

#[tokio::test]
async fn a_cross_site_post_with_a_valid_token_is_refused() {
    let app = spawn(SessionConfig::default()).await;
    let c = logged_in(&app).await;
    let token = c.csrf.clone().unwrap();
    let r = bare_post(&c, "/count")
        .header("Sec-Fetch-Site", "cross-site")
        .header("Origin", "https://evil.example")
        .header("X-CSRF-Token", &token)
        .send(&app.router)
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "cross_site_request");
    // Same with Origin alone (older browsers without Fetch Metadata).
    let r = bare_post(&c, "/count")
        .header("Origin", "https://evil.example")
        .header("X-CSRF-Token", &token)
        .send(&app.router)
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "origin_mismatch");
}

#[tokio::test]
async fn same_site_requests_are_refused_unless_configured() {
    let app = spawn(SessionConfig::default()).await;
    let c = logged_in(&app).await;
    let send = |app_origin: String| {
        bare_post(&c, "/count")
            .header("Sec-Fetch-Site", "same-site")
            .header("Origin", app_origin)
            .header("X-CSRF-Token", c.csrf.clone().unwrap())
    };
    let r = send(app.origin()).send(&app.router).await;
    assert_eq!(r.error_code(), "cross_site_request");

    let config = SessionConfig::default().with_csrf(CsrfConfig {
        allow_same_site: true,
        ..CsrfConfig::default()
    });
    let app = spawn(config).await;
    let c = logged_in(&app).await;
    let r = bare_post(&c, "/count")
        .header("Sec-Fetch-Site", "same-site")
        .header("Origin", app.origin())
        .header("X-CSRF-Token", c.csrf.clone().unwrap())
        .send(&app.router)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A sibling origin still has to be trusted explicitly.
    let r = bare_post(&c, "/count")
        .header("Sec-Fetch-Site", "same-site")
        .header("Origin", "https://sibling.example")
        .header("X-CSRF-Token", c.csrf.clone().unwrap())
        .send(&app.router)
        .await;
    assert_eq!(r.error_code(), "origin_mismatch");
}

#[tokio::test]
async fn trusted_origins_pass_the_origin_checks_but_still_need_the_token() {
    let config = SessionConfig::default()
        .with_csrf(CsrfConfig::default().trust_origin("https://partner.example"));
    let app = spawn(config).await;
    let c = logged_in(&app).await;
    let base = || {
        bare_post(&c, "/count")
            .header("Sec-Fetch-Site", "cross-site")
            .header("Origin", "https://partner.example")
    };
    assert_eq!(
        base().send(&app.router).await.error_code(),
        "csrf_token_missing"
    );
    let r = base()
        .header("X-CSRF-Token", c.csrf.clone().unwrap())
        .send(&app.router)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn a_configured_own_origin_replaces_the_host_comparison() {
    let config = SessionConfig::default().with_csrf(CsrfConfig {
        own_origin: Some("https://app.example".into()),
        ..CsrfConfig::default()
    });
    let app = spawn(config).await;
    // Log in as a non-browser client: the test server's own host is not the configured origin.
    let mut c = app.client();
    let r = Req::post("/login/alice").send(&app.router).await;
    c.absorb(&r);
    let with_origin = |o: &str| {
        bare_post(&c, "/count")
            .header("Origin", o)
            .header("X-CSRF-Token", c.csrf.clone().unwrap())
    };
    assert_eq!(
        with_origin("https://app.example")
            .send(&app.router)
            .await
            .status,
        200
    );
    let r = with_origin(&app.origin()).send(&app.router).await;
    assert_eq!(r.error_code(), "origin_mismatch");
}

#[tokio::test]
async fn the_origin_scheme_is_compared_too_not_only_the_host() {
    let app = spawn(SessionConfig::default()).await;
    let c = logged_in(&app).await;
    let post = |host: &str, origin: &str| {
        bare_post(&c, "/count")
            .header("Host", host)
            .header("Sec-Fetch-Site", "same-origin")
            .header("Origin", origin)
            .header("X-CSRF-Token", c.csrf.clone().unwrap())
    };
    // Served as https://app.example (behind a TLS proxy): a plain-HTTP page on the same host
    // name, which anyone on the network path can write, may not post.
    let r = post("app.example", "http://app.example")
        .send(&app.router)
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.error_code(), "origin_mismatch");
    let r = post("app.example", "https://app.example")
        .send(&app.router)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Loopback development over plain HTTP still works (a secure context for browsers).
    let r = post(HOST, &app.origin()).send(&app.router).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn non_browser_clients_without_fetch_metadata_need_only_the_token() {
    let app = spawn(SessionConfig::default()).await;
    let c = logged_in(&app).await;
    let r = bare_post(&c, "/count")
        .header("X-CSRF-Token", c.csrf.clone().unwrap())
        .send(&app.router)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = bare_post(&c, "/count").send(&app.router).await;
    assert_eq!(r.error_code(), "csrf_token_missing");
}

#[tokio::test]
async fn a_token_from_another_session_or_garbage_is_invalid() {
    let app = spawn(SessionConfig::default()).await;
    let mut alice = logged_in(&app).await;
    let bob = {
        let mut c = app.client();
        c.login("bob").await;
        c
    };
    alice.csrf = bob.csrf.clone();
    assert_eq!(
        alice.post("/count").await.error_code(),
        "csrf_token_invalid"
    );
    for garbage in ["x", &"A".repeat(43), &"é".repeat(30), &"A".repeat(5000)] {
        alice.csrf = Some(garbage.to_owned());
        let r = alice.post("/count").await;
        assert_eq!(r.status, 403, "{garbage:?}");
        assert_eq!(r.error_code(), "csrf_token_invalid");
    }
    // Two token headers are ambiguous, so invalid, even if one is right.
    let good = {
        let mut c = app.client();
        c.cookie = alice.cookie.clone();
        c.get("/api/session").await.json()["csrf_token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let r = bare_post(&alice, "/count")
        .header("X-CSRF-Token", &good)
        .header("X-CSRF-Token", "other")
        .send(&app.router)
        .await;
    assert_eq!(r.error_code(), "csrf_token_invalid");
}

#[tokio::test]
async fn masked_tokens_differ_in_every_response_and_all_verify() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = logged_in(&app).await;
    let mut tokens = Vec::new();
    for _ in 0..5 {
        let t = c.get("/api/session").await.json()["csrf_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(t.len(), 43);
        tokens.push(t);
    }
    let mut unique = tokens.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), tokens.len(), "never the same token twice");
    for t in tokens {
        c.csrf = Some(t);
        assert_eq!(c.post("/count").await.status, 200);
    }
}

#[tokio::test]
async fn the_csrf_secret_rotates_at_login_so_pre_login_tokens_die() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    c.get("/count").await;
    let anon_token = c.get("/api/session").await.json()["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    c.login("alice").await;
    let login_token = c.csrf.clone().unwrap();
    c.csrf = Some(anon_token);
    assert_eq!(c.post("/count").await.error_code(), "csrf_token_invalid");
    c.csrf = Some(login_token);
    assert_eq!(c.post("/count").await.status, 200);
    // And at a privilege change.
    let before = c.csrf.clone();
    let r = c.post("/rotate").await;
    assert_eq!(r.status, 200);
    let after = c.csrf.clone();
    c.csrf = before;
    assert_eq!(c.post("/count").await.error_code(), "csrf_token_invalid");
    c.csrf = after;
    assert_eq!(c.post("/count").await.status, 200);
}

#[tokio::test]
async fn an_urlencoded_form_may_carry_the_token_and_its_body_reaches_the_handler() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = logged_in(&app).await;
    let token = c.csrf.take().unwrap();
    let r = c
        .send(Req::post("/form").form(&format!("msg=hello+world&csrf_token={token}")))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "hello world");
    let r = c.send(Req::post("/form").form("msg=hi")).await;
    assert_eq!(r.error_code(), "csrf_token_missing");
    let r = c
        .send(Req::post("/form").form("msg=hi&csrf_token=nope"))
        .await;
    assert_eq!(r.error_code(), "csrf_token_invalid");
}

/// The default bound on a form the layer reads for its token is 64 KiB: a 60 KiB form is read
/// and passes, one just over 64 KiB is refused.
#[tokio::test]
async fn the_default_form_bound_is_64_kib() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = logged_in(&app).await;
    let token = c.csrf.take().unwrap();
    let body = format!("msg={}&csrf_token={token}", "a".repeat(60 * 1024));
    let r = c.send(Req::post("/form").form(&body)).await;
    assert_eq!(r.status, 200, "{}", r.error_code());
    assert_eq!(r.body.len(), 60 * 1024);
    let body = format!("msg={}&csrf_token={token}", "a".repeat(64 * 1024));
    let r = c.send(Req::post("/form").form(&body)).await;
    assert_eq!(r.status, 413);
}

#[tokio::test]
async fn an_oversized_form_is_refused_without_reaching_the_handler() {
    let config = SessionConfig::default().with_csrf(CsrfConfig {
        max_form_bytes: Some(1024),
        ..CsrfConfig::default()
    });
    let app = spawn(config).await;
    let mut c = logged_in(&app).await;
    let token = c.csrf.take().unwrap();
    let big = format!("msg={}&csrf_token={token}", "a".repeat(4096));
    let r = c.send(Req::post("/form").form(&big)).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "form_too_large");
}

#[tokio::test]
async fn anonymous_unsafe_requests_get_the_origin_checks_against_login_csrf() {
    let app = spawn(SessionConfig::default()).await;
    let r = Req::post("/login/mallory")
        .header("Sec-Fetch-Site", "cross-site")
        .header("Origin", "https://evil.example")
        .send(&app.router)
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "cross_site_request");
    assert_eq!(r.set_cookie(), None);
    assert_eq!(
        app.store.creates.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // The same login from the app's own page works without a token (there is no session yet).
    let r = Req::post("/login/alice")
        .header("Sec-Fetch-Site", "same-origin")
        .header("Origin", app.origin())
        .send(&app.router)
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn refusals_are_audited_counted_and_name_the_reason_without_tokens() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = logged_in(&app).await;
    c.csrf = None;
    c.post("/count").await;
    let e = app
        .audit
        .events()
        .into_iter()
        .find(|e| e.kind == AuditKind::CsrfRefused)
        .unwrap();
    assert_eq!(e.detail.as_deref(), Some("csrf_token_missing"));
    assert_eq!(e.user_id.as_deref(), Some("alice"));
    assert!(e.handle.is_some());
}

#[tokio::test]
async fn refusals_are_html_for_clients_that_prefer_html() {
    let app = spawn(SessionConfig::default()).await;
    let r = Req::post("/count")
        .header("Sec-Fetch-Site", "cross-site")
        .header("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send(&app.router)
        .await;
    assert_eq!(r.status, 403);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.body.contains("cross_site_request"));
    let r = Req::post("/count")
        .header("Sec-Fetch-Site", "cross-site")
        .header("Accept", "application/json")
        .send(&app.router)
        .await;
    assert_eq!(r.error_code(), "cross_site_request");
}

#[tokio::test]
async fn unsafe_responses_vary_on_fetch_metadata_and_origin() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = logged_in(&app).await;
    let ok = c.post("/count").await;
    assert_eq!(ok.header("vary"), Some("Sec-Fetch-Site, Origin"));
    c.csrf = None;
    let refused = c.post("/count").await;
    assert_eq!(refused.header("vary"), Some("Sec-Fetch-Site, Origin"));
}

#[tokio::test]
async fn every_unsafe_method_is_checked_and_safe_methods_are_not() {
    let app = spawn(SessionConfig::default()).await;
    let c = logged_in(&app).await;
    for m in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = Req::new(m, "/attr/x")
            .header("Cookie", c.cookie.clone().unwrap())
            .send(&app.router)
            .await;
        assert_eq!(r.status, 403, "{m}");
    }
    for m in ["GET", "HEAD", "OPTIONS"] {
        let r = Req::new(m, "/attr/x")
            .header("Cookie", c.cookie.clone().unwrap())
            .header("Sec-Fetch-Site", "cross-site")
            .send(&app.router)
            .await;
        assert_ne!(r.status, 403, "{m}");
    }
}

#[tokio::test]
async fn an_exempt_route_skips_every_check_and_other_routes_stay_protected() {
    let config =
        SessionConfig::default().with_csrf(CsrfConfig::default().exempt("/hooks/{provider}"));
    let app = spawn(config).await;
    let c = logged_in(&app).await;
    // Cross-site, no token, with an authenticated cookie: passes on the exempt route…
    let r = bare_post(&c, "/hooks/github")
        .header("Sec-Fetch-Site", "cross-site")
        .header("Origin", "https://github.example")
        .send(&app.router)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "hook github");
    // …and is refused everywhere else.
    let r = bare_post(&c, "/count")
        .header("Sec-Fetch-Site", "cross-site")
        .send(&app.router)
        .await;
    assert_eq!(r.status, 403);
    let r = bare_post(&c, "/count").send(&app.router).await;
    assert_eq!(r.error_code(), "csrf_token_missing");
    // The pattern is the route, not a prefix: a look-alike path is not exempt.
    let r = bare_post(&c, "/hooks/github/../../count")
        .send(&app.router)
        .await;
    assert_ne!(r.status, 200);
}

#[tokio::test]
async fn without_the_exemption_the_hook_route_is_protected() {
    let app = spawn(SessionConfig::default()).await;
    let c = logged_in(&app).await;
    let r = bare_post(&c, "/hooks/github")
        .header("Sec-Fetch-Site", "cross-site")
        .send(&app.router)
        .await;
    assert_eq!(r.status, 403);
}
