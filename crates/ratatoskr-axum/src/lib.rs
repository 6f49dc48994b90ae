//! # ratatoskr-axum
//!
//! Server-side sessions for axum: a tower [`SessionLayer`], extractors ([`Session`],
//! [`AuthUser`], [`CsrfToken`], [`SessionControl`]), a `__Host-` cookie, CSRF defences,
//! fingerprint binding and an audit trail, on top of [`ratatoskr_core::SessionManager`] and any
//! store.
//!
//! ## Wiring
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::{get, post}};
//! use ratatoskr_axum::{AuthUser, CsrfConfig, Session, SessionConfig, SessionError, SessionLayer};
//! use ratatoskr_core::{ManagerConfig, MemoryStore, SessionManager, audit::MemoryAudit};
//!
//! async fn login(session: Session) -> Result<(), SessionError> {
//!     // … check the credentials, then:
//!     session.login("alice").await
//! }
//! async fn me(user: AuthUser) -> String { user.user_id }
//!
//! let manager = SessionManager::new(Arc::new(MemoryStore::default()), ManagerConfig::default());
//! let config = SessionConfig::default()
//!     .with_audit(Arc::new(MemoryAudit::default()))
//!     .with_csrf(CsrfConfig::default().exempt("/hooks/{provider}"));
//! let layer = SessionLayer::new(manager, config).expect("valid config");
//! let app: Router = Router::new()
//!     .route("/login", post(login))
//!     .route("/me", get(me))
//!     .layer(layer);
//! ```
//!
//! ## What happens to a request
//! 1. The `Cookie` headers are searched for the session cookie by a pure function
//!    ([`cookie::find_session_cookie`]); a value that is not a well-formed token, or two
//!    different session cookies, make the request anonymous without any store call.
//! 2. Unsafe methods (everything but GET, HEAD, OPTIONS, TRACE), unless their route is exempt:
//!    `Sec-Fetch-Site` and `Origin` are checked (anonymous requests too: login CSRF); then, when
//!    the cookie names an **authenticated** session, a masked CSRF token is required in
//!    `X-CSRF-Token` or, for urlencoded forms, the `csrf_token` field (the body is buffered up to
//!    a bound and handed on). Refusals are 403 with a reason, counted and audited.
//! 3. The handler runs. The session is loaded on first use only; a handler that never touches
//!    it costs no store call. A cookie naming no live session is not adopted (strict mode).
//! 4. Unless the response is a 5xx, changed attributes are written as one delta; a session is
//!    created only then (cookieless requests that write nothing create nothing). A store
//!    failure replaces the response with a JSON 503.
//! 5. A new, rotated or removed cookie is set with `Cache-Control: no-store`.
//!
//! Refusals (steps 2 and 4, and the extractors' 401s) carry a [`SessionRefusal`] in the
//! response extensions; a [`RefusalResponder`] given to
//! [`SessionConfig::with_responder`] renders them the application's way ([`refusal`]).
//!
//! Metrics are listed in the [`metrics`] module; the security mapping to
//! OWASP ASVS is in `docs/security.md`.
#![warn(missing_docs)]

pub mod config;
pub mod control;
pub mod cookie;
pub mod csrf;
mod error;
pub mod extract;
pub mod fingerprint;
mod layer;
pub mod metrics;
pub mod refusal;
mod revocation;
mod session;
mod shared;

pub use config::{
    ConfigError, CookieConfig, CsrfConfig, FingerprintConfig, FingerprintPolicy, IpBinding,
    SameSite, SessionConfig,
};
pub use control::{RevokeReason, SessionControl};
pub use error::{SessionError, json_error};
pub use extract::{AuthUser, CsrfToken};
pub use fingerprint::ClientIp;
pub use layer::{CSRF_FORM_FIELD, CSRF_HEADER, SessionLayer, SessionService};
pub use refusal::{RefusalKind, RefusalRequest, RefusalResponder, SessionRefusal};
pub use session::{REMEMBER_ATTR, Session, SessionInfo, SessionValue};
