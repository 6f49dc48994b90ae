//! One client of the deployment: a cookie, the CSRF token, and the loopback address it connects
//! from (127.0.0.0/8 is all local on Linux, so each client can be a different "address").
//! Requests name their target — the proxy or one instance directly — so one session can be
//! used through any of them.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::deployment::PASSWORD;

/// The session cookie's name.
pub const COOKIE: &str = "__Host-ratatoskr";

/// A request's answer: status and JSON body (`Null` when there is none).
pub type Answer = (u16, Value);

/// One browser.
pub struct Browser {
    http: reqwest::Client,
    /// The session cookie's value, when the app set one.
    pub cookie: Option<String>,
    /// The CSRF token from the last login or `GET /api/session`.
    pub csrf: Option<String>,
}

/// An HTTP client connecting from `from`.
pub fn http_from(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .local_address(from)
        .build()
        .expect("client")
}

impl Browser {
    /// A browser on 127.0.0.1.
    pub fn new() -> Self {
        Self::from_address([127, 0, 0, 1].into())
    }

    /// A browser connecting from `from` (a loopback address).
    pub fn from_address(from: IpAddr) -> Self {
        Browser {
            http: http_from(from),
            cookie: None,
            csrf: None,
        }
    }

    /// A request to `base` (`http://host:port`), with the cookie and, on unsafe methods, the
    /// CSRF token; remembers a cookie the answer sets or clears.
    pub async fn send(
        &mut self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let unsafe_method = !matches!(method, Method::GET | Method::HEAD);
        let mut rb = self.http.request(method, format!("{base}{path}"));
        if let Some(c) = &self.cookie {
            rb = rb.header("cookie", format!("{COOKIE}={c}"));
        }
        if unsafe_method && let Some(t) = &self.csrf {
            rb = rb.header("x-csrf-token", t);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let retry = rb.try_clone();
        let r = match rb.send().await {
            Ok(r) => r,
            // What a browser does: a request a kept-alive connection closed without any answer is
            // sent again on a new connection. HAProxy relies on it (`http-reuse safe`): when an
            // instance dies with a request on a reused connection to it, the proxy closes the
            // client's connection rather than answer 502.
            Err(e) if closed_without_answer(&e) => retry
                .expect("a body that can be sent again")
                .send()
                .await
                .expect("request, sent again on a new connection"),
            Err(e) => panic!("request: {e:?}"),
        };
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap_or("");
            if let Some(rest) = v.strip_prefix(&format!("{COOKIE}=")) {
                let value = rest.split(';').next().unwrap_or("");
                self.cookie = (!value.is_empty() && !v.contains("Max-Age=0")).then(|| value.into());
            }
        }
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `GET`.
    pub async fn get(&mut self, base: &str, path: &str) -> Answer {
        self.send(base, Method::GET, path, None, &[]).await
    }

    /// `POST` with a JSON body.
    pub async fn post(&mut self, base: &str, path: &str, body: &Value) -> Answer {
        self.send(base, Method::POST, path, Some(body), &[]).await
    }

    /// `POST /api/register`: the status.
    pub async fn register(&mut self, base: &str, name: &str) -> u16 {
        let body = json!({"username": name, "password": PASSWORD});
        self.post(base, "/api/register", &body).await.0
    }

    /// `POST /api/login` with `password`, remembering the CSRF token on success.
    pub async fn login_with(
        &mut self,
        base: &str,
        name: &str,
        password: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let body = json!({"username": name, "password": password});
        let (status, body) = self
            .send(base, Method::POST, "/api/login", Some(&body), headers)
            .await;
        if status == 200 {
            self.csrf = body["csrf_token"].as_str().map(str::to_owned);
        }
        (status, body)
    }

    /// Log in with the test password; panics unless it succeeds.
    pub async fn login(&mut self, base: &str, name: &str) {
        let (status, body) = self.login_with(base, name, PASSWORD, &[]).await;
        assert_eq!(status, 200, "login of {name} through {base}: {body}");
    }
}

/// Whether `cookie` is a live, authenticated session for the instance at `base`: `GET
/// /api/platforms` answers 200, or 401 once the session is gone (a route that needs a login and
/// does not start an anonymous session). Touches no browser state (for pollers).
pub async fn authenticated(http: &reqwest::Client, base: &str, cookie: &str) -> bool {
    let r = http
        .get(format!("{base}/api/platforms"))
        .header("cookie", format!("{COOKIE}={cookie}"))
        .send()
        .await
        .expect("GET /api/platforms");
    match r.status().as_u16() {
        200 => true,
        401 => false,
        other => panic!("GET /api/platforms on {base}: {other}"),
    }
}

/// Whether `e` is a connection that closed before any byte of the answer arrived (hyper's
/// "incomplete message"), the one failure a browser retries by itself.
fn closed_without_answer(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if err
            .to_string()
            .contains("connection closed before message completed")
        {
            return true;
        }
        source = err.source();
    }
    false
}
