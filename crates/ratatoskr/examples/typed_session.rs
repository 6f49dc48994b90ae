//! Typed session data: a struct with a name (`SessionValue::KEY`) is read and written whole,
//! as one attribute, so two requests changing different values never overwrite each other.
//!
//! `cargo run -p ratatoskr --example typed_session`
use axum::extract::Path;
use axum::{Json, Router, routing::post};
use ratatoskr::{MemoryStore, Session, SessionError, SessionValue};
use serde::{Deserialize, Serialize};

/// The shopping cart, kept in the session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cart {
    /// Item ids, in the order they were added.
    pub items: Vec<u32>,
}

impl SessionValue for Cart {
    const KEY: &'static str = "cart";
}

/// Display preferences, a separate attribute: changing them never touches the cart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Preferences {
    /// `"light"` or `"dark"`.
    pub theme: String,
}

impl SessionValue for Preferences {
    const KEY: &'static str = "preferences";
}

async fn add(session: Session, Path(item): Path<u32>) -> Result<Json<Cart>, SessionError> {
    let mut cart: Cart = session.get_value().await?.unwrap_or_default();
    cart.items.push(item);
    session.set_value(&cart).await?;
    Ok(Json(cart))
}

async fn theme(
    session: Session,
    Path(theme): Path<String>,
) -> Result<Json<Preferences>, SessionError> {
    let prefs = Preferences { theme };
    session.set_value(&prefs).await?;
    Ok(Json(prefs))
}

/// The application, over an in-memory store.
pub fn app() -> Router {
    Router::new()
        .route("/cart/{item}", post(add))
        .route("/theme/{theme}", post(theme))
        .layer(ratatoskr::layer(MemoryStore::default()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app()).await?;
    Ok(())
}
