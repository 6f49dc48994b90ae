//! A CSRF-protected HTML form: the page embeds a freshly masked token, the layer checks it
//! (plus Sec-Fetch-Site / Origin) before the handler runs, and a webhook route is exempt.
//!
//! `cargo run -p ratatoskr-axum --example csrf_form`, open http://localhost:3000, log in, post a
//! note. Remove the hidden field with the browser's dev tools and the post is refused with 403.
use std::sync::Arc;

use axum::Router;
use axum::extract::Form;
use axum::response::{Html, Redirect};
use axum::routing::{get, post};
use ratatoskr_axum::{CsrfConfig, CsrfToken, Session, SessionConfig, SessionError, SessionLayer};
use ratatoskr_core::{ManagerConfig, MemoryStore, SessionManager};
use serde::Deserialize;

async fn page(session: Session, CsrfToken(token): CsrfToken) -> Result<Html<String>, SessionError> {
    let user = session.user_id().await?;
    let note: Option<String> = session.get("note").await?;
    let body = match (user, token) {
        (Some(user), Some(token)) => format!(
            "<p>Hello {user}. Note: {}</p>\
             <form method=post action=/note>\
             <input type=hidden name=csrf_token value=\"{token}\">\
             <input name=note><button>Save</button></form>",
            html_escape(&note.unwrap_or_default())
        ),
        _ => "<form method=post action=/login><button>Log in as alice</button></form>".to_owned(),
    };
    Ok(Html(format!(
        "<!doctype html><title>CSRF demo</title>{body}"
    )))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn login(session: Session) -> Result<Redirect, SessionError> {
    // Anonymous POST: no token needed, but Sec-Fetch-Site/Origin are checked (login CSRF).
    session.login("alice").await?;
    Ok(Redirect::to("/"))
}

#[derive(Deserialize)]
struct Note {
    note: String,
}

async fn save_note(session: Session, Form(n): Form<Note>) -> Result<Redirect, SessionError> {
    // Only reached with a valid token: the layer read the csrf_token field and handed the body on.
    session.insert("note", &n.note).await?;
    Ok(Redirect::to("/"))
}

async fn webhook() -> &'static str {
    "accepted (signed by other means; exempt from CSRF checks)"
}

#[tokio::main]
async fn main() {
    let manager = SessionManager::new(Arc::new(MemoryStore::default()), ManagerConfig::default());
    let config =
        SessionConfig::default().with_csrf(CsrfConfig::default().exempt("/hooks/{provider}"));
    let layer = SessionLayer::new(manager, config).expect("valid config");
    let app = Router::new()
        .route("/", get(page))
        .route("/login", post(login))
        .route("/note", post(save_note))
        .route("/hooks/{provider}", post(webhook))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .unwrap();
    println!("listening on http://localhost:3000");
    axum::serve(listener, app).await.unwrap();
}
