//! Server-rendered pages: minijinja templates embedded in the binary, HTML autoescaping on, and
//! typed contexts: every page is a [`Page`] of the [`Layout`] that `base.html` reads and a body
//! type of its own that names its template ([`PageBody`]), so a handler cannot hand a template
//! fields it does not read or forget one it does.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde::{Deserialize, Serialize};

use crate::domain::time::{Timestamp, ago};
use crate::domain::user::User;

/// A one-time message shown on the next page.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Flash {
    /// `success` or `error`.
    pub kind: String,
    /// The message.
    pub message: String,
}

/// What `base.html` reads: the title, the navigation, the user and their session.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Layout {
    /// The page title.
    pub title: &'static str,
    /// Which navigation entry is current (`dashboard`, `platforms`, `sessions`, `admin`).
    pub nav: &'static str,
    /// The logged-in user (none on the login and error pages).
    pub user: Option<User>,
    /// The session's CSRF token, for the forms.
    pub csrf_token: Option<String>,
    /// A message left by the previous request.
    pub flash: Option<Flash>,
    /// When the session was created.
    pub created_at: Option<Timestamp>,
    /// When it ends if unused.
    pub idle_expires_at: Option<Timestamp>,
    /// When it ends at the latest.
    pub absolute_expires_at: Option<Timestamp>,
}

/// A page's own fields, and the template that shows them.
pub trait PageBody: Serialize {
    /// The template's name.
    const TEMPLATE: &'static str;
}

/// A page: the layout and the body, flattened into one context.
#[derive(Serialize)]
pub struct Page<'a, B: PageBody> {
    /// What the layout reads.
    #[serde(flatten)]
    pub layout: &'a Layout,
    /// What the page reads.
    #[serde(flatten)]
    pub body: &'a B,
}

/// The error page's fields.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    /// The HTTP status.
    pub status: u16,
    /// The stable code.
    pub code: &'a str,
    /// The message.
    pub message: &'a str,
}

impl PageBody for ErrorBody<'_> {
    const TEMPLATE: &'static str = "error.html";
}

/// The template environment.
pub struct Templates {
    env: Environment<'static>,
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("login.html", include_str!("../../templates/login.html")),
    (
        "dashboard.html",
        include_str!("../../templates/dashboard.html"),
    ),
    (
        "platforms.html",
        include_str!("../../templates/platforms.html"),
    ),
    (
        "sessions.html",
        include_str!("../../templates/sessions.html"),
    ),
    ("admin.html", include_str!("../../templates/admin.html")),
    ("error.html", include_str!("../../templates/error.html")),
];

/// The stylesheet.
pub const CSS: &str = include_str!("../../static/app.css");
/// The little script (progressive enhancement only).
pub const JS: &str = include_str!("../../static/app.js");

impl Templates {
    /// Load every template (a syntax error is a bug: the tests render every page).
    pub fn new() -> Self {
        let mut env = Environment::new();
        // `.html` templates escape HTML (the default callback, made explicit).
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                minijinja::AutoEscape::Html
            } else {
                minijinja::AutoEscape::None
            }
        });
        env.add_filter("datetime", |ms: i64| Timestamp::from_millis(ms).datetime());
        env.add_filter("ago", |ms: i64| {
            ago(Timestamp::now().since(Timestamp::from_millis(ms)))
        });
        for (name, src) in TEMPLATES {
            env.add_template(name, src)
                .unwrap_or_else(|e| panic!("template {name}: {e}"));
        }
        Templates { env }
    }

    /// Render `body` in `layout`.
    pub fn render<B: PageBody>(&self, layout: &Layout, body: &B) -> anyhow::Result<String> {
        let name = B::TEMPLATE;
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| anyhow::anyhow!("template {name}: {e}"))?;
        let page = Page { layout, body };
        tmpl.render(minijinja::value::Value::from(minijinja::value::Serde(
            &page,
        )))
        .map_err(|e| anyhow::anyhow!("rendering {name}: {e:#}"))
    }

    /// Render `body` in `layout` as a response with `status` (never cached).
    pub fn page<B: PageBody>(
        &self,
        status: StatusCode,
        layout: &Layout,
        body: &B,
    ) -> anyhow::Result<Response> {
        let html = self.render(layout, body)?;
        let mut r = (status, Html(html)).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// An error page (rendered by an environment of its own, so it works anywhere).
pub fn error_page(status: StatusCode, code: &str, message: &str) -> Response {
    static T: std::sync::OnceLock<Templates> = std::sync::OnceLock::new();
    let t = T.get_or_init(Templates::new);
    let layout = Layout {
        title: status.canonical_reason().unwrap_or("Error"),
        ..Layout::default()
    };
    let body = ErrorBody {
        status: status.as_u16(),
        code,
        message,
    };
    match t.page(status, &layout, &body) {
        Ok(r) => r,
        Err(_) => (status, message.to_owned()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::user::{UserId, UserName};

    fn body(message: &str) -> ErrorBody<'_> {
        ErrorBody {
            status: 400,
            code: "c",
            message,
        }
    }

    #[test]
    fn every_template_parses_and_escapes() {
        let t = Templates::new();
        let layout = Layout {
            title: "x",
            ..Layout::default()
        };
        let html = t.render(&layout, &body("<script>")).unwrap();
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script>"));
    }

    #[test]
    fn the_layout_shows_timestamps_as_dates() {
        let layout = Layout {
            title: "x",
            user: Some(User {
                id: UserId(1),
                username: UserName::parse("alice").unwrap(),
                is_admin: false,
                disabled: false,
                created_at: Timestamp::EPOCH,
            }),
            absolute_expires_at: Some(Timestamp::from_millis(1_709_210_096_000)),
            ..Layout::default()
        };
        let html = Templates::new().render(&layout, &body("m")).unwrap();
        assert!(
            html.contains("Session ends at the latest 2024-02-29 12:34 UTC."),
            "{html}"
        );
    }
}
