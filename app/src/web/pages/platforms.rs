//! `/` (the dashboard: the active platform and a switcher) and `/platforms` (the connections,
//! adding, switching, (de)activating and removing them).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::common::{PageResult, flash, form_refusal, layout, render};
use crate::domain::device::{self, Device};
use crate::domain::platform::{Platform, PlatformId};
use crate::services::platforms::PlatformInput;
use crate::web::extract::{CurrentUser, FormBody, PageUser, PathParam};
use crate::web::redirect::see_other;
use crate::web::state::AppState;
use crate::web::templates::PageBody;

/// This family's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/platforms", get(platforms).post(add_platform))
        .route("/platforms/switch", post(switch_form))
        .route("/platforms/{id}/switch", post(switch))
        .route("/platforms/{id}/active", post(set_active))
        .route("/platforms/{id}/delete", post(delete_platform))
}

/// What `dashboard.html` reads.
#[derive(Serialize)]
struct DashboardBody {
    /// The session's active platform.
    active: Option<Platform>,
    /// Every connection of the user.
    platforms: Vec<Platform>,
    /// "Firefox on Linux".
    device: String,
}

impl PageBody for DashboardBody {
    const TEMPLATE: &'static str = "dashboard.html";
}

/// What `platforms.html` reads.
#[derive(Serialize)]
struct PlatformsBody {
    /// Every connection of the user.
    platforms: Vec<Platform>,
    /// The active one's id.
    active_id: Option<PlatformId>,
    /// What was typed into the form (never the token).
    form: PlatformForm,
    /// Why the form was refused.
    form_error: Option<String>,
}

impl PageBody for PlatformsBody {
    const TEMPLATE: &'static str = "platforms.html";
}

/// The add-a-connection form as typed, cut to what the page shows again.
#[derive(Default, Serialize)]
struct PlatformForm {
    platform_type: Option<String>,
    name: Option<String>,
    instance_url: Option<String>,
    username: Option<String>,
}

impl PlatformForm {
    fn from_input(input: &PlatformInput) -> Self {
        let cut = |s: &str, n: usize| Some(s.chars().take(n).collect::<String>());
        PlatformForm {
            platform_type: cut(&input.platform_type, 16),
            name: cut(&input.name, 64),
            instance_url: cut(&input.instance_url, 200),
            username: cut(&input.username, 64),
        }
    }
}

/// `GET /`.
async fn dashboard(State(state): State<AppState>, PageUser(cu): PageUser) -> PageResult {
    let layout = layout(&cu, "dashboard", "Dashboard").await?;
    let platforms = state.platforms();
    let device: Option<Device> = cu.session.get(device::ATTR).await?;
    let body = DashboardBody {
        active: platforms.active(cu.user.id, &cu.session).await?,
        platforms: platforms.list(cu.user.id).await?,
        device: device.map_or_else(|| "Unknown client".into(), |d| d.label()),
    };
    render(&state, StatusCode::OK, &layout, &body)
}

async fn platforms_page(
    state: &AppState,
    cu: &CurrentUser,
    status: StatusCode,
    form: PlatformForm,
    form_error: Option<String>,
) -> PageResult {
    let layout = layout(cu, "platforms", "Platforms").await?;
    let platforms = state.platforms();
    let active = platforms.active(cu.user.id, &cu.session).await?;
    let body = PlatformsBody {
        platforms: platforms.list(cu.user.id).await?,
        active_id: active.map(|p| p.id),
        form,
        form_error,
    };
    render(state, status, &layout, &body)
}

/// `GET /platforms`.
async fn platforms(State(state): State<AppState>, PageUser(cu): PageUser) -> PageResult {
    platforms_page(&state, &cu, StatusCode::OK, PlatformForm::default(), None).await
}

/// `POST /platforms`: add one.
async fn add_platform(
    State(state): State<AppState>,
    PageUser(cu): PageUser,
    FormBody(input): FormBody<PlatformInput>,
) -> PageResult {
    match state.platforms().add(cu.user.id, &input).await {
        Ok(p) => {
            flash(&cu.session, "success", format!("Connected {}.", p.name)).await?;
            Ok(see_other("/platforms"))
        }
        Err(e) => {
            // The form again, with what was typed (never the token).
            let (status, message) = form_refusal(e.into())?;
            let form = PlatformForm::from_input(&input);
            platforms_page(&state, &cu, status, form, Some(message)).await
        }
    }
}

/// The switcher's form.
#[derive(Deserialize)]
struct SwitchForm {
    platform_id: String,
}

async fn do_switch(state: &AppState, cu: &CurrentUser, id: PlatformId) -> PageResult {
    match state.platforms().switch(cu.user.id, &cu.session, id).await {
        Ok(p) => {
            flash(&cu.session, "success", format!("Switched to {}.", p.name)).await?;
            Ok(see_other("/"))
        }
        Err(e) => {
            let (_, message) = form_refusal(e.into())?;
            flash(&cu.session, "error", message).await?;
            Ok(see_other("/platforms"))
        }
    }
}

/// `POST /platforms/switch` (the dashboard's switcher).
async fn switch_form(
    State(state): State<AppState>,
    PageUser(cu): PageUser,
    FormBody(f): FormBody<SwitchForm>,
) -> PageResult {
    let id = f.platform_id.trim().parse::<i64>().unwrap_or(-1);
    do_switch(&state, &cu, PlatformId(id)).await
}

/// `POST /platforms/{id}/switch`.
async fn switch(
    State(state): State<AppState>,
    PageUser(cu): PageUser,
    PathParam(id): PathParam<i64>,
) -> PageResult {
    do_switch(&state, &cu, PlatformId(id)).await
}

/// The activate/deactivate form.
#[derive(Deserialize)]
struct ActiveForm {
    active: String,
}

/// `POST /platforms/{id}/active`.
async fn set_active(
    State(state): State<AppState>,
    PageUser(cu): PageUser,
    PathParam(id): PathParam<i64>,
    FormBody(f): FormBody<ActiveForm>,
) -> PageResult {
    let active = f.active == "true";
    state
        .platforms()
        .set_active(cu.user.id, &cu.session, PlatformId(id), active)
        .await?;
    let message = if active {
        "Connection activated."
    } else {
        "Connection deactivated."
    };
    flash(&cu.session, "success", message).await?;
    Ok(see_other("/platforms"))
}

/// `POST /platforms/{id}/delete`.
async fn delete_platform(
    State(state): State<AppState>,
    PageUser(cu): PageUser,
    PathParam(id): PathParam<i64>,
) -> PageResult {
    state
        .platforms()
        .delete(cu.user.id, &cu.session, PlatformId(id))
        .await?;
    flash(&cu.session, "success", "Connection removed.").await?;
    Ok(see_other("/platforms"))
}
