//! What a session's device is, from its User-Agent: a small classifier (browser, operating
//! system, class), recorded at login as a session attribute so that it moves with the session
//! through every rotation and ends with it.

use serde::{Deserialize, Serialize};

/// What kind of device a session's client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    /// A desktop or laptop browser.
    Desktop,
    /// A phone.
    Mobile,
    /// A tablet.
    Tablet,
    /// A script, crawler or command-line client.
    Bot,
    /// Anything else (and whatever an older version recorded that this one does not know).
    #[serde(other)]
    Unknown,
}

impl DeviceClass {
    /// `desktop`, `mobile`, `tablet`, `bot` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceClass::Desktop => "desktop",
            DeviceClass::Mobile => "mobile",
            DeviceClass::Tablet => "tablet",
            DeviceClass::Bot => "bot",
            DeviceClass::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for DeviceClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// What kind of device.
    pub class: DeviceClass,
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
            class,
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

fn classify(ua: &str) -> (&'static str, &'static str, DeviceClass) {
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
        DeviceClass::Bot
    } else if has("ipad") || has("tablet") || (has("android") && !has("mobile")) {
        DeviceClass::Tablet
    } else if has("mobi") || has("iphone") || has("android") {
        DeviceClass::Mobile
    } else if os != "Other" {
        DeviceClass::Desktop
    } else {
        DeviceClass::Unknown
    };
    (browser, os, class)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ua: &str) -> (String, String, DeviceClass) {
        let d = Device::classify(ua, "192.0.2.1".into());
        (d.browser, d.os, d.class)
    }

    #[test]
    fn common_user_agents() {
        use DeviceClass::*;
        let s = |a: &str, b: &str, c: DeviceClass| (a.to_owned(), b.to_owned(), c);
        assert_eq!(
            c("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
            s("Firefox", "Linux", Desktop)
        );
        assert_eq!(
            c(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
            ),
            s("Safari", "iOS", Mobile)
        );
        assert_eq!(
            c(
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36"
            ),
            s("Chrome", "Android", Mobile)
        );
        assert_eq!(
            c(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36 Edg/126.0"
            ),
            s("Edge", "Windows", Desktop)
        );
        assert_eq!(
            c(
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
            ),
            s("Safari", "macOS", Desktop)
        );
        assert_eq!(c("curl/8.5.0"), s("curl", "Other", Bot));
        assert_eq!(c(""), s("Other", "Other", Unknown));
        let long = "x".repeat(1000);
        assert_eq!(Device::classify(&long, String::new()).user_agent.len(), 256);
    }
}

#[cfg(test)]
mod class_tests {
    use super::*;

    #[test]
    fn device_classes_keep_their_stored_names_and_read_unknown_ones_as_unknown() {
        let d = Device::classify("curl/8.5.0", "192.0.2.1".into());
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["class"], "bot");
        let old: Device = serde_json::from_value(serde_json::json!({
            "user_agent": "x", "ip": "", "browser": "Other", "os": "Other", "class": "fridge"
        }))
        .unwrap();
        assert_eq!(old.class, DeviceClass::Unknown);
    }
}
