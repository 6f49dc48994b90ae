//! Refusal hooks: an application renders the layer's and the extractors' refusals its own way,
//! without reading response bodies back.
mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use common::*;
use ratatoskr_axum::csrf::Refusal;
use ratatoskr_axum::{RefusalKind, RefusalRequest, SessionConfig, SessionRefusal};

/// The application's style: its own pages for browsers, the library's JSON for scripts.
fn app_style(refusal: &SessionRefusal, request: &RefusalRequest<'_>) -> Option<Response> {
    if !request.prefers_html() {
        return None;
    }
    Some(match refusal.kind() {
        RefusalKind::Csrf(reason) => (
            refusal.status(),
            Html(format!(
                "<title>App</title><p>Nothing was changed ({}, {} {}): {}</p>",
                reason.code(),
                request.method,
                request.uri.path(),
                refusal.message()
            )),
        )
            .into_response(),
        RefusalKind::Unauthenticated => {
            (StatusCode::SEE_OTHER, [("location", "/login")]).into_response()
        }
        _ => (
            refusal.status(),
            Html(format!("<p>app page: {}</p>", refusal.code())),
        )
            .into_response(),
    })
}

fn config() -> SessionConfig {
    SessionConfig::default().with_responder(Arc::new(app_style))
}

#[tokio::test]
async fn a_csrf_refusal_is_rendered_by_the_application_for_browsers() {
    let app = spawn(config()).await;
    let mut c = app.client();
    c.login("alice").await;
    let r = Req::post("/count")
        .header("Cookie", c.cookie.clone().unwrap())
        .header("Accept", "text/html")
        .header("Sec-Fetch-Site", "cross-site")
        .header("Origin", "https://evil.example")
        .send(&app.router)
        .await;
    assert_eq!(r.status, 403);
    assert!(
        r.body
            .contains("Nothing was changed (cross_site_request, POST /count)"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains(Refusal::CrossSite.message()),
        "the refusal carries its sentence: {}",
        r.body
    );
    assert!(r.all("vary").iter().any(|v| v.contains("Sec-Fetch-Site")));
    // The refusal is still counted and audited as before, naming the cookie's session.
    let refused: Vec<_> = app
        .audit
        .events()
        .into_iter()
        .filter(|e| e.detail.as_deref() == Some(Refusal::CrossSite.code()))
        .collect();
    assert_eq!(refused.len(), 1);
    assert!(refused[0].handle.is_some(), "{refused:?}");
}

#[tokio::test]
async fn a_responder_that_declines_keeps_the_library_json() {
    let app = spawn(config()).await;
    let mut c = app.client();
    c.login("alice").await;
    c.csrf = None;
    let r = c.post("/count").await;
    assert_eq!(r.status, 403);
    assert_eq!(r.error_code(), "csrf_token_missing");
}

#[tokio::test]
async fn an_extractors_401_is_rendered_by_the_application() {
    let app = spawn(config()).await;
    let r = Req::get("/me")
        .header("Accept", "text/html")
        .send(&app.router)
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/login"));
    // Scripts keep the JSON.
    let r = Req::get("/me").send(&app.router).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.error_code(), "unauthenticated");
}

#[tokio::test]
async fn a_store_outage_is_rendered_by_the_application() {
    let app = spawn(config()).await;
    let mut c = app.client();
    c.login("alice").await;
    app.store.fail.store(true, SeqCst);
    let r = Req::get("/count")
        .header("Cookie", c.cookie.clone().unwrap())
        .header("Accept", "text/html")
        .send(&app.router)
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("app page: session_store_unavailable"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn without_a_responder_refusals_carry_their_value_for_middleware() {
    // The default rendering, seen by a middleware that reads the extension (not the body).
    let router = routes().layer(axum::middleware::map_response(
        |response: Response| async move {
            match response.extensions().get::<SessionRefusal>() {
                Some(r) => format!("seen {} {}", r.status().as_u16(), r.code()).into_response(),
                None => response,
            }
        },
    ));
    let app = spawn_with(router, SessionConfig::default(), Default::default()).await;
    let r = Req::get("/me").send(&app.router).await;
    assert_eq!(r.body, "seen 401 unauthenticated");
}
