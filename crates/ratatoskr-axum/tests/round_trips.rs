//! How many store calls a visit and a login cost, through HTTP, as the HTTP bench's login
//! scenario does them (`GET /visit` sets one attribute; `POST /login/{user}` logs in, then sets
//! two). Each call is a network round trip on Redis and a transaction on SQL: a count here that
//! goes up is a round trip that came back.
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use async_trait::async_trait;
use axum::Json;
use axum::extract::Path;
use axum::routing::{get, post};
use common::{Client, Req, audit_text};
use ratatoskr_axum::{Session, SessionConfig, SessionError, SessionLayer};
use ratatoskr_core::audit::MemoryAudit;
use ratatoskr_core::record::Delta;
use ratatoskr_core::{
    AuditKind, ManagerConfig, MemoryStore, Meta, Millis, Record, SessionKey, SessionManager,
    SessionStore, SessionSummary, StoreResult,
};
use serde_json::{Value, json};

/// A memory store that counts every call by kind. `rotate_and_list_user` is counted as one call
/// (as a store answering both in one round trip would make it), not as a rotate and a list.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    creates: AtomicUsize,
    loads: AtomicUsize,
    applies: AtomicUsize,
    touches: AtomicUsize,
    rotates: AtomicUsize,
    rotate_lists: AtomicUsize,
    destroys: AtomicUsize,
    lists: AtomicUsize,
}

/// The counts of one request or a few, by kind.
#[derive(Debug, Default, PartialEq, Eq)]
struct Calls {
    creates: usize,
    loads: usize,
    applies: usize,
    touches: usize,
    rotates: usize,
    rotate_lists: usize,
    destroys: usize,
    lists: usize,
}

impl Counting {
    /// The counts so far, and zero them.
    fn take(&self) -> Calls {
        Calls {
            creates: self.creates.swap(0, SeqCst),
            loads: self.loads.swap(0, SeqCst),
            applies: self.applies.swap(0, SeqCst),
            touches: self.touches.swap(0, SeqCst),
            rotates: self.rotates.swap(0, SeqCst),
            rotate_lists: self.rotate_lists.swap(0, SeqCst),
            destroys: self.destroys.swap(0, SeqCst),
            lists: self.lists.swap(0, SeqCst),
        }
    }
}

