//! Refusals: the answers the session layer and its extractors give instead of a handler's
//! (a CSRF 403, a 401 for a missing login, a 503 when the store is down), and the hook through
//! which an application renders them its own way.
//!
//! Every such response carries a [`SessionRefusal`] in its extensions, so a middleware can
//! tell what it is without reading the body. To change how refusals look, give the layer a
//! [`RefusalResponder`] with [`SessionConfig::with_responder`](crate::SessionConfig::with_responder):
//! it is asked first for every refusal — those the layer answers itself and those a handler's
//! extractor returns (an [`AuthUser`](crate::AuthUser) on an anonymous request) — and returns
//! `None` to keep the library's default (JSON; an HTML page for a browser's refused form post).
//!
//! ```
//! use std::sync::Arc;
//! use axum::http::StatusCode;
//! use axum::response::{Html, IntoResponse, Response};
//! use ratatoskr_axum::{RefusalKind, RefusalRequest, SessionConfig, SessionRefusal};
//!
//! fn render(refusal: &SessionRefusal, request: &RefusalRequest<'_>) -> Option<Response> {
//!     match refusal.kind() {
//!         RefusalKind::Csrf(_) if request.prefers_html() => Some(
//!             (refusal.status(), Html("<h1>Nothing was changed</h1><p>Reload and try again.</p>"))
//!                 .into_response(),
//!         ),
//!         RefusalKind::Unauthenticated if request.prefers_html() => Some(
//!             (StatusCode::SEE_OTHER, [("location", "/login")]).into_response(),
//!         ),
//!         _ => None, // the library's JSON
//!     }
//! }
//!
//! let config = SessionConfig::default().with_responder(Arc::new(render));
//! # let _ = config;
//! ```

use std::borrow::Cow;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};

use crate::csrf;
use crate::error::json_error;

/// What kind of refusal, for choosing how to render it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalKind {
    /// The CSRF defences refused an unsafe request (403); the reason is inside.
    Csrf(csrf::Refusal),
    /// The request needs a logged-in session and has none, or its session ended or was
    /// revoked while it ran (401).
    Unauthenticated,
    /// The session store failed or could not be reached (503).
    Unavailable,
    /// The session, or a form body the CSRF check had to read, is over its size limit (413).
    TooLarge,
    /// A programming error: a value that does not (de)serialize, a route without the layer
    /// (500).
    Internal,
}

/// A refusal: its kind, HTTP status, stable snake_case code and the sentence shown to
/// clients (backend details stay in the server log). Found in the extensions of every refusal
/// response, whoever rendered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRefusal {
    kind: RefusalKind,
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
}

impl SessionRefusal {
    /// A refusal of `kind` with this status, code and public message.
    pub fn new(
        kind: RefusalKind,
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        SessionRefusal {
            kind,
            status,
            code,
            message: message.into(),
        }
    }

    /// A CSRF refusal (403).
    pub fn csrf(reason: csrf::Refusal) -> Self {
        SessionRefusal::new(
            RefusalKind::Csrf(reason),
            StatusCode::FORBIDDEN,
            reason.code(),
            reason.message(),
        )
    }

    /// The kind.
    pub fn kind(&self) -> RefusalKind {
        self.kind
    }

    /// The HTTP status the library answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable snake_case code (`csrf_token_missing`, `unauthenticated`,
    /// `session_store_unavailable`, …), as in the JSON body, metrics and audit trail.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The sentence for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The library's own rendering: the JSON error shape, or for a CSRF refusal of a client
    /// that prefers HTML (a browser's form post) a minimal HTML page; `Cache-Control:
    /// no-store` either way, and this refusal in the extensions.
    pub fn default_response(&self, request: &RefusalRequest<'_>) -> Response {
        let mut response = match self.kind {
            RefusalKind::Csrf(_) if request.prefers_html() => {
                let page = format!(
                    "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>{status}</title>\
                     <h1>Forbidden</h1><p>{message}</p><p>Reason: <code>{code}</code></p></html>",
                    status = self.status,
                    message = self.message,
                    code = self.code,
                );
                let mut r = (self.status, Html(page)).into_response();
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            _ => json_error(self.status, self.code, &self.message),
        };
        response.extensions_mut().insert(self.clone());
        response
    }
}

/// The request a refusal answers, as a [`RefusalResponder`] sees it.
#[derive(Clone, Copy, Debug)]
pub struct RefusalRequest<'a> {
    /// Its method.
    pub method: &'a Method,
    /// Its URI.
    pub uri: &'a Uri,
    /// Its headers.
    pub headers: &'a HeaderMap,
}

