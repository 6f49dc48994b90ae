//! `/sessions`: the user's sessions and devices, revoking one, the others or all, and the
//! password form.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::common::{PageResult, flash, form_refusal, layout, render};
use crate::services::error::ServiceError;
use crate::services::sessions::{SessionView, parse_handle};
use crate::web::extract::{ClientAddr, CurrentUser, FormBody, PageUser, PathParam};
use crate::web::redirect::{see_other, to_login};
use crate::web::state::AppState;
use crate::web::templates::PageBody;

/// This family's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions", get(sessions))
        .route("/sessions/{handle}/revoke", post(revoke_session))
        .route("/sessions/revoke-others", post(revoke_others))
        .route("/sessions/revoke-all", post(revoke_all))
        .route("/account/password", post(password))
}

/// What `sessions.html` reads.
#[derive(Serialize)]
struct SessionsBody {
    /// The user's live sessions.
    sessions: Vec<SessionView>,
    /// Why the password form was refused.
    form_error: Option<String>,
}

impl PageBody for SessionsBody {
    const TEMPLATE: &'static str = "sessions.html";
}

async fn sessions_page(
    state: &AppState,
    cu: &CurrentUser,
    status: StatusCode,
    form_error: Option<String>,
) -> PageResult {
    let layout = layout(cu, "sessions", "Your sessions").await?;
    let current = cu.session.handle().await?;
    let body = SessionsBody {
        sessions: state.session_list().of(cu.user.id, current).await?,
        form_error,
    };
    render(state, status, &layout, &body)
}

/// `GET /sessions`.
async fn sessions(State(state): State<AppState>, PageUser(cu): PageUser) -> PageResult {
    sessions_page(&state, &cu, StatusCode::OK, None).await
}

/// `POST /sessions/{handle}/revoke`.
async fn revoke_session(
    PageUser(cu): PageUser,
    PathParam(handle): PathParam<String>,
) -> PageResult {
    let handle = parse_handle(&handle)?;
    if !cu.session.revoke_session(&handle).await? {
        return Err(ServiceError::NotFound("session").into());
    }
    if cu.session.user_id().await?.is_none() {
        return Ok(to_login("logged_out"));
    }
    flash(&cu.session, "success", "Session revoked.").await?;
    Ok(see_other("/sessions"))
}

/// `POST /sessions/revoke-others`.
async fn revoke_others(PageUser(cu): PageUser) -> PageResult {
    let n = cu.session.revoke_other_sessions().await?;
    let plural = if n == 1 { "" } else { "s" };
    flash(
        &cu.session,
        "success",
        format!("Logged out {n} other session{plural}."),
    )
    .await?;
    Ok(see_other("/sessions"))
}

/// `POST /sessions/revoke-all`.
async fn revoke_all(PageUser(cu): PageUser) -> PageResult {
    cu.session.logout_everywhere().await?;
    Ok(to_login("revoked"))
}

/// The password form.
#[derive(Deserialize)]
struct PasswordForm {
    current_password: String,
    new_password: String,
}

/// `POST /account/password`.
async fn password(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    PageUser(cu): PageUser,
    FormBody(f): FormBody<PasswordForm>,
) -> PageResult {
    state.limits.password.admit(client)?;
    let changed = state
        .accounts()
        .change_password(&cu.user, &cu.session, &f.current_password, &f.new_password)
        .await;
    match changed {
        Ok(_) => Ok(to_login("password_changed")),
        Err(e) => {
            let (status, message) = form_refusal(e.into())?;
            sessions_page(&state, &cu, status, Some(message)).await
        }
    }
}
