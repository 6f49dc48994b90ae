//! The application's own pages for the library's refusals: a form post refused by the CSRF
//! defences gets a friendly 403 page, a browser without a login is sent to `/login`, and an
//! outage gets a "try again" page, while scripts keep the JSON errors. No body is read back:
//! the layer hands the responder a `SessionRefusal`.
//!
//! `cargo run -p ratatoskr --example refusal_page`
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::{Router, routing::get};
use ratatoskr::{
    AuthUser, ManagerConfig, MemoryStore, RefusalKind, RefusalRequest, SessionConfig, SessionLayer,
    SessionManager, SessionRefusal,
};

/// How this application renders refusals; `None` keeps the library's default.
fn render(refusal: &SessionRefusal, request: &RefusalRequest<'_>) -> Option<Response> {
    if !request.prefers_html() {
        return None; // scripts get the JSON error
    }
    let page = |title: &str, text: &str| {
        Html(format!(
            "<!doctype html><title>{title}</title><h1>{title}</h1><p>{text}</p>\
             <p><small>{}</small></p>",
            refusal.code()
        ))
    };
    Some(match refusal.kind() {
        RefusalKind::Csrf(_) => (
            refusal.status(),
            page(
                "Nothing was changed",
                "This form was too old or came from another site. Go back, reload and try again.",
            ),
        )
            .into_response(),
        RefusalKind::Unauthenticated => {
            (StatusCode::SEE_OTHER, [("location", "/login")]).into_response()
        }
        RefusalKind::Unavailable => (
            refusal.status(),
            page(
                "Back in a moment",
                "Sessions are briefly unavailable. Please try again.",
            ),
        )
            .into_response(),
        _ => return None,
    })
}

async fn account(user: AuthUser) -> String {
    format!("hello {}", user.user_id)
}

/// The application, over an in-memory store.
pub fn app() -> Router {
    let manager = SessionManager::new(Arc::new(MemoryStore::default()), ManagerConfig::default());
    let config = SessionConfig::default().with_responder(Arc::new(render));
    let layer = SessionLayer::new(manager, config).expect("valid configuration");
    Router::new()
        .route("/account", get(account).post(account))
        .route(
            "/login",
            get(|| async { Html("<form method=post>…</form>") }),
        )
        .layer(layer)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app()).await?;
    Ok(())
}
