//! The stylesheet and the script, and the answers for unknown routes and methods.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::web::error::AppError;
use crate::web::state::AppState;
use crate::web::templates::{self, error_page};

/// This family's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/app.css", get(css))
        .route("/static/app.js", get(js))
}

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
async fn css() -> Response {
    asset("text/css; charset=utf-8", templates::CSS)
}

/// `GET /static/app.js`.
async fn js() -> Response {
    asset("text/javascript; charset=utf-8", templates::JS)
}

/// Whether a path is the JSON side's (answered in JSON, not with a page).
fn is_api(uri: &Uri) -> bool {
    let path = uri.path();
    path.starts_with("/api/") || path.starts_with("/health")
}

/// Unknown routes: JSON under `/api/`, `/health` and `/metrics`, a page elsewhere.
pub async fn not_found(uri: Uri) -> Response {
    if is_api(&uri) {
        AppError::request(StatusCode::NOT_FOUND, "not_found", "no such route").into_response()
    } else {
        error_page(StatusCode::NOT_FOUND, "not_found", "There is no page here.")
    }
}

/// Known routes with another method.
pub async fn method_not_allowed(uri: Uri) -> Response {
    let msg = "this route does not accept that method";
    if is_api(&uri) {
        AppError::request(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", msg).into_response()
    } else {
        error_page(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", msg)
    }
}
