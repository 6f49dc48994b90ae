//! Login with token rotation, an authenticated route, logout, and "log out other devices".
//!
//! `cargo run -p ratatoskr-axum --example login_logout`, then for instance:
//! ```text
//! curl -si -X POST localhost:3000/login -d 'username=alice&password=wonderland'
//! curl -si localhost:3000/me -H 'Cookie: __Host-ratatoskr=…'
//! ```
//! Watch the cookie value change at login: the pre-login token is dead afterwards.
use std::sync::Arc;

use axum::extract::Form;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use ratatoskr_axum::{AuthUser, Session, SessionConfig, SessionError, SessionLayer, json_error};
use ratatoskr_core::{ManagerConfig, MemoryStore, SessionManager, audit::TracingAudit};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
    #[serde(default)]
    remember: bool,
}

async fn login(
    session: Session,
    Form(c): Form<Credentials>,
) -> Result<impl IntoResponse, SessionError> {
    // Stand-in for a real password check.
    if c.username != "alice" || c.password != "wonderland" {
        return Ok(json_error(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "wrong username or password",
        ));
    }
    session.login(&c.username).await?; // new token, new CSRF secret, limit enforced
    session.set_remember_me(c.remember).await?;
    let csrf = session.csrf_token().await?;
    Ok(Json(json!({ "user": c.username, "csrf_token": csrf })).into_response())
}

async fn me(user: AuthUser) -> Json<serde_json::Value> {
    Json(json!({ "user": user.user_id }))
}

async fn logout(session: Session) -> Result<StatusCode, SessionError> {
    session.logout().await?; // destroyed server-side, removal cookie sent
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_others(user: AuthUser) -> Result<Json<serde_json::Value>, SessionError> {
    let revoked = user.session.revoke_other_sessions().await?;
    Ok(Json(json!({ "revoked": revoked })))
}

#[tokio::main]
async fn main() {
    let manager = SessionManager::new(Arc::new(MemoryStore::default()), ManagerConfig::default());
    let config = SessionConfig::default().with_audit(Arc::new(TracingAudit));
    let layer = SessionLayer::new(manager, config).expect("valid config");
    let app = Router::new()
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/logout", post(logout))
        .route("/sessions/revoke-others", post(revoke_others))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .unwrap();
    println!("listening on http://localhost:3000");
    axum::serve(listener, app).await.unwrap();
}
