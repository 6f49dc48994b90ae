//! Building and running the application: stores from configuration, the router, the listener.
//!
//! Tests build the same [`Application`] on a random port with their own database, so what they
//! exercise is what `cargo run --release` runs.

use std::time::Duration;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use ratatoskr_axum::{CsrfConfig, FingerprintPolicy, IpBinding, SessionConfig, SessionLayer};
use ratatoskr_core::{ManagerConfig, SessionManager};
use tokio::net::TcpListener;

use crate::analytics;
use crate::audit::AuditTrail;
use crate::configuration::{Fingerprint, Settings};
use crate::crypto::{Hasher, KeySource, TokenCipher};
use crate::db::Db;
use crate::limits::Limits;
use crate::net::TrustedProxies;
use crate::routes;
use crate::state::AppState;
use crate::stores::Stores;
use crate::telemetry;
use crate::templates::Templates;

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
        .map_err(|e| anyhow::anyhow!("cannot create the application's tables: {e}"))?;
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
        limits: Limits::new(settings),
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
        let router = router(state.clone(), layer);
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

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Every route of the application, behind the session layer.
pub fn router(state: AppState, layer: SessionLayer) -> Router {
    use routes::{admin, auth, health, pages, platforms, sessions};
    let proxies = Arc::new(TrustedProxies::new(&state.settings.trusted_proxies));
    Router::new()
        // Probes and metrics.
        .route("/livez", get(health::livez))
        .route("/readyz", get(health::readyz))
        .route("/health/sessions", get(health::sessions))
        .route("/metrics", get(health::metrics))
        // JSON API.
        .route("/api/register", post(auth::register))
        .route("/api/login", post(auth::login))
        .route("/api/logout", post(auth::logout))
        .route("/api/session", get(auth::session))
        .route("/api/password", post(auth::password))
        .route(
            "/api/platforms",
            get(platforms::list).post(platforms::create),
        )
        .route(
            "/api/platforms/{id}",
            delete(platforms::delete).patch(platforms::update),
        )
        .route("/api/platforms/{id}/switch", post(platforms::switch))
        .route("/api/session/preferences", get(sessions::preferences))
        .route(
            "/api/session/preferences/{key}",
            put(sessions::put_preference).delete(sessions::delete_preference),
        )
        .route("/api/sessions", get(sessions::list))
        .route("/api/sessions/{handle}", delete(sessions::revoke))
        .route("/api/sessions/revoke-others", post(sessions::revoke_others))
        .route("/api/sessions/revoke-all", post(sessions::revoke_all))
        .route("/api/admin/sessions", get(admin::sessions))
        .route(
            "/api/admin/users/{name}/sessions",
            delete(admin::revoke_user),
        )
        .route(
            "/api/admin/users/{name}/sessions/{handle}",
            delete(admin::revoke_one),
        )
        .route("/api/admin/users/{name}/disable", post(admin::disable))
        .route("/api/admin/users/{name}/enable", post(admin::enable))
        .route("/api/admin/analytics", get(admin::analytics))
        // Pages and their forms.
        .route("/", get(pages::dashboard))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/register", post(pages::register))
        .route("/logout", post(pages::logout))
        .route(
            "/platforms",
            get(pages::platforms).post(pages::add_platform),
        )
        .route("/platforms/switch", post(pages::switch_form))
        .route("/platforms/{id}/switch", post(pages::switch))
        .route("/platforms/{id}/active", post(pages::set_active))
        .route("/platforms/{id}/delete", post(pages::delete_platform))
        .route("/sessions", get(pages::sessions))
        .route("/sessions/{handle}/revoke", post(pages::revoke_session))
        .route("/sessions/revoke-others", post(pages::revoke_others))
        .route("/sessions/revoke-all", post(pages::revoke_all))
        .route("/account/password", post(pages::password))
        .route("/admin", get(pages::admin))
        .route(
            "/admin/users/{name}/sessions/revoke",
            post(pages::admin_revoke_user),
        )
        .route(
            "/admin/users/{name}/sessions/{handle}/revoke",
            post(pages::admin_revoke_one),
        )
        .route("/static/app.css", get(pages::css))
        .route("/static/app.js", get(pages::js))
        .fallback(pages::not_found)
        .method_not_allowed_fallback(pages::method_not_allowed)
        .layer(layer)
        // Before the session layer, so that it and every handler see the same client address.
        .layer(axum::middleware::map_request_with_state(
            proxies,
            client_address,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Determine the request's client address ([`crate::net`]) and hand it on as
/// [`ratatoskr_axum::ClientIp`].
async fn client_address(
    axum::extract::State(proxies): axum::extract::State<Arc<TrustedProxies>>,
    mut request: axum::extract::Request,
) -> axum::extract::Request {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(peer) = peer {
        let forwarded = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().ok());
        let client = proxies.client(peer, forwarded);
        request
            .extensions_mut()
            .insert(ratatoskr_axum::ClientIp(client));
    }
    request
}

/// A browser's form post refused by the CSRF defences gets the application's own 403 page (same
/// status, same reason code); everything else keeps the library's rendering (JSON for scripts).
fn refusal_page(
    refusal: &ratatoskr_axum::SessionRefusal,
    request: &ratatoskr_axum::RefusalRequest<'_>,
) -> Option<axum::response::Response> {
    match refusal.kind() {
        ratatoskr_axum::RefusalKind::Csrf(_) if request.prefers_html() => {
            Some(crate::templates::error_page(
                refusal.status(),
                refusal.code(),
                "This request was refused: it did not come from one of this site's own pages \
                 (or the page was too old). Nothing was changed. Go back, reload the page and try again.",
            ))
        }
        _ => None,
    }
}

/// Headers every response carries: no framing (clickjacking), no MIME sniffing, no referrer
/// to other sites, and a content security policy that allows only this origin's own script
/// and stylesheet (the charts are inline SVG markup, not script).
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::HeaderValue;
    let h = response.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    response
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
