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
