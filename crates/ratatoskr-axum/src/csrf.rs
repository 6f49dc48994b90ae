//! Cross-site request forgery defences: a masked synchronizer token and Fetch-Metadata / Origin
//! checks. The functions here are pure; the layer applies them (see the crate documentation for
//! the order) and the fuzz target calls [`verify_token`] directly.
//!
//! **The token.** Each session has a 16-byte secret derived from its session token
//! ([`Token::csrf_secret`](ratatoskr_core::Token::csrf_secret)): no store holds it, and every
//! rotation (login included) gives a new token and so a new secret. A response never carries
//! the secret itself but
//! `base64url(pad || pad XOR secret)` with a fresh 16-byte one-time pad, so the token differs in
//! every response and a compression oracle (BREACH) learns nothing from repeated responses.
//! Every masked form of the current secret verifies; the comparison is constant time.
//!
//! **Fetch Metadata and Origin** (OWASP CSRF cheat sheet, Go's `CrossOriginProtection`): an
//! unsafe request is refused when `Sec-Fetch-Site` is `cross-site` (or `same-site` unless
//! allowed), or when `Origin` is present and is neither the app's origin nor a trusted one. A
//! trusted `Origin` passes both checks. Requests with neither header come from non-browser
//! clients, which cannot be made to send cookies by a third-party page, and need only the token.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use ratatoskr_core::token::random_bytes;

/// Why an unsafe request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The session is authenticated and the request carried no token.
    TokenMissing,
    /// The token does not belong to this session (or is not a token at all).
    TokenInvalid,
    /// `Sec-Fetch-Site` says another site made the request.
    CrossSite,
    /// `Origin` is neither the app's origin nor a trusted one.
    OriginMismatch,
}

impl Refusal {
    /// The stable snake_case code used in the JSON body, metrics and the audit trail.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::TokenMissing => "csrf_token_missing",
            Refusal::TokenInvalid => "csrf_token_invalid",
            Refusal::CrossSite => "cross_site_request",
            Refusal::OriginMismatch => "origin_mismatch",
        }
    }

    /// A sentence for people.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::TokenMissing => {
                "this request changes state and needs the CSRF token (header X-CSRF-Token or form field csrf_token)"
            }
            Refusal::TokenInvalid => "the CSRF token does not belong to this session",
            Refusal::CrossSite => "requests from other sites may not change state here",
            Refusal::OriginMismatch => "the request's Origin is not this application",
        }
    }
}

/// Length of a masked token in characters: 32 bytes in unpadded base64url.
pub const MASKED_TOKEN_CHARS: usize = 43;

/// Mask `secret` with a fresh one-time pad: a different token every call, all of them valid.
pub fn mask_token(secret: &[u8; 16]) -> String {
    let pad: [u8; 16] = random_bytes();
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&pad);
    for i in 0..16 {
        out[16 + i] = pad[i] ^ secret[i];
    }
    URL_SAFE_NO_PAD.encode(out)
}

/// Whether `presented` is a masked form of `secret`. Constant time in the secret; anything that
/// is not 43 base64url characters is simply invalid.
pub fn verify_token(presented: &[u8], secret: &[u8; 16]) -> bool {
    if presented.len() != MASKED_TOKEN_CHARS {
        return false;
    }
    let mut raw = [0u8; 32];
    match URL_SAFE_NO_PAD.decode_slice(presented, &mut raw) {
        Ok(32) => {}
        _ => return false,
    }
    let mut unmasked = [0u8; 16];
    for i in 0..16 {
        unmasked[i] = raw[i] ^ raw[16 + i];
    }
    unmasked.ct_eq(secret).into()
}

/// What the origin checks need to know about the deployment.
#[derive(Clone, Debug, Default)]
pub struct OriginPolicy {
    /// The app's own origin (`https://app.example`), lowercase; compared whole, scheme
    /// included. `None`: compare `Origin`'s host with the request's `Host` header instead
    /// (right unless a proxy rewrites `Host`), and its scheme with the one the session cookie
    /// works under: `https`, or `http` only for a loopback host (`localhost`, `*.localhost`,
    /// `127.0.0.0/8`, `[::1]`), which browsers treat as a secure context. So a page served
    /// over plain `http://app.example` (a network attacker can write those) cannot post to
    /// `https://app.example`. Serving plain HTTP on another host (the insecure development
    /// cookie) needs this set to that `http://` origin.
    pub own_origin: Option<String>,
    /// Other origins allowed to make unsafe requests, lowercase, no trailing slash.
    pub trusted_origins: Vec<String>,
    /// Accept `Sec-Fetch-Site: same-site` (a sibling subdomain). Its `Origin` must still be the
    /// app's own or a trusted one.
    pub allow_same_site: bool,
}

