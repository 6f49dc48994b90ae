//! The CSRF rules as pure functions (`ratatoskr_axum::csrf`), one rule per test, each at its
//! boundary: what the masked token is made of, which `Sec-Fetch-Site` and `Origin` values pass,
//! what counts as an origin and as a loopback host. The HTTP-level behaviour is in `csrf.rs`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ratatoskr_axum::csrf::{
    MASKED_TOKEN_CHARS, OriginPolicy, Refusal, check_origin, form_token, is_loopback_authority,
    mask_token, origin_authority, origin_scheme, verify_token,
};

const SECRET: [u8; 16] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
];

/// The 32 bytes behind a masked token.
fn raw(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(token).expect("base64url")
}

/// A masked token from a chosen pad: `pad || pad XOR secret`.
fn masked_with(pad: [u8; 16], secret: &[u8; 16]) -> String {
    let mut out = pad.to_vec();
    out.extend(pad.iter().zip(secret).map(|(p, s)| p ^ s));
    URL_SAFE_NO_PAD.encode(out)
}

#[test]
fn a_masked_token_is_a_fresh_pad_followed_by_the_pad_xor_the_secret() {
    for _ in 0..50 {
        let token = mask_token(&SECRET);
        assert_eq!(token.len(), MASKED_TOKEN_CHARS);
        let bytes = raw(&token);
        assert_eq!(bytes.len(), 32);
        let unmasked: Vec<u8> = (0..16).map(|i| bytes[i] ^ bytes[16 + i]).collect();
        assert_eq!(unmasked, SECRET, "{token}");
    }
    // The pad is random: the token never spells the secret in the clear.
    let token = mask_token(&SECRET);
    assert_ne!(&raw(&token)[16..], &SECRET[..]);
    assert_ne!(mask_token(&SECRET), mask_token(&SECRET));
}

#[test]
fn any_pad_verifies_and_nothing_else_does() {
    for pad in [[0u8; 16], [0xff; 16], SECRET, [0x5a; 16]] {
        assert!(verify_token(masked_with(pad, &SECRET).as_bytes(), &SECRET));
    }
    // A zero pad shows the secret itself in the second half; a pad of the secret, zeros.
    assert!(verify_token(
        masked_with([0; 16], &[0; 16]).as_bytes(),
        &[0; 16]
    ));
    // The secret's bytes in the wrong order, or the halves swapped with a different secret.
    let mut rotated = SECRET;
    rotated.rotate_left(1);
    assert!(!verify_token(
        masked_with([7; 16], &rotated).as_bytes(),
        &SECRET
    ));
    // Each byte of the secret counts.
    for i in 0..16 {
        let mut other = SECRET;
        other[i] ^= 0x80;
        assert!(
            !verify_token(masked_with([9; 16], &other).as_bytes(), &SECRET),
            "byte {i}"
        );
    }
}

#[test]
fn only_43_base64url_characters_of_32_bytes_are_considered() {
    let good = masked_with([1; 16], &SECRET);
    assert!(verify_token(good.as_bytes(), &SECRET));
    assert!(!verify_token(format!("{good}A").as_bytes(), &SECRET));
    assert!(!verify_token(&good.as_bytes()[..42], &SECRET));
    assert!(!verify_token(b"", &SECRET));
    // Padding, or characters outside base64url, are refused.
    assert!(!verify_token(
        format!("{}=", &good[..42]).as_bytes(),
        &SECRET
    ));
    let mut bad = good.into_bytes();
    bad[10] = b'+';
    assert!(!verify_token(&bad, &SECRET));
}

#[test]
fn refusals_have_stable_codes_and_distinct_messages() {
    let all = [
        Refusal::TokenMissing,
        Refusal::TokenInvalid,
        Refusal::CrossSite,
        Refusal::OriginMismatch,
    ];
    let codes: Vec<&str> = all.iter().map(|r| r.code()).collect();
    assert_eq!(
        codes,
        [
            "csrf_token_missing",
            "csrf_token_invalid",
            "cross_site_request",
            "origin_mismatch"
        ]
    );
    let keywords = ["CSRF token", "CSRF token", "other sites", "Origin"];
    for (r, keyword) in all.iter().zip(keywords) {
        let m = r.message();
        assert!(m.contains(keyword), "{r:?}: {m}");
        assert!(m.len() > 20, "{r:?}: a sentence, not {m:?}");
    }
    let mut messages: Vec<&str> = all.iter().map(|r| r.message()).collect();
    messages.sort();
    messages.dedup();
    assert_eq!(messages.len(), 4);
}

