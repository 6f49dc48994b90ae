//! A per-visitor counter: the smallest use of the session layer.
//!
//! `cargo run -p ratatoskr-axum --example basic_counter`, then open http://localhost:3000
//! (browsers accept `Secure` `__Host-` cookies from http://localhost, so the secure defaults
//! stay on). `/health` never touches the session and costs no store call; the first visit to
//! `/` creates the session, later visits only write the changed counter.
use std::sync::Arc;

use axum::{Router, routing::get};
use ratatoskr_axum::{Session, SessionConfig, SessionError, SessionLayer};
use ratatoskr_core::{ManagerConfig, MemoryStore, SessionManager};

async fn count(session: Session) -> Result<String, SessionError> {
    let visits: u64 = session.get("visits").await?.unwrap_or(0) + 1;
    session.insert("visits", &visits).await?;
    Ok(format!("You have been here {visits} time(s).\n"))
}

#[tokio::main]
async fn main() {
    let manager = SessionManager::new(Arc::new(MemoryStore::default()), ManagerConfig::default());
    let layer = SessionLayer::new(manager, SessionConfig::default()).expect("valid config");
    let app = Router::new()
        .route("/", get(count))
        .route("/health", get(|| async { "ok" }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .unwrap();
    println!("listening on http://localhost:3000");
    axum::serve(listener, app).await.unwrap();
}
