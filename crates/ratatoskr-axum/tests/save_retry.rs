//! A save the store could not take keeps its changes pending: the handler's explicit
//! `Session::save` fails, and the save after the handler sends the same changes again.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use axum::extract::State;
use axum::routing::get;
use common::{Client, TestStore};
use ratatoskr_axum::{Session, SessionConfig, SessionError, SessionLayer};
use ratatoskr_core::{ManagerConfig, SessionManager};

/// Sets `a` and removes `b`, tries to save while the store fails, and returns with the store
/// healthy again: the layer's save after the handler must write both changes.
async fn change_then_failed_save(
    State(store): State<Arc<TestStore>>,
    session: Session,
) -> Result<String, SessionError> {
    session.insert("a", &2u8).await?;
    session.remove("b").await?;
    store.fail.store(true, SeqCst);
    let failed = session.save().await.is_err();
    store.fail.store(false, SeqCst);
    Ok(format!("save failed: {failed}"))
}

async fn setup(session: Session) -> Result<&'static str, SessionError> {
    session.insert("a", &1u8).await?;
    session.insert("b", &1u8).await?;
    Ok("ok")
}

async fn show(session: Session) -> Result<String, SessionError> {
    let a: Option<u8> = session.get("a").await?;
    let b: Option<u8> = session.get("b").await?;
    Ok(format!("{a:?} {b:?}"))
}

#[tokio::test]
async fn changes_a_failed_save_could_not_write_are_written_by_the_next_save() {
    let store = Arc::new(TestStore::default());
    let manager = SessionManager::new(store.clone(), ManagerConfig::default());
    let layer = SessionLayer::new(manager, SessionConfig::default()).expect("valid config");
    let router = axum::Router::new()
        .route("/setup", get(setup))
        .route("/change", get(change_then_failed_save))
        .route("/show", get(show))
        .layer(layer)
        .with_state(store.clone());
    let mut c = Client::new(router);
    assert_eq!(c.get("/setup").await.status, 200);
    assert_eq!(c.get("/show").await.body, "Some(1) Some(1)");
    let applies = store.applies.load(SeqCst);
    let r = c.get("/change").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body, "save failed: true",
        "the explicit save met the outage"
    );
    assert_eq!(
        store.applies.load(SeqCst) - applies,
        2,
        "the failed save, then the layer's save of the same changes"
    );
    assert_eq!(c.get("/show").await.body, "Some(2) None");
}