fn policy() -> OriginPolicy {
    OriginPolicy {
        own_origin: None,
        trusted_origins: vec!["https://partner.example".into()],
        allow_same_site: false,
    }
}

const HOST: &[&[u8]] = &[b"app.example"];
const OWN: &[u8] = b"https://app.example";

#[test]
fn sec_fetch_site_same_origin_and_none_pass_everything_else_is_cross_site() {
    let p = policy();
    for ok in [&b"same-origin"[..], b"none", b"SAME-ORIGIN", b"None"] {
        assert_eq!(check_origin(&[ok], &[OWN], HOST, &p), Ok(()), "{ok:?}");
        assert_eq!(check_origin(&[ok], &[], HOST, &p), Ok(()), "{ok:?}");
    }
    for bad in [&b"cross-site"[..], b"same-site", b"", b"same-origin, none"] {
        assert_eq!(
            check_origin(&[bad], &[OWN], HOST, &p),
            Err(Refusal::CrossSite),
            "{bad:?}"
        );
    }
}

#[test]
fn allowing_same_site_admits_same_site_only() {
    let p = OriginPolicy {
        allow_same_site: true,
        ..policy()
    };
    assert_eq!(check_origin(&[b"same-site"], &[OWN], HOST, &p), Ok(()));
    assert_eq!(
        check_origin(&[b"cross-site"], &[OWN], HOST, &p),
        Err(Refusal::CrossSite)
    );
    assert_eq!(
        check_origin(&[b"bogus"], &[], HOST, &p),
        Err(Refusal::CrossSite)
    );
    // Same-site still needs the app's own Origin.
    assert_eq!(
        check_origin(&[b"same-site"], &[b"https://sibling.app.example"], HOST, &p),
        Err(Refusal::OriginMismatch)
    );
}

#[test]
fn a_header_repeated_with_one_value_is_one_value_and_two_values_are_hostile() {
    let p = policy();
    assert_eq!(
        check_origin(&[b"same-origin", b"same-origin"], &[OWN, OWN], HOST, &p),
        Ok(())
    );
    assert_eq!(
        check_origin(&[b"same-origin", b"cross-site"], &[OWN], HOST, &p),
        Err(Refusal::CrossSite)
    );
    assert_eq!(
        check_origin(&[b"cross-site", b"same-origin"], &[], HOST, &p),
        Err(Refusal::CrossSite)
    );
    assert_eq!(
        check_origin(&[], &[OWN, b"https://evil.example"], HOST, &p),
        Err(Refusal::OriginMismatch)
    );
    // A trusted origin does not excuse a second, different one.
    assert_eq!(
        check_origin(&[], &[b"https://partner.example", OWN], HOST, &p),
        Err(Refusal::OriginMismatch)
    );
    assert_eq!(
        check_origin(&[], &[OWN], &[b"app.example", b"evil.example"], &p),
        Err(Refusal::OriginMismatch),
        "two Host values name no host"
    );
}

#[test]
fn a_trusted_origin_passes_both_checks_and_only_a_trusted_one() {
    let p = policy();
    assert_eq!(
        check_origin(&[b"cross-site"], &[b"HTTPS://PARTNER.EXAMPLE"], HOST, &p),
        Ok(())
    );
    assert_eq!(
        check_origin(
            &[b"cross-site"],
            &[b"https://partner.example.evil"],
            HOST,
            &p
        ),
        Err(Refusal::CrossSite)
    );
    assert_eq!(
        check_origin(&[], &[b"http://partner.example"], HOST, &p),
        Err(Refusal::OriginMismatch)
    );
    let none_trusted = OriginPolicy {
        trusted_origins: Vec::new(),
        ..policy()
    };
    assert_eq!(
        check_origin(&[], &[b"https://partner.example"], HOST, &none_trusted),
        Err(Refusal::OriginMismatch)
    );
}

