//! Abuse resistance (issue 9): the lockout under parallel guesses, the bounded password-hashing
//! pool, per-client rate limits, current-password guessing on password change, the preference
//! bound under concurrent writes, and the audit trail under anonymous traffic.

use std::sync::Arc;

use ratatoskr_app::db::Attempt;
use ratatoskr_app::domain::time::Timestamp;
use ratatoskr_app::services::accounts::{LOCK_WINDOW, MAX_FAILURES};
use serde_json::{Value, json};

use crate::helpers::{Client, PASSWORD, assert_error, spawn_app_args, spawn_pg_app_args};

/// `POST /api/login` from a client of its own: `(status, Retry-After, body)`.
async fn login_once(address: String, name: String, password: String) -> (u16, Option<u64>, Value) {
    let c = Client::new(&address, "abuse-test");
    let r = c
        .request(
            reqwest::Method::POST,
            "/api/login",
            Some(&json!({"username": name, "password": password})),
            &[],
        )
        .await;
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn forty_parallel_guesses_get_at_most_five_verdicts_and_the_right_password_stays_locked_out()
{
    forty_parallel_guesses(spawn_app_args(&["--login-rate-limit", "off"]).await).await;
}

#[tokio::test]
async fn forty_parallel_guesses_on_postgresql_get_at_most_five_verdicts_too() {
    forty_parallel_guesses(spawn_pg_app_args(&["--login-rate-limit", "off"]).await).await;
}

async fn forty_parallel_guesses(app: crate::helpers::TestApp) {
    app.create_user("alice", false).await;
    let runs_before = app.state.hasher.runs();
    let mut tasks = Vec::new();
    for i in 0..40 {
        // 39 wrong passwords, the right one last.
        let pw = if i == 39 {
            PASSWORD.to_owned()
        } else {
            format!("wrong guess {i}")
        };
        tasks.push(tokio::spawn(login_once(
            app.address.clone(),
            "alice".into(),
            pw,
        )));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let verdicts = app.state.hasher.runs() - runs_before;
    let count = |s: u16| statuses.iter().filter(|r| r.0 == s).count();
    assert!(
        verdicts <= MAX_FAILURES as u64,
        "{verdicts} passwords were checked in one window"
    );
    assert!(count(401) < MAX_FAILURES as usize, "{statuses:?}");
    assert_eq!(count(401) + count(429), 40, "{statuses:?}");
    let right = &statuses[39];
    assert_eq!(right.0, 429, "the right password got in: {right:?}");
    assert_eq!(right.2["error"]["code"], "too_many_attempts");
    assert!(right.1.is_some_and(|s| s > 0), "Retry-After: {right:?}");
    // The name is locked now, and the right password does not clear the lock.
    let (status, _, _) = login_once(app.address.clone(), "alice".into(), PASSWORD.into()).await;
    assert_eq!(status, 429);
    assert!(
        app.state
            .db
            .locked_until("alice", Timestamp::now())
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_success_checked_while_a_failure_locks_the_name_leaves_the_lock_in_force() {
    let app = spawn_app_args(&[]).await;
    let db = &app.state.db;
    let now = Timestamp::now();
    for _ in 0..MAX_FAILURES {
        assert_eq!(
            db.reserve_attempt("bob", now, LOCK_WINDOW, MAX_FAILURES)
                .await
                .unwrap(),
            Attempt::Granted
        );
    }
    // The window is full while all five are being checked: the sixth is refused unchecked.
    assert!(matches!(
        db.reserve_attempt("bob", now, LOCK_WINDOW, MAX_FAILURES)
            .await
            .unwrap(),
        Attempt::Refused(_)
    ));
    // One of the five fails: the name locks; another one succeeds: the lock holds.
    let until = db
        .fail_attempt("bob", now, MAX_FAILURES, LOCK_WINDOW)
        .await
        .unwrap()
        .expect("locked");
    assert_eq!(db.succeed_attempt("bob", now).await.unwrap(), Some(until));
    assert_eq!(
        db.locked_until("bob", now.plus(std::time::Duration::from_millis(1)))
            .await
            .unwrap(),
        Some(until)
    );
    // Once the lock is over, a fresh window.
    assert_eq!(
        db.reserve_attempt("bob", until, LOCK_WINDOW, MAX_FAILURES)
            .await
            .unwrap(),
        Attempt::Granted
    );
}

#[tokio::test]
async fn a_full_hashing_pool_answers_503_with_retry_after_at_once_and_charges_no_attempt() {
    let app = spawn_app_args(&[
        "--login-rate-limit",
        "off",
        "--hash-concurrency",
        "1",
        "--hash-queue",
        "0",
    ])
    .await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        tasks.push(tokio::spawn(login_once(
            app.address.clone(),
            format!("nobody{i}"),
            "some password".into(),
        )));
    }
    let mut results = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        results.push((i, t.await.unwrap()));
    }
    let busy: Vec<_> = results.iter().filter(|(_, r)| r.0 == 503).collect();
    assert!(!busy.is_empty(), "no 503 with one worker and no queue");
    for (_, (status, retry, body)) in &results {
        assert!(matches!(status, 401 | 503), "{status} {body}");
        if *status == 503 {
            assert_eq!(body["error"]["code"], "server_busy", "{body}");
            assert_eq!(*retry, Some(1));
        }
    }
    // A refused attempt was not counted against its name: four wrong logins later it is not
    // locked yet (the fifth failure would lock it).
    let (i, _) = busy[0];
    for _ in 0..4 {
        let (status, _, body) =
            login_once(app.address.clone(), format!("nobody{i}"), "wrong".into()).await;
        assert_eq!(status, 401, "{body}");
    }
}

#[tokio::test]
async fn logins_registrations_and_password_changes_are_rate_limited_per_client() {
    let app = spawn_app_args(&[
        "--login-rate-limit",
        "3/1h",
        "--register-rate-limit",
        "2/1h",
        "--password-rate-limit",
        "2/1h",
    ])
    .await;
    let c = app.client();
    for i in 0..3 {
        assert_eq!(c.login(&format!("ghost{i}"), "wrong password").await.0, 401);
    }
    let r = c
        .post(
            "/api/login",
            &json!({"username": "ghost9", "password": "wrong password"}),
        )
        .await;
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1000..=1200).contains(&retry), "{retry}");
    assert_error(r, 429, "rate_limited").await;
    // The login form shares the limit.
    let r = c
        .post_form("/login", &[("username", "ghost9"), ("password", "wrong")])
        .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));

    for name in ["reg1", "reg2"] {
        let r = c
            .post(
                "/api/register",
                &json!({"username": name, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }
    let r = c
        .post(
            "/api/register",
            &json!({"username": "reg3", "password": PASSWORD}),
        )
        .await;
    assert_error(r, 429, "rate_limited").await;
    assert!(app.state.db.user_by_name("reg3").await.unwrap().is_none());
}

#[tokio::test]
async fn password_changes_are_rate_limited_per_client() {
    let app = spawn_app_args(&["--password-rate-limit", "2/1h"]).await;
    let c = app.logged_in("alice", false).await;
    let change = json!({"current_password": "not it at all", "new_password": "a new password"});
    for _ in 0..2 {
        assert_error(
            c.post("/api/password", &change).await,
            400,
            "wrong_password",
        )
        .await;
    }
    let r = c.post("/api/password", &change).await;
    assert!(r.headers().contains_key("retry-after"));
    assert_error(r, 429, "rate_limited").await;
    // Refused before anything was checked: the session is still there.
    assert_eq!(c.get_json("/api/session").await.1["authenticated"], true);
}

#[tokio::test]
async fn the_third_wrong_current_password_ends_the_session_and_locks_password_changes() {
    let app = spawn_app_args(&[]).await;
    let c = app.logged_in("alice", false).await;
    let wrong = json!({"current_password": "not it at all", "new_password": "a new password"});
    for _ in 0..2 {
        assert_error(c.post("/api/password", &wrong).await, 400, "wrong_password").await;
    }
    let r = c.post("/api/password", &wrong).await;
    assert!(r.headers().contains_key("retry-after"));
    assert_error(r, 429, "too_many_attempts").await;
    assert!(c.cookie().is_none(), "the session's cookie was cleared");
    assert_eq!(c.get_json("/api/session").await.1["authenticated"], false);
    // A new session of the same user: even the right password is refused while locked, and
    // nothing was changed.
    let c2 = app.client();
    assert_eq!(c2.login("alice", PASSWORD).await.0, 200);
    let right = json!({"current_password": PASSWORD, "new_password": "a new password"});
    assert_error(
        c2.post("/api/password", &right).await,
        429,
        "too_many_attempts",
    )
    .await;
    assert_eq!(c2.get_json("/api/session").await.1["authenticated"], true);
    assert_eq!(app.client().login("alice", PASSWORD).await.0, 200);
}

#[tokio::test]
async fn parallel_current_password_guesses_are_counted_before_they_are_checked() {
    let app = spawn_app_args(&["--password-rate-limit", "off"]).await;
    let c = Arc::new(app.logged_in("alice", false).await);
    let runs_before = app.state.hasher.runs();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let body =
                json!({"current_password": format!("guess {i}"), "new_password": "x".repeat(12)});
            c.post("/api/password", &body).await.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let checked = app.state.hasher.runs() - runs_before;
    assert!(
        checked <= ratatoskr_app::services::accounts::MAX_PASSWORD_CHANGE_FAILURES as u64,
        "{checked} guesses checked: {statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 400).count() < 3,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 400 | 401 | 429)),
        "{statuses:?}"
    );
    assert_eq!(c.get_json("/api/session").await.1["authenticated"], false);
}

#[tokio::test]
async fn concurrent_preference_writes_never_store_more_than_sixteen_and_lose_none() {
    let app = spawn_app_args(&[]).await;
    let c = Arc::new(app.logged_in("alice", false).await);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.put(&format!("/api/session/preferences/k{i}"), &json!(i))
                .await
                .status()
                .as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let stored = statuses.iter().filter(|s| **s == 204).count();
    assert_eq!(stored, 16, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 8);
    let (_, prefs) = c.get_json("/api/session/preferences").await;
    assert_eq!(prefs.as_object().unwrap().len(), 16, "{prefs}");
}

/// Rows of the SQL audit log.
async fn audit_rows(app: &crate::helpers::TestApp) -> usize {
    app.state.stores.audit.recent(100_000).await.unwrap().len()
}

#[tokio::test]
async fn anonymous_traffic_is_counted_per_hour_and_never_grows_the_audit_log() {
    let app = spawn_app_args(&[]).await;
    let admin = app.logged_in("root", true).await;
    let rows_before = audit_rows(&app).await;
    let counters_before = app.state.db.count_audit_counters().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let address = app.address.clone();
        tasks.push(tokio::spawn(async move {
            // A made-up, well-formed session cookie ("expired") or a cross-site post.
            let c = Client::new(&address, "abuse-test");
            c.set_cookie(Some(ratatoskr_core::Token::generate().as_cookie_value()));
            if i % 2 == 0 {
                c.get("/api/session").await.status().as_u16()
            } else {
                c.request(
                    reqwest::Method::POST,
                    "/api/logout",
                    None,
                    &[("sec-fetch-site", "cross-site")],
                )
                .await
                .status()
                .as_u16()
            }
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let status = t.await.unwrap();
        assert_eq!(status, if i % 2 == 0 { 200 } else { 403 });
    }
    app.state.audit.flush().await.unwrap();
    assert_eq!(
        audit_rows(&app).await,
        rows_before,
        "anonymous events became rows"
    );
    let counters = app.state.db.count_audit_counters().await.unwrap() - counters_before;
    assert!(
        counters <= 4,
        "{counters} counter rows for two kinds of anonymous event"
    );
    // The analytics still see every one of them.
    let (status, f) = admin.get_json("/api/admin/analytics").await;
    assert_eq!(status, 200, "{f}");
    let sum = |k: &str| {
        f[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>()
    };
    assert!(sum("expiries") >= 150, "{f}");
    assert!(sum("csrf_refusals") >= 150, "{f}");
    let by_reason = app
        .state
        .audit
        .anonymous_counts(Timestamp::EPOCH)
        .await
        .unwrap();
    assert!(
        by_reason.iter().any(|c| c.kind == "csrf_refused"
            && c.reason.as_deref() == Some("cross_site_request")
            && c.count >= 150),
        "{by_reason:?}"
    );
}

#[tokio::test]
async fn audit_rows_and_counters_past_the_retention_are_pruned() {
    use ratatoskr_core::{AuditEvent, AuditKind};
    let app = spawn_app_args(&[]).await; // default retention: 90 days
    assert_eq!(
        app.state.settings.audit_retention,
        std::time::Duration::from_secs(90 * 24 * 3600)
    );
    const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
    let now = Timestamp::now();
    for (age, detail) in [(91 * DAY, "old"), (89 * DAY, "kept")] {
        let mut e = AuditEvent::new(AuditKind::RevokedByUser)
            .user(Some("42"))
            .detail(detail);
        e.at = now.minus(age).as_millis();
        app.state.stores.audit.try_record(&e).await.unwrap();
        let hour = now.minus(age).hour_start();
        app.state
            .db
            .add_audit_count(hour, "expired", detail, 7)
            .await
            .unwrap();
    }
    ratatoskr_app::analytics::sample(&app.state).await.unwrap();
    let rows = app.state.stores.audit.recent(1000).await.unwrap();
    let details: Vec<_> = rows.iter().filter_map(|e| e.detail.as_deref()).collect();
    assert!(
        details.contains(&"kept") && !details.contains(&"old"),
        "{details:?}"
    );
    let counters = app
        .state
        .audit
        .anonymous_counts(Timestamp::EPOCH)
        .await
        .unwrap();
    let reasons: Vec<_> = counters
        .iter()
        .filter_map(|c| c.reason.as_deref())
        .collect();
    assert_eq!(reasons, ["kept"]);
}