#[async_trait]
impl SessionStore for Counting {
    fn backend_name(&self) -> &'static str {
        "counting"
    }
    async fn create(&self, k: &SessionKey, r: &Record) -> StoreResult<()> {
        self.creates.fetch_add(1, SeqCst);
        self.inner.create(k, r).await
    }
    async fn load(&self, k: &SessionKey) -> StoreResult<Option<Record>> {
        self.loads.fetch_add(1, SeqCst);
        self.inner.load(k).await
    }
    async fn apply(&self, k: &SessionKey, d: &Delta) -> StoreResult<()> {
        self.applies.fetch_add(1, SeqCst);
        self.inner.apply(k, d).await
    }
    async fn touch(&self, k: &SessionKey, m: &Meta, t: Millis) -> StoreResult<bool> {
        self.touches.fetch_add(1, SeqCst);
        self.inner.touch(k, m, t).await
    }
    async fn rotate(&self, o: &SessionKey, n: &SessionKey, m: &Meta, t: Millis) -> StoreResult<()> {
        self.rotates.fetch_add(1, SeqCst);
        self.inner.rotate(o, n, m, t).await
    }
    async fn rotate_and_list_user(
        &self,
        o: &SessionKey,
        n: &SessionKey,
        m: &Meta,
        t: Millis,
    ) -> StoreResult<Vec<SessionSummary>> {
        self.rotate_lists.fetch_add(1, SeqCst);
        self.inner.rotate_and_list_user(o, n, m, t).await
    }
    async fn destroy(&self, k: &SessionKey) -> StoreResult<bool> {
        self.destroys.fetch_add(1, SeqCst);
        self.inner.destroy(k).await
    }
    async fn list_user(&self, u: &str) -> StoreResult<Vec<SessionSummary>> {
        self.lists.fetch_add(1, SeqCst);
        self.inner.list_user(u).await
    }
    async fn destroy_user(&self, u: &str, e: Option<&SessionKey>) -> StoreResult<u64> {
        self.destroys.fetch_add(1, SeqCst);
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

fn token_json(token: Option<String>) -> Json<Value> {
    Json(json!({ "csrf_token": token }))
}

/// The bench's visit: one attribute, answer the CSRF token.
async fn visit(session: Session) -> Result<Json<Value>, SessionError> {
    session.insert("visited", &1u8).await?;
    Ok(token_json(session.csrf_token().await?))
}

/// The bench's login: log in, then two attributes.
async fn login(session: Session, Path(user): Path<String>) -> Result<Json<Value>, SessionError> {
    session.login(&user).await?;
    session.insert("name", &user).await?;
    session.insert("counter", &0u64).await?;
    Ok(token_json(session.csrf_token().await?))
}

/// An attribute before the login (pending when the login runs), one after.
async fn set_then_login(
    session: Session,
    Path(user): Path<String>,
) -> Result<Json<Value>, SessionError> {
    session.insert("before", &"b").await?;
    session.login(&user).await?;
    session.insert("after", &"a").await?;
    Ok(token_json(session.csrf_token().await?))
}

/// The session's CSRF token, without changing anything.
async fn token(session: Session) -> Result<Json<Value>, SessionError> {
    Ok(token_json(session.csrf_token().await?))
}

/// Privilege change on the loaded session.
async fn rotate(session: Session) -> Result<Json<Value>, SessionError> {
    session.rotate().await?;
    Ok(token_json(session.csrf_token().await?))
}

/// Every attribute the test sets, and the user.
async fn show(session: Session) -> Result<Json<Value>, SessionError> {
    let mut out = json!({ "user": session.user_id().await? });
    for name in ["visited", "name", "counter", "before", "after"] {
        out[name] = session.get::<Value>(name).await?.unwrap_or(Value::Null);
    }
    Ok(Json(out))
}

struct App {
    router: axum::Router,
    store: Arc<Counting>,
    audit: Arc<MemoryAudit>,
}

fn app(max_sessions_per_user: Option<usize>) -> App {
    let store = Arc::new(Counting::default());
    let audit = Arc::new(MemoryAudit::default());
    let manager = SessionManager::new(
        store.clone(),
        ManagerConfig {
            max_sessions_per_user,
            ..ManagerConfig::default()
        },
    );
    let layer = SessionLayer::new(manager, SessionConfig::default().with_audit(audit.clone()))
        .expect("valid config");
    let router = axum::Router::new()
        .route("/visit", get(visit))
        .route("/login/{user}", post(login))
        .route("/set-then-login/{user}", post(set_then_login))
        .route("/rotate", post(rotate))
        .route("/token", get(token))
        .route("/show", get(show))
        .layer(layer);
    App {
        router,
        store,
        audit,
    }
}

#[tokio::test]
async fn a_visit_is_one_create_carrying_its_attribute() {
    let app = app(Some(5));
    let mut c = Client::new(app.router.clone());
    assert_eq!(c.get("/visit").await.status, 200);
    assert_eq!(
        app.store.take(),
        Calls {
            creates: 1,
            ..Calls::default()
        },
        "no apply after the create"
    );
    assert_eq!(c.get("/show").await.json()["visited"], 1);
}

#[tokio::test]
async fn a_login_after_a_visit_is_one_load_one_rotation_with_the_list_and_one_apply() {
    let app = app(Some(5));
    let mut c = Client::new(app.router.clone());
    c.get("/visit").await;
    let before = c.cookie.clone().unwrap();
    c.get("/token").await;
    let csrf_before = c.csrf.clone().unwrap();
    app.store.take();
    let r = c.send(Req::post("/login/alice")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        app.store.take(),
        Calls {
            loads: 1,
            rotate_lists: 1,
            applies: 1,
            ..Calls::default()
        },
        "the loaded session is not loaded again, the limit's list comes with the rotation, \
         and the handler's two attributes are one apply"
    );
    assert_ne!(c.cookie.as_deref(), Some(before.as_str()));
    let shown = c.get("/show").await.json();
    assert_eq!(shown["user"], "alice");
    assert_eq!(shown["visited"], 1, "pre-login data carried over");
    assert_eq!(
        (shown["name"].clone(), shown["counter"].clone()),
        (json!("alice"), json!(0))
    );
    // The pre-login token is dead, and so is its CSRF token (the secret was renewed).
    let old = Req::get("/show")
        .header("Cookie", &before)
        .send(&app.router)
        .await;
    assert_eq!(old.json()["user"], Value::Null);
    assert_eq!(old.json()["visited"], Value::Null);
    let mut stale = Client::new(app.router.clone());
    stale.cookie = c.cookie.clone();
    stale.csrf = Some(csrf_before);
    assert_eq!(
        stale.post("/rotate").await.status,
        403,
        "old CSRF token refused"
    );
    assert_eq!(
        c.post("/rotate").await.status,
        200,
        "new CSRF token accepted"
    );
    let audit = audit_text(&app.audit);
    let token_of = |cookie: &str| cookie.split_once('=').unwrap().1.to_owned();
    assert!(
        !audit.contains(&token_of(&before)),
        "tokens never reach the audit trail"
    );
}

#[tokio::test]
async fn a_login_over_the_limit_adds_one_destroy_per_evicted_session_and_audits_it() {
    let app = app(Some(2));
    let mut devices = Vec::new();
    for _ in 0..3 {
        let mut c = Client::new(app.router.clone());
        c.get("/visit").await;
        app.store.take();
        assert_eq!(c.post("/login/bob").await.status, 200);
        devices.push((c, app.store.take()));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(devices[0].1.destroys, 0);
    assert_eq!(devices[1].1.destroys, 0);
    assert_eq!(
        devices[2].1,
        Calls {
            loads: 1,
            rotate_lists: 1,
            destroys: 1,
            applies: 1,
            ..Calls::default()
        }
    );
    assert_eq!(
        devices[0].0.get("/show").await.json()["user"],
        Value::Null,
        "oldest evicted"
    );
    assert_eq!(devices[1].0.get("/show").await.json()["user"], "bob");
    assert_eq!(devices[2].0.get("/show").await.json()["user"], "bob");
    let evicted: Vec<_> = app
        .audit
        .events()
        .into_iter()
        .filter(|e| e.kind == AuditKind::EvictedByLimit)
        .collect();
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].user_id.as_deref(), Some("bob"));
}

