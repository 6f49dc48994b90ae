//! `TestApp`: the real application on a random port with its own fresh database (a SQLite
//! file in a temporary directory, or a PostgreSQL schema of its own), optionally with a Redis
//! tier of its own; `Backend`, the three storage setups a test body runs on, and
//! [`on_backends!`](crate::on_backends), which turns one body into a test per backend; and
//! `Client`: one "browser" with its own cookie, CSRF token and User-Agent.
#![allow(dead_code)]

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;
use ratatoskr_app::configuration::Settings;
use ratatoskr_app::domain::user::User;
use ratatoskr_app::startup::Application;
use ratatoskr_app::web::state::AppState;
use ratatoskr_testkit::RedisProcess;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    settings: Settings,
}

/// The cookie name the app uses.
pub const COOKIE: &str = "__Host-ratatoskr";
/// A password good enough for the rules.
pub const PASSWORD: &str = "correct horse battery";

/// A running application.
pub struct TestApp {
    pub address: String,
    pub dir: PathBuf,
    pub state: AppState,
    pub pg_schema: Option<String>,
    /// The Redis tier's own server, when the app runs on the tiers.
    pub redis: Option<RedisProcess>,
}

/// Where a test app keeps its sessions and data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: a SQLite file, sessions in it.
    Sqlite,
    /// PostgreSQL, a fresh schema per test.
    Postgres,
    /// The tiers: Redis in front (a redis-server of the test's own), SQLite behind.
    ///
    /// The app has no key-prefix setting (the Redis store's `rt:` is fixed) and its keys
    /// (`rt:u:1`, `rt:owner`, `rt:fence`, `rt:live`) would collide between tests sharing one
    /// Redis, so every test gets a fresh server rather than the shared one on 6379.
    Tiers,
}

impl Backend {
    /// Start the app on this backend with default test settings.
    pub async fn spawn(self) -> TestApp {
        self.spawn_args(&[]).await
    }

    /// Start the app on this backend with extra command-line flags.
    pub async fn spawn_args(self, extra: &[&str]) -> TestApp {
        match self {
            Backend::Sqlite => spawn_app_args(extra).await,
            Backend::Postgres => spawn_pg_app_args(extra).await,
            Backend::Tiers => {
                let redis = RedisProcess::start();
                let url = redis.url();
                let mut args = vec!["--redis-url", url.as_str()];
                args.extend_from_slice(extra);
                let mut app = spawn_app_args(&args).await;
                app.redis = Some(redis);
                app
            }
        }
    }

    /// What `/health/sessions` calls the database behind the sessions.
    pub fn database_name(self) -> &'static str {
        match self {
            Backend::Sqlite | Backend::Tiers => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// Whether the app keeps its data in a SQLite file in [`TestApp::dir`].
    pub fn has_sqlite_file(self) -> bool {
        self.database_name() == "sqlite"
    }
}

/// One `#[tokio::test]` per backend for each named `async fn name(backend: Backend)`:
/// `name::on_sqlite`, `name::on_postgres` and `name::on_tiers`, the same body on each.
#[macro_export]
macro_rules! on_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use $crate::helpers::Backend;

                #[tokio::test]
                async fn on_sqlite() {
                    super::$name(Backend::Sqlite).await
                }

