//! The test application: routes exercising every `Session` method, behind a session layer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Form, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use ratatoskr_axum::{
    AuthUser, CsrfToken, RevokeReason, Session, SessionConfig, SessionControl, SessionError,
    SessionLayer,
};
use ratatoskr_core::audit::MemoryAudit;
use ratatoskr_core::{Handle, ManagerConfig, SessionManager};
use serde_json::{Value, json};

use super::http::{Client, HOST};
use super::store::TestStore;

async fn session_json(session: Session, csrf: CsrfToken) -> Result<Json<Value>, SessionError> {
    let info = session.info().await?;
    Ok(Json(json!({
        "authenticated": info.as_ref().is_some_and(|i| i.user_id.is_some()),
        "user": info.as_ref().and_then(|i| i.user_id.clone()),
        "handle": info.as_ref().map(|i| i.handle.to_string()),
        "csrf_token": csrf.0,
        "idle_expires_at": info.as_ref().map(|i| i.idle_expires_at),
        "absolute_expires_at": info.as_ref().map(|i| i.absolute_expires_at),
    })))
}

async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n).await?;
    Ok(n.to_string())
}

async fn read(session: Session) -> Result<String, SessionError> {
    let n: Option<u64> = session.get("n").await?;
    Ok(n.map_or("none".into(), |n| n.to_string()))
}

async fn set_attr(
    session: Session,
    Path(name): Path<String>,
    Json(v): Json<Value>,
) -> Result<StatusCode, SessionError> {
    session.insert(&name, &v).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_attr(session: Session, Path(name): Path<String>) -> Result<Json<Value>, SessionError> {
    Ok(Json(
        session.get::<Value>(&name).await?.unwrap_or(Value::Null),
    ))
}

async fn del_attr(session: Session, Path(name): Path<String>) -> Result<StatusCode, SessionError> {
    session.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn login(session: Session, Path(user): Path<String>) -> Result<Json<Value>, SessionError> {
    session.login(&user).await?;
    Ok(Json(
        json!({ "user": user, "csrf_token": session.csrf_token().await? }),
    ))
}

async fn login_remember(
    session: Session,
    Path(user): Path<String>,
) -> Result<StatusCode, SessionError> {
    session.login(&user).await?;
    session.set_remember_me(true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout(session: Session) -> Result<StatusCode, SessionError> {
    session.logout().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(user: AuthUser) -> String {
    user.user_id
}

async fn rotate(session: Session) -> Result<Json<Value>, SessionError> {
    session.rotate().await?;
    Ok(Json(json!({ "csrf_token": session.csrf_token().await? })))
}

async fn fail_500(session: Session) -> Result<StatusCode, SessionError> {
    session.insert("doomed", &true).await?;
    Ok(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn revoke_others(user: AuthUser) -> Result<Json<Value>, SessionError> {
    let n = user.session.revoke_other_sessions().await?;
    Ok(Json(json!({ "revoked": n })))
}

async fn logout_everywhere(user: AuthUser) -> Result<Json<Value>, SessionError> {
    let n = user.session.logout_everywhere().await?;
    Ok(Json(json!({ "revoked": n })))
}

async fn list_sessions(user: AuthUser) -> Result<Json<Value>, SessionError> {
    let current = user.session.handle().await?;
    let list = user.session.list_user_sessions().await?;
    Ok(Json(Value::Array(
        list.iter()
            .map(
                |s| json!({ "handle": s.handle.to_string(), "current": Some(s.handle) == current }),
            )
            .collect(),
    )))
}

async fn revoke_one(user: AuthUser, Path(handle): Path<String>) -> Response {
    let Some(handle) = Handle::parse(&handle) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match user.session.revoke_session(&handle).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn change_password(
    user: AuthUser,
    control: SessionControl,
) -> Result<Json<Value>, SessionError> {
    let n = control
        .revoke_user(&user.user_id, RevokeReason::PasswordChanged)
        .await?;
    Ok(Json(json!({ "revoked": n })))
}

async fn form(Form(fields): Form<HashMap<String, String>>) -> String {
    fields.get("msg").cloned().unwrap_or_default()
}

async fn hook(Path(provider): Path<String>) -> String {
    format!("hook {provider}")
}

async fn nothing() -> &'static str {
    "ok"
}

pub fn routes() -> Router {
    Router::new()
        .route("/nothing", get(nothing).post(nothing))
        .route("/count", get(count).post(count))
        .route("/read", get(read))
        .route("/attr/{name}", get(get_attr).put(set_attr).delete(del_attr))
        .route("/api/session", get(session_json))
        .route("/login/{user}", post(login))
        .route("/login-remember/{user}", post(login_remember))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/rotate", post(rotate))
        .route("/fail500", post(fail_500))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{handle}", delete(revoke_one))
        .route("/revoke-others", post(revoke_others))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/change-password", post(change_password))
        .route("/form", post(form))
        .route("/hooks/{provider}", post(hook))
}

pub struct App {
    pub router: Router,
    pub store: Arc<TestStore>,
    pub audit: Arc<MemoryAudit>,
    pub manager: SessionManager,
    pub control: SessionControl,
}

impl App {
    pub fn client(&self) -> Client {
        Client::new(self.router.clone())
    }
    /// The app's own origin, as its pages would send it.
    pub fn origin(&self) -> String {
        format!("http://{HOST}")
    }
    /// Serve the same app on a real socket, for raw bytes (`send_raw`).
    pub async fn listen(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = self.router.clone();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        addr
    }
}

/// `routes()` behind a session layer with `config` (its audit replaced by a MemoryAudit).
pub async fn spawn(config: SessionConfig) -> App {
    spawn_with(routes(), config, ManagerConfig::default()).await
}

pub async fn spawn_with(router: Router, config: SessionConfig, mc: ManagerConfig) -> App {
    let store = Arc::new(TestStore::default());
    let audit = Arc::new(MemoryAudit::default());
    let manager = SessionManager::new(store.clone(), mc);
    let layer = SessionLayer::new(manager.clone(), config.with_audit(audit.clone()))
        .expect("valid test config");
    let control = layer.control();
    App {
        router: router.layer(layer),
        store,
        audit,
        manager,
        control,
    }
}

/// Every string in the audit trail, for "the token never appears" checks.
pub fn audit_text(audit: &MemoryAudit) -> String {
    format!("{:?}", audit.events())
}
