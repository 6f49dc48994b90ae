//! The application's tables are migrated by `sqlx::migrate!` (`app/migrations/`). A database
//! the code before migrations created has the tables and no `_sqlx_migrations`: it must open
//! with its data, get the migration recorded, and open again.

use std::path::Path;

use crate::helpers::{
    Backend, PASSWORD, fresh_dir, fresh_pg_schema, pg_settings, spawn_app_with, test_settings,
};
use ratatoskr_app::services::hasher::Hasher;

/// A fixture script, with a real password hash for `alice`.
async fn fixture(file: &str) -> String {
    let sql = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/api/fixtures")
            .join(file),
    )
    .expect("read the fixture");
    let hash = Hasher::new(1, 1)
        .hash(PASSWORD.into())
        .await
        .expect("hash a password");
    sql.replace("{hash}", &hash)
}

/// The `CREATE` statements of the application's tables, as the database describes them.
async fn schema_of(db: &ratatoskr_app::db::Db) -> Vec<String> {
    use ratatoskr_app::db::Db;
    match db {
        Db::Sqlite(p) => sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE name LIKE 'app\\_%' ESCAPE '\\' ORDER BY name",
        )
        .fetch_all(p)
        .await
        .unwrap(),
        Db::Postgres(p) => sqlx::query_scalar(
            "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
               || ' ' || coalesce(column_default, '')
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name LIKE 'app\\_%'
             ORDER BY table_name, ordinal_position",
        )
        .fetch_all(p)
        .await
        .unwrap(),
    }
}

/// The versions `_sqlx_migrations` records as applied.
async fn applied(db: &ratatoskr_app::db::Db) -> Vec<i64> {
    use ratatoskr_app::db::Db;
    let sql = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
    match db {
        Db::Sqlite(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
        Db::Postgres(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
    }
}

async fn a_database_from_before_migrations_opens_with_its_data(backend: Backend) {
    let dir = fresh_dir();
    let (settings, schema, script) = match backend {
        Backend::Sqlite => (
            test_settings(&dir, &[]),
            None,
            fixture("before_migrations.sqlite.sql").await,
        ),
        _ => {
            let (schema, url) = fresh_pg_schema().await;
            let settings = pg_settings(&url, &dir, &[]);
            (
                settings,
                Some(schema),
                fixture("before_migrations.postgres.sql").await,
            )
        }
    };
    // The database as the old code left it: the library's tables and the application's.
    let sql = ratatoskr_sql::SqlStore::connect(&settings.database_url)
        .await
        .expect("open the database");
    let db = ratatoskr_app::db::Db::of(&sql);
    match &db {
        ratatoskr_app::db::Db::Sqlite(p) => sqlx::raw_sql(&script).execute(p).await.map(|_| ()),
        ratatoskr_app::db::Db::Postgres(p) => sqlx::raw_sql(&script).execute(p).await.map(|_| ()),
    }
    .expect("the old DDL and rows");
    let before = schema_of(&db).await;
    assert!(before.len() >= 6, "{before:?}");

    let app = spawn_app_with(settings.clone(), dir, schema).await;
    assert_eq!(applied(&app.state.db).await, [1]);
    assert_eq!(schema_of(&app.state.db).await, before, "the schema changed");
    // The old rows are there: the user logs in, the platform is listed.
    let c = app.client();
    let (status, body) = c.login("alice", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["is_admin"], true);
    let (status, body) = c.get_json("/api/platforms").await;
    assert_eq!(status, 200);
    let platforms = body["platforms"].as_array().cloned().unwrap_or_default();
    assert_eq!(platforms.len(), 1, "{body}");
    assert_eq!(platforms[0]["instance_url"], "https://old.example");
    // The very row the old code wrote.
    assert_eq!(platforms[0]["created_at"], 1_700_000_000_000_i64);
    // Opening it again migrates nothing more.
    ratatoskr_app::startup::open(&settings)
        .await
        .expect("the migrated database opens again");
    assert_eq!(applied(&app.state.db).await, [1]);
}

#[tokio::test]
async fn a_sqlite_database_from_before_migrations_opens_with_its_data() {
    a_database_from_before_migrations_opens_with_its_data(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_postgresql_database_from_before_migrations_opens_with_its_data() {
    a_database_from_before_migrations_opens_with_its_data(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_opening_a_new_sqlite_file_at_once_both_start() {
    // SQLite has no migration lock: both may try to record the first migration, and the loser
    // retries (`Db::migrate`).
    for _ in 0..5 {
        let dir = fresh_dir();
        let settings = test_settings(&dir, &[]);
        let (a, b) = tokio::join!(
            ratatoskr_app::startup::open(&settings),
            ratatoskr_app::startup::open(&settings)
        );
        let (a, b) = (a.expect("first opens").0, b.expect("second opens").0);
        assert_eq!(applied(&a.db).await, [1]);
        assert_eq!(applied(&b.db).await, [1]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
