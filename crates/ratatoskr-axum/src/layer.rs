//! The tower layer: cookie → session handle → CSRF checks → handler → save → cookie.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use ratatoskr_core::{AuditEvent, AuditKind, Handle, SessionManager};
use tower_layer::Layer;
use tower_service::Service;

use crate::config::{ConfigError, FingerprintPolicy, SessionConfig};
use crate::control::SessionControl;
use crate::cookie::{CookieLookup, find_session_cookie};
use crate::csrf::{self, Refusal};
use crate::fingerprint;
use crate::metrics;
use crate::refusal::{self, RefusalKind, RefusalRequest, SessionRefusal};
use crate::session::Session;
use crate::shared::Shared;

/// The header a script sends the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The form field a urlencoded form sends the CSRF token in.
pub const CSRF_FORM_FIELD: &str = "csrf_token";
const DEFAULT_MAX_FORM_BYTES: usize = 64 * 1024;

/// The session layer. Add it with `Router::layer` so that route patterns are known to the CSRF
/// exemption list:
///
/// ```
/// use std::sync::Arc;
/// use axum::{Router, routing::get};
/// use ratatoskr_axum::{Session, SessionConfig, SessionLayer, SessionError};
/// use ratatoskr_core::{ManagerConfig, MemoryStore, SessionManager};
///
/// async fn counter(session: Session) -> Result<String, SessionError> {
///     let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
///     session.insert("n", &n).await?;
///     Ok(n.to_string())
/// }
///
/// let manager = SessionManager::new(Arc::new(MemoryStore::default()), ManagerConfig::default());
/// let layer = SessionLayer::new(manager, SessionConfig::default()).expect("valid config");
/// let app: Router = Router::new().route("/", get(counter)).layer(layer);
/// ```
#[derive(Clone)]
pub struct SessionLayer {
    shared: Arc<Shared>,
    max_form_bytes: usize,
}

impl std::fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// A layer over `manager`. Fails on a configuration that would be insecure without saying
    /// so (a secure cookie without `__Host-`, a prefixed cookie without `Secure`, …).
    pub fn new(manager: SessionManager, config: SessionConfig) -> Result<Self, ConfigError> {
        let cookie = config.cookie_spec()?;
        let origin = config.origin_policy()?;
        if config.cookie.is_insecure() {
            tracing::warn!(
                cookie = %config.cookie.name,
                "INSECURE session cookies: no Secure attribute, no __Host- prefix. For plain-http development only; never in production"
            );
        }
        let max_form_bytes = config.csrf.max_form_bytes.unwrap_or(DEFAULT_MAX_FORM_BYTES);
        Ok(SessionLayer {
            shared: Arc::new(Shared {
                manager,
                config,
                cookie,
                origin,
            }),
            max_form_bytes,
        })
    }

    /// Session administration (revoke a user's sessions, …) for use outside requests.
    pub fn control(&self) -> SessionControl {
        SessionControl(self.shared.clone())
    }

    /// The manager underneath.
    pub fn manager(&self) -> &SessionManager {
        &self.shared.manager
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`SessionLayer`] wraps around a router or route.
#[derive(Clone)]
pub struct SessionService<S> {
    inner: S,
    layer: SessionLayer,
}

impl<S> Service<Request> for SessionService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let shared = self.layer.shared.clone();
        let prepared = prepare(&shared, &req);
        if prepared.checked {
            // The CSRF checks come first and may read the body: the clone that was polled
            // ready handles the request once they pass.
            let clone = self.inner.clone();
            let inner = std::mem::replace(&mut self.inner, clone);
            let max_form_bytes = self.layer.max_form_bytes;
            // `checked`'s own future, not one wrapped in another: a wrapping `async` block
            // would keep the request and the session twice (its captures, and the inner
            // future's), beyond the allocator's fast size classes.
            return Box::pin(checked(shared, max_form_bytes, inner, req, prepared));
        }
        // Nothing to check before the handler: the service polled ready takes the request at
        // once, without a clone of it, and the future holds no CSRF state.
        let Prepared { session, head, .. } = prepared;
        let mut req = req;
        req.extensions_mut().insert(session.clone());
        let response = self.inner.call(req);
        Box::pin(async move {
            let Ok(response) = response.await;
            Ok(respond(&shared, &session, head.as_deref(), response, false).await)
        })
    }
}

/// What the layer works out from a request before any store call or handler runs.
struct Prepared {
    session: Session,
    /// Whether the CSRF checks apply (an unsafe method on a route that is not exempt).
    checked: bool,
    /// What a refusal responder is shown of the request (kept only when there is one: the
    /// request itself is gone by the time the handler's response comes back).
    /// Boxed, so that the request's future stays small when there is none.
    head: Option<Box<Head>>,
}

/// A request's method, URI and headers.
type Head = (Method, Uri, HeaderMap);

