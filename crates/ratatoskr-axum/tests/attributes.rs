//! Reading attributes inside one request: a handler sees its own pending changes.
mod common;

use axum::{Router, routing::post};
use common::*;
use ratatoskr_axum::{Session, SessionConfig, SessionError};
use ratatoskr_core::ManagerConfig;

async fn seed(session: Session) -> Result<&'static str, SessionError> {
    session.insert("kept", &1u32).await?;
    session.insert("gone", &2u32).await?;
    Ok("seeded")
}

/// Reads the stored value, changes it, reads again; removes another and reads it.
async fn change(session: Session) -> Result<String, SessionError> {
    let before: Option<u32> = session.get("kept").await?;
    session.insert("kept", &10u32).await?;
    let after: Option<u32> = session.get("kept").await?;
    session.remove("gone").await?;
    let gone: Option<u32> = session.get("gone").await?;
    let missing: Option<u32> = session.get("never").await?;
    Ok(format!("{before:?} {after:?} {gone:?} {missing:?}"))
}

async fn wrong_type(session: Session) -> Result<String, SessionError> {
    match session.get::<String>("kept").await {
        Ok(v) => Ok(format!("read {v:?}")),
        Err(SessionError::Value(_)) => Ok("value error".into()),
        Err(e) => Err(e),
    }
}

#[tokio::test]
async fn a_handler_reads_its_own_pending_changes_and_stored_values() {
    let router = Router::new()
        .route("/seed", post(seed))
        .route("/change", post(change))
        .route("/wrong-type", post(wrong_type));
    let app = spawn_with(router, SessionConfig::default(), ManagerConfig::default()).await;
    let mut c = app.client();
    assert_eq!(c.post("/seed").await.status, 200);
    let r: Resp = c.post("/change").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "Some(1) Some(10) None None");
    // The changes were saved: the next request reads them from the store.
    let r = c.post("/change").await;
    assert_eq!(r.body, "Some(10) Some(10) None None");
    // A stored value of another type is a value error, not a panic or a silent None.
    let r = c.post("/wrong-type").await;
    assert_eq!(r.body, "value error");
}

/// Raw bytes: what `insert_raw` wrote, pending or stored, exactly; `None` for an attribute
/// never set or removed (pending or stored).
async fn raw(session: Session) -> Result<String, SessionError> {
    let stored = session.get_raw("blob").await?;
    session.insert_raw("fresh", b"\x00\xffraw".to_vec()).await?;
    let pending = session.get_raw("fresh").await?;
    session.remove("blob").await?;
    let removed = session.get_raw("blob").await?;
    let never = session.get_raw("never").await?;
    Ok(format!("{stored:?} {pending:?} {removed:?} {never:?}"))
}

async fn seed_raw(session: Session) -> Result<&'static str, SessionError> {
    session.insert_raw("blob", b"{\"a\":1}".to_vec()).await?;
    Ok("seeded")
}

#[tokio::test]
async fn raw_attributes_read_back_exactly_pending_or_stored() {
    let router = Router::new()
        .route("/seed", post(seed_raw))
        .route("/raw", post(raw));
    let app = spawn_with(router, SessionConfig::default(), ManagerConfig::default()).await;
    let mut c = app.client();
    assert_eq!(c.post("/seed").await.status, 200);
    let r: Resp = c.post("/raw").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let want = format!(
        "{:?} {:?} None None",
        Some(b"{\"a\":1}".to_vec()),
        Some(b"\x00\xffraw".to_vec())
    );
    assert_eq!(r.body, want);
    // Saved: the next request reads "fresh" from the store, and "blob" is gone there too.
    let r = c.post("/raw").await;
    assert_eq!(
        r.body,
        format!("None {:?} None None", Some(b"\x00\xffraw".to_vec()))
    );
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Platform {
    id: i64,
    name: String,
}

impl ratatoskr_axum::SessionValue for Platform {
    const KEY: &'static str = "active_platform";
}

async fn set_platform(session: Session) -> Result<String, SessionError> {
    session
        .set_value(&Platform {
            id: 7,
            name: "mastodon.social".into(),
        })
        .await?;
    let raw = session
        .get_raw("active_platform")
        .await?
        .unwrap_or_default();
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

async fn get_platform(session: Session) -> Result<String, SessionError> {
    Ok(format!("{:?}", session.get_value::<Platform>().await?))
}

async fn clear_platform(session: Session) -> Result<String, SessionError> {
    session.remove_value::<Platform>().await?;
    Ok(format!("{:?}", session.get_value::<Platform>().await?))
}

/// A typed value lives under its own key as JSON, is read back typed in a later request, and
/// goes with `remove_value` (pending at once, stored after the request).
#[tokio::test]
async fn typed_values_are_set_read_and_removed_under_their_key() {
    let router = Router::new()
        .route("/set", post(set_platform))
        .route("/get", post(get_platform))
        .route("/clear", post(clear_platform));
    let app = spawn_with(router, SessionConfig::default(), ManagerConfig::default()).await;
    let mut c = app.client();
    let r = c.post("/set").await;
    assert_eq!(r.body, r#"{"id":7,"name":"mastodon.social"}"#);
    let r = c.post("/get").await;
    assert_eq!(
        r.body,
        r#"Some(Platform { id: 7, name: "mastodon.social" })"#
    );
    assert_eq!(c.post("/clear").await.body, "None");
    assert_eq!(c.post("/get").await.body, "None", "the removal was saved");
}

async fn login_then_logout(session: Session) -> Result<&'static str, SessionError> {
    session.login("alice").await?;
    session.logout().await?;
    Ok("out")
}

/// Logging out in the request that created the session (a login without a prior cookie) ends
/// it and sends no cookie for it: the browser is never handed a token of an ended session.
#[tokio::test]
async fn a_logout_in_the_request_that_created_the_session_sends_no_token() {
    let router = Router::new().route("/in-and-out", post(login_then_logout));
    let app = spawn_with(router, SessionConfig::default(), ManagerConfig::default()).await;
    let r = Req::post("/in-and-out").send(&app.router).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r.set_cookie().unwrap_or_default();
    assert!(
        set.is_empty() || set.contains("Max-Age=0"),
        "only a removal, if anything: {set:?}"
    );
}

async fn just_logout(session: Session) -> Result<&'static str, SessionError> {
    session.logout().await?;
    Ok("out")
}

/// A logout from a visitor without a session cookie has nothing to remove: no `Set-Cookie`.
#[tokio::test]
async fn a_logout_without_a_cookie_sets_no_cookie() {
    let router = Router::new().route("/logout", post(just_logout));
    let app = spawn_with(router, SessionConfig::default(), ManagerConfig::default()).await;
    let r = Req::post("/logout").send(&app.router).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.set_cookie(), None);
}