impl RefusalRequest<'_> {
    /// Whether the client asks for HTML before JSON in `Accept` (a browser navigation or form
    /// post, rather than `fetch` or an API client).
    pub fn prefers_html(&self) -> bool {
        prefers_html(self.headers)
    }
}

/// Whether `Accept` in these headers lists `text/html` before `application/json`.
pub(crate) fn prefers_html(h: &HeaderMap) -> bool {
    let accept = h
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match (accept.find("text/html"), accept.find("application/json")) {
        (Some(_), None) => true,
        (Some(html), Some(json)) => html < json,
        _ => false,
    }
}

/// How an application renders refusals. Return `None` to keep the library's default
/// ([`SessionRefusal::default_response`]). The refusal is put into the extensions of whatever
/// response you return; the layer still adds its `Vary` and cookie headers.
///
/// Any `Fn(&SessionRefusal, &RefusalRequest<'_>) -> Option<Response>` is a responder; see the
/// [module documentation](self) for an example.
pub trait RefusalResponder: Send + Sync + 'static {
    /// The response for `refusal` of `request`, or `None` for the default.
    fn respond(&self, refusal: &SessionRefusal, request: &RefusalRequest<'_>) -> Option<Response>;
}

impl<F> RefusalResponder for F
where
    F: Fn(&SessionRefusal, &RefusalRequest<'_>) -> Option<Response> + Send + Sync + 'static,
{
    fn respond(&self, refusal: &SessionRefusal, request: &RefusalRequest<'_>) -> Option<Response> {
        self(refusal, request)
    }
}

/// Replace a refusal response by the responder's rendering, if the response is a refusal and
/// the responder has one.
pub(crate) fn restyle(
    responder: &dyn RefusalResponder,
    response: Response,
    request: &RefusalRequest<'_>,
) -> Response {
    let Some(refusal) = response.extensions().get::<SessionRefusal>() else {
        return response;
    };
    match responder.respond(refusal, request) {
        Some(mut custom) => {
            let refusal = refusal.clone();
            custom.extensions_mut().insert(refusal);
            custom
        }
        None => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(accept: &str) -> (Method, Uri, HeaderMap) {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
        (Method::POST, Uri::from_static("/x"), h)
    }

    #[test]
    fn a_csrf_refusal_is_html_for_browsers_and_json_for_scripts() {
        let refusal = SessionRefusal::csrf(csrf::Refusal::CrossSite);
        let (m, u, h) = request("text/html,application/xhtml+xml");
        let html = refusal.default_response(&RefusalRequest {
            method: &m,
            uri: &u,
            headers: &h,
        });
        assert_eq!(html.status(), StatusCode::FORBIDDEN);
        assert!(
            html.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert_eq!(html.extensions().get::<SessionRefusal>(), Some(&refusal));
        let (m, u, h) = request("application/json");
        let json = refusal.default_response(&RefusalRequest {
            method: &m,
            uri: &u,
            headers: &h,
        });
        assert!(
            json.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        assert_eq!(json.extensions().get::<SessionRefusal>(), Some(&refusal));
    }

    #[test]
    fn a_responder_that_declines_keeps_the_default_and_one_that_answers_replaces_it() {
        let refusal = SessionRefusal::csrf(csrf::Refusal::TokenMissing);
        let (m, u, h) = request("text/html");
        let req = RefusalRequest {
            method: &m,
            uri: &u,
            headers: &h,
        };
        let declines = |_: &SessionRefusal, _: &RefusalRequest<'_>| None;
        let kept = restyle(&declines, refusal.default_response(&req), &req);
        assert_eq!(kept.status(), StatusCode::FORBIDDEN);
        let teapot = |_: &SessionRefusal, _: &RefusalRequest<'_>| {
            Some(StatusCode::IM_A_TEAPOT.into_response())
        };
        let replaced = restyle(&teapot, refusal.default_response(&req), &req);
        assert_eq!(replaced.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(
            replaced.extensions().get::<SessionRefusal>(),
            Some(&refusal)
        );
        // Not a refusal: untouched.
        let plain = restyle(&teapot, StatusCode::OK.into_response(), &req);
        assert_eq!(plain.status(), StatusCode::OK);
    }
}
