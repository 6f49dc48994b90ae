//! An axum-login application on Ratatoskr's tiers, through the tower-sessions adapter. Its
//! handlers, its backend and its `SessionManagerLayer` are what axum-login's own examples
//! use; the one line that makes `session_store` is the switch.
//!
//! `cargo run -p ratatoskr --example axum_login --features tower-sessions` (REDIS_URL,
//! DATABASE_URL), then `curl -i -d 'name=ferris&password=hunter42' http://127.0.0.1:3000/login`.
use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_login::{AuthManagerLayerBuilder, AuthSession, AuthUser, AuthnBackend, login_required};
use ratatoskr::RatatoskrStore;
use serde::Deserialize;
use tower_sessions::SessionManagerLayer;

/// A user of the application.
#[derive(Clone)]
pub struct User {
    id: u64,
    name: String,
    /// Stands for a password hash (use argon2 in a real application).
    password: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl AuthUser for User {
    type Id = u64;
    fn id(&self) -> u64 {
        self.id
    }
    fn session_auth_hash(&self) -> &[u8] {
        // Changing the password ends every session of the user.
        self.password.as_bytes()
    }
}

/// What the login form posts.
#[derive(Clone, Deserialize)]
pub struct Credentials {
    name: String,
    password: String,
}

/// Users in memory (a database in a real application).
#[derive(Clone)]
pub struct Backend {
    users: Arc<HashMap<u64, User>>,
}

impl Default for Backend {
    fn default() -> Self {
        let ferris = User {
            id: 1,
            name: "ferris".into(),
            password: "hunter42".into(),
        };
        Backend {
            users: Arc::new(HashMap::from([(ferris.id, ferris)])),
        }
    }
}

#[async_trait::async_trait]
impl AuthnBackend for Backend {
    type User = User;
    type Credentials = Credentials;
    type Error = std::convert::Infallible;

    async fn authenticate(&self, c: Credentials) -> Result<Option<User>, Self::Error> {
        Ok(self
            .users
            .values()
            .find(|u| u.name == c.name && u.password == c.password)
            .cloned())
    }

    async fn get_user(&self, id: &u64) -> Result<Option<User>, Self::Error> {
        Ok(self.users.get(id).cloned())
    }
}

async fn login(mut auth: AuthSession<Backend>, Form(c): Form<Credentials>) -> impl IntoResponse {
    match auth.authenticate(c).await {
        Ok(Some(user)) if auth.login(&user).await.is_ok() => (StatusCode::OK, "logged in"),
        Ok(None) => (StatusCode::UNAUTHORIZED, "wrong name or password"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "login failed"),
    }
}

async fn logout(mut auth: AuthSession<Backend>) -> impl IntoResponse {
    match auth.logout().await {
        Ok(_) => (StatusCode::OK, "logged out"),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "logout failed"),
    }
}

async fn me(auth: AuthSession<Backend>) -> String {
    auth.user.map(|u| u.name).unwrap_or_default()
}

/// The application over any tower-sessions store.
pub fn app(session_store: RatatoskrStore) -> Router {
    let sessions = SessionManagerLayer::new(session_store);
    let auth = AuthManagerLayerBuilder::new(Backend::default(), sessions).build();
    Router::new()
        .route("/me", get(me))
        .route_layer(login_required!(Backend))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .layer(auth)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let db = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "sqlite://data/example-sessions.db".into());
    // The switch: was `let session_store = MemoryStore::default();` (or RedisStore::new(pool)).
    let session_store = RatatoskrStore::new(ratatoskr::connect(&redis, &db).await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app(session_store)).await?;
    Ok(())
}
