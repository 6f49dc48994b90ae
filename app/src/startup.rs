//! Building and running the application: stores from configuration, the router, the listener.
//!
//! Tests build the same [`Application`] on a random port with their own database, so what they
//! exercise is what `cargo run --release` runs.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use ratatoskr_core::{ManagerConfig, SessionManager};
use tokio::net::TcpListener;

use crate::configuration::Settings;
use crate::routes;
use crate::state::AppState;
use crate::stores::Stores;

/// A built application, bound to its listener but not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Router,
    reaper: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Open the stores, build the router and bind the listener (port 0 picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        settings.validate().map_err(anyhow::Error::msg)?;
        let stores = Stores::open(settings).await?;
        let manager = SessionManager::new(
            stores.sessions.clone(),
            ManagerConfig {
                idle_timeout: settings.idle_timeout,
                absolute_timeout: settings.absolute_timeout,
                max_sessions_per_user: Some(settings.max_sessions_per_user),
                ..ManagerConfig::default()
            },
        );
        let reaper = ratatoskr_sql::spawn_reaper(stores.sessions.clone(), Duration::from_secs(60));
        let state = AppState { sessions: manager };
        let router = router(state);
        let listener = TcpListener::bind(settings.bind).await?;
        Ok(Application {
            listener,
            router,
            reaper,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serve until Ctrl-C / SIGTERM.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let result = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown_signal())
            .await;
        self.reaper.abort();
        Ok(result?)
    }
}

/// Every route of the application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(routes::health::livez))
        .route("/readyz", get(routes::health::readyz))
        .with_state(state)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
