//! Redis in front of PostgreSQL, for several instances sharing sessions: each keeps its own near
//! cache, Redis tells every instance when a session changes, and the outage journal in
//! PostgreSQL is replayed by whichever instance sees Redis come back. Sessions are kept to a
//! tighter policy here than the defaults (30 min idle, 8 h absolute, 3 per user).
//!
//! `cargo run -p ratatoskr --example tiered_postgres --features postgres` (REDIS_URL,
//! DATABASE_URL default postgres://postgres@127.0.0.1:5432/test).
use std::sync::Arc;
use std::time::Duration;

use axum::{Router, routing::get};
use ratatoskr::{
    ManagerConfig, PgStore, RedisStore, Session, SessionConfig, SessionError, SessionLayer,
    SessionManager, TieredStore,
};

async fn counter(session: Session) -> Result<String, SessionError> {
    let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n).await?;
    Ok(format!("{n} visits"))
}

/// The application over Redis at `redis_url` and PostgreSQL at `postgres_url`.
pub async fn app(
    redis_url: &str,
    postgres_url: &str,
) -> Result<Router, Box<dyn std::error::Error>> {
    let policy = ManagerConfig {
        idle_timeout: Duration::from_secs(30 * 60),
        absolute_timeout: Duration::from_secs(8 * 3600),
        max_sessions_per_user: Some(3),
        ..ManagerConfig::default()
    };
    let redis = RedisStore::builder(redis_url)
        // A revoke-all must outlive every session it ends: at least the absolute timeout.
        .revocation_ttl(policy.absolute_timeout)
        .connect_lazy()?;
    let database = PgStore::connect(postgres_url).await?;
    let store = TieredStore::builder(redis, database).start().await?;
    let layer = SessionLayer::new(
        SessionManager::new(Arc::new(store), policy),
        SessionConfig::default(),
    )?;
    Ok(Router::new().route("/", get(counter)).layer(layer))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let db = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app(&redis, &db).await?).await?;
    Ok(())
}
