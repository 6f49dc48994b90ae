//! A corpus of bad cookies: each yields anonymous state and a correct response, never a 500,
//! a panic, or a store lookup for a value that could not have been issued.
mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::SeqCst;

use common::*;
use ratatoskr_axum::SessionConfig;
use ratatoskr_core::Token;

fn corpus(valid: &str) -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let t43 = "A".repeat(43);
    vec![
        ("empty value", vec![format!("{COOKIE}=").into_bytes()]),
        (
            "truncated",
            vec![format!("{COOKIE}={}", &valid[..20]).into_bytes()],
        ),
        (
            "one char short",
            vec![format!("{COOKIE}={}", &valid[..42]).into_bytes()],
        ),
        (
            "one char long",
            vec![format!("{COOKIE}={valid}A").into_bytes()],
        ),
        (
            "overlong",
            vec![format!("{COOKIE}={}", "A".repeat(4000)).into_bytes()],
        ),
        (
            "padding",
            vec![format!("{COOKIE}={}=", &valid[..42]).into_bytes()],
        ),
        (
            "standard base64",
            vec![format!("{COOKIE}={}+", &valid[..42]).into_bytes()],
        ),
        (
            "non canonical",
            vec![format!("{COOKIE}={}B", "A".repeat(42)).into_bytes()],
        ),
        ("quoted", vec![format!("{COOKIE}=\"{t43}\"").into_bytes()]),
        (
            "non-ascii utf8",
            vec![format!("{COOKIE}={}", "é".repeat(21)).into_bytes()],
        ),
        ("raw high bytes", {
            let mut v = format!("{COOKIE}=").into_bytes();
            v.extend_from_slice(&[0xC3; 43]);
            vec![v]
        }),
        (
            "control chars",
            vec![format!("{COOKIE}={}\u{7f}", &valid[..42]).into_bytes()],
        ),
        ("no equals", vec![COOKIE.as_bytes().to_vec()]),
        ("only separators", vec![b";;;; ; =;=".to_vec()]),
        (
            "two different session cookies",
            vec![
                format!(
                    "{COOKIE}={valid}; {COOKIE}={}",
                    Token::generate().as_cookie_value()
                )
                .into_bytes(),
            ],
        ),
        (
            "duplicated Cookie headers with different values",
            vec![
                format!("{COOKIE}={valid}").into_bytes(),
                format!("{COOKIE}={}", Token::generate().as_cookie_value()).into_bytes(),
            ],
        ),
        (
            "valid-looking unknown token",
            vec![format!("{COOKIE}={}", Token::generate().as_cookie_value()).into_bytes()],
        ),
        (
            "8 KiB cookie header",
            vec![format!("pad={}; {COOKIE}=short", "x".repeat(8 * 1024)).into_bytes()],
        ),
        (
            "8 KiB of session cookies",
            vec![format!("{COOKIE}={}", "A".repeat(8 * 1024)).into_bytes()],
        ),
        (
            "case-variant name",
            vec![format!("__host-ratatoskr={valid}").into_bytes()],
        ),
    ]
}

/// In process when every header value is one an HTTP client can send; otherwise as raw bytes
/// over the socket `raw` (from [`App::listen`]), where the server's HTTP parser meets them first.
async fn send(app: &App, raw: SocketAddr, req: &Req) -> Resp {
    if req.is_well_formed() {
        req.send(&app.router).await
    } else {
        send_raw(raw, &req.to_bytes()).await
    }
}

