//! Configuration of the session layer. Every default is the secure one.

use std::sync::Arc;

use ratatoskr_core::AuditSink;
use ratatoskr_core::audit::TracingAudit;

use crate::cookie::CookieSpec;
use crate::csrf::OriginPolicy;
use crate::refusal::RefusalResponder;

/// The default cookie name.
pub const DEFAULT_COOKIE_NAME: &str = "__Host-ratatoskr";

/// The cookie name used by [`CookieConfig::dangerously_insecure_for_plain_http_development`].
pub const INSECURE_DEV_COOKIE_NAME: &str = "ratatoskr-insecure-dev";

/// Longest cookie name + value allowed (ASVS 3.3.5: a cookie's name and value ≤ 4096 bytes).
pub const MAX_COOKIE_BYTES: usize = 4096;

/// `SameSite` values the layer will send. `None` is deliberately absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent on top-level navigations from other sites, not on their subrequests or form posts.
    #[default]
    Lax,
    /// Never sent on requests another site starts.
    Strict,
}

/// How the session cookie looks.
#[derive(Clone, Debug)]
pub struct CookieConfig {
    /// The cookie name. Default `__Host-ratatoskr`.
    pub name: String,
    /// `SameSite`. Default `Lax`.
    pub same_site: SameSite,
    /// Whether cookies are persistent by default (`Max-Age` up to the absolute deadline) rather
    /// than browser-session cookies. Default `false`; a handler can opt a session in with
    /// [`Session::set_remember_me`](crate::Session::set_remember_me).
    pub persistent: bool,
    insecure: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: DEFAULT_COOKIE_NAME.to_owned(),
            same_site: SameSite::Lax,
            persistent: false,
            insecure: false,
        }
    }
}

impl CookieConfig {
    /// Drop the `Secure` attribute and the `__Host-` prefix so the cookie works over plain
    /// `http://` on another host than `localhost`. **Never in production**: the cookie is then
    /// sent in clear text and can be overwritten by sibling subdomains.
    ///
    /// You rarely need this: browsers treat `http://localhost` (and `127.0.0.1`) as a secure
    /// context and accept `Secure` and `__Host-` cookies from it (Chromium and Firefox do), so
    /// local development on localhost keeps the defaults.
    pub fn dangerously_insecure_for_plain_http_development(mut self) -> Self {
        self.insecure = true;
        if self.name == DEFAULT_COOKIE_NAME {
            self.name = INSECURE_DEV_COOKIE_NAME.to_owned();
        }
        self
    }

    /// Whether the insecure development mode is on.
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }
}

/// CSRF settings.
#[derive(Clone, Debug, Default)]
pub struct CsrfConfig {
    /// The app's public origin, e.g. `https://app.example`. Unset: an `Origin` must match the
    /// request's `Host` header. Set it when a proxy rewrites `Host`.
    pub own_origin: Option<String>,
    /// Other origins trusted to make unsafe requests (exact `scheme://host[:port]`).
    pub trusted_origins: Vec<String>,
    /// Accept `Sec-Fetch-Site: same-site`. Default `false`.
    pub allow_same_site: bool,
    /// Route patterns exempt from every CSRF check, written as they are registered with axum
    /// (`"/hooks/{provider}"`). Matched exactly against axum's `MatchedPath` when the layer is
    /// added with `Router::layer`, else against the request path.
    pub exempt_routes: Vec<String>,
    /// Largest urlencoded form body buffered to find the `csrf_token` field. Default 64 KiB.
    pub max_form_bytes: Option<usize>,
}

impl CsrfConfig {
    /// Builder: exempt a route pattern (webhooks signed by other means, for example).
    pub fn exempt(mut self, route: impl Into<String>) -> Self {
        self.exempt_routes.push(route.into());
        self
    }

    /// Builder: trust an origin.
    pub fn trust_origin(mut self, origin: impl Into<String>) -> Self {
        self.trusted_origins.push(origin.into());
        self
    }
}

/// What to do when a request's fingerprint differs from the session's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FingerprintPolicy {
    /// Record nothing and compare nothing.
    #[default]
    Off,
    /// Record at creation; on mismatch, audit and carry on.
    Log,
    /// Record at creation; on mismatch, audit, destroy the session and treat the request as
    /// anonymous.
    Revoke,
}

/// Whether the client's IP address (a prefix of it) is part of the fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IpBinding {
    /// User-Agent only. Mobile clients change addresses all the time.
    #[default]
    Off,
    /// User-Agent plus the first `v4` bits of an IPv4 address or `v6` bits of an IPv6 one
    /// (usually 24 and 64).
    Prefix {
        /// IPv4 prefix length (0–32).
        v4: u8,
        /// IPv6 prefix length (0–128).
        v6: u8,
    },
}

/// Fingerprint binding.
#[derive(Clone, Copy, Debug, Default)]
pub struct FingerprintConfig {
    /// The policy. Default `Off`.
    pub policy: FingerprintPolicy,
    /// Whether an IP prefix is included. Default `Off`.
    pub ip: IpBinding,
}

/// Everything the layer needs besides the [`SessionManager`](ratatoskr_core::SessionManager).
#[derive(Clone)]
pub struct SessionConfig {
    /// The cookie.
    pub cookie: CookieConfig,
    /// CSRF defences.
    pub csrf: CsrfConfig,
    /// Fingerprint binding.
    pub fingerprint: FingerprintConfig,
    /// Where lifecycle events go. Default: the `tracing` log.
    pub audit: Arc<dyn AuditSink>,
    /// How refusals (CSRF 403, 401, store unavailable 503, …) are rendered. Default `None`:
    /// the library's JSON errors, and a minimal HTML page for browsers' refused form posts.
    pub responder: Option<Arc<dyn RefusalResponder>>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            cookie: CookieConfig::default(),
            csrf: CsrfConfig::default(),
            fingerprint: FingerprintConfig::default(),
            audit: Arc::new(TracingAudit),
            responder: None,
        }
    }
}