#[tokio::test]
async fn changes_pending_at_login_travel_into_the_new_token_in_the_same_apply() {
    let app = app(Some(5));
    let mut c = Client::new(app.router.clone());
    c.get("/visit").await;
    let before = c.cookie.clone().unwrap();
    app.store.take();
    assert_eq!(c.post("/set-then-login/carol").await.status, 200);
    assert_eq!(
        app.store.take(),
        Calls {
            loads: 1,
            rotate_lists: 1,
            applies: 1,
            ..Calls::default()
        },
        "the change made before the login is written with the one after it"
    );
    let shown = c.get("/show").await.json();
    assert_eq!(
        (shown["before"].clone(), shown["after"].clone()),
        (json!("b"), json!("a"))
    );
    assert_eq!(shown["user"], "carol");
    let old = Req::get("/show")
        .header("Cookie", &before)
        .send(&app.router)
        .await;
    assert_eq!(
        old.json()["before"],
        Value::Null,
        "nothing written under the old token"
    );
}

#[tokio::test]
async fn a_login_without_a_session_creates_it_with_the_pending_attributes() {
    let app = app(Some(5));
    let mut c = Client::new(app.router.clone());
    assert_eq!(c.post("/set-then-login/dave").await.status, 200);
    assert_eq!(
        app.store.take(),
        Calls {
            creates: 1,
            lists: 1,
            applies: 1,
            ..Calls::default()
        },
        "the create carries `before`; `after` is the one apply"
    );
    let shown = c.get("/show").await.json();
    assert_eq!(
        (shown["before"].clone(), shown["after"].clone()),
        (json!("b"), json!("a"))
    );
    assert_eq!(shown["user"], "dave");
}

#[tokio::test]
async fn a_privilege_rotation_does_not_load_the_session_again() {
    let app = app(Some(5));
    let mut c = Client::new(app.router.clone());
    c.get("/visit").await;
    c.post("/login/erin").await;
    app.store.take();
    assert_eq!(c.post("/rotate").await.status, 200);
    assert_eq!(
        app.store.take(),
        Calls {
            loads: 1,
            rotates: 1,
            ..Calls::default()
        }
    );
    assert_eq!(c.get("/show").await.json()["name"], "erin");
}