#[test]
fn without_an_own_origin_the_origin_must_name_the_host_over_https() {
    let p = policy();
    assert_eq!(check_origin(&[], &[OWN], HOST, &p), Ok(()));
    assert_eq!(
        check_origin(&[], &[b"https://APP.example"], HOST, &p),
        Ok(())
    );
    for bad in [
        &b"https://evil.example"[..],
        b"https://app.example:8443",
        b"http://app.example",
        b"null",
        b"https://app.example/",
    ] {
        assert_eq!(
            check_origin(&[], &[bad], HOST, &p),
            Err(Refusal::OriginMismatch),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(
        check_origin(&[], &[OWN], &[], &p),
        Err(Refusal::OriginMismatch),
        "no Host to compare with"
    );
    // Plain HTTP passes on loopback hosts only.
    assert_eq!(
        check_origin(&[], &[b"http://localhost:8080"], &[b"localhost:8080"], &p),
        Ok(())
    );
    assert_eq!(
        check_origin(&[], &[b"http://127.0.0.1"], &[b"127.0.0.1:80"], &p),
        Err(Refusal::OriginMismatch),
        "the port is part of the authority"
    );
}

#[test]
fn with_an_own_origin_it_is_compared_whole() {
    let p = OriginPolicy {
        own_origin: Some("https://app.example".into()),
        ..policy()
    };
    assert_eq!(check_origin(&[], &[OWN], &[b"internal:8080"], &p), Ok(()));
    assert_eq!(
        check_origin(&[], &[b"https://APP.EXAMPLE"], &[], &p),
        Ok(())
    );
    assert_eq!(
        check_origin(&[], &[b"http://app.example"], HOST, &p),
        Err(Refusal::OriginMismatch)
    );
    // Without Origin, only Sec-Fetch-Site (if any) decides.
    assert_eq!(check_origin(&[b"same-origin"], &[], &[], &p), Ok(()));
}

#[test]
fn origins_are_scheme_colon_slash_slash_authority_and_nothing_more() {
    assert_eq!(
        origin_authority(b"https://app.example:8443"),
        Some(&b"app.example:8443"[..])
    );
    assert_eq!(origin_authority(b"http://[::1]:80"), Some(&b"[::1]:80"[..]));
    for bad in [
        &b"null"[..],
        b"",
        b"://app.example",
        b"ht1p://app.example",
        b"https//app.example",
        b"https://",
        b"https://app.example/",
        b"https://app.example/path",
        b"https://app.example?q",
        b"https://app.example#f",
        b"https://user@app.example",
        b"https://app example",
        b"https://app.example\x7f",
        b"https://\xc3\xa9.example",
    ] {
        assert_eq!(
            origin_authority(bad),
            None,
            "{}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(origin_scheme(bad), None);
    }
    assert_eq!(origin_scheme(b"https://app.example"), Some(&b"https"[..]));
    assert_eq!(origin_scheme(b"HTTP://a"), Some(&b"HTTP"[..]));
}

#[test]
fn loopback_hosts_are_localhost_names_127_slash_8_and_ipv6_one() {
    for yes in [
        &b"localhost"[..],
        b"LOCALHOST:3000",
        b"localhost.",
        b"app.localhost",
        b"a.b.localhost:1",
        b"127.0.0.1",
        b"127.255.255.254:8080",
        b"[::1]",
        b"[::1]:8080",
    ] {
        assert!(
            is_loopback_authority(yes),
            "{}",
            String::from_utf8_lossy(yes)
        );
    }
    for no in [
        &b"example.com"[..],
        b"localhost.example",
        b"notlocalhost",
        b"128.0.0.1",
        b"10.0.0.1:80",
        b"[::2]",
        b"[::1]x",
        b"[::1",
        b"::1",
        b"",
        b"\xff",
    ] {
        assert!(
            !is_loopback_authority(no),
            "{}",
            String::from_utf8_lossy(no)
        );
    }
}

#[test]
fn the_form_field_is_csrf_token_exactly() {
    assert_eq!(
        form_token(b"a=1&csrf_token=abc%2Dd&b=2").as_deref(),
        Some("abc-d")
    );
    assert_eq!(form_token(b"csrf_token=x&a=1").as_deref(), Some("x"));
    assert_eq!(form_token(b"csrf_token=&a=1").as_deref(), Some(""));
    assert_eq!(form_token(b"csrf_tokens=x&CSRF_TOKEN=y"), None);
    assert_eq!(form_token(b""), None);
}