fn prepare(shared: &Arc<Shared>, req: &Request) -> Prepared {
    let cookie = match find_session_cookie(
        req.headers()
            .get_all(header::COOKIE)
            .iter()
            .map(HeaderValue::as_bytes),
        &shared.cookie.name,
    ) {
        CookieLookup::Token(t) => Some(t),
        CookieLookup::Absent => None,
        other => {
            metrics::cookie_refused(other.as_str());
            tracing::debug!(
                reason = other.as_str(),
                "session cookie refused before any store call"
            );
            None
        }
    };
    let fp = (shared.config.fingerprint.policy != FingerprintPolicy::Off)
        .then(|| fingerprint::of_request(req, shared.config.fingerprint.ip));
    let checked = is_unsafe(req.method()) && !is_exempt(&shared.config.csrf.exempt_routes, req);
    let head = shared.config.responder.as_ref().map(|_| {
        Box::new((
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        ))
    });
    Prepared {
        session: Session::new(shared.clone(), cookie, fp),
        checked,
        head,
    }
}

/// An unsafe request: the CSRF checks, then the handler.
async fn checked<S>(
    shared: Arc<Shared>,
    max_form_bytes: usize,
    mut inner: S,
    req: Request,
    prepared: Prepared,
) -> Result<Response, Infallible>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let Prepared { session, head, .. } = prepared;
    let mut req = match csrf_check(&shared, max_form_bytes, &session, req).await {
        Ok(r) => r,
        Err(refused) => {
            let mut refused = restyle(&shared, refused, head.as_deref());
            add_vary(refused.headers_mut());
            return Ok(refused);
        }
    };
    // The one extension the layer adds: the session (its `SessionControl` comes from it, so a
    // request allocates one extension box, not two).
    req.extensions_mut().insert(session.clone());
    let Ok(response) = inner.call(req).await;
    Ok(respond(&shared, &session, head.as_deref(), response, true).await)
}

