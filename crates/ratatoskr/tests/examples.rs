//! Every example, driven through its router against the real services (`scripts/test.sh`
//! provides Redis and PostgreSQL): what the examples show is what runs.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use tower::ServiceExt;

#[path = "../examples/axum_login.rs"]
mod axum_login;
#[path = "../examples/redis.rs"]
mod redis;
#[path = "../examples/refusal_page.rs"]
mod refusal_page;
#[path = "../examples/tiered_postgres.rs"]
mod tiered_postgres;
#[path = "../examples/tiered_sqlite.rs"]
mod tiered_sqlite;
#[path = "../examples/typed_session.rs"]
mod typed_session;

fn redis_url() -> String {
    std::env::var("RATATOSKR_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into())
}

fn pg_url() -> String {
    std::env::var("RATATOSKR_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn send(
    app: &Router,
    req: Request<Body>,
) -> (StatusCode, Option<String>, String, Response<Body>) {
    let res = app.clone().oneshot(req).await.unwrap();
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
    let status = res.status();
    let (parts, body) = res.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        cookie,
        text,
        Response::from_parts(parts, Body::empty()),
    )
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

fn post(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::post(uri);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

/// Two visits with the cookie of the first: the counter went up in the store.
async fn counts_visits(app: &Router) {
    let (status, cookie, body, _) = send(app, get("/", None)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "1 visits"));
    let cookie = cookie.expect("a session cookie");
    assert!(cookie.starts_with("__Host-ratatoskr="), "{cookie}");
    let (_, _, body, _) = send(app, get("/", Some(&cookie))).await;
    assert_eq!(body, "2 visits");
}

#[tokio::test]
async fn the_redis_example_counts_visits_in_redis() {
    counts_visits(&redis::app(&redis_url()).await.unwrap()).await;
}

#[tokio::test]
async fn the_tiered_sqlite_example_counts_visits_and_keeps_a_near_cache() {
    let app = tiered_sqlite::app(&redis_url(), "sqlite::memory:")
        .await
        .unwrap();
    counts_visits(&app).await;
    let (_, _, health, _) = send(&app, get("/health", None)).await;
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert!(health["near_cache_entries"].is_number(), "{health}");
    assert_eq!(health["breaker"], "Closed", "{health}");
}

#[tokio::test]
async fn the_tiered_postgres_example_counts_visits() {
    counts_visits(&tiered_postgres::app(&redis_url(), &pg_url()).await.unwrap()).await;
}

#[tokio::test]
async fn the_refusal_page_example_renders_refusals_its_own_way_for_browsers_only() {
    let app = refusal_page::app();
    let html = |r: Request<Body>| {
        let (mut parts, body) = r.into_parts();
        parts
            .headers
            .insert(header::ACCEPT, "text/html".parse().unwrap());
        Request::from_parts(parts, body)
    };
    let (status, _, _, res) = send(&app, html(get("/account", None))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[header::LOCATION], "/login");
    let mut cross = html(post("/account", None));
    cross
        .headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().unwrap());
    let (status, _, body, _) = send(&app, cross).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("Nothing was changed") && body.contains("cross_site_request"),
        "{body}"
    );
    let (status, _, body, _) = send(&app, get("/account", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("\"unauthenticated\""), "{body}");
}

#[tokio::test]
async fn the_typed_session_example_keeps_each_value_whole_and_apart() {
    let app = typed_session::app();
    let (_, cookie, body, _) = send(&app, post("/cart/7", None)).await;
    assert_eq!(body, r#"{"items":[7]}"#);
    let cookie = cookie.unwrap();
    let (_, _, body, _) = send(&app, post("/theme/dark", Some(&cookie))).await;
    assert_eq!(body, r#"{"theme":"dark"}"#);
    let (_, _, body, _) = send(&app, post("/cart/9", Some(&cookie))).await;
    assert_eq!(body, r#"{"items":[7,9]}"#);
}

#[tokio::test]
async fn the_axum_login_example_logs_in_and_out_over_the_tiered_store() {
    let tiered = ratatoskr::connect(&redis_url(), "sqlite::memory:")
        .await
        .unwrap();
    let app = axum_login::app(ratatoskr::RatatoskrStore::new(tiered.clone()));
    let form = |body: &str| {
        Request::post("/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let (status, _, _, _) = send(&app, form("name=ferris&password=wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _, _) = send(&app, get("/me", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, cookie, _, _) = send(&app, form("name=ferris&password=hunter42")).await;
    assert_eq!(status, StatusCode::OK);
    let cookie = cookie.expect("the session cookie");
    assert!(cookie.starts_with("id="), "{cookie}");
    let (status, _, body, _) = send(&app, get("/me", Some(&cookie))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ferris"));
    assert_eq!(ratatoskr::SessionStore::count(&tiered).await.unwrap(), 1);

    let (status, _, _, _) = send(&app, post("/logout", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _, _) = send(&app, get("/me", Some(&cookie))).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old cookie is dead after logout"
    );
    assert_eq!(ratatoskr::SessionStore::count(&tiered).await.unwrap(), 0);
}
