//! Headless Chromium driven through ChromeDriver with the `fantoccini` WebDriver client (plain
//! HTTP to the local driver: no TLS stack). Chromium or ChromeDriver missing is a test failure,
//! never a skip. The helpers below wait with deadlines and panic with the page's URL, so a
//! failing step names itself.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::cookies::Cookie;
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// How long a page has to show an element or reach a URL.
const STEP: Duration = Duration::from_secs(10);

/// The binaries (override with `CHROMIUM` / `CHROMEDRIVER`).
pub fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}
pub fn chromedriver() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

/// A running ChromeDriver, stopped on drop (with the browser profiles it used).
pub struct Driver {
    child: Child,
    url: String,
    profiles: Vec<PathBuf>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in &self.profiles {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Driver {
    /// Start ChromeDriver on a free port; browsers connect once it listens.
    pub async fn start() -> Driver {
        for bin in [chromium(), chromedriver()] {
            assert!(
                Path::new(&bin).exists(),
                "{bin} is missing: the browser tests need Chromium and ChromeDriver \
                 (scripts/test.sh installs the Debian packages chromium and chromium-driver)"
            );
        }
        let port = free_port();
        let child = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            profiles: Vec::new(),
        }
    }

    /// A new browser (its own profile, so its own cookies) with a window of `w`×`h`.
    pub async fn browser(&mut self, w: u32, h: u32) -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "ratatoskr-chromium-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        self.profiles.push(profile.clone());
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={w},{h}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "unhandledPromptBehavior": "accept",
            "goog:chromeOptions": { "binary": chromium(), "args": args },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(Capabilities::from_iter(caps))
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not start Chromium: {e}"));
        let b = Browser(client);
        b.set_window(w, h).await;
        b
    }
}

/// One browser session.
pub struct Browser(Client);

impl Browser {
    /// The underlying WebDriver client.
    pub fn client(&self) -> &Client {
        &self.0
    }

    /// Resize the window.
    pub async fn set_window(&self, w: u32, h: u32) {
        self.0.set_window_size(w, h).await.expect("resize");
    }

    /// Navigate and wait for the load.
    pub async fn goto(&self, url: &str) {
        self.0
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.0.current_url().await.expect("current url").to_string()
    }

    /// The page source.
    pub async fn source(&self) -> String {
        self.0.source().await.expect("page source")
    }

    /// The first element matching `css`, waiting for it.
    pub async fn find(&self, css: &str) -> Element {
        match self
            .0
            .wait()
            .at_most(STEP)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => panic!("no element {css} on {}: {e}", self.url().await),
        }
    }

    /// Whether an element matching `css` is there now.
    pub async fn has(&self, css: &str) -> bool {
        !self
            .0
            .find_all(Locator::Css(css))
            .await
            .expect("find elements")
            .is_empty()
    }

    /// Click the element matching `css`.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Clear the field matching `css` and type `text` into it.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("clear");
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// The visible text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text")
    }

    /// Wait until the element matching `css` says `needle` (after a click or a script that
    /// navigates, the page being left may still answer for a moment); its text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            // An element of the page being left goes stale: read again.
            let text = match self.0.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {css} to say {needle:?} on {}; it says {text:?}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Run a script and return its result.
    pub async fn exec(&self, script: &str) -> Value {
        self.0
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script {script:?}: {e}"))
    }

    /// Run an asynchronous script (it calls `arguments[arguments.length - 1]` with its result).
    pub async fn exec_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.0
            .execute_async(script, args)
            .await
            .unwrap_or_else(|e| panic!("async script: {e}"))
    }

    /// Press Tab on the active element (keyboard navigation).
    pub async fn press_tab(&self) {
        let tab = KeyActions::new("keyboard".into())
            .then(KeyAction::Down {
                value: Key::Tab.into(),
            })
            .then(KeyAction::Up {
                value: Key::Tab.into(),
            });
        self.0.perform_actions(tab).await.expect("press Tab");
    }

    /// The browser's cookies for the current page.
    pub async fn cookies(&self) -> Vec<Cookie<'static>> {
        self.0.get_all_cookies().await.expect("cookies")
    }

    /// Wait until the URL satisfies `pred`.
    pub async fn wait_url(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let u = self.url().await;
            if pred(&u) {
                return u;
            }
            assert!(Instant::now() < deadline, "waited for {what}; still at {u}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Save a PNG screenshot of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.0.screenshot().await.expect("screenshot");
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Save a screenshot of the whole page (resizing the window to the page's height first).
    pub async fn full_screenshot(&self, path: &Path, width: u32) {
        let h = self
            .exec("return Math.ceil(document.documentElement.scrollHeight)")
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(400, 4000) as u32;
        self.set_window(width, h + 90).await;
        self.screenshot(path).await;
    }

    /// End the session.
    pub async fn quit(self) {
        let _ = self.0.close().await;
    }
}
