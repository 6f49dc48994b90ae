//! Fuzz the exact functions the session layer runs on untrusted request bytes: the session
//! cookie lookup over (possibly several) `Cookie` headers, token parsing, masked CSRF token
//! verification, the urlencoded `csrf_token` field, and the Origin / Sec-Fetch-Site decision.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ratatoskr_axum::cookie::{CookieLookup, find_session_cookie};
use ratatoskr_axum::csrf;
use ratatoskr_core::Token;

const NAME: &str = "__Host-ratatoskr";

fuzz_target!(|data: &[u8]| {
    // NUL separates "header values", like a request with duplicated Cookie headers.
    let headers: Vec<&[u8]> = data.split(|&b| b == 0).take(8).collect();
    if let CookieLookup::Token(token) = find_session_cookie(headers.iter().copied(), NAME) {
        // Anything accepted is a real token that spells back to bytes in the input.
        let value = token.as_cookie_value();
        assert!(data.windows(value.len()).any(|w| w == value.as_bytes()));
        assert_eq!(Token::parse(&value).as_ref(), Ok(&token));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Token::parse(text);
    }
    let secret = [0x5a; 16];
    if csrf::verify_token(data, &secret) {
        assert_eq!(data.len(), csrf::MASKED_TOKEN_CHARS);
    }
    let _ = csrf::form_token(data);
    let _ = csrf::origin_authority(data);
    let policy = csrf::OriginPolicy {
        own_origin: None,
        trusted_origins: vec!["https://partner.example".into()],
        allow_same_site: false,
    };
    let (a, b) = data.split_at(data.len() / 2);
    let _ = csrf::check_origin(&[a], &[b], &[b"app.example"], &policy);
    let _ = csrf::check_origin(&headers[..headers.len().min(2)], &[a], &[b], &policy);
});
