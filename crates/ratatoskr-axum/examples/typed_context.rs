//! Typed session values and an application context extractor built on them: the "active
//! platform" of the reference app is a `SessionValue` plus a ten-line `FromRequestParts`.
//!
//! `cargo run -p ratatoskr-axum --example typed_context`
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::{StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ratatoskr_axum::{
    AuthUser, Session, SessionConfig, SessionError, SessionLayer, SessionValue, json_error,
};
use ratatoskr_core::{ManagerConfig, MemoryStore, SessionManager};
use serde::{Deserialize, Serialize};

/// What the session remembers about the platform the user is working with.
#[derive(Clone, Serialize, Deserialize)]
struct ActivePlatform {
    id: i64,
    kind: String,
    instance_url: String,
}

impl SessionValue for ActivePlatform {
    const KEY: &'static str = "active_platform";
}

// The context extractor: handlers that need an active platform just take one.
impl<S: Send + Sync> FromRequestParts<S> for ActivePlatform {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        match session.get_value::<ActivePlatform>().await {
            Ok(Some(p)) => Ok(p),
            Ok(None) => Err(json_error(
                StatusCode::CONFLICT,
                "no_active_platform",
                "choose a platform first",
            )),
            Err(e) => Err(e.into_response()),
        }
    }
}

async fn switch(user: AuthUser, Path(id): Path<i64>) -> Result<StatusCode, SessionError> {
    // A real app checks in its database that platform `id` belongs to `user.user_id`.
    let platform = ActivePlatform {
        id,
        kind: "mastodon".into(),
        instance_url: "https://example.social".into(),
    };
    user.session.set_value(&platform).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn timeline(platform: ActivePlatform) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "platform": platform.id, "from": platform.instance_url }))
}

async fn login(session: Session) -> Result<StatusCode, SessionError> {
    session.login("alice").await?;
    Ok(StatusCode::NO_CONTENT)
}

#[tokio::main]
async fn main() {
    let manager = SessionManager::new(Arc::new(MemoryStore::default()), ManagerConfig::default());
    let layer = SessionLayer::new(manager, SessionConfig::default()).expect("valid config");
    let app = Router::new()
        .route("/login", post(login))
        .route("/platforms/{id}/switch", post(switch))
        .route("/timeline", get(timeline))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .unwrap();
    println!("listening on http://localhost:3000");
    axum::serve(listener, app).await.unwrap();
}
