//! Requests in process through `tower::ServiceExt::oneshot`, raw bytes over a socket for what no
//! HTTP client would send, and a browser-like client whose Set-Cookie handling is the `cookie`
//! crate's.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt as _;

/// The authority requests name in `Host` (a loopback one: plain-HTTP origins pass there).
pub const HOST: &str = "127.0.0.1:8080";

/// The peer address in-process requests carry, as axum's `serve` would attach it.
const PEER: ([u8; 4], u16) = ([127, 0, 0, 1], 50_000);

#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn new(method: &str, path: &str) -> Self {
        Req {
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }
    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
    }
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }
    pub fn json(mut self, v: &Value) -> Self {
        self.body = serde_json::to_vec(v).unwrap();
        self.header("Content-Type", "application/json")
    }
    pub fn form(mut self, body: &str) -> Self {
        self.body = body.as_bytes().to_vec();
        self.header("Content-Type", "application/x-www-form-urlencoded")
    }
    fn has(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }
    /// Whether every header value is one an HTTP client can send (no control characters).
    pub fn is_well_formed(&self) -> bool {
        self.headers
            .iter()
            .all(|(_, v)| HeaderValue::from_bytes(v).is_ok())
    }

    /// Call `app` in process, as a connection from a loopback peer would.
    pub async fn send(&self, app: &Router) -> Resp {
        let mut request = Request::builder()
            .method(Method::from_bytes(self.method.as_bytes()).expect("a method"))
            .uri(&self.path);
        if !self.has("host") {
            request = request.header(header::HOST, HOST);
        }
        for (name, value) in &self.headers {
            let value = HeaderValue::from_bytes(value).unwrap_or_else(|_| {
                panic!("{name}: not a header value an HTTP client sends; use send_raw")
            });
            request = request.header(name.as_str(), value);
        }
        let mut request = request
            .header(header::CONTENT_LENGTH, self.body.len())
            .body(Body::from(self.body.clone()))
            .expect("a well-formed request");
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(PEER)));
        let response = app.clone().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .expect("the response body");
        Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// The request as HTTP/1.1 bytes, byte for byte as given (for `send_raw`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut raw = format!("{} {} HTTP/1.1\r\n", self.method, self.path).into_bytes();
        if !self.has("host") {
            raw.extend_from_slice(format!("Host: {HOST}\r\n").as_bytes());
        }
        for (n, v) in &self.headers {
            raw.extend_from_slice(n.as_bytes());
            raw.extend_from_slice(b": ");
            raw.extend_from_slice(v);
            raw.extend_from_slice(b"\r\n");
        }
        raw.extend_from_slice(
            format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                self.body.len()
            )
            .as_bytes(),
        );
        raw.extend_from_slice(&self.body);
        raw
    }
}

#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ASCII"))
    }
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ASCII"))
            .collect()
    }
    pub fn set_cookie(&self) -> Option<&str> {
        let all = self.all("set-cookie");
        assert!(all.len() <= 1, "more than one Set-Cookie: {all:?}");
        all.first().copied()
    }
    /// The Set-Cookie, if any, parsed.
    pub fn cookie(&self) -> Option<cookie::Cookie<'static>> {
        self.set_cookie().map(|c| {
            cookie::Cookie::parse(c.to_owned())
                .unwrap_or_else(|e| panic!("a malformed Set-Cookie {c:?}: {e}"))
        })
    }
    /// The `name=value` pair of the Set-Cookie, if any.
    pub fn cookie_pair(&self) -> Option<String> {
        self.cookie().map(|c| c.stripped().to_string())
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    /// The `error.code` of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {:?}", self.body))
            .to_owned()
    }
}

/// Send bytes no HTTP client would (control characters in headers, garbage) over a real
/// socket, so the server's HTTP parser meets them first; `addr` comes from [`App::listen`].
pub async fn send_raw(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let mut parsed = [httparse::EMPTY_HEADER; 32];
    let mut head = httparse::Response::new(&mut parsed);
    let httparse::Status::Complete(len) = head.parse(&buf).expect("an HTTP/1.1 response") else {
        panic!("incomplete response: {:?}", String::from_utf8_lossy(&buf));
    };
    let mut headers = HeaderMap::new();
    for h in head.headers.iter() {
        headers.append(
            HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(h.value).unwrap(),
        );
    }
    assert!(
        headers.get(header::TRANSFER_ENCODING).is_none(),
        "a chunked answer to raw bytes: decode it here"
    );
    Resp {
        status: head.code.expect("a status"),
        headers,
        body: String::from_utf8_lossy(&buf[len..]).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// A browser-like client: keeps the session cookie, sends Fetch Metadata and Origin on unsafe
// requests like a same-origin page would, and the CSRF token when it has one.

pub struct Client {
    pub app: Router,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
    pub user_agent: String,
}

impl Client {
    pub fn new(app: Router) -> Self {
        Client {
            app,
            cookie: None,
            csrf: None,
            user_agent: "TestBrowser/1.0".into(),
        }
    }

    /// Send as a same-origin page would (cookie, UA, Fetch Metadata, Origin, CSRF token).
    pub async fn send(&mut self, mut req: Req) -> Resp {
        req = req.header("User-Agent", self.user_agent.clone());
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", c.clone());
        }
        if req.method != "GET" && req.method != "HEAD" {
            req = req
                .header("Sec-Fetch-Site", "same-origin")
                .header("Origin", format!("http://{HOST}"));
            if let Some(t) = &self.csrf {
                req = req.header("X-CSRF-Token", t.clone());
            }
        }
        let resp = req.send(&self.app).await;
        self.absorb(&resp);
        resp
    }

    /// Keep what a browser keeps from a response: the cookie (dropped when the server removes
    /// it) and, from JSON, the CSRF token.
    pub fn absorb(&mut self, resp: &Resp) {
        if let Some(set) = resp.cookie() {
            let removed =
                set.value().is_empty() || set.max_age() == Some(cookie::time::Duration::ZERO);
            self.cookie = (!removed).then(|| set.stripped().to_string());
        }
        if resp
            .header("content-type")
            .is_some_and(|c| c.contains("json"))
            && let Ok(v) = serde_json::from_str::<Value>(&resp.body)
            && let Some(t) = v.get("csrf_token").and_then(Value::as_str)
        {
            self.csrf = Some(t.to_owned());
        }
    }

    pub async fn get(&mut self, path: &str) -> Resp {
        self.send(Req::get(path)).await
    }

    pub async fn post(&mut self, path: &str) -> Resp {
        self.send(Req::post(path)).await
    }

    /// Log in and pick up the new cookie and CSRF token.
    pub async fn login(&mut self, user: &str) -> Resp {
        let r = self.post(&format!("/login/{user}")).await;
        assert_eq!(r.status, 200, "login failed: {}", r.body);
        r
    }
}