/// Check `Sec-Fetch-Site` and `Origin` for an unsafe request. Each argument is every value of
/// that header, raw; a header sent twice with different values is treated as hostile.
pub fn check_origin<'a>(
    sec_fetch_site: &[&'a [u8]],
    origin: &[&'a [u8]],
    host: &[&'a [u8]],
    policy: &OriginPolicy,
) -> Result<(), Refusal> {
    let origin = match single(origin) {
        Single::None => None,
        Single::One(o) => Some(o),
        Single::Conflict => return Err(Refusal::OriginMismatch),
    };
    if let Some(o) = origin
        && policy
            .trusted_origins
            .iter()
            .any(|t| t.as_bytes().eq_ignore_ascii_case(o))
    {
        return Ok(());
    }
    match single(sec_fetch_site) {
        Single::None => {}
        Single::One(v)
            if v.eq_ignore_ascii_case(b"same-origin") || v.eq_ignore_ascii_case(b"none") => {}
        Single::One(v) if v.eq_ignore_ascii_case(b"same-site") && policy.allow_same_site => {}
        // cross-site, same-site when not allowed, and values no browser sends.
        Single::One(_) | Single::Conflict => return Err(Refusal::CrossSite),
    }
    let Some(o) = origin else {
        return Ok(());
    };
    let own = match &policy.own_origin {
        Some(own) => own.as_bytes().eq_ignore_ascii_case(o),
        None => match (origin_scheme(o), origin_authority(o), single(host)) {
            (Some(scheme), Some(authority), Single::One(h)) => {
                authority.eq_ignore_ascii_case(h)
                    && (scheme.eq_ignore_ascii_case(b"https")
                        || (scheme.eq_ignore_ascii_case(b"http") && is_loopback_authority(h)))
            }
            _ => false,
        },
    };
    if own {
        Ok(())
    } else {
        Err(Refusal::OriginMismatch)
    }
}

enum Single<'a> {
    None,
    One(&'a [u8]),
    Conflict,
}

fn single<'a>(values: &[&'a [u8]]) -> Single<'a> {
    match values {
        [] => Single::None,
        [first, rest @ ..] if rest.iter().all(|v| v == first) => Single::One(first),
        _ => Single::Conflict,
    }
}

/// The `host[:port]` of a serialized origin `scheme://host[:port]`; `None` for `null` or
/// anything with a path, query or userinfo.
pub fn origin_authority(origin: &[u8]) -> Option<&[u8]> {
    let pos = origin.windows(3).position(|w| w == b"://")?;
    let scheme = &origin[..pos];
    if scheme.is_empty() || !scheme.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    let authority = &origin[pos + 3..];
    if authority.is_empty()
        || authority
            .iter()
            .any(|&b| matches!(b, b'/' | b'?' | b'#' | b'@') || !b.is_ascii_graphic())
    {
        return None;
    }
    Some(authority)
}

/// The scheme of a serialized origin `scheme://…` (`None` for `null` and non-origins).
pub fn origin_scheme(origin: &[u8]) -> Option<&[u8]> {
    origin_authority(origin)?;
    let pos = origin.windows(3).position(|w| w == b"://")?;
    Some(&origin[..pos])
}

