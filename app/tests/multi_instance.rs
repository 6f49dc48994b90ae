//! Many instances: three `ratatoskr serve` processes sharing one PostgreSQL database and one
//! Redis, behind HAProxy in round-robin configured by `deploy/haproxy.cfg` (see
//! `docs/deployment.md`), all started by the tests ([`deployment::Deployment`]).
//!
//! Figures (revocation propagation p50/p99, stale first reads) are printed: run with
//! `cargo test -p ratatoskr-app --test multi_instance -- --nocapture`.

#[path = "multi_instance/browser.rs"]
mod browser;
#[path = "multi_instance/deployment.rs"]
mod deployment;
#[path = "multi_instance/revocation.rs"]
mod revocation;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use browser::{Answer, Browser};
use deployment::{Deployment, Options, PASSWORD, RedisKind};

/// How long a change made through one instance may take to be seen through another:
/// `docs/architecture.md` bounds it by Redis's invalidation notice (tens of µs) and, for an
/// instance that missed the notice, one journal poll (1 s).
const PROPAGATION_BOUND: Duration = Duration::from_secs(1);

fn platform(n: usize) -> Value {
    json!({
        "platform_type": "mastodon",
        "name": format!("account {n}"),
        "instance_url": "https://mastodon.example",
        "username": format!("alice{n}"),
        "access_token": format!("token-{n}-s3cr3t"),
    })
}

