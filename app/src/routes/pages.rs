//! HTML pages and their forms: `/login`, `/`, `/platforms`, `/sessions`, `/admin`. Forms post
//! urlencoded bodies with the `csrf_token` field and are answered with a redirect (a flash
//! message in the session says what happened) or with the page again showing the error.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use ratatoskr_axum::{RevokeReason, Session};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::analytics;
use crate::configuration::Registration;
use crate::error::{AppError, PageError};
use crate::extract::{CurrentUser, FormBody, PageAdmin, PageUser, PathParam, Peer, QueryParams};
use crate::routes::auth::{Credentials, device_of};
use crate::service::{self, Authenticated, PlatformInput};
use crate::state::AppState;
use crate::templates;

type PageResult = Result<Response, PageError>;

const FLASH_ATTR: &str = "app.flash";

/// A one-time message shown on the next page.
#[derive(Serialize, Deserialize)]
struct Flash {
    kind: String,
    message: String,
}

async fn flash(session: &Session, kind: &str, message: impl Into<String>) -> Result<(), PageError> {
    session
        .insert(
            FLASH_ATTR,
            &Flash {
                kind: kind.into(),
                message: message.into(),
            },
        )
        .await?;
    Ok(())
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Redirect to the login page with a fixed reason (`login_required`, `logged_out`, …).
pub fn to_login(reason: &'static str) -> Response {
    see_other(&format!("/login?reason={reason}"))
}

/// What every page's layout needs.
async fn base(cu: &CurrentUser, nav: &str, title: &str) -> Result<Map<String, Value>, PageError> {
    let flash: Option<Flash> = cu.session.get(FLASH_ATTR).await?;
    if flash.is_some() {
        cu.session.remove(FLASH_ATTR).await?;
    }
    let info = cu.session.info().await?;
    let mut m = Map::new();
    m.insert("title".into(), json!(title));
    m.insert("nav".into(), json!(nav));
    m.insert("user".into(), json!(cu.user));
    m.insert("csrf_token".into(), json!(cu.session.csrf_token().await?));
    m.insert("flash".into(), json!(flash));
    m.insert(
        "absolute_expires_at".into(),
        json!(info.as_ref().map(|i| i.absolute_expires_at)),
    );
    m.insert(
        "created_at".into(),
        json!(info.as_ref().map(|i| i.created_at)),
    );
    m.insert(
        "idle_expires_at".into(),
        json!(info.as_ref().map(|i| i.idle_expires_at)),
    );
    Ok(m)
}

fn render(
    state: &AppState,
    status: StatusCode,
    name: &str,
    ctx: &Map<String, Value>,
) -> PageResult {
    Ok(state.templates.page(status, name, ctx)?)
}

// ----- login, registration, logout -----

/// `?reason=`.
#[derive(Deserialize)]
pub struct LoginQuery {
    reason: Option<String>,
}

fn notice(reason: Option<&str>) -> Option<&'static str> {
    Some(match reason? {
        "logged_out" => "You have been logged out.",
        "login_required" => "Please log in to continue.",
        "password_changed" => {
            "Your password was changed and every session ended. Log in with the new password."
        }
        "revoked" => "You logged out everywhere.",
        _ => return None,
    })
}

async fn login_page(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    extra: Value,
) -> PageResult {
    let mut ctx = json!({
        "title": "Log in",
        "user": null,
        "registration_open": state.settings.registration == Registration::Open,
        "csrf_token": session.csrf_token().await?,
    });
    if let (Some(c), Value::Object(e)) = (ctx.as_object_mut(), extra) {
        c.extend(e);
    }
    Ok(state.templates.page(status, "login.html", &ctx)?)
}

/// `GET /login`.
pub async fn login_form(
    State(state): State<AppState>,
    session: Session,
    QueryParams(q): QueryParams<LoginQuery>,
) -> PageResult {
    if session.user_id().await?.is_some()
        && crate::routes::auth::current(&state, &session).await.is_ok()
    {
        return Ok(see_other("/"));
    }
    login_page(
        &state,
        &session,
        StatusCode::OK,
        json!({ "notice": notice(q.reason.as_deref()) }),
    )
    .await
}