/// Whether a `host[:port]` names this machine: `localhost` or a `*.localhost` name, an IPv4
/// address in `127.0.0.0/8`, or `[::1]`. Browsers treat `http://` on these as secure contexts
/// (and accept `Secure`, `__Host-` cookies from them).
pub fn is_loopback_authority(authority: &[u8]) -> bool {
    let Ok(authority) = std::str::from_utf8(authority) else {
        return false;
    };
    let host = if let Some(rest) = authority.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, port)) if port.is_empty() || port.starts_with(':') => h,
            _ => return false,
        }
    } else {
        authority.split(':').next().unwrap_or("")
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

/// The `csrf_token` field of an `application/x-www-form-urlencoded` body, if present.
pub fn form_token(body: &[u8]) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "csrf_token")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_tokens_differ_and_all_verify() {
        let secret: [u8; 16] = random_bytes();
        let a = mask_token(&secret);
        let b = mask_token(&secret);
        assert_ne!(a, b);
        assert_eq!(a.len(), MASKED_TOKEN_CHARS);
        assert!(verify_token(a.as_bytes(), &secret));
        assert!(verify_token(b.as_bytes(), &secret));
        let other: [u8; 16] = random_bytes();
        assert!(!verify_token(a.as_bytes(), &other));
        assert!(!verify_token(b"", &secret));
        assert!(!verify_token(&a.as_bytes()[..42], &secret));
        assert!(!verify_token("é".repeat(22).as_bytes(), &secret));
    }

    #[test]
    fn a_flipped_bit_anywhere_is_invalid() {
        let secret: [u8; 16] = random_bytes();
        let token = mask_token(&secret);
        let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..raw.len() {
            raw[i] ^= 1;
            assert!(!verify_token(
                URL_SAFE_NO_PAD.encode(&raw).as_bytes(),
                &secret
            ));
            raw[i] ^= 1;
        }
    }

    fn policy() -> OriginPolicy {
        OriginPolicy {
            own_origin: None,
            trusted_origins: vec!["https://partner.example".into()],
            allow_same_site: false,
        }
    }

    #[test]
    fn origin_rules() {
        let p = policy();
        let host: &[&[u8]] = &[b"app.example"];
        assert_eq!(check_origin(&[], &[], host, &p), Ok(()));
        assert_eq!(
            check_origin(&[b"same-origin"], &[b"https://app.example"], host, &p),
            Ok(())
        );
        assert_eq!(
            check_origin(&[b"cross-site"], &[b"https://evil.example"], host, &p),
            Err(Refusal::CrossSite)
        );
        assert_eq!(
            check_origin(&[b"same-site"], &[], host, &p),
            Err(Refusal::CrossSite)
        );
        assert_eq!(
            check_origin(&[], &[b"https://evil.example"], host, &p),
            Err(Refusal::OriginMismatch)
        );
        assert_eq!(
            check_origin(&[], &[b"null"], host, &p),
            Err(Refusal::OriginMismatch)
        );
        assert_eq!(
            check_origin(&[b"cross-site"], &[b"https://partner.example"], host, &p),
            Ok(())
        );
        assert_eq!(
            check_origin(
                &[],
                &[b"https://app.example", b"https://evil.example"],
                host,
                &p
            ),
            Err(Refusal::OriginMismatch)
        );
        let same_site = OriginPolicy {
            allow_same_site: true,
            ..policy()
        };
        assert_eq!(
            check_origin(&[b"same-site"], &[b"https://app.example"], host, &same_site),
            Ok(())
        );
        let fixed = OriginPolicy {
            own_origin: Some("https://app.example".into()),
            ..policy()
        };
        assert_eq!(
            check_origin(&[], &[b"http://app.example"], host, &fixed),
            Err(Refusal::OriginMismatch)
        );
    }

    #[test]
    fn without_an_own_origin_the_scheme_must_be_https_or_loopback_http() {
        let p = policy();
        let app: &[&[u8]] = &[b"app.example"];
        assert_eq!(
            check_origin(&[], &[b"https://app.example"], app, &p),
            Ok(())
        );
        // Same host, plain HTTP: a page a network attacker can write.
        assert_eq!(
            check_origin(&[b"same-origin"], &[b"http://app.example"], app, &p),
            Err(Refusal::OriginMismatch)
        );
        assert_eq!(
            check_origin(&[], &[b"ws://app.example"], app, &p),
            Err(Refusal::OriginMismatch)
        );
        for host in [
            &b"127.0.0.1:8080"[..],
            b"localhost:8080",
            b"LOCALHOST",
            b"dev.localhost:3000",
            b"[::1]:8080",
            b"127.1.2.3",
        ] {
            let mut origin = b"http://".to_vec();
            origin.extend_from_slice(host);
            assert_eq!(
                check_origin(&[], &[&origin], &[host], &p),
                Ok(()),
                "{host:?}"
            );
        }
        for host in [&b"192.168.1.5:8080"[..], b"localhost.example", b"[::2]:80"] {
            let mut origin = b"http://".to_vec();
            origin.extend_from_slice(host);
            assert_eq!(
                check_origin(&[], &[&origin], &[host], &p),
                Err(Refusal::OriginMismatch),
                "{host:?}"
            );
        }
        assert_eq!(origin_scheme(b"https://a.example"), Some(&b"https"[..]));
        assert_eq!(origin_scheme(b"null"), None);
    }

    #[test]
    fn form_field_is_found_and_decoded() {
        assert_eq!(
            form_token(b"a=1&csrf_token=abc%2Dd&b=2").as_deref(),
            Some("abc-d")
        );
        assert_eq!(form_token(b"a=1"), None);
    }
}