impl std::fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionConfig")
            .field("cookie", &self.cookie)
            .field("csrf", &self.csrf)
            .field("fingerprint", &self.fingerprint)
            .field("responder", &self.responder.is_some())
            .finish_non_exhaustive()
    }
}

impl SessionConfig {
    /// Builder: the audit sink.
    pub fn with_audit(mut self, audit: Arc<dyn AuditSink>) -> Self {
        self.audit = audit;
        self
    }

    /// Builder: render refusals with `responder` (see [`crate::refusal`]); whatever it declines
    /// keeps the library's default.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use axum::response::{Html, IntoResponse};
    /// use ratatoskr_axum::{RefusalKind, RefusalRequest, SessionConfig, SessionRefusal};
    ///
    /// let config = SessionConfig::default().with_responder(Arc::new(
    ///     |refusal: &SessionRefusal, request: &RefusalRequest<'_>| {
    ///         matches!(refusal.kind(), RefusalKind::Csrf(_))
    ///             .then(|| (refusal.status(), Html("<h1>Please reload the page</h1>")).into_response())
    ///     },
    /// ));
    /// # let _ = config;
    /// ```
    pub fn with_responder(mut self, responder: Arc<dyn RefusalResponder>) -> Self {
        self.responder = Some(responder);
        self
    }

    /// Builder: the CSRF settings.
    pub fn with_csrf(mut self, csrf: CsrfConfig) -> Self {
        self.csrf = csrf;
        self
    }

    /// Builder: the fingerprint settings.
    pub fn with_fingerprint(mut self, policy: FingerprintPolicy, ip: IpBinding) -> Self {
        self.fingerprint = FingerprintConfig { policy, ip };
        self
    }

    /// Builder: the cookie settings.
    pub fn with_cookie(mut self, cookie: CookieConfig) -> Self {
        self.cookie = cookie;
        self
    }

    pub(crate) fn cookie_spec(&self) -> Result<CookieSpec, ConfigError> {
        let c = &self.cookie;
        let token_chars = ratatoskr_core::token::TOKEN_CHARS;
        if c.name.is_empty() || !c.name.bytes().all(is_cookie_name_char) {
            return Err(ConfigError::CookieName(c.name.clone()));
        }
        if c.name.len() + 1 + token_chars > MAX_COOKIE_BYTES {
            return Err(ConfigError::CookieTooLarge(c.name.len() + 1 + token_chars));
        }
        let prefixed = c.name.starts_with("__Host-") || c.name.starts_with("__Secure-");
        if c.insecure && prefixed {
            return Err(ConfigError::PrefixNeedsSecure(c.name.clone()));
        }
        if !c.insecure && !c.name.starts_with("__Host-") {
            return Err(ConfigError::HostPrefixRequired(c.name.clone()));
        }
        let same_site = match c.same_site {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        };
        let secure = if c.insecure { "" } else { "; Secure" };
        Ok(CookieSpec {
            name: c.name.clone(),
            attrs: format!("; Path=/{secure}; HttpOnly; SameSite={same_site}"),
        })
    }

    pub(crate) fn origin_policy(&self) -> Result<OriginPolicy, ConfigError> {
        let norm = |o: &str| -> Result<String, ConfigError> {
            let o = o.trim_end_matches('/').to_ascii_lowercase();
            match crate::csrf::origin_authority(o.as_bytes()) {
                Some(_) => Ok(o),
                None => Err(ConfigError::Origin(o)),
            }
        };
        Ok(OriginPolicy {
            own_origin: self.csrf.own_origin.as_deref().map(norm).transpose()?,
            trusted_origins: self
                .csrf
                .trusted_origins
                .iter()
                .map(|o| norm(o))
                .collect::<Result<_, _>>()?,
            allow_same_site: self.csrf.allow_same_site,
        })
    }
}

fn is_cookie_name_char(b: u8) -> bool {
    // RFC 6265 token: visible ASCII except separators.
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

/// A configuration the layer refuses to run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The cookie name is empty or has characters a cookie name cannot have.
    #[error("{0:?} is not a valid cookie name")]
    CookieName(String),
    /// Name and value would exceed 4096 bytes.
    #[error("the session cookie would be {0} bytes, over the 4096-byte limit")]
    CookieTooLarge(usize),
    /// A secure cookie must use the `__Host-` prefix.
    #[error(
        "the session cookie {0:?} must start with __Host- (or use CookieConfig::dangerously_insecure_for_plain_http_development)"
    )]
    HostPrefixRequired(String),
    /// `__Host-`/`__Secure-` cookies without `Secure` are rejected by browsers.
    #[error("the cookie {0:?} has a __Host-/__Secure- prefix, which needs the Secure attribute")]
    PrefixNeedsSecure(String),
    /// An origin in the CSRF configuration is not `scheme://host[:port]`.
    #[error("{0:?} is not an origin (scheme://host[:port])")]
    Origin(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_insecure_development_mode_is_off_unless_asked_for_and_says_so() {
        let secure = CookieConfig::default();
        assert!(!secure.is_insecure());
        let insecure = CookieConfig::default().dangerously_insecure_for_plain_http_development();
        assert!(insecure.is_insecure());
        assert_ne!(
            insecure.name, secure.name,
            "the __Host- name is dropped with it"
        );
    }
}
