//! Building and running the application: stores from configuration, the router, the listener.
//!
//! Tests build the same [`Application`] on a random port with their own database, so what they
//! exercise is what `cargo run --release` runs.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use ratatoskr_axum::{CsrfConfig, FingerprintPolicy, IpBinding, SessionConfig, SessionLayer};
use ratatoskr_core::{ManagerConfig, SessionManager};
use tokio::net::TcpListener;

use crate::analytics;
use crate::configuration::{Fingerprint, Settings};
use crate::db::Db;
use crate::services::audit::AuditTrail;
use crate::services::hasher::Hasher;
use crate::services::limits::Limits;
use crate::services::tokens::{KeySource, TokenCipher};
use crate::stores::Stores;
use crate::telemetry;
use crate::web::state::AppState;
use crate::web::templates::Templates;
use crate::web::{self, refusal_page};

/// A built application, bound to its listener but not yet serving.
pub struct Application {
    listener: TcpListener,
    router: Router,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Where the token key came from (printed at start-up).
    pub key_source: KeySource,
    /// The state, for tests and the CLI.
    pub state: AppState,
}

/// Open the stores, the application's tables, the token key and the session layer: what
/// `serve` and the admin commands share. Background tasks are not started here.
pub async fn open(settings: &Settings) -> anyhow::Result<(AppState, SessionLayer, KeySource)> {
    settings.validate().map_err(anyhow::Error::msg)?;
    let metrics = telemetry::metrics_handle();
    let stores = Stores::open(settings).await?;
    let db = Db::of(&stores.sql);
    db.migrate()
        .await
        .map_err(|e| anyhow::anyhow!("cannot migrate the application's tables: {e}"))?;
    let (cipher, key_source) =
        TokenCipher::load(settings.secret_key.as_deref(), &settings.key_file())?;
    let manager = SessionManager::new(
        stores.sessions.clone(),
        ManagerConfig {
            idle_timeout: settings.idle_timeout,
            absolute_timeout: settings.absolute_timeout,
            max_sessions_per_user: Some(settings.max_sessions_per_user),
            // A touch at most every minute, and often enough that an active session never
            // reaches its idle deadline between two touches.
            touch_interval: (settings.idle_timeout / 4).min(Duration::from_secs(60)),
            ..ManagerConfig::default()
        },
    );
    let policy = match settings.fingerprint {
        Fingerprint::Off => FingerprintPolicy::Off,
        Fingerprint::Log => FingerprintPolicy::Log,
        Fingerprint::Revoke => FingerprintPolicy::Revoke,
    };
    let mut csrf = CsrfConfig::default();
    for o in &settings.trusted_origins {
        csrf = csrf.trust_origin(o.clone());
    }
    let audit = AuditTrail::new(stores.audit.clone(), db.clone());
    let config = SessionConfig::default()
        .with_audit(Arc::new(audit.clone()))
        .with_csrf(csrf)
        .with_fingerprint(policy, IpBinding::Off)
        .with_responder(Arc::new(refusal_page));
    let layer = SessionLayer::new(manager.clone(), config)
        .map_err(|e| anyhow::anyhow!("session configuration: {e}"))?;
    let state = AppState {
        sessions: manager,
        control: layer.control(),
        db,
        stores,
        cipher,
        settings: Arc::new(settings.clone()),
        templates: Arc::new(Templates::new()),
        metrics,
        hasher: Hasher::new(settings.hash_concurrency, settings.hash_queue),
        limits: Limits::new(
            settings.login_rate_limit,
            settings.register_rate_limit,
            settings.password_rate_limit,
        ),
        pref_locks: Arc::default(),
        audit,
    };
    Ok((state, layer, key_source))
}

impl Application {
    /// Open everything, build the router and bind the listener (port 0 picks a free port).
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let (state, layer, key_source) = open(settings).await?;
        let listener = TcpListener::bind(settings.bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.bind))?;
        let tasks = vec![
            ratatoskr_sql::spawn_reaper(state.sessions.store().clone(), Duration::from_secs(60)),
            analytics::spawn_sampler(state.clone(), settings.sample_every),
            state.audit.spawn_flusher(),
        ];
        let router = web::router(state.clone(), layer);
        Ok(Application {
            listener,
            router,
            tasks,
            key_source,
            state,
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
        let result = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown_signal())
        .await;
        for t in self.tasks {
            t.abort();
        }
        if let Err(e) = self.state.audit.flush().await {
            tracing::warn!(error = %e, "could not write the last anonymous audit counters");
        }
        Ok(result?)
    }
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