                #[tokio::test]
                async fn on_postgres() {
                    super::$name(Backend::Postgres).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_tiers() {
                    super::$name(Backend::Tiers).await
                }
            }
        )+
    };
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(schema) = self.pg_schema.take() {
            // Best effort, on a thread of its own (no async drop).
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    use sqlx::{ConnectOptions, Connection};
                    if let Ok(mut c) = sqlx::postgres::PgConnectOptions::from_str(&pg_url())
                        .expect("pg url")
                        .connect()
                        .await
                    {
                        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                            .execute(&mut c)
                            .await;
                        let _ = c.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// The PostgreSQL server for tests.
pub fn pg_url() -> String {
    std::env::var("RATATOSKR_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn random_suffix() -> String {
    ratatoskr_core::Token::generate()
        .key()
        .handle()
        .to_string()
        .to_ascii_lowercase()
        .replace('-', "_")
}

/// Settings for a fresh app: port 0, a new SQLite file in its own temp directory, extra flags.
pub fn test_settings(dir: &std::path::Path, extra: &[&str]) -> Settings {
    let db = dir.join("ratatoskr.db");
    let url = format!("sqlite://{}", db.display());
    let mut args = vec![
        "ratatoskr",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        &url,
        "--sample-every",
        "200ms",
    ];
    args.extend_from_slice(extra);
    Args::parse_from(args).settings
}

/// A fresh temp directory for one test app.
pub fn fresh_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ratatoskr-app-{}-{}",
        std::process::id(),
        random_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Start the app with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_args(&[]).await
}

/// Start the app with extra command-line flags.
pub async fn spawn_app_args(extra: &[&str]) -> TestApp {
    let dir = fresh_dir();
    spawn_app_with(test_settings(&dir, extra), dir, None).await
}

/// Start the app on a fresh PostgreSQL schema.
pub async fn spawn_pg_app() -> TestApp {
    spawn_pg_app_args(&[]).await
}

/// A fresh PostgreSQL schema: its name, and a database URL whose connections work in it.
pub async fn fresh_pg_schema() -> (String, String) {
    use sqlx::{ConnectOptions, Connection};
    let schema = format!("ratatoskr_app_{}", random_suffix());
    let mut admin = sqlx::postgres::PgConnectOptions::from_str(&pg_url())
        .expect("RATATOSKR_TEST_PG_URL")
        .connect()
        .await
        .expect("connect to the test PostgreSQL server (RATATOSKR_TEST_PG_URL)");
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let _ = admin.close().await;
    let base = pg_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    (schema, url)
}

/// Settings for an app on the PostgreSQL database `url`, its key file in `dir`, extra flags.
pub fn pg_settings(url: &str, dir: &std::path::Path, extra: &[&str]) -> Settings {
    let key_file = dir.join("secret.key");
    let mut args = vec![
        "ratatoskr",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        url,
        "--secret-key-file",
        key_file.to_str().unwrap(),
        "--sample-every",
        "200ms",
    ];
    args.extend_from_slice(extra);
    Args::parse_from(args).settings
}

/// Start the app on a fresh PostgreSQL schema with extra command-line flags.
pub async fn spawn_pg_app_args(extra: &[&str]) -> TestApp {
    let (schema, url) = fresh_pg_schema().await;
    let dir = fresh_dir();
    let settings = pg_settings(&url, &dir, extra);
    spawn_app_with(settings, dir, Some(schema)).await
}

/// Start the app with the given settings.
pub async fn spawn_app_with(
    settings: Settings,
    dir: PathBuf,
    pg_schema: Option<String>,
) -> TestApp {
    let app = Application::build(&settings).await.expect("app builds");
    let address = format!("http://{}", app.local_addr());
    let state = app.state.clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        dir,
        state,
        pg_schema,
        redis: None,
    }
}

impl TestApp {
    /// A new client with no cookie.
    pub fn client(&self) -> Client {
        Client::new(
            &self.address,
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
    }

    /// A new client with a given User-Agent.
    pub fn client_ua(&self, ua: &str) -> Client {
        Client::new(&self.address, ua)
    }

    /// A plain GET without cookies.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client().get(path).await
    }

    /// Create a user directly (as the CLI does).
    pub async fn create_user(&self, name: &str, admin: bool) -> User {
        match self.state.accounts().register(name, PASSWORD, admin).await {
            Ok(u) => u,
            Err(e) => panic!("create user {name}: {e:?}"),
        }
    }

    /// A client logged in as a new user.
    pub async fn logged_in(&self, name: &str, admin: bool) -> Client {
        self.create_user(name, admin).await;
        let c = self.client();
        let (status, body) = c.login(name, PASSWORD).await;
        assert_eq!(status, 200, "login of {name}: {body}");
        c
    }

    /// The SQLite database file and its WAL, concatenated.
    pub fn database_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for name in ["ratatoskr.db", "ratatoskr.db-wal"] {
            if let Ok(b) = std::fs::read(self.dir.join(name)) {
                out.extend(b);
            }
        }
        out
    }
}