/// `POST /login`.
pub async fn login(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Peer(peer): Peer,
    FormBody(c): FormBody<Credentials>,
) -> PageResult {
    let shown_name: String = c.username.chars().take(64).collect();
    state.limits.login.admit(peer)?;
    match service::authenticate(&state, &c.username, &c.password).await? {
        Authenticated::Ok(user) => {
            service::log_in(&session, &user, &device_of(&headers, peer)).await?;
            Ok(see_other("/"))
        }
        Authenticated::Invalid => {
            login_page(
                &state,
                &session,
                StatusCode::UNAUTHORIZED,
                json!({ "login_error": "Wrong user name or password.", "username": shown_name }),
            )
            .await
        }
        Authenticated::Locked(until) => {
            let (_, _, message) = service::locked_error(until).parts();
            login_page(
                &state,
                &session,
                StatusCode::TOO_MANY_REQUESTS,
                json!({ "login_error": format!("Locked: {message}."), "username": shown_name }),
            )
            .await
        }
    }
}

/// `POST /register`: creates the account and logs it in.
pub async fn register(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Peer(peer): Peer,
    FormBody(c): FormBody<Credentials>,
) -> PageResult {
    if state.settings.registration == Registration::Closed {
        return Err(PageError(crate::routes::auth::registration_closed()));
    }
    state.limits.register.admit(peer)?;
    match service::register(&state, &c.username, &c.password, false).await {
        Ok(user) => {
            service::log_in(&session, &user, &device_of(&headers, peer)).await?;
            flash(
                &session,
                "success",
                format!("Welcome, {}! Connect a platform to start.", user.username),
            )
            .await?;
            Ok(see_other("/platforms"))
        }
        Err(AppError::Status(status, _, message)) => {
            login_page(
                &state,
                &session,
                status,
                json!({ "register_error": message }),
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /logout`.
pub async fn logout(session: Session) -> PageResult {
    session.logout().await?;
    Ok(to_login("logged_out"))
}

// ----- dashboard and platforms -----

/// `GET /`.
pub async fn dashboard(State(state): State<AppState>, PageUser(cu): PageUser) -> PageResult {
    let mut ctx = base(&cu, "dashboard", "Dashboard").await?;
    let active = service::active_platform(&state, &cu).await?;
    let platforms = state.db.platforms(cu.user.id).await?;
    let device: Option<crate::device::Device> = cu.session.get(crate::device::ATTR).await?;
    ctx.insert("active".into(), json!(active));
    ctx.insert("platforms".into(), json!(platforms));
    ctx.insert(
        "device".into(),
        json!(device.map_or_else(|| "Unknown client".into(), |d| d.label())),
    );
    render(&state, StatusCode::OK, "dashboard.html", &ctx)
}

async fn platforms_page(
    state: &AppState,
    cu: &CurrentUser,
    status: StatusCode,
    form: Value,
    form_error: Option<String>,
) -> PageResult {
    let mut ctx = base(cu, "platforms", "Platforms").await?;
    let active = service::active_platform(state, cu).await?;
    ctx.insert(
        "platforms".into(),
        json!(state.db.platforms(cu.user.id).await?),
    );
    ctx.insert("active_id".into(), json!(active.map(|p| p.id)));
    ctx.insert("form".into(), form);
    ctx.insert("form_error".into(), json!(form_error));
    render(state, status, "platforms.html", &ctx)
}

/// `GET /platforms`.
pub async fn platforms(State(state): State<AppState>, PageUser(cu): PageUser) -> PageResult {
    platforms_page(&state, &cu, StatusCode::OK, json!({}), None).await
}

/// `POST /platforms`: add one.
pub async fn add_platform(
    State(state): State<AppState>,
    PageUser(cu): PageUser,
    FormBody(input): FormBody<PlatformInput>,
) -> PageResult {
    match service::add_platform(&state, &cu, &input).await {
        Ok(p) => {
            flash(&cu.session, "success", format!("Connected {}.", p.name)).await?;
            Ok(see_other("/platforms"))
        }
        Err(AppError::Status(status, _, message)) => {
            // The form again, with what was typed (never the token).
            let form = json!({
                "platform_type": input.platform_type,
                "name": input.name.chars().take(64).collect::<String>(),
                "instance_url": input.instance_url.chars().take(200).collect::<String>(),
                "username": input.username.chars().take(64).collect::<String>(),
            });
            platforms_page(&state, &cu, status, form, Some(message)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The switcher's form.
#[derive(Deserialize)]
pub struct SwitchForm {
    platform_id: String,
}

async fn do_switch(state: &AppState, cu: &CurrentUser, id: i64) -> PageResult {
    match service::switch_platform(state, cu, id).await {
        Ok(p) => {
            flash(&cu.session, "success", format!("Switched to {}.", p.name)).await?;
            Ok(see_other("/"))
        }
        Err(AppError::Status(_, _, message)) => {
            flash(&cu.session, "error", message).await?;
            Ok(see_other("/platforms"))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /platforms/switch` (the dashboard's switcher).
pub async fn switch_form(
    State(state): State<AppState>,
    PageUser(cu): PageUser,
    FormBody(f): FormBody<SwitchForm>,
) -> PageResult {
    let id = f.platform_id.trim().parse::<i64>().unwrap_or(-1);
    do_switch(&state, &cu, id).await
}

/// `POST /platforms/{id}/switch`.
pub async fn switch(
    State(state): State<AppState>,
    PageUser(cu): PageUser,
    PathParam(id): PathParam<i64>,
) -> PageResult {
    do_switch(&state, &cu, id).await
}

/// The activate/deactivate form.
#[derive(Deserialize)]
pub struct ActiveForm {
    active: String,
}

/// `POST /platforms/{id}/active`.
pub async fn set_active(
    State(state): State<AppState>,
    PageUser(cu): PageUser,
    PathParam(id): PathParam<i64>,
    FormBody(f): FormBody<ActiveForm>,
) -> PageResult {
    let active = f.active == "true";
    if !state.db.set_platform_active(cu.user.id, id, active).await? {
        return Err(AppError::not_found("platform").into());
    }
    service::active_platform(&state, &cu).await?;
    flash(
        &cu.session,
        "success",
        if active {
            "Connection activated."
        } else {
            "Connection deactivated."
        },
    )
    .await?;
    Ok(see_other("/platforms"))
}

/// `POST /platforms/{id}/delete`.
pub async fn delete_platform(
    State(state): State<AppState>,
    PageUser(cu): PageUser,
    PathParam(id): PathParam<i64>,
) -> PageResult {
    if !state.db.delete_platform(cu.user.id, id).await? {
        return Err(AppError::not_found("platform").into());
    }
    service::active_platform(&state, &cu).await?;
    flash(&cu.session, "success", "Connection removed.").await?;
    Ok(see_other("/platforms"))
}

// ----- sessions and account -----

async fn sessions_page(
    state: &AppState,
    cu: &CurrentUser,
    status: StatusCode,
    form_error: Option<String>,
) -> PageResult {
    let mut ctx = base(cu, "sessions", "Your sessions").await?;
    let current = cu.session.handle().await?;
    let sessions = service::sessions_of(state, &cu.id_string(), current).await?;
    ctx.insert("sessions".into(), json!(sessions));
    ctx.insert("form_error".into(), json!(form_error));
    render(state, status, "sessions.html", &ctx)
}

/// `GET /sessions`.
pub async fn sessions(State(state): State<AppState>, PageUser(cu): PageUser) -> PageResult {
    sessions_page(&state, &cu, StatusCode::OK, None).await
}

/// `POST /sessions/{handle}/revoke`.
pub async fn revoke_session(
    PageUser(cu): PageUser,
    PathParam(handle): PathParam<String>,
) -> PageResult {
    let handle = service::parse_handle(&handle)?;
    if !cu.session.revoke_session(&handle).await? {
        return Err(AppError::not_found("session").into());
    }
    if cu.session.user_id().await?.is_none() {
        return Ok(to_login("logged_out"));
    }
    flash(&cu.session, "success", "Session revoked.").await?;
    Ok(see_other("/sessions"))
}

/// `POST /sessions/revoke-others`.
pub async fn revoke_others(PageUser(cu): PageUser) -> PageResult {
    let n = cu.session.revoke_other_sessions().await?;
    flash(
        &cu.session,
        "success",
        format!(
            "Logged out {n} other session{}.",
            if n == 1 { "" } else { "s" }
        ),
    )
    .await?;
    Ok(see_other("/sessions"))
}

/// `POST /sessions/revoke-all`.
pub async fn revoke_all(PageUser(cu): PageUser) -> PageResult {
    cu.session.logout_everywhere().await?;
    Ok(to_login("revoked"))
}

/// The password form.
#[derive(Deserialize)]
pub struct PasswordForm {
    current_password: String,
    new_password: String,
}

/// `POST /account/password`.
pub async fn password(
    State(state): State<AppState>,
    Peer(peer): Peer,
    PageUser(cu): PageUser,
    FormBody(f): FormBody<PasswordForm>,
) -> PageResult {
    state.limits.password.admit(peer)?;
    match service::change_password(&state, &cu, &f.current_password, &f.new_password).await {
        Ok(_) => Ok(to_login("password_changed")),
        Err(AppError::Status(status, _, message)) => {
            sessions_page(&state, &cu, status, Some(message)).await
        }
        Err(e) => Err(e.into()),
    }
}

// ----- admin -----

/// `GET /admin`: health, analytics charts, every user's sessions.
pub async fn admin(State(state): State<AppState>, PageAdmin(cu): PageAdmin) -> PageResult {
    let mut ctx = base(&cu, "admin", "Administration").await?;
    let health = crate::routes::health::report(&state).await;
    let figures = analytics::figures(&state, 24).await?;
    let charts = analytics::charts(&figures);
    let users: Vec<Value> = service::all_sessions(&state, 1000, |_, _| {})
        .await?
        .into_iter()
        .map(|(user, sessions)| json!({ "user": user, "sessions": sessions }))
        .collect();
    ctx.insert("health".into(), health);
    ctx.insert("analytics".into(), json!({ "hours": figures.hours }));
    ctx.insert("charts".into(), json!(charts));
    ctx.insert("users".into(), json!(users));
    ctx.insert(
        "current_handle".into(),
        json!(cu.session.handle().await?.map(|h| h.to_string())),
    );
    render(&state, StatusCode::OK, "admin.html", &ctx)
}

/// `POST /admin/users/{name}/sessions/revoke`.
pub async fn admin_revoke_user(
    State(state): State<AppState>,
    PageAdmin(cu): PageAdmin,
    PathParam(name): PathParam<String>,
) -> PageResult {
    let user = crate::routes::admin::user_named(&state, &name).await?;
    let n = state
        .control
        .revoke_user(&user.id.to_string(), RevokeReason::Admin)
        .await?;
    if user.id == cu.user.id {
        return Ok(to_login("revoked"));
    }
    flash(
        &cu.session,
        "success",
        format!("Revoked {n} session(s) of {}.", user.username),
    )
    .await?;
    Ok(see_other("/admin#users"))
}

/// `POST /admin/users/{name}/sessions/{handle}/revoke`.
pub async fn admin_revoke_one(
    State(state): State<AppState>,
    PageAdmin(cu): PageAdmin,
    PathParam((name, handle)): PathParam<(String, String)>,
) -> PageResult {
    let user = crate::routes::admin::user_named(&state, &name).await?;
    let handle = service::parse_handle(&handle)?;
    if !state
        .control
        .revoke_handle(&user.id.to_string(), &handle)
        .await?
    {
        return Err(AppError::not_found("session").into());
    }
    if cu.session.user_id().await?.is_none() || cu.session.handle().await? == Some(handle) {
        return Ok(to_login("logged_out"));
    }
    flash(
        &cu.session,
        "success",
        format!("Revoked a session of {}.", user.username),
    )
    .await?;
    Ok(see_other("/admin#users"))
}

// ----- assets and fallbacks -----

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// `GET /static/app.css`.
pub async fn css() -> Response {
    asset("text/css; charset=utf-8", templates::CSS)
}

/// `GET /static/app.js`.
pub async fn js() -> Response {
    asset("text/javascript; charset=utf-8", templates::JS)
}

/// Unknown routes: JSON under `/api/`, `/health` and `/metrics`, a page elsewhere.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") || path.starts_with("/health") {
        AppError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
    } else {
        templates::error_page(StatusCode::NOT_FOUND, "not_found", "There is no page here.")
    }
}

/// Known routes with another method.
pub async fn method_not_allowed(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    let msg = "this route does not accept that method";
    if path.starts_with("/api/") || path.starts_with("/health") {
        AppError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", msg).into_response()
    } else {
        templates::error_page(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", msg)
    }
}
