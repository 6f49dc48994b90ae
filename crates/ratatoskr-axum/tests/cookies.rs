//! Cookie attributes, size, caching headers, persistence, and when a cookie is (not) set.
mod common;

use common::*;
use ratatoskr_axum::{ConfigError, CookieConfig, SameSite, SessionConfig, SessionLayer};
use ratatoskr_core::{ManagerConfig, MemoryStore, SessionManager};
use std::sync::Arc;

#[tokio::test]
async fn session_cookie_has_exactly_the_secure_default_attributes() {
    let app = spawn(SessionConfig::default()).await;
    let r = app.client().get("/count").await;
    assert_eq!(r.status, 200);
    let set = r.set_cookie().expect("a new session sets a cookie");
    let cookie = r.cookie().unwrap();
    assert_eq!(cookie.name(), COOKIE);
    let value = cookie.value();
    assert_eq!(value.len(), 43, "256-bit token in base64url");
    assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.same_site(), Some(cookie::SameSite::Lax));
    assert_eq!(cookie.domain(), None);
    assert_eq!(cookie.max_age(), None, "browser-session cookie by default");
    assert_eq!(cookie.expires(), None);
    // Exactly those attributes, nothing else.
    assert_eq!(
        set,
        format!("{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Lax")
    );
}

#[tokio::test]
async fn responses_that_set_a_cookie_are_not_stored_by_shared_caches() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    let r = c.get("/count").await;
    assert!(r.set_cookie().is_some());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = c.login("alice").await;
    assert!(r.set_cookie().is_some());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = c.post("/logout").await;
    assert!(r.set_cookie().is_some());
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

#[tokio::test]
async fn cookieless_get_sets_no_cookie_and_touches_no_store() {
    let app = spawn(SessionConfig::default()).await;
    for path in ["/nothing", "/read", "/api/session", "/no-such-route"] {
        let r = Req::get(path).send(&app.router).await;
        assert!(r.status == 200 || r.status == 404, "{path}: {}", r.status);
        assert_eq!(r.set_cookie(), None, "{path}");
    }
    assert_eq!(app.store.calls(), 0, "no store call at all");
    assert_eq!(app.store.inner_count_sync(), 0);
}

#[tokio::test]
async fn read_only_handler_sets_no_cookie_and_writes_nothing() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    c.get("/count").await;
    let writes = app.store.writes();
    for _ in 0..3 {
        let r = c.get("/read").await;
        assert_eq!(r.body, "1");
        assert_eq!(r.set_cookie(), None);
        assert_eq!(r.header("cache-control"), None);
    }
    assert_eq!(app.store.writes(), writes, "reads are not writes");
}

#[tokio::test]
async fn a_route_that_never_touches_the_session_costs_no_store_call() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    c.get("/count").await;
    let calls = app.store.calls();
    let r = c.get("/nothing").await;
    assert_eq!(r.body, "ok");
    assert_eq!(app.store.calls(), calls, "lazy: no load for /nothing");
}

#[tokio::test]
async fn cookie_name_and_value_stay_within_4096_bytes() {
    let app = spawn(SessionConfig::default()).await;
    let r = app.client().get("/count").await;
    let pair = r.cookie_pair().unwrap();
    assert!(pair.len() <= 4096);
    // A configuration that would exceed the limit is refused up front.
    let m = SessionManager::new(Arc::new(MemoryStore::default()), ManagerConfig::default());
    let mut cookie = CookieConfig::default();
    cookie.name = format!("__Host-{}", "x".repeat(4096));
    let name_len = cookie.name.len();
    let err = SessionLayer::new(m, SessionConfig::default().with_cookie(cookie)).unwrap_err();
    // The error names the size the cookie would have had: name, `=`, the token.
    match err {
        ConfigError::CookieTooLarge(size) => {
            assert_eq!(size, name_len + 1 + ratatoskr_core::token::TOKEN_CHARS)
        }
        other => panic!("expected CookieTooLarge, got {other}"),
    }
    // The bound is exact: `name=token` of 4,096 bytes is allowed, one more byte is not.
    let token = ratatoskr_core::token::TOKEN_CHARS;
    let with_name_len = |len: usize| {
        let mut cookie = CookieConfig::default();
        cookie.name = format!("__Host-{}", "x".repeat(len - "__Host-".len()));
        let m = SessionManager::new(Arc::new(MemoryStore::default()), ManagerConfig::default());
        SessionLayer::new(m, SessionConfig::default().with_cookie(cookie))
    };
    assert!(with_name_len(4096 - 1 - token).is_ok());
    assert!(matches!(
        with_name_len(4096 - token),
        Err(ConfigError::CookieTooLarge(4097))
    ));
}