/// GET `path` through `base` until `ok` holds, within [`PROPAGATION_BOUND`]; returns how many
/// answers did not satisfy it first (reads served from the state before the last write).
async fn read_until(
    b: &mut Browser,
    base: &str,
    path: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> u32 {
    let started = Instant::now();
    let mut stale = 0;
    loop {
        let (status, body) = b.get(base, path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        if ok(&body) {
            return stale;
        }
        stale += 1;
        assert!(
            started.elapsed() < PROPAGATION_BOUND,
            "{what}: still not seen after {PROPAGATION_BOUND:?}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_works_whichever_instance_answers_and_requests_spread_over_all_three() {
    let d = Deployment::start(Options::default()).await;
    let proxy = d.proxy.url();
    let loads_before = d
        .counter_per_instance("ratatoskr_session_loads_total")
        .await;

    let mut b = Browser::new();
    assert_eq!(b.register(&proxy, "alice").await, 201);
    b.login(&proxy, "alice").await;
    let csrf = b.csrf.clone().expect("a CSRF token at login");
    let mut stale = 0;
    const ROUNDS: usize = 6;
    for round in 0..ROUNDS {
        let (status, body) = b.get(&proxy, "/api/session").await;
        assert_eq!(status, 200);
        assert_eq!(body["authenticated"], true, "round {round}: {body}");
        assert_eq!(body["user"]["username"], "alice");
        // Masked afresh on every answer; the login's token stays valid (checked below).
        assert!(body["csrf_token"].as_str().is_some_and(|t| t != csrf));

        // Added through one instance, switched to through the next (which must unseal the
        // token the first sealed), read through the one after.
        let (status, body) = b.post(&proxy, "/api/platforms", &platform(round)).await;
        assert_eq!(status, 201, "{body}");
        let id = body["platform"]["id"].as_i64().expect("platform id");
        let path = format!("/api/platforms/{id}/switch");
        let (status, body) = b.post(&proxy, &path, &json!({})).await;
        assert_eq!(status, 200, "switch: {body}");
        assert_eq!(body["active_platform"]["id"], id);
        stale += read_until(&mut b, &proxy, "/api/session", "the switch", |s| {
            s["active_platform"]["id"] == id
        })
        .await;

        // A session attribute written through one instance, read through the others.
        let path = format!("/api/session/preferences/k{round}");
        let (status, body) = b
            .send(&proxy, Method::PUT, &path, Some(&json!(round)), &[])
            .await;
        assert_eq!(status, 204, "preference: {body}");
        stale += read_until(
            &mut b,
            &proxy,
            "/api/session/preferences",
            "the preferences",
            |p| (0..=round).all(|r| p[format!("k{r}")] == r),
        )
        .await;
    }

    // The login's CSRF token is accepted by each instance asked directly, a wrong one by none.
    for (i, instance) in d.instances.iter().enumerate() {
        let path = format!("/api/session/preferences/direct{i}");
        let (status, _) = b
            .send(&instance.url(), Method::PUT, &path, Some(&json!(i)), &[])
            .await;
        assert_eq!(status, 204, "the CSRF token on app{}", i + 1);
        let wrong = [("x-csrf-token", "not-the-token")];
        let (status, _) = b
            .send(&instance.url(), Method::PUT, &path, Some(&json!(i)), &wrong)
            .await;
        assert_eq!(status, 403, "a wrong CSRF token on app{}", i + 1);
    }

    // Metrics are per instance and not served through the public entrance.
    let (status, _) = b.get(&proxy, "/metrics").await;
    assert_eq!(status, 403, "/metrics through the proxy");
    let loads_after = d
        .counter_per_instance("ratatoskr_session_loads_total")
        .await;
    let answered: Vec<f64> = loads_after
        .iter()
        .zip(&loads_before)
        .map(|(a, b)| a - b)
        .collect();
    eprintln!(
        "session loads per instance: {answered:?}; reads that saw the state before the last \
         write through another instance: {stale}"
    );
    for (i, n) in answered.iter().enumerate() {
        assert!(
            *n >= ROUNDS as f64,
            "app{} answered {n} session requests: the proxy does not spread them ({answered:?})",
            i + 1
        );
    }
}

async fn revocations_are_refused_by_every_instance_within_the_bound(redis: RedisKind) {
    let d = Deployment::start(Options {
        redis,
        ..Options::default()
    })
    .await;
    let report = revocation::measure(&d, 20).await;
    eprintln!("on {redis:?}:");
    report.print();
    assert!(
        report.samples.len() >= 150,
        "≥ 50 revocations × 3 instances"
    );
    assert!(
        report.revoker_refused_at_once(),
        "the instance that revoked served the session afterwards: {:?}",
        report.revoker_late()
    );
    let p99 = report.percentile(0.99);
    assert!(
        p99 <= PROPAGATION_BOUND,
        "revocation p99 {p99:?} is past the documented bound {PROPAGATION_BOUND:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_instance_is_refused_by_every_instance_within_the_bound() {
    revocations_are_refused_by_every_instance_within_the_bound(RedisKind::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sentinel_a_revocation_is_refused_by_every_instance_within_the_bound() {
    revocations_are_refused_by_every_instance_within_the_bound(RedisKind::Sentinel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_redis_server_a_revocation_is_refused_by_every_instance_within_the_bound() {
    revocations_are_refused_by_every_instance_within_the_bound(RedisKind::Standalone).await;
}

/// An attempt at `POST /api/login` for a name that does not exist: `(status, error code)`.
async fn failed_login(b: &mut Browser, base: &str, n: u32, headers: &[(&str, &str)]) -> Answer {
    let (status, body) = b
        .login_with(base, &format!("nobody{n}"), "wrong password", headers)
        .await;
    (status, body["error"]["code"].clone())
}

/// The address the current session was recorded with (`GET /api/sessions`).
async fn session_ip(b: &mut Browser, base: &str) -> String {
    let (status, body) = b.get(base, "/api/sessions").await;
    assert_eq!(status, 200, "{body}");
    let current = body["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["current"] == true)
        .expect("the current session is listed")
        .clone();
    current["ip"].as_str().expect("an ip").to_owned()
}

fn loopback(last: u8) -> IpAddr {
    [127, 0, 0, last].into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_addresses_come_from_x_forwarded_for_only_when_the_peer_is_a_trusted_proxy() {
    let d = Deployment::start(Options {
        env: vec![
            // HAProxy connects to the instances from 127.0.0.1; clients use other addresses.
            ("RATATOSKR_TRUSTED_PROXIES", "127.0.0.1/32".into()),
            ("RATATOSKR_LOGIN_RATE_LIMIT", "2/1h".into()),
            ("RATATOSKR_REGISTER_RATE_LIMIT", "off".into()),
        ],
        // About addresses, not Redis: the quickest Redis to start.
        redis: RedisKind::Standalone,
        own_postgres: false,
    })
    .await;
    let proxy = d.proxy.url();
    let rate_limited = (429, json!("rate_limited"));

    // Client X through the proxy until every instance refuses it. Each instance keeps its own
    // buckets, so X gets between the limit (2) and 3 × the limit checked.
    let mut x = Browser::from_address(loopback(2));
    let (mut n, mut checked) = (0, 0);
    let mut refused_in_a_row = 0;
    while refused_in_a_row < 3 {
        n += 1;
        assert!(n <= 12, "X was never rate limited through the proxy");
        let answer = failed_login(&mut x, &proxy, n, &[]).await;
        refused_in_a_row = if answer == rate_limited {
            refused_in_a_row + 1
        } else {
            assert_eq!(answer.0, 401, "{answer:?}");
            checked += 1;
            0
        };
    }
    eprintln!(
        "login limit 2/1h per instance: X had {checked} attempts checked through 3 instances"
    );
    assert!((2..=6).contains(&checked), "{checked} attempts checked");
    // A header X forges is replaced by the proxy: still X.
    for _ in 0..3 {
        n += 1;
        let forged = [("x-forwarded-for", "10.1.2.3")];
        assert_eq!(failed_login(&mut x, &proxy, n, &forged).await, rate_limited);
    }
    // Client Y, through the same proxy, has buckets of its own.
    let mut y = Browser::from_address(loopback(3));
    for _ in 0..3 {
        n += 1;
        let answer = failed_login(&mut y, &proxy, n, &[]).await;
        assert_eq!(answer.0, 401, "Y refused for X's attempts: {answer:?}");
    }
    // And the session records the client's address, not the proxy's.
    let mut z = Browser::from_address(loopback(4));
    assert_eq!(z.register(&proxy, "zed").await, 201);
    z.login(&proxy, "zed").await;
    assert_eq!(session_ip(&mut z, &proxy).await, "127.0.0.4");

    // Directly from an untrusted peer, a forged header changes nothing: keyed on the peer.
    let app1 = d.instances[0].url();
    let mut w = Browser::from_address(loopback(5));
    let mut answers = Vec::new();
    for i in 0..3 {
        n += 1;
        let forged = format!("10.0.0.{i}");
        answers.push(failed_login(&mut w, &app1, n, &[("x-forwarded-for", &forged)]).await);
    }
    assert_eq!(answers[2], rate_limited, "{answers:?}");
    let mut v = Browser::from_address(loopback(6));
    let forged = [("x-forwarded-for", "10.9.9.9")];
    let (status, body) = v.login_with(&app1, "zed", PASSWORD, &forged).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(session_ip(&mut v, &app1).await, "127.0.0.6");

    // From a trusted peer, the right-most address that is not itself trusted is the client.
    let mut u = Browser::new();
    let chain = [("x-forwarded-for", "10.7.7.7, 127.0.0.1")];
    let (status, body) = u.login_with(&app1, "zed", PASSWORD, &chain).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(session_ip(&mut u, &app1).await, "10.7.7.7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_locked_by_failures_through_the_proxy_is_locked_on_every_instance() {
    // The lock lives in the database: the quickest Redis to start will do.
    let d = Deployment::start(Options {
        redis: RedisKind::Standalone,
        ..Options::default()
    })
    .await;
    let proxy = d.proxy.url();
    let mut b = Browser::new();
    assert_eq!(b.register(&proxy, "alice").await, 201);
    // Five failures (docs/abuse.md), spread by the proxy over the three instances.
    for i in 0..5 {
        let (status, body) = b.login_with(&proxy, "alice", "wrong password", &[]).await;
        assert!(matches!(status, 401 | 429), "failure {i}: {status} {body}");
    }
    for (i, instance) in d.instances.iter().enumerate() {
        let (status, body) = b.login_with(&instance.url(), "alice", PASSWORD, &[]).await;
        assert_eq!(status, 429, "app{} after five failures: {body}", i + 1);
        assert_eq!(body["error"]["code"], "too_many_attempts");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_or_a_restarted_proxy_costs_no_request_and_no_session() {
    let mut d = Deployment::start(Options::default()).await;
    let proxy = d.proxy.url();
    let mut b = Browser::new();
    assert_eq!(b.register(&proxy, "alice").await, 201);
    b.login(&proxy, "alice").await;

    d.instances[1].kill();
    for i in 0..30 {
        let (status, body) = b.get(&proxy, "/api/session").await;
        assert_eq!(status, 200, "request {i} with app2 dead");
        assert_eq!(body["authenticated"], true, "request {i} with app2 dead");
        let path = format!("/api/session/preferences/k{}", i % 10);
        let (status, _) = b
            .send(&proxy, Method::PUT, &path, Some(&json!(i)), &[])
            .await;
        assert_eq!(status, 204, "write {i} with app2 dead");
    }

    d.proxy.kill_and_restart().await;
    let (status, body) = b.get(&proxy, "/api/session").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["authenticated"], true,
        "the session survives the proxy"
    );
}

/// `docs/deployment.md` shows the configuration files these tests run, as they are.
#[test]
fn the_deployment_guide_shows_the_tested_configuration_files() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let read =
        |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let guide = read("docs/deployment.md");
    for file in [
        "deploy/haproxy.cfg",
        "deploy/redis/cluster-node.conf",
        "deploy/redis/sentinel.conf",
    ] {
        assert!(
            guide.contains(&read(file)),
            "docs/deployment.md shows {file} as it is"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgresql_down_no_session_is_lost_and_every_instance_serves_it_when_it_returns() {
    let d = Deployment::start(Options {
        own_postgres: true,
        ..Options::default()
    })
    .await;
    let proxy = d.proxy.url();
    let mut b = Browser::new();
    assert_eq!(b.register(&proxy, "alice").await, 201);
    b.login(&proxy, "alice").await;
    let urls: Vec<String> = d.instances.iter().map(|i| i.url()).collect();
    for url in &urls {
        let (status, body) = b.get(url, "/api/session").await;
        assert_eq!((status, &body["authenticated"]), (200, &json!(true)));
    }
    let deployment::Database::Own(pg) = &d.db else {
        unreachable!("own PostgreSQL")
    };
    tokio::task::block_in_place(|| pg.stop());
    // Every instance, every kind of request, at once (each may wait for the database's
    // connection timeout): what users get, and how long it takes.
    let cookie = b.cookie.clone().expect("cookie");
    let csrf = b.csrf.clone().expect("csrf");
    let mut probes = Vec::new();
    for url in &urls {
        for (method, path) in [
            (Method::GET, "/readyz"),
            (Method::GET, "/api/session"),
            (Method::GET, "/api/session/preferences"),
            (Method::PUT, "/api/session/preferences/k"),
        ] {
            let http = browser::http_from([127, 0, 0, 1].into());
            let request = http
                .request(method.clone(), format!("{url}{path}"))
                .header("cookie", format!("{}={cookie}", browser::COOKIE))
                .header("x-csrf-token", &csrf)
                .json(&json!(1));
            probes.push(tokio::spawn(async move {
                let started = Instant::now();
                let r = request.send().await.expect("an answer");
                let cleared = r
                    .headers()
                    .get_all("set-cookie")
                    .iter()
                    .any(|v| v.to_str().unwrap_or("").contains("Max-Age=0"));
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                (method, path, status, body, cleared, started.elapsed())
            }));
        }
    }
    for p in probes {
        let (method, path, status, body, cleared, took) = p.await.expect("probe");
        eprintln!("PostgreSQL down: {method} {path}: {status} in {took:.1?} {body}");
        assert!(
            !cleared,
            "{path} ended the session while the database was down"
        );
        assert!(
            status != 500,
            "{method} {path}: a 500 for the database being down: {body}"
        );
        assert!(
            took < Duration::from_secs(15),
            "{method} {path} took {took:?}"
        );
    }
    assert!(b.cookie.is_some(), "the cookie was not cleared");
    tokio::task::block_in_place(|| pg.restart());
    for url in &urls {
        let (status, body) = b.get(url, "/api/session").await;
        assert_eq!(
            (status, &body["authenticated"]),
            (200, &json!(true)),
            "{url}: {body}"
        );
    }
}
