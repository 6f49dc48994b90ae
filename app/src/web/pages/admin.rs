//! `/admin`: health, analytics charts, every user's sessions with revoke.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use ratatoskr_axum::RevokeReason;
use serde::Serialize;

use super::common::{PageResult, flash, layout, render};
use crate::domain::user::User;
use crate::services::analytics::Figures;
use crate::services::error::ServiceError;
use crate::services::health::{HealthReport, report};
use crate::services::sessions::{SessionView, parse_handle};
use crate::web::charts;
use crate::web::extract::{PageAdmin, PathParam};
use crate::web::redirect::{see_other, to_login};
use crate::web::state::AppState;
use crate::web::templates::PageBody;

/// Users the page lists.
const MAX_USERS: i64 = 1000;

/// This family's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(admin))
        .route(
            "/admin/users/{name}/sessions/revoke",
            post(admin_revoke_user),
        )
        .route(
            "/admin/users/{name}/sessions/{handle}/revoke",
            post(admin_revoke_one),
        )
}

/// What `admin.html` reads.
#[derive(Serialize)]
struct AdminBody {
    /// The session health report.
    health: HealthReport,
    /// The period the charts cover.
    analytics: Period,
    /// The charts.
    charts: Vec<Chart>,
    /// Every user with their sessions.
    users: Vec<UserSessions>,
    /// The handle of the administrator's own session.
    current_handle: Option<String>,
}

impl PageBody for AdminBody {
    const TEMPLATE: &'static str = "admin.html";
}

#[derive(Serialize)]
struct Period {
    hours: i64,
}

#[derive(Serialize)]
struct UserSessions {
    user: User,
    sessions: Vec<SessionView>,
}

/// One chart for the page.
#[derive(Serialize)]
struct Chart {
    /// The SVG markup (generated and escaped by [`charts`]).
    svg: String,
    /// A caption under it.
    caption: String,
}

/// The charts of the analytics figures.
fn analytics_charts(f: &Figures) -> Vec<Chart> {
    let points: Vec<_> = f
        .active_over_time
        .iter()
        .map(|s| (s.at, s.active as f64))
        .collect();
    let items = |m: &BTreeMap<String, u64>| -> Vec<(String, u64)> {
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    };
    let chart = |svg: String, caption: &str| Chart {
        svg,
        caption: caption.to_owned(),
    };
    vec![
        Chart {
            svg: charts::line(
                "chart-active",
                "Active sessions",
                "sessions",
                f.from,
                f.to,
                &points,
            ),
            caption: format!(
                "Live sessions, sampled periodically; {} now.",
                f.active_sessions
            ),
        },
        chart(
            charts::hourly_bars(
                "chart-logins",
                "Logins per hour",
                &f.hour_starts,
                &[
                    ("logins", f.logins.clone()),
                    ("failed", f.failed_logins.clone()),
                ],
            ),
            "Successful and failed (or locked-out) login attempts.",
        ),
        chart(
            charts::hourly_bars(
                "chart-ends",
                "Expiries and revocations per hour",
                &f.hour_starts,
                &[
                    ("expiries", f.expiries.clone()),
                    ("revocations", f.revocations.clone()),
                    ("CSRF refusals", f.csrf_refusals.clone()),
                ],
            ),
            "From the audit log: expired sessions presented, sessions revoked, refused forgeries.",
        ),
        chart(
            charts::categories(
                "chart-platforms",
                "Sessions by active platform type",
                &items(&f.sessions_by_platform_type),
            ),
            "Live sessions by the type of their active platform.",
        ),
        chart(
            charts::categories(
                "chart-devices",
                "Sessions by device class",
                &items(&f.sessions_by_device_class),
            ),
            "Live sessions by the device they logged in from.",
        ),
    ]
}

/// `GET /admin`.
async fn admin(State(state): State<AppState>, PageAdmin(cu): PageAdmin) -> PageResult {
    let layout = layout(&cu, "admin", "Administration").await?;
    let figures = state.analytics().figures(24).await?;
    let users = state
        .session_list()
        .all(MAX_USERS, |_, _| {})
        .await?
        .into_iter()
        .map(|(user, sessions)| UserSessions { user, sessions })
        .collect();
    let body = AdminBody {
        health: report(&state.stores, &state.sessions).await,
        analytics: Period {
            hours: figures.hours,
        },
        charts: analytics_charts(&figures),
        users,
        current_handle: cu.session.handle().await?.map(|h| h.to_string()),
    };
    render(&state, StatusCode::OK, &layout, &body)
}

/// `POST /admin/users/{name}/sessions/revoke`.
async fn admin_revoke_user(
    State(state): State<AppState>,
    PageAdmin(cu): PageAdmin,
    PathParam(name): PathParam<String>,
) -> PageResult {
    let user = state.accounts().user_named(&name).await?;
    let n = state
        .control
        .revoke_user(&user.id.session_user_id(), RevokeReason::Admin)
        .await?;
    if user.id == cu.user.id {
        return Ok(to_login("revoked"));
    }
    let message = format!("Revoked {n} session(s) of {}.", user.username);
    flash(&cu.session, "success", message).await?;
    Ok(see_other("/admin#users"))
}

/// `POST /admin/users/{name}/sessions/{handle}/revoke`.
async fn admin_revoke_one(
    State(state): State<AppState>,
    PageAdmin(cu): PageAdmin,
    PathParam((name, handle)): PathParam<(String, String)>,
) -> PageResult {
    let user = state.accounts().user_named(&name).await?;
    let handle = parse_handle(&handle)?;
    if !state
        .control
        .revoke_handle(&user.id.session_user_id(), &handle)
        .await?
    {
        return Err(ServiceError::NotFound("session").into());
    }
    if cu.session.user_id().await?.is_none() || cu.session.handle().await? == Some(handle) {
        return Ok(to_login("logged_out"));
    }
    let message = format!("Revoked a session of {}.", user.username);
    flash(&cu.session, "success", message).await?;
    Ok(see_other("/admin#users"))
}
