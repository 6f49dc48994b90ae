//! Shared test harness: a counting/failing store, a raw HTTP/1.1 client, and a test app served
//! on 127.0.0.1:0.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

use async_trait::async_trait;
use axum::extract::{Form, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use ratatoskr_axum::{
    AuthUser, CsrfToken, RevokeReason, Session, SessionConfig, SessionControl, SessionError,
    SessionLayer,
};
use ratatoskr_core::audit::MemoryAudit;
use ratatoskr_core::record::Delta;
use ratatoskr_core::{
    Handle, ManagerConfig, MemoryStore, Meta, Millis, Record, SessionKey, SessionManager,
    SessionStore, SessionSummary, StoreError, StoreResult,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const COOKIE: &str = "__Host-ratatoskr";

// ---------------------------------------------------------------------------------------------
// Store wrapper

/// A memory store that counts every call and fails every call while `fail` is set.
#[derive(Default)]
pub struct TestStore {
    pub inner: MemoryStore,
    pub loads: AtomicUsize,
    pub creates: AtomicUsize,
    pub applies: AtomicUsize,
    pub touches: AtomicUsize,
    pub rotates: AtomicUsize,
    pub destroys: AtomicUsize,
    pub fail: AtomicBool,
}

impl TestStore {
    /// Live sessions in the store.
    pub fn inner_count_sync(&self) -> u64 {
        futures_lite_block(self.inner.count())
    }
    pub fn calls(&self) -> usize {
        self.loads.load(SeqCst) + self.writes()
    }
    pub fn writes(&self) -> usize {
        self.creates.load(SeqCst)
            + self.applies.load(SeqCst)
            + self.touches.load(SeqCst)
            + self.rotates.load(SeqCst)
            + self.destroys.load(SeqCst)
    }
    fn check(&self, counter: &AtomicUsize) -> StoreResult<()> {
        counter.fetch_add(1, SeqCst);
        if self.fail.load(SeqCst) {
            Err(StoreError::backend("test", "injected outage"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl SessionStore for TestStore {
    fn backend_name(&self) -> &'static str {
        "test"
    }
    async fn create(&self, k: &SessionKey, r: &Record) -> StoreResult<()> {
        self.check(&self.creates)?;
        self.inner.create(k, r).await
    }
    async fn load(&self, k: &SessionKey) -> StoreResult<Option<Record>> {
        self.check(&self.loads)?;
        self.inner.load(k).await
    }
    async fn apply(&self, k: &SessionKey, d: &Delta) -> StoreResult<()> {
        self.check(&self.applies)?;
        self.inner.apply(k, d).await
    }
    async fn touch(&self, k: &SessionKey, m: &Meta, t: Millis) -> StoreResult<bool> {
        self.check(&self.touches)?;
        self.inner.touch(k, m, t).await
    }
    async fn rotate(&self, o: &SessionKey, n: &SessionKey, m: &Meta, t: Millis) -> StoreResult<()> {
        self.check(&self.rotates)?;
        self.inner.rotate(o, n, m, t).await
    }
    async fn destroy(&self, k: &SessionKey) -> StoreResult<bool> {
        self.check(&self.destroys)?;
        self.inner.destroy(k).await
    }
    async fn list_user(&self, u: &str) -> StoreResult<Vec<SessionSummary>> {
        if self.fail.load(SeqCst) {
            return Err(StoreError::backend("test", "injected outage"));
        }
        self.inner.list_user(u).await
    }
    async fn destroy_user(&self, u: &str, e: Option<&SessionKey>) -> StoreResult<u64> {
        self.check(&self.destroys)?;
        self.inner.destroy_user(u, e).await
    }
    async fn count(&self) -> StoreResult<u64> {
        self.inner.count().await
    }
    async fn reap(&self) -> StoreResult<u64> {
        self.inner.reap().await
    }
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The test application

async fn session_json(session: Session, csrf: CsrfToken) -> Result<Json<Value>, SessionError> {
    let info = session.info().await?;
    Ok(Json(json!({
        "authenticated": info.as_ref().is_some_and(|i| i.user_id.is_some()),
        "user": info.as_ref().and_then(|i| i.user_id.clone()),
        "handle": info.as_ref().map(|i| i.handle.to_string()),
        "csrf_token": csrf.0,
        "idle_expires_at": info.as_ref().map(|i| i.idle_expires_at),
        "absolute_expires_at": info.as_ref().map(|i| i.absolute_expires_at),
    })))
}

async fn count(session: Session) -> Result<String, SessionError> {
    let n: u64 = session.get("n").await?.unwrap_or(0) + 1;
    session.insert("n", &n).await?;
    Ok(n.to_string())
}

async fn read(session: Session) -> Result<String, SessionError> {
    let n: Option<u64> = session.get("n").await?;
    Ok(n.map_or("none".into(), |n| n.to_string()))
}

async fn set_attr(
    session: Session,
    Path(name): Path<String>,
    Json(v): Json<Value>,
) -> Result<StatusCode, SessionError> {
    session.insert(&name, &v).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_attr(session: Session, Path(name): Path<String>) -> Result<Json<Value>, SessionError> {
    Ok(Json(
        session.get::<Value>(&name).await?.unwrap_or(Value::Null),
    ))
}

async fn del_attr(session: Session, Path(name): Path<String>) -> Result<StatusCode, SessionError> {
    session.remove(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn login(session: Session, Path(user): Path<String>) -> Result<Json<Value>, SessionError> {
    session.login(&user).await?;
    Ok(Json(
        json!({ "user": user, "csrf_token": session.csrf_token().await? }),
    ))
}

async fn login_remember(
    session: Session,
    Path(user): Path<String>,
) -> Result<StatusCode, SessionError> {
    session.login(&user).await?;
    session.set_remember_me(true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn logout(session: Session) -> Result<StatusCode, SessionError> {
    session.logout().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn me(user: AuthUser) -> String {
    user.user_id
}

async fn rotate(session: Session) -> Result<Json<Value>, SessionError> {
    session.rotate().await?;
    Ok(Json(json!({ "csrf_token": session.csrf_token().await? })))
}

async fn fail_500(session: Session) -> Result<StatusCode, SessionError> {
    session.insert("doomed", &true).await?;
    Ok(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn revoke_others(user: AuthUser) -> Result<Json<Value>, SessionError> {
    let n = user.session.revoke_other_sessions().await?;
    Ok(Json(json!({ "revoked": n })))
}

async fn logout_everywhere(user: AuthUser) -> Result<Json<Value>, SessionError> {
    let n = user.session.logout_everywhere().await?;
    Ok(Json(json!({ "revoked": n })))
}

async fn list_sessions(user: AuthUser) -> Result<Json<Value>, SessionError> {
    let current = user.session.handle().await?;
    let list = user.session.list_user_sessions().await?;
    Ok(Json(Value::Array(
        list.iter()
            .map(
                |s| json!({ "handle": s.handle.to_string(), "current": Some(s.handle) == current }),
            )
            .collect(),
    )))
}

async fn revoke_one(user: AuthUser, Path(handle): Path<String>) -> Response {
    let Some(handle) = Handle::parse(&handle) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match user.session.revoke_session(&handle).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn change_password(
    user: AuthUser,
    control: SessionControl,
) -> Result<Json<Value>, SessionError> {
    let n = control
        .revoke_user(&user.user_id, RevokeReason::PasswordChanged)
        .await?;
    Ok(Json(json!({ "revoked": n })))
}

async fn form(Form(fields): Form<HashMap<String, String>>) -> String {
    fields.get("msg").cloned().unwrap_or_default()
}

async fn hook(Path(provider): Path<String>) -> String {
    format!("hook {provider}")
}

async fn nothing() -> &'static str {
    "ok"
}

pub fn routes() -> Router {
    Router::new()
        .route("/nothing", get(nothing).post(nothing))
        .route("/count", get(count).post(count))
        .route("/read", get(read))
        .route("/attr/{name}", get(get_attr).put(set_attr).delete(del_attr))
        .route("/api/session", get(session_json))
        .route("/login/{user}", post(login))
        .route("/login-remember/{user}", post(login_remember))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/rotate", post(rotate))
        .route("/fail500", post(fail_500))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{handle}", delete(revoke_one))
        .route("/revoke-others", post(revoke_others))
        .route("/logout-everywhere", post(logout_everywhere))
        .route("/change-password", post(change_password))
        .route("/form", post(form))
        .route("/hooks/{provider}", post(hook))
}

pub struct App {
    pub addr: SocketAddr,
    pub store: Arc<TestStore>,
    pub audit: Arc<MemoryAudit>,
    pub manager: SessionManager,
    pub control: SessionControl,
}

impl App {
    pub fn client(&self) -> Client {
        Client::new(self.addr)
    }
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serve `routes()` behind a session layer with `config` (its audit replaced by a MemoryAudit).
pub async fn spawn(config: SessionConfig) -> App {
    spawn_with(routes(), config, ManagerConfig::default()).await
}

pub async fn spawn_with(router: Router, config: SessionConfig, mc: ManagerConfig) -> App {
    let store = Arc::new(TestStore::default());
    let audit = Arc::new(MemoryAudit::default());
    let manager = SessionManager::new(store.clone(), mc);
    let layer = SessionLayer::new(manager.clone(), config.with_audit(audit.clone()))
        .expect("valid test config");
    let control = layer.control();
    let app = router.layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    App {
        addr,
        store,
        audit,
        manager,
        control,
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1

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
    pub async fn send(&self, addr: SocketAddr) -> Resp {
        let mut raw = format!("{} {} HTTP/1.1\r\n", self.method, self.path).into_bytes();
        if !self.has("host") {
            raw.extend_from_slice(format!("Host: {addr}\r\n").as_bytes());
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
        send_raw(addr, &raw).await
    }
}

#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn set_cookie(&self) -> Option<&str> {
        let all = self.all("set-cookie");
        assert!(all.len() <= 1, "more than one Set-Cookie: {all:?}");
        all.first().copied()
    }
    /// The `name=value` pair of the Set-Cookie, if any.
    pub fn cookie_pair(&self) -> Option<String> {
        self.set_cookie()
            .map(|c| c.split(';').next().unwrap().trim().to_owned())
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

pub async fn send_raw(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Resp {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .unwrap();
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// A browser-like client: keeps the session cookie, sends Fetch Metadata and Origin on unsafe
// requests like a same-origin page would, and the CSRF token when it has one.

pub struct Client {
    pub addr: SocketAddr,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
    pub user_agent: String,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Client {
            addr,
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
                .header("Origin", format!("http://{}", self.addr));
            if let Some(t) = &self.csrf {
                req = req.header("X-CSRF-Token", t.clone());
            }
        }
        let resp = req.send(self.addr).await;
        self.absorb(&resp);
        resp
    }

    pub fn absorb(&mut self, resp: &Resp) {
        if let Some(set) = resp.set_cookie() {
            let pair = set.split(';').next().unwrap().trim();
            if pair.ends_with('=') || set.contains("Max-Age=0") {
                self.cookie = None;
            } else {
                self.cookie = Some(pair.to_owned());
            }
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

/// Every string in the audit trail, for "the token never appears" checks.
pub fn audit_text(audit: &MemoryAudit) -> String {
    format!("{:?}", audit.events())
}

fn futures_lite_block<F: std::future::Future<Output = StoreResult<u64>>>(f: F) -> u64 {
    // MemoryStore futures complete without waiting; poll once with a no-op waker.
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r.unwrap(),
        std::task::Poll::Pending => panic!("memory store future did not complete at once"),
    }
}
