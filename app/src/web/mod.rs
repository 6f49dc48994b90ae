//! The web layer: extractors, the JSON API, the pages and their templates and charts, and the
//! mapping of errors to HTTP answers. Handlers call services; nothing below this layer knows
//! about HTTP.

pub mod api;
pub mod charts;
pub mod client_addr;
pub mod error;
pub mod extract;
pub mod pages;
pub mod redirect;
pub mod state;
pub mod templates;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::response::Response;
use ratatoskr_axum::{RefusalKind, RefusalRequest, SessionLayer, SessionRefusal};

use crate::domain::net::TrustedProxies;
use crate::web::state::AppState;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// Every route of the application, behind the session layer; the client address is decided
/// before it.
pub fn router(state: AppState, layer: SessionLayer) -> Router {
    let proxies = Arc::new(TrustedProxies::new(&state.settings.trusted_proxies));
    Router::new()
        .merge(api::router())
        .merge(pages::router())
        .fallback(pages::not_found)
        .method_not_allowed_fallback(pages::method_not_allowed)
        .layer(layer)
        .layer(axum::middleware::map_request_with_state(
            proxies,
            client_addr::client_address,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A browser's form post refused by the CSRF defences gets the application's own 403 page (same
/// status, same reason code); everything else keeps the library's rendering (JSON for scripts).
pub fn refusal_page(refusal: &SessionRefusal, request: &RefusalRequest<'_>) -> Option<Response> {
    match refusal.kind() {
        RefusalKind::Csrf(_) if request.prefers_html() => Some(templates::error_page(
            refusal.status(),
            refusal.code(),
            "This request was refused: it did not come from one of this site's own pages \
             (or the page was too old). Nothing was changed. Go back, reload the page and try again.",
        )),
        _ => None,
    }
}

/// Headers every response carries: no framing (clickjacking), no MIME sniffing, no referrer
/// to other sites, and a content security policy that allows only this origin's own script
/// and stylesheet (the charts are inline SVG markup, not script).
async fn security_headers(mut response: Response) -> Response {
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
