//! `TestApp`: the real application on a random port with its own fresh database.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ratatoskr::configuration::Settings;
use ratatoskr::startup::Application;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    settings: Settings,
}

/// A running application and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub dir: PathBuf,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Settings for a fresh app: port 0, a new SQLite file in its own temp directory.
pub fn test_settings(dir: &std::path::Path) -> Settings {
    let db = dir.join("ratatoskr.db");
    Args::parse_from([
        "ratatoskr",
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        &format!("sqlite://{}", db.display()),
    ])
    .settings
}

/// A fresh temp directory for one test app.
pub fn fresh_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ratatoskr-app-{}-{}",
        std::process::id(),
        ratatoskr_core::Token::generate().key().handle()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Start the app with default test settings.
pub async fn spawn_app() -> TestApp {
    let dir = fresh_dir();
    spawn_app_with(test_settings(&dir), dir).await
}

/// Start the app with the given settings.
pub async fn spawn_app_with(settings: Settings, dir: PathBuf) -> TestApp {
    let app = Application::build(&settings).await.expect("app builds");
    let address = format!("http://{}", app.local_addr());
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    TestApp {
        address,
        client,
        dir,
    }
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{}", self.address, path))
            .send()
            .await
            .expect("request")
    }
}