/// One client: a cookie jar of one cookie, the last CSRF token, a User-Agent.
pub struct Client {
    pub address: String,
    http: reqwest::Client,
    pub cookie: Mutex<Option<String>>,
    pub csrf: Mutex<Option<String>>,
}

impl Client {
    pub fn new(address: &str, ua: &str) -> Self {
        Client {
            address: address.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .user_agent(ua)
                .build()
                .expect("client"),
            cookie: Mutex::new(None),
            csrf: Mutex::new(None),
        }
    }

    pub fn cookie(&self) -> Option<String> {
        self.cookie.lock().unwrap().clone()
    }

    pub fn set_cookie(&self, v: Option<String>) {
        *self.cookie.lock().unwrap() = v;
    }

    pub fn csrf(&self) -> Option<String> {
        self.csrf.lock().unwrap().clone()
    }

    /// A request with the cookie (and, for unsafe methods, the CSRF header), remembering any
    /// cookie the response sets or clears.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{}", self.address, path));
        if let Some(c) = self.cookie() {
            rb = rb.header("cookie", format!("{COOKIE}={c}"));
        }
        let unsafe_method = !matches!(method, Method::GET | Method::HEAD);
        let overrides_csrf = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("x-csrf-token"));
        if unsafe_method
            && !overrides_csrf
            && let Some(t) = self.csrf()
        {
            rb = rb.header("x-csrf-token", t);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let r = rb.send().await.expect("request");
        self.remember(&r);
        r
    }

    fn remember(&self, r: &reqwest::Response) {
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap_or("");
            let Some(rest) = v.strip_prefix(&format!("{COOKIE}=")) else {
                continue;
            };
            let value = rest.split(';').next().unwrap_or("");
            if value.is_empty() || v.contains("Max-Age=0") {
                self.set_cookie(None);
            } else {
                self.set_cookie(Some(value.to_owned()));
            }
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.request(Method::GET, path, None, &[]).await
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.get(path).await;
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.request(Method::POST, path, Some(body), &[]).await
    }

    pub async fn post_empty(&self, path: &str) -> reqwest::Response {
        self.request(Method::POST, path, None, &[]).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> reqwest::Response {
        self.request(Method::PUT, path, Some(body), &[]).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> reqwest::Response {
        self.request(Method::PATCH, path, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.request(Method::DELETE, path, None, &[]).await
    }

    /// A urlencoded form post (as a browser's form), adding the CSRF field when known.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut body: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(t) = self.csrf() {
            body.push(("csrf_token".into(), t));
        }
        let encoded = body
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut rb = self
            .http
            .post(format!("{}{}", self.address, path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "text/html")
            .body(encoded);
        if let Some(c) = self.cookie() {
            rb = rb.header("cookie", format!("{COOKIE}={c}"));
        }
        let r = rb.send().await.expect("request");
        self.remember(&r);
        r
    }

    /// `POST /api/login`, remembering the CSRF token: `(status, body)`.
    pub async fn login(&self, name: &str, password: &str) -> (u16, Value) {
        let r = self
            .request(
                Method::POST,
                "/api/login",
                Some(&json!({"username": name, "password": password})),
                &[],
            )
            .await;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status == 200 {
            *self.csrf.lock().unwrap() = body["csrf_token"].as_str().map(str::to_owned);
        }
        (status, body)
    }

    /// Refresh the CSRF token from `GET /api/session`.
    pub async fn refresh_csrf(&self) -> Value {
        let (_, body) = self.get_json("/api/session").await;
        *self.csrf.lock().unwrap() = body["csrf_token"].as_str().map(str::to_owned);
        body
    }
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Assert the JSON error shape and code; returns the message.
pub async fn assert_error(r: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(r.status().as_u16(), status, "status for {code}");
    let body: Value = r.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned();
    assert!(!message.is_empty());
    assert_eq!(body.as_object().unwrap().len(), 1, "only `error`: {body}");
    message
}

/// A platform body.
pub fn platform(name: &str, url: &str, user: &str) -> Value {
    json!({
        "platform_type": "mastodon",
        "name": name,
        "instance_url": url,
        "username": user,
        "access_token": format!("token-{name}-{user}-s3cr3t"),
    })
}
