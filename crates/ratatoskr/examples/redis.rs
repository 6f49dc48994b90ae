//! Sessions in Redis alone: no database, so a Redis restart (Redis 7 here keeps nothing on
//! disk) logs everyone out. For a fallback that survives that, see `tiered_sqlite.rs`.
//!
//! `cargo run -p ratatoskr --example redis --features redis` (REDIS_URL, default
//! redis://127.0.0.1:6379/), then `curl -i http://127.0.0.1:3000/` twice with the cookie.
use axum::{Router, routing::get};
use ratatoskr::{RedisStore, Session, SessionError, StoreError};

async fn counter(session: Session) -> Result<String, SessionError> {
    let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n).await?;
    Ok(format!("{n} visits"))
}

/// The application over the Redis at `redis_url`.
pub async fn app(redis_url: &str) -> Result<Router, StoreError> {
    // Used alone, the store needs no client-side caching (a second connection): tracking off.
    let redis = RedisStore::builder(redis_url)
        .tracking(false)
        .connect()
        .await?;
    Ok(Router::new()
        .route("/", get(counter))
        .layer(ratatoskr::layer(redis)))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app(&url).await?).await?;
    Ok(())
}