#[tokio::test]
async fn every_bad_cookie_is_anonymous_and_gets_a_correct_response() {
    let app = spawn(SessionConfig::default()).await;
    let raw = app.listen().await;
    // A real, logged-in session whose token appears in some corpus entries next to junk.
    let mut owner = app.client();
    owner.login("alice").await;
    let valid = owner.cookie.clone().unwrap();
    let valid = valid.split_once('=').unwrap().1.to_owned();

    for (what, headers) in corpus(&valid) {
        for (method, path) in [
            ("GET", "/api/session"),
            ("GET", "/me"),
            ("GET", "/read"),
            ("POST", "/nothing"),
        ] {
            let mut req = Req::new(method, path);
            for h in &headers {
                req = req.header("Cookie", h);
            }
            let r = send(&app, raw, &req).await;
            assert!(
                r.status < 500,
                "{what} {method} {path}: {} {}",
                r.status,
                r.body
            );
            if what == "control chars" {
                // Not a valid header value: the HTTP parser answers 400 before any layer runs.
                assert_eq!(r.status, 400, "{what}");
                continue;
            }
            match path {
                "/api/session" => {
                    assert_eq!(r.status, 200, "{what}");
                    assert_eq!(r.json()["authenticated"], false, "{what}");
                }
                "/me" => assert_eq!(r.status, 401, "{what}"),
                "/read" => assert_eq!(r.body, "none", "{what}"),
                _ => assert_eq!(r.status, 200, "{what}: anonymous POST needs no token"),
            }
            assert_eq!(r.set_cookie(), None, "{what}: nothing created for a read");
        }
    }
    // The server is still healthy and the real session untouched.
    assert_eq!(owner.get("/me").await.body, "alice");
}

#[tokio::test]
async fn malformed_cookies_never_reach_the_store() {
    let app = spawn(SessionConfig::default()).await;
    let raw = app.listen().await;
    let valid = Token::generate().as_cookie_value();
    let mut expected_loads = 0;
    for (what, headers) in corpus(&valid) {
        let mut req = Req::get("/read");
        for h in &headers {
            req = req.header("Cookie", h);
        }
        send(&app, raw, &req).await;
        if what == "valid-looking unknown token" {
            expected_loads += 1;
        }
        assert_eq!(app.store.loads.load(SeqCst), expected_loads, "{what}");
    }
}

#[tokio::test]
async fn a_write_with_a_bad_cookie_gets_a_fresh_server_token() {
    let app = spawn(SessionConfig::default()).await;
    let bad = format!("{COOKIE}={}", "A".repeat(42));
    let r = Req::get("/count")
        .header("Cookie", &bad)
        .send(&app.router)
        .await;
    assert_eq!(r.body, "1");
    let pair = r.cookie_pair().unwrap();
    assert_ne!(pair, bad);
    assert!(ratatoskr_core::Token::parse(pair.split_once('=').unwrap().1).is_ok());
}

#[tokio::test]
async fn an_expired_token_is_anonymous_and_audited() {
    use ratatoskr_core::{AuditKind, ManagerConfig};
    use std::time::Duration;
    let mc = ManagerConfig {
        idle_timeout: Duration::from_millis(200),
        touch_interval: Duration::from_millis(10),
        ..ManagerConfig::default()
    };
    let app = spawn_with(routes(), SessionConfig::default(), mc).await;
    let mut c = app.client();
    c.login("alice").await;
    let handle = app.control.list_user("alice").await.unwrap()[0].handle;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = c.get("/api/session").await;
    assert_eq!(r.json()["authenticated"], false);
    let e = app.audit.events().into_iter().last().unwrap();
    assert_eq!(e.kind, AuditKind::Expired);
    assert_eq!(
        e.handle,
        Some(handle),
        "the audit names the expired session by handle"
    );
}

#[tokio::test]
async fn garbage_requests_never_crash_the_server() {
    let app = spawn(SessionConfig::default()).await;
    let addr = app.listen().await;
    let raws: Vec<Vec<u8>> = vec![
        b"GET /read HTTP/1.1\r\nHost: x\r\nCookie: \xff\xfe\xfd\r\nConnection: close\r\n\r\n".to_vec(),
        format!(
            "GET /read HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
            (0..50).map(|i| format!("Cookie: c{i}=v; {COOKIE}=x{i}\r\n")).collect::<String>()
        )
        .into_bytes(),
        b"POST /count HTTP/1.1\r\nHost: x\r\nSec-Fetch-Site: \xff\r\nOrigin: \x01\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
        b"POST /count HTTP/1.1\r\nHost: x\r\nOrigin: null\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
    ];
    for raw in raws {
        let r = send_raw(addr, &raw).await;
        assert!(r.status < 500, "{} {}", r.status, r.body);
    }
    let r = send_raw(addr, &Req::get("/nothing").to_bytes()).await;
    assert_eq!(r.status, 200, "the server still answers");
}