#[tokio::test]
async fn forgetting_remember_me_without_a_session_sets_no_cookie() {
    use axum::{Router, routing::post};
    use ratatoskr_axum::{Session, SessionError};
    async fn forget(session: Session) -> Result<&'static str, SessionError> {
        session.set_remember_me(false).await?;
        Ok("forgotten")
    }
    async fn remember(session: Session) -> Result<&'static str, SessionError> {
        session.set_remember_me(true).await?;
        Ok("remembered")
    }
    let router = Router::new()
        .route("/forget", post(forget))
        .route("/remember", post(remember));
    let app = spawn_with(router, SessionConfig::default(), ManagerConfig::default()).await;
    // Nothing to forget: no session is made and no cookie is sent.
    let r = app.client().post("/forget").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.set_cookie(), None);
    // The positive control: remembering starts a session with a persistent cookie.
    let r = app.client().post("/remember").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.cookie().expect("a session cookie").max_age().is_some());
}

#[tokio::test]
async fn insecure_cookie_settings_are_refused_unless_loudly_requested() {
    let m = || SessionManager::new(Arc::new(MemoryStore::default()), ManagerConfig::default());
    let named = |n: &str| {
        let mut c = CookieConfig::default();
        c.name = n.into();
        SessionConfig::default().with_cookie(c)
    };
    assert!(matches!(
        SessionLayer::new(m(), named("session")).unwrap_err(),
        ConfigError::HostPrefixRequired(_)
    ));
    assert!(matches!(
        SessionLayer::new(m(), named("bad;name")).unwrap_err(),
        ConfigError::CookieName(_)
    ));
    let insecure_prefixed = SessionConfig::default()
        .with_cookie(CookieConfig::default().dangerously_insecure_for_plain_http_development());
    let mut c = insecure_prefixed.cookie.clone();
    c.name = "__Host-x".into();
    assert!(matches!(
        SessionLayer::new(m(), SessionConfig::default().with_cookie(c)).unwrap_err(),
        ConfigError::PrefixNeedsSecure(_)
    ));
}

#[tokio::test]
async fn insecure_development_mode_drops_secure_and_the_host_prefix() {
    let config = SessionConfig::default()
        .with_cookie(CookieConfig::default().dangerously_insecure_for_plain_http_development());
    let app = spawn(config).await;
    let mut c = app.client();
    let r = c.get("/count").await;
    let set = r.set_cookie().unwrap();
    assert!(set.starts_with("ratatoskr-insecure-dev="), "{set}");
    assert!(set.ends_with("; Path=/; HttpOnly; SameSite=Lax"), "{set}");
    assert!(!set.contains("Secure"));
    assert_eq!(c.get("/count").await.body, "2");
}

#[tokio::test]
async fn strict_same_site_is_available() {
    let mut cookie = CookieConfig::default();
    cookie.same_site = SameSite::Strict;
    let app = spawn(SessionConfig::default().with_cookie(cookie)).await;
    let r = app.client().get("/count").await;
    assert!(r.set_cookie().unwrap().ends_with("SameSite=Strict"));
}

#[tokio::test]
async fn remember_me_makes_the_cookie_persistent_up_to_the_absolute_deadline() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    let r = c.post("/login-remember/alice").await;
    assert_eq!(r.status, 204);
    let age = r
        .cookie()
        .unwrap()
        .max_age()
        .expect("persistent cookie")
        .whole_seconds();
    // Default absolute timeout: 24 h.
    assert!((86_390..=86_400).contains(&age), "{age}");
    // A later rotation keeps it persistent.
    c.get("/api/session").await;
    let r = c.post("/rotate").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.cookie().unwrap().max_age().is_some());
}

#[tokio::test]
async fn persistent_cookies_can_be_the_default() {
    let mut cookie = CookieConfig::default();
    cookie.persistent = true;
    let app = spawn(SessionConfig::default().with_cookie(cookie)).await;
    let r = app.client().get("/count").await;
    assert!(r.cookie().unwrap().max_age().is_some());
}

#[tokio::test]
async fn logout_sends_a_removal_cookie_with_the_same_attributes() {
    let app = spawn(SessionConfig::default()).await;
    let mut c = app.client();
    c.login("alice").await;
    let r = c.post("/logout").await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.set_cookie().unwrap(),
        format!(
            "{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
        )
    );
}
