//! The built binary: the admin CLI against a temporary SQLite database, and `serve` answering
//! on the URL it prints.

#[path = "api/helpers.rs"]
mod helpers;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use helpers::{PASSWORD, fresh_dir, spawn_app_with, test_settings};

const BIN: &str = env!("CARGO_BIN_EXE_ratatoskr");

fn ratatoskr(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("ratatoskr.db").display()),
        )
        .env_remove("REDIS_URL")
        .env_remove("RATATOSKR_SECRET_KEY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the ratatoskr binary");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn user_add_reads_the_password_from_stdin() {
    let dir = fresh_dir();
    let o = ratatoskr(
        &dir,
        &["user", "add", "Root", "--admin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(o.status.success(), "{}", err(&o));
    assert!(
        out(&o).contains("created administrator user root"),
        "{}",
        out(&o)
    );
    let o = ratatoskr(&dir, &["user", "add", "root"], &format!("{PASSWORD}\n"));
    assert!(!o.status.success());
    assert!(err(&o).contains("taken"), "{}", err(&o));
    let o = ratatoskr(&dir, &["user", "add", "bob"], "short\n");
    assert!(!o.status.success());
    assert!(err(&o).contains("at least 8"), "{}", err(&o));
    let o = ratatoskr(&dir, &["user", "add", "bob"], "");
    assert!(!o.status.success());
    assert!(err(&o).contains("no password"), "{}", err(&o));
    let o = ratatoskr(&dir, &["user", "list"], "");
    assert!(
        out(&o).contains("root") && !out(&o).contains("bob"),
        "{}",
        out(&o)
    );

    // The user logs in to the app on the same database.
    let app = spawn_app_with(test_settings(&dir, &[]), dir.clone(), None).await;
    let c = app.client();
    let (status, body) = c.login("root", PASSWORD).await;
    assert_eq!(status, 200);
    assert_eq!(body["user"]["is_admin"], true);
}

#[tokio::test]
async fn sessions_list_and_revoke_and_stats() {
    let dir = fresh_dir();
    let app = spawn_app_with(test_settings(&dir, &[]), dir.clone(), None).await;
    let alice = app.logged_in("alice", false).await;
    let phone = app.client_ua(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148 Safari/604.1",
    );
    assert_eq!(phone.login("alice", PASSWORD).await.0, 200);
    let bob = app.logged_in("bob", false).await;

    let o = ratatoskr(&dir, &["sessions", "list"], "");
    assert!(o.status.success(), "{}", err(&o));
    let listing = out(&o);
    assert!(listing.contains("3 session(s)"), "{listing}");
    assert!(
        listing.contains("Firefox on Linux (desktop)") && listing.contains("(mobile)"),
        "{listing}"
    );
    assert!(
        err(&o).contains("2/2 users scanned"),
        "progress: {}",
        err(&o)
    );

    let o = ratatoskr(&dir, &["sessions", "list", "--user", "alice"], "");
    assert!(out(&o).contains("2 session(s)"), "{}", out(&o));
    let bobs_handle = bob.get_json("/api/session").await.1["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = ratatoskr(&dir, &["sessions", "list", "--user", "bob"], "");
    assert!(out(&o).contains(&bobs_handle));

    // Revoke one by handle.
    let o = ratatoskr(&dir, &["sessions", "revoke", &bobs_handle], "");
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("revoked session"));
    assert_eq!(bob.get_json("/api/session").await.1["authenticated"], false);
    let o = ratatoskr(&dir, &["sessions", "revoke", &bobs_handle], "");
    assert!(!o.status.success());
    let o = ratatoskr(&dir, &["sessions", "revoke", "not-a-handle"], "");
    assert!(!o.status.success());

    // Revoke every session of a user.
    let o = ratatoskr(&dir, &["sessions", "revoke", "--user", "alice"], "");
    assert!(
        out(&o).contains("revoked 2 session(s) of alice"),
        "{}",
        out(&o)
    );
    assert_eq!(
        alice.get_json("/api/session").await.1["authenticated"],
        false
    );
    assert_eq!(
        phone.get_json("/api/session").await.1["authenticated"],
        false
    );
    let o = ratatoskr(&dir, &["sessions", "revoke", "--user", "nobody"], "");
    assert!(!o.status.success());
    assert!(err(&o).contains("no user named nobody"));

    let o = ratatoskr(&dir, &["stats"], "");
    assert!(o.status.success(), "{}", err(&o));
    let stats = out(&o);
    let value = |label: &str| -> String {
        stats
            .lines()
            .find(|l| l.starts_with(&format!("{label:<28} ")))
            .unwrap_or_else(|| panic!("no {label} in {stats}"))[29..]
            .to_owned()
    };
    assert_eq!(value("users"), "2");
    assert_eq!(value("active sessions"), "0");
    assert_eq!(value("logins (24 h)"), "3");
    assert_eq!(value("revoked_by_admin (24 h)"), "3");
}

#[tokio::test]
async fn user_disable_and_passwd_end_the_users_sessions() {
    let dir = fresh_dir();
    let app = spawn_app_with(test_settings(&dir, &[]), dir.clone(), None).await;
    let alice = app.logged_in("alice", false).await;
    let o = ratatoskr(&dir, &["user", "passwd", "alice"], "another password\n");
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("1 session(s) ended"));
    assert_eq!(
        alice.get_json("/api/session").await.1["authenticated"],
        false
    );
    assert_eq!(alice.login("alice", "another password").await.0, 200);
    let o = ratatoskr(&dir, &["user", "disable", "alice"], "");
    assert!(
        out(&o).contains("disabled alice; 1 session(s) ended"),
        "{}",
        out(&o)
    );
    assert_eq!(
        alice.get_json("/api/session").await.1["authenticated"],
        false
    );
    assert_eq!(alice.login("alice", "another password").await.0, 401);
    let o = ratatoskr(&dir, &["user", "enable", "alice"], "");
    assert!(o.status.success());
    assert_eq!(alice.login("alice", "another password").await.0, 200);
}

#[tokio::test]
async fn serve_prints_its_url_and_how_to_create_the_first_admin_and_answers_livez() {
    let dir = fresh_dir();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .current_dir(&dir)
        .env_remove("DATABASE_URL")
        .env_remove("REDIS_URL")
        .env_remove("RATATOSKR_SECRET_KEY")
        .env("RATATOSKR_BIND", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ratatoskr");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && !lines.iter().any(|l: &String| l.contains("user add")) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    let text = lines.join("\n");
    let url = format!("http://localhost:{port}/");
    assert!(text.contains(&format!("serving on {url}")), "{text}");
    assert!(text.contains("ratatoskr user add NAME --admin"), "{text}");
    let r = reqwest::get(format!("http://127.0.0.1:{port}/livez"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The embedded default: SQLite and the generated key under ./data.
    assert!(dir.join("data/ratatoskr.db").exists());
    assert!(dir.join("data/secret.key").exists());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_never_prints_the_passwords_in_database_and_redis_urls() {
    for flag in ["--help", "-h"] {
        let o = Command::new(BIN)
            .arg(flag)
            .env(
                "DATABASE_URL",
                "postgres://app:db-s3cret-pw@db.example/ratatoskr",
            )
            .env("REDIS_URL", "redis://:redis-s3cret-pw@cache.example:6379/0")
            .env(
                "REDIS_CLUSTER_NODES",
                "redis://:cluster-s3cret-pw@n1.example:7000",
            )
            .env(
                "RATATOSKR_SECRET_KEY",
                "key-s3cret-0123456789abcdefghijklmnop",
            )
            .output()
            .expect("run the ratatoskr binary");
        assert!(o.status.success());
        let text = format!("{}{}", out(&o), err(&o));
        assert!(text.contains("DATABASE_URL"), "{text}");
        assert!(text.contains("REDIS_URL"), "{text}");
        assert!(!text.contains("s3cret"), "{flag} shows a secret:\n{text}");
    }
}

#[test]
fn help_still_shows_the_defaults_and_the_new_abuse_settings() {
    let o = Command::new(BIN)
        .arg("--help")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run the ratatoskr binary");
    let text = out(&o);
    for expected in [
        "sqlite://./data/ratatoskr.db",
        "RATATOSKR_LOGIN_RATE_LIMIT",
        "RATATOSKR_REGISTER_RATE_LIMIT",
        "RATATOSKR_PASSWORD_RATE_LIMIT",
        "RATATOSKR_HASH_CONCURRENCY",
        "RATATOSKR_HASH_QUEUE",
        "RATATOSKR_AUDIT_RETENTION",
    ] {
        assert!(text.contains(expected), "{expected} missing:\n{text}");
    }
}