/// After the handler: write the session's changes and set the cookie on the response.
async fn respond(
    shared: &Shared,
    session: &Session,
    head: Option<&Head>,
    mut response: Response,
    checked: bool,
) -> Response {
    let server_error = response.status().is_server_error();
    let outcome = match session.finish_unchanged(server_error) {
        Some(outcome) => outcome,
        // Boxed: the write's state would otherwise make every request's future larger (one
        // allocation per request, out of the allocator's fast size classes).
        None => Box::pin(session.finish(server_error)).await,
    };
    if let Some(err) = outcome.error {
        response = err.into_response();
    }
    // Refusals from the layer or from the handler's extractors, in the application's style.
    let mut response = restyle(shared, response, head);
    if let Some(set_cookie) = outcome.set_cookie {
        if let Ok(v) = HeaderValue::from_str(&set_cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
        // Shared caches must never keep a response that sets the session cookie.
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if checked {
        add_vary(response.headers_mut());
    }
    response
}

/// The responder's rendering of a refusal response, when the layer has a responder.
fn restyle(shared: &Shared, response: Response, head: Option<&Head>) -> Response {
    match (&shared.config.responder, head) {
        (Some(responder), Some((method, uri, headers))) => refusal::restyle(
            responder.as_ref(),
            response,
            &RefusalRequest {
                method,
                uri,
                headers,
            },
        ),
        _ => response,
    }
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

fn is_exempt(exempt: &[String], req: &Request) -> bool {
    if exempt.is_empty() {
        return false;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or_else(|| req.uri().path());
    exempt.iter().any(|e| e == route)
}

fn add_vary(headers: &mut HeaderMap) {
    headers.append(
        header::VARY,
        HeaderValue::from_static("Sec-Fetch-Site, Origin"),
    );
}

/// Every value of a header, raw: inline for the usual none or one (or two), so that the checks
/// of a request allocate nothing.
enum Values<'a> {
    Few(usize, [&'a [u8]; 2]),
    Many(Vec<&'a [u8]>),
}

impl<'a> std::ops::Deref for Values<'a> {
    type Target = [&'a [u8]];

    fn deref(&self) -> &Self::Target {
        match self {
            Values::Few(n, few) => &few[..*n],
            Values::Many(all) => all,
        }
    }
}

fn values<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Values<'a> {
    let mut all = headers.get_all(name).iter().map(HeaderValue::as_bytes);
    let mut few: [&[u8]; 2] = [&[], &[]];
    let mut n = 0;
    while let Some(v) = all.next() {
        if n == few.len() {
            let mut many = few.to_vec();
            many.push(v);
            many.extend(all);
            return Values::Many(many);
        }
        few[n] = v;
        n += 1;
    }
    Values::Few(n, few)
}

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const CSRF_HEADER_NAME: HeaderName = HeaderName::from_static(CSRF_HEADER);

/// The CSRF checks for an unsafe request. Hands the request back (its body rebuilt if it was
/// read for the form field) or the refusal response.
///
/// The session's handle (two SHA-256 runs) and user id are worked out only for a refusal, which
/// names them; a request that passes needs neither.
async fn csrf_check(
    shared: &Shared,
    max_form_bytes: usize,
    session: &Session,
    req: Request,
) -> Result<Request, Response> {
    let h = req.headers();
    if let Err(refusal) = csrf::check_origin(
        &values(h, &SEC_FETCH_SITE),
        &values(h, &header::ORIGIN),
        &values(h, &header::HOST),
        &shared.origin,
    ) {
        // The handle of the presented cookie, if any, correlates the refusal without a store call.
        let response = csrf_refusal(refusal, &req);
        let handle = session.cookie_handle();
        return Err(Box::pin(refuse(shared, refusal, handle, None, response)).await);
    }
    if !session.has_cookie() {
        // Anonymous: nothing to forge but the login itself, which the checks above cover.
        return Ok(req);
    }
    let secret = match session.authenticated_csrf_secret().await {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(req),
        Err(e) => return Err(e.into_response()),
    };
    // Whether the token presented verifies (`None`: none presented), checked where it lies —
    // in the header, or in the form body, which is then put back for the handler.
    let in_header = match &*values(req.headers(), &CSRF_HEADER_NAME) {
        [] => None,
        [one] => Some(csrf::verify_token(one, &secret)),
        // Several tokens: ambiguous, so invalid.
        _ => Some(false),
    };
    let (verified, req) = match in_header {
        Some(ok) => (Some(ok), req),
        None if is_urlencoded_form(req.headers()) => {
            let (parts, body) = req.into_parts();
            let bytes = match axum::body::to_bytes(body, max_form_bytes).await {
                Ok(b) => b,
                Err(_) => {
                    let refusal = SessionRefusal::new(
                        RefusalKind::TooLarge,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "form_too_large",
                        "the form body is larger than this server accepts",
                    );
                    return Err(refusal.default_response(&RefusalRequest {
                        method: &parts.method,
                        uri: &parts.uri,
                        headers: &parts.headers,
                    }));
                }
            };
            let ok = csrf::form_token(&bytes).map(|t| csrf::verify_token(t.as_bytes(), &secret));
            (ok, Request::from_parts(parts, Body::from(bytes)))
        }
        None => (None, req),
    };
    let refusal = match verified {
        None => Refusal::TokenMissing,
        Some(false) => Refusal::TokenInvalid,
        Some(true) => return Ok(req),
    };
    let (handle, user) = session.authenticated_subject().await;
    let response = csrf_refusal(refusal, &req);
    Err(Box::pin(refuse(shared, refusal, handle, user.as_deref(), response)).await)
}

fn is_urlencoded_form(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The library's rendering of a CSRF refusal of `req`.
fn csrf_refusal(refusal: Refusal, req: &Request) -> Response {
    SessionRefusal::csrf(refusal).default_response(&RefusalRequest {
        method: req.method(),
        uri: req.uri(),
        headers: req.headers(),
    })
}

/// Count, audit and log a CSRF refusal; hands back its `response`.
async fn refuse(
    shared: &Shared,
    refusal: Refusal,
    handle: Option<Handle>,
    user: Option<&str>,
    response: Response,
) -> Response {
    metrics::csrf_refusal(refusal.code());
    let mut event = AuditEvent::new(AuditKind::CsrfRefused)
        .user(user)
        .detail(refusal.code());
    if let Some(h) = handle {
        event = event.handle(h);
    }
    shared.audit(event).await;
    tracing::info!(
        reason = refusal.code(),
        "unsafe request refused by CSRF defences"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use ratatoskr_core::{ManagerConfig, MemoryStore};

    fn service() -> SessionService<Router> {
        let manager =
            SessionManager::new(Arc::new(MemoryStore::default()), ManagerConfig::default());
        let layer = SessionLayer::new(manager, SessionConfig::default()).expect("valid config");
        layer.layer(Router::new().route("/", get(|| async { "x" }).post(|| async { "y" })))
    }

    /// The future of a request is one allocation per request: a read's stays small (no CSRF
    /// state, no write state inline), so that it comes from the allocator's fast size classes.
    #[tokio::test]
    async fn a_reads_future_is_small_and_answers() {
        let mut svc = service();
        let read = svc.call(Request::get("/").body(Body::empty()).unwrap());
        let size = std::mem::size_of_val(&*read);
        assert!(size <= 1024, "a read's future is {size} bytes");
        let write = svc.call(
            Request::post("/")
                .header("sec-fetch-site", "cross-site")
                .body(Body::empty())
                .unwrap(),
        );
        // The checked request's future is `checked`'s own (wrapped in a block it held the
        // request and the session twice: 2.5 KiB), and the rare paths (a refusal's audit; in a
        // load, the audit of a miss and a fingerprint mismatch) are boxed apart.
        let checked_size = std::mem::size_of_val(&*write);
        assert!(
            checked_size <= 1800,
            "a checked request's future is {checked_size} bytes"
        );
        assert!(
            size < std::mem::size_of_val(&*write),
            "the checked request's future holds more"
        );
        assert_eq!(read.await.unwrap().status(), StatusCode::OK);
        // A cross-site unsafe request is refused by the CSRF checks.
        assert_eq!(write.await.unwrap().status(), StatusCode::FORBIDDEN);
    }
}
