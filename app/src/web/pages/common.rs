//! What the pages share: the layout of a logged-in page, flash messages, rendering, and which
//! refusals a form shows next to itself.

use axum::http::StatusCode;
use axum::response::Response;
use ratatoskr_axum::{Session, SessionInfo};

use crate::domain::time::Timestamp;
use crate::web::error::{AppError, PageError};
use crate::web::extract::CurrentUser;
use crate::web::state::AppState;
use crate::web::templates::{Flash, Layout, PageBody};

/// A page handler's result.
pub type PageResult = Result<Response, PageError>;

const FLASH_ATTR: &str = "app.flash";

/// Leave a one-time message for the next page.
pub async fn flash(
    session: &Session,
    kind: &str,
    message: impl Into<String>,
) -> Result<(), PageError> {
    let flash = Flash {
        kind: kind.into(),
        message: message.into(),
    };
    session.insert(FLASH_ATTR, &flash).await?;
    Ok(())
}

/// The layout of a logged-in page (takes the flash message, if any).
pub async fn layout(
    cu: &CurrentUser,
    nav: &'static str,
    title: &'static str,
) -> Result<Layout, PageError> {
    let flash: Option<Flash> = cu.session.get(FLASH_ATTR).await?;
    if flash.is_some() {
        cu.session.remove(FLASH_ATTR).await?;
    }
    let info = cu.session.info().await?;
    let at = |f: fn(&SessionInfo) -> i64| info.as_ref().map(|i| Timestamp::from_millis(f(i)));
    Ok(Layout {
        title,
        nav,
        user: Some(cu.user.clone()),
        csrf_token: cu.session.csrf_token().await?,
        flash,
        created_at: at(|i| i.created_at),
        idle_expires_at: at(|i| i.idle_expires_at),
        absolute_expires_at: at(|i| i.absolute_expires_at),
    })
}

/// Render a page.
pub fn render<B: PageBody>(
    state: &AppState,
    status: StatusCode,
    layout: &Layout,
    body: &B,
) -> PageResult {
    Ok(state.templates.page(status, layout, body)?)
}

/// A refusal a form shows next to itself (its status and message); anything else — failures,
/// and refusals that say when to come back, which get their own page with `Retry-After` — is
/// answered as an error page.
pub fn form_refusal(e: AppError) -> Result<(StatusCode, String), PageError> {
    if e.is_refusal() && e.retry_after().is_none() {
        let (status, _, message) = e.parts();
        Ok((status, message))
    } else {
        Err(PageError(e))
    }
}
