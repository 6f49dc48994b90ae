//! What a session's device is, from its User-Agent: a small classifier (browser, operating
//! system, class), recorded at login as a session attribute so that it moves with the session
//! through every rotation and ends with it.

use serde::{Deserialize, Serialize};

/// The session attribute the device lives under.
pub const ATTR: &str = "app.device";

/// Longest User-Agent kept.
const MAX_UA: usize = 256;

/// What the "your sessions" page shows about a session's client.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Device {
    /// The User-Agent as sent (truncated).
    pub user_agent: String,
    /// The client address at login.
    pub ip: String,
    /// `Firefox`, `Chrome`, … or `Other`.
    pub browser: String,
    /// `Linux`, `Android`, … or `Other`.
    pub os: String,
    /// `desktop`, `mobile`, `tablet`, `bot` or `unknown`.
    pub class: String,
}

impl Device {
    /// Classify a User-Agent seen from `ip`.
    pub fn classify(user_agent: &str, ip: String) -> Self {
        let ua: String = user_agent.chars().take(MAX_UA).collect();
        let (browser, os, class) = classify(&ua);
        Device {
            user_agent: ua,
            ip,
            browser: browser.into(),
            os: os.into(),
            class: class.into(),
        }
    }

    /// "Firefox on Linux".
    pub fn label(&self) -> String {
        match (self.browser.as_str(), self.os.as_str()) {
            ("Other", "Other") => "Unknown client".into(),
            (b, "Other") => b.to_owned(),
            (b, o) => format!("{b} on {o}"),
        }
    }
}

fn classify(ua: &str) -> (&'static str, &'static str, &'static str) {
    let l = ua.to_ascii_lowercase();
    let has = |s: &str| l.contains(s);
    let bot = [
        "bot", "crawler", "spider", "curl/", "wget/", "python", "reqwest", "go-http", "okhttp",
    ]
    .iter()
    .any(|b| has(b));
    let browser = if has("edg/") || has("edge/") {
        "Edge"
    } else if has("opr/") || has("opera") {
        "Opera"
    } else if has("firefox/") || has("fxios/") {
        "Firefox"
    } else if has("chrome/") || has("chromium/") || has("crios/") {
        "Chrome"
    } else if has("safari/") && has("version/") {
        "Safari"
    } else if has("curl/") {
        "curl"
    } else {
        "Other"
    };
    let os = if has("android") {
        "Android"
    } else if has("iphone") || has("ipad") || has("ipod") {
        "iOS"
    } else if has("cros") {
        "ChromeOS"
    } else if has("windows") {
        "Windows"
    } else if has("mac os x") || has("macintosh") {
        "macOS"
    } else if has("linux") || has("x11") {
        "Linux"
    } else {
        "Other"
    };
    let class = if bot {
        "bot"
    } else if has("ipad") || has("tablet") || (has("android") && !has("mobile")) {
        "tablet"
    } else if has("mobi") || has("iphone") || has("android") {
        "mobile"
    } else if os != "Other" {
        "desktop"
    } else {
        "unknown"
    };
    (browser, os, class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ua: &str) -> (String, String, String) {
        let d = Device::classify(ua, "192.0.2.1".into());
        (d.browser, d.os, d.class)
    }

    #[test]
    fn common_user_agents() {
        let s = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
        assert_eq!(
            c("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
            s("Firefox", "Linux", "desktop")
        );
        assert_eq!(
            c(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
            ),
            s("Safari", "iOS", "mobile")
        );
        assert_eq!(
            c(
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36"
            ),
            s("Chrome", "Android", "mobile")
        );
        assert_eq!(
            c(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36 Edg/126.0"
            ),
            s("Edge", "Windows", "desktop")
        );
        assert_eq!(
            c(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
            ),
            s("Safari", "macOS", "desktop")
        );
        assert_eq!(c("curl/8.5.0"), s("curl", "Other", "bot"));
        assert_eq!(c(""), s("Other", "Other", "unknown"));
        let long = "x".repeat(1000);
        assert_eq!(Device::classify(&long, String::new()).user_agent.len(), 256);
    }
}
