//! Server-rendered pages: minijinja templates embedded in the binary, HTML autoescaping on.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

use crate::error::AppError;

/// The template environment.
pub struct Templates {
    env: Environment<'static>,
}

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    (
        "dashboard.html",
        include_str!("../templates/dashboard.html"),
    ),
    (
        "platforms.html",
        include_str!("../templates/platforms.html"),
    ),
    ("sessions.html", include_str!("../templates/sessions.html")),
    ("admin.html", include_str!("../templates/admin.html")),
    ("error.html", include_str!("../templates/error.html")),
];

/// The stylesheet.
pub const CSS: &str = include_str!("../static/app.css");
/// The little script (progressive enhancement only).
pub const JS: &str = include_str!("../static/app.js");

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
        env.add_filter("datetime", |ms: i64| format_datetime(ms));
        env.add_filter("ago", |ms: i64| format_ago(ratatoskr_core::now_ms() - ms));
        for (name, src) in TEMPLATES {
            env.add_template(name, src)
                .unwrap_or_else(|e| panic!("template {name}: {e}"));
        }
        Templates { env }
    }

    /// Render `name` with `ctx`.
    pub fn render<T: Serialize>(&self, name: &str, ctx: &T) -> Result<String, AppError> {
        let tmpl = self
            .env
            .get_template(name)
            .map_err(|e| AppError::Internal(anyhow::anyhow!("template {name}: {e}")))?;
        tmpl.render(minijinja::value::Value::from(minijinja::value::Serde(ctx)))
            .map_err(|e| AppError::Internal(anyhow::anyhow!("rendering {name}: {e:#}")))
    }

    /// Render `name` as a response with `status`.
    pub fn page<T: Serialize>(
        &self,
        status: StatusCode,
        name: &str,
        ctx: &T,
    ) -> Result<Response, AppError> {
        let body = self.render(name, ctx)?;
        let mut r = (status, Html(body)).into_response();
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

/// An error page (rendered by a fresh environment's error template, so it works anywhere).
pub fn error_page(status: StatusCode, code: &str, message: &str) -> Response {
    static T: std::sync::OnceLock<Templates> = std::sync::OnceLock::new();
    let t = T.get_or_init(Templates::new);
    let ctx = serde_json::json!({
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "code": code,
        "message": message,
    });
    match t.page(status, "error.html", &ctx) {
        Ok(r) => r,
        Err(_) => (status, message.to_owned()).into_response(),
    }
}

/// `2026-11-28 04:35 UTC` from milliseconds since the epoch.
pub fn format_datetime(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        tod / 3600,
        (tod % 3600) / 60
    )
}

/// `3 minutes ago` from an age in milliseconds.
pub fn format_ago(age_ms: i64) -> String {
    let s = age_ms.max(0) / 1000;
    match s {
        0..=59 => "just now".into(),
        60..=119 => "1 minute ago".into(),
        120..=3599 => format!("{} minutes ago", s / 60),
        3600..=7199 => "1 hour ago".into(),
        7200..=86_399 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// Howard Hinnant's days-to-civil conversion.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(format_datetime(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_datetime(1_709_210_096_000), "2024-02-29 12:34 UTC");
        assert_eq!(format_ago(30_000), "just now");
        assert_eq!(format_ago(5 * 60_000), "5 minutes ago");
        assert_eq!(format_ago(3 * 86_400_000), "3 days ago");
    }

    #[test]
    fn every_template_parses_and_escapes() {
        let t = Templates::new();
        let html = t
            .render(
                "error.html",
                &serde_json::json!({"title": "x", "status": 400, "code": "c", "message": "<script>"}),
            )
            .unwrap();
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script>"));
    }
}
