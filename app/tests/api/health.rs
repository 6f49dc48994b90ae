use crate::helpers::spawn_app;

#[tokio::test]
async fn livez_answers_200_while_the_process_runs() {
    let app = spawn_app().await;
    let r = app.get("/livez").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn readyz_answers_200_when_the_store_answers() {
    let app = spawn_app().await;
    let r = app.get("/readyz").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn the_embedded_default_creates_its_database_file_in_wal_mode() {
    let app = spawn_app().await;
    assert!(app.dir.join("ratatoskr.db").exists());
    assert!(app.dir.join("ratatoskr.db-wal").exists(), "WAL mode");
}
