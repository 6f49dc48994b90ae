//! Trusted proxies (issue 11): the client address the per-client limits key on, and that a
//! session records at login, is the TCP peer's unless the peer is a configured trusted proxy;
//! then it is the right-most `X-Forwarded-For` entry that is not itself a trusted proxy. The test
//! client connects from 127.0.0.1, so trusting 127.0.0.1 makes it "the proxy".

use serde_json::json;

use crate::helpers::{Client, PASSWORD, TestApp, assert_error, spawn_app_args};

/// `POST /api/login` with a wrong password for a name of its own (so that the per-name lockout
/// never answers first) from a fresh connection, with these `X-Forwarded-For` lines: the status.
async fn guess(app: &TestApp, forwarded_for: &[&str]) -> u16 {
    static NAMES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let name = format!(
        "nobody{}",
        NAMES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let c = Client::new(&app.address, "proxy-test");
    let headers: Vec<(&str, &str)> = forwarded_for
        .iter()
        .map(|v| ("x-forwarded-for", *v))
        .collect();
    let r = c
        .request(
            reqwest::Method::POST,
            "/api/login",
            Some(&json!({"username": name, "password": "wrong password"})),
            &headers,
        )
        .await;
    let status = r.status().as_u16();
    if status == 429 {
        assert_error(r, 429, "rate_limited").await;
    }
    status
}

/// Two logins per client address per hour.
const LIMIT: [&str; 2] = ["--login-rate-limit", "2/1h"];

#[tokio::test]
async fn a_forged_x_forwarded_for_from_an_untrusted_peer_does_not_change_the_limit_key() {
    for trusted in [None, Some("10.0.0.0/8")] {
        let mut args = LIMIT.to_vec();
        if let Some(t) = trusted {
            args.extend(["--trusted-proxies", t]);
        }
        let app = spawn_app_args(&args).await;
        assert_eq!(guess(&app, &["198.51.100.1"]).await, 401, "{trusted:?}");
        assert_eq!(guess(&app, &["198.51.100.2"]).await, 401, "{trusted:?}");
        // Every claimed address is the same client: the peer.
        assert_eq!(guess(&app, &["198.51.100.3"]).await, 429, "{trusted:?}");
        assert_eq!(guess(&app, &[]).await, 429, "{trusted:?}");
    }
}

#[tokio::test]
async fn from_a_trusted_peer_the_forwarded_address_is_the_limit_key() {
    let mut args = LIMIT.to_vec();
    args.extend(["--trusted-proxies", "127.0.0.1"]);
    let app = spawn_app_args(&args).await;
    assert_eq!(guess(&app, &["203.0.113.1"]).await, 401);
    assert_eq!(guess(&app, &["203.0.113.1"]).await, 401);
    assert_eq!(guess(&app, &["203.0.113.1"]).await, 429);
    // Another client behind the same proxy has a limit of its own.
    assert_eq!(guess(&app, &["203.0.113.2"]).await, 401);
    // An IPv6 client is limited per /64 network.
    assert_eq!(guess(&app, &["2001:db8:1:2::1"]).await, 401);
    assert_eq!(guess(&app, &["2001:db8:1:2::ff"]).await, 401);
    assert_eq!(guess(&app, &["2001:db8:1:2::77"]).await, 429);
    // The proxy's own requests (no header) are the proxy's.
    assert_eq!(guess(&app, &[]).await, 401);
}

#[tokio::test]
async fn a_chain_of_proxies_is_read_from_the_right_up_to_the_first_untrusted_address() {
    let mut args = LIMIT.to_vec();
    args.extend(["--trusted-proxies", "127.0.0.1, 10.0.0.0/8"]);
    let app = spawn_app_args(&args).await;
    // Client 203.0.113.9 through an inner proxy 10.1.2.3.
    assert_eq!(guess(&app, &["203.0.113.9, 10.1.2.3"]).await, 401);
    // The same client, putting a forged address of its own in front, through another inner
    // proxy; and the header split over several lines.
    assert_eq!(
        guess(&app, &["6.6.6.6, 203.0.113.9", "10.20.0.1"]).await,
        401
    );
    assert_eq!(guess(&app, &["203.0.113.9"]).await, 429);
    assert_eq!(guess(&app, &["7.7.7.7, 203.0.113.9, 10.1.2.3"]).await, 429);
    // Another client through the same chain.
    assert_eq!(guess(&app, &["203.0.113.10, 10.1.2.3"]).await, 401);
}

#[tokio::test]
async fn a_malformed_x_forwarded_for_from_a_trusted_peer_counts_as_the_peer_and_is_no_error() {
    let mut args = LIMIT.to_vec();
    args.extend(["--trusted-proxies", "127.0.0.1"]);
    let app = spawn_app_args(&args).await;
    assert_eq!(guess(&app, &["not an address"]).await, 401);
    assert_eq!(guess(&app, &["203.0.113.5, "]).await, 401);
    // Both were the peer's: its limit is used up.
    assert_eq!(guess(&app, &[]).await, 429);
    // Bytes that are not text.
    let r = reqwest::Client::new()
        .post(format!("{}/api/login", app.address))
        .header(
            "x-forwarded-for",
            reqwest::header::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        )
        .json(&json!({"username": "someone", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    assert_error(r, 429, "rate_limited").await;
    // A well-formed address is still someone else.
    assert_eq!(guess(&app, &["203.0.113.5"]).await, 401);
}

#[tokio::test]
async fn a_session_records_the_forwarded_client_address_at_login_only_from_a_trusted_peer() {
    for (trusted, expected) in [(true, "203.0.113.77"), (false, "127.0.0.1")] {
        let args: &[&str] = if trusted {
            &["--trusted-proxies", "127.0.0.1"]
        } else {
            &[]
        };
        let app = spawn_app_args(args).await;
        app.create_user("alice", false).await;
        let c = app.client();
        let r = c
            .request(
                reqwest::Method::POST,
                "/api/login",
                Some(&json!({"username": "alice", "password": PASSWORD})),
                &[("x-forwarded-for", "203.0.113.77")],
            )
            .await;
        assert_eq!(r.status(), 200);
        let (status, body) = c.get_json("/api/sessions").await;
        assert_eq!(status, 200);
        assert_eq!(body["sessions"][0]["ip"], expected, "trusted: {trusted}");
    }
}
