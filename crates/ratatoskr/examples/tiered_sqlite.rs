//! Redis in front of SQLite: reads from the near cache or Redis, writes durable in SQLite first,
//! and when Redis is down or restarts empty nobody is logged out (reads fall back to SQLite,
//! the outage journal keeps revocations honest). `/health` shows the breaker and near cache.
//!
//! `cargo run -p ratatoskr --example tiered_sqlite` (REDIS_URL, DATABASE_URL default
//! sqlite://data/example-sessions.db).
use axum::{Json, Router, extract::State, routing::get};
use ratatoskr::{RedisStore, Session, SessionError, SqlStore, TieredStore};

async fn counter(session: Session) -> Result<String, SessionError> {
    let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n).await?;
    Ok(format!("{n} visits"))
}

async fn health(State(store): State<TieredStore>) -> Json<serde_json::Value> {
    let h = store.health();
    Json(serde_json::json!({
        "breaker": format!("{:?}", h.breaker),
        "near_cache_entries": h.near_cache.map(|(entries, _bytes)| entries),
        "journal_pending": h.journal_pending,
    }))
}

/// The application over Redis at `redis_url` and the SQLite database at `sqlite_url`.
pub async fn app(redis_url: &str, sqlite_url: &str) -> Result<Router, Box<dyn std::error::Error>> {
    // Tracking is on by default, so the tiered store keeps a near cache.
    let redis = RedisStore::builder(redis_url).connect_lazy()?;
    let database = SqlStore::builder(sqlite_url).connect().await?;
    let store = TieredStore::builder(redis, database).start().await?;
    Ok(Router::new()
        .route("/", get(counter))
        .route("/health", get(health))
        .with_state(store.clone())
        .layer(ratatoskr::layer(store)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let db = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "sqlite://data/example-sessions.db".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app(&redis, &db).await?).await?;
    Ok(())
}
