//! The servers under test. Every one answers the same three routes the same way:
//!
//! - `GET /visit`: start an anonymous session (one attribute, `visited`), as a login page does;
//!   the body is its CSRF token where the framework has one.
//! - `POST /login/{n}`: log user `n` in — a new session, or the visitor's session rotated to a
//!   new key — with two attributes, `name = "user {n}"` and `counter = 0`; the body is a CSRF
//!   token where the framework has one.
//! - `GET /read`: answer the session's `name` (401 without a session).
//! - `POST /write`: increment `counter` and answer its new value.
//!
//! Each server runs on its own threads (a Tokio runtime, or an actix `System` with its
//! workers), apart from the load generator's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// What is being measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    BareAxum,
    BareActix,
    RatatoskrTiered,
    RatatoskrTieredPostgres,
    RatatoskrRedis,
    TowerSessions,
    ActixSession,
}

#[derive(Clone, Copy, Debug)]
pub struct Contender {
    /// Short id for `--only` and the test.
    pub id: &'static str,
    /// The name in tables and the chart.
    pub name: &'static str,
    pub kind: Kind,
}

impl Contender {
    pub fn has_sessions(&self) -> bool {
        !matches!(self.kind, Kind::BareAxum | Kind::BareActix)
    }

    pub fn is_ratatoskr(&self) -> bool {
        matches!(
            self.kind,
            Kind::RatatoskrTiered | Kind::RatatoskrTieredPostgres | Kind::RatatoskrRedis
        )
    }
}

pub const CONTENDERS: &[Contender] = &[
    Contender {
        id: "bare-axum",
        name: "bare axum handler (no sessions)",
        kind: Kind::BareAxum,
    },
    Contender {
        id: "bare-actix",
        name: "bare actix-web handler (no sessions)",
        kind: Kind::BareActix,
    },
    Contender {
        id: "ratatoskr-tiered",
        name: "Ratatoskr tiered (Redis + SQLite, near cache)",
        kind: Kind::RatatoskrTiered,
    },
    Contender {
        id: "ratatoskr-tiered-pg",
        name: "Ratatoskr tiered (Redis + PostgreSQL, near cache)",
        kind: Kind::RatatoskrTieredPostgres,
    },
    Contender {
        id: "ratatoskr-redis",
        name: "Ratatoskr, Redis only (near cache)",
        kind: Kind::RatatoskrRedis,
    },
    Contender {
        id: "tower-sessions",
        name: "tower-sessions 0.14 + Redis (fred)",
        kind: Kind::TowerSessions,
    },
    Contender {
        id: "actix-session",
        name: "actix-session 0.11 + Redis (redis-rs)",
        kind: Kind::ActixSession,
    },
];

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    stop: Stop,
    /// Called after the phases: a line about the server's state (near-cache use, fallbacks).
    report: Option<Box<dyn Fn() -> String + Send>>,
    scratch: Option<PathBuf>,
    /// The PostgreSQL schema of a contender on PostgreSQL, dropped at the end.
    pg: Option<crate::store_bench::PgScratch>,
}

enum Stop {
    Tokio(tokio::runtime::Runtime),
    Actix {
        handle: actix_web::dev::ServerHandle,
        thread: std::thread::JoinHandle<()>,
    },
}

impl Server {
    pub fn start(
        contender: &Contender,
        redis_url: &str,
        pg_url: Option<&str>,
        threads: usize,
        scratch: PathBuf,
    ) -> Result<Server, String> {
        match contender.kind {
            Kind::BareActix => actix_server(None, threads),
            Kind::ActixSession => actix_server(Some(redis_url.to_owned()), threads),
            kind => tokio_server(kind, redis_url.to_owned(), pg_url, threads, scratch),
        }
    }

    pub fn report(&self) -> Option<String> {
        self.report.as_ref().map(|r| r())
    }

    pub fn stop(self) {
        match self.stop {
            Stop::Tokio(rt) => {
                if let Some(pg) = self.pg {
                    rt.block_on(pg.drop_schema());
                }
                rt.shutdown_timeout(Duration::from_secs(2))
            }
            Stop::Actix { handle, thread } => {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(async {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(5), handle.stop(false)).await;
                    });
                }
                let _ = thread.join();
            }
        }
        if let Some(dir) = self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------------------------
// axum servers

type Report = Option<Box<dyn Fn() -> String + Send>>;

/// The near cache's and the breaker's state, for the report.
fn tiered_report(tiered: &ratatoskr_tiered::TieredStore) -> Report {
    let health = tiered.clone();
    Some(Box::new(move || {
        let h = health.health();
        let cache = match h.near_cache {
            Some((entries, bytes)) => format!("near cache on, {entries} entries ({bytes} bytes)"),
            None => "near cache off".into(),
        };
        format!(
            "{cache}; breaker {:?}; {} fallbacks to the database",
            h.breaker, h.fallbacks
        )
    }))
}

fn tokio_server(
    kind: Kind,
    redis_url: String,
    pg_url: Option<&str>,
    threads: usize,
    scratch: PathBuf,
) -> Result<Server, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("server")
        .enable_all()
        .build()
        .map_err(err)?;
    let mut used_scratch = None;
    let mut pg = None;
    let built: Result<(Router, Report), String> = rt.block_on(async {
        match kind {
            Kind::BareAxum => Ok((bare_router(), None)),
            Kind::RatatoskrRedis => {
                let config = ratatoskr_redis::RedisConfig {
                    key_prefix: "br:".into(),
                    ..ratatoskr_redis::RedisConfig::new(redis_url)
                };
                let (redis, notices) = ratatoskr_redis::RedisStore::connect_tracked(config)
                    .await
                    .map_err(err)?;
                let cached = Arc::new(ratatoskr_tiered::NearCachedStore::new(
                    Arc::new(redis),
                    notices,
                    &ratatoskr_tiered::near_cache::NearCacheConfig::default(),
                ));
                let usage = cached.clone();
                let report: Report = Some(Box::new(move || {
                    let (entries, bytes) = usage.usage();
                    format!("near cache on, {entries} entries ({bytes} bytes)")
                }));
                Ok((ratatoskr_router(cached)?, report))
            }
            Kind::RatatoskrTiered => {
                std::fs::create_dir_all(&scratch).map_err(err)?;
                used_scratch = Some(scratch.clone());
                let tiered = tiered_sqlite(&redis_url, "bt:", &scratch).await?;
                let report = tiered_report(&tiered);
                Ok((ratatoskr_router(Arc::new(tiered))?, report))
            }
            Kind::RatatoskrTieredPostgres => {
                let url = pg_url.ok_or("PostgreSQL is not in use (--pg-url none)")?;
                let (schema, _) = crate::store_bench::PgScratch::create(url).await?;
                let sql = match schema.connect().await {
                    Ok(sql) => sql,
                    Err(e) => {
                        schema.drop_schema().await;
                        return Err(e);
                    }
                };
                pg = Some(schema);
                let tiered = tiered_over(&redis_url, "bp:", sql).await?;
                let report = tiered_report(&tiered);
                Ok((ratatoskr_router(Arc::new(tiered))?, report))
            }
            Kind::TowerSessions => Ok((tower_router(&redis_url).await?, None)),
            Kind::BareActix | Kind::ActixSession => unreachable!("actix runs on its own"),
        }
    });
    let (router, report) = match built {
        Ok(b) => b,
        Err(e) => {
            if let Some(pg) = pg {
                rt.block_on(pg.drop_schema());
            }
            rt.shutdown_timeout(Duration::from_secs(1));
            if let Some(dir) = used_scratch {
                let _ = std::fs::remove_dir_all(dir);
            }
            return Err(e);
        }
    };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    rt.spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(Server {
        addr,
        stop: Stop::Tokio(rt),
        report,
        scratch: used_scratch,
        pg,
    })
}

/// Redis (tracked, for the near cache) in front of a SQLite file in `dir`.
pub async fn tiered_sqlite(
    redis_url: &str,
    prefix: &str,
    dir: &std::path::Path,
) -> Result<ratatoskr_tiered::TieredStore, String> {
    let sql = ratatoskr_sql::SqlStore::connect(&format!(
        "sqlite://{}",
        dir.join("sessions.db").display()
    ))
    .await
    .map_err(err)?;
    tiered_over(redis_url, prefix, sql).await
}

/// Redis (tracked) in front of `sql`, with the breaker closed before it is returned.
pub async fn tiered_over(
    redis_url: &str,
    prefix: &str,
    sql: ratatoskr_sql::SqlStore,
) -> Result<ratatoskr_tiered::TieredStore, String> {
    let config = ratatoskr_redis::RedisConfig {
        key_prefix: prefix.into(),
        ..ratatoskr_redis::RedisConfig::new(redis_url)
    };
    let (redis, invalidations) = ratatoskr_redis::RedisStore::connect_tracked(config)
        .await
        .map_err(err)?;
    let tiered = ratatoskr_tiered::TieredStore::new(
        Arc::new(redis),
        sql.store(),
        Arc::new(sql.journal()),
        Some(invalidations),
        ratatoskr_tiered::TieredConfig::default(),
    );
    // The store starts by replaying the outage journal; wait until Redis is in use.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tiered.recover_now().await {
        if Instant::now() > deadline {
            return Err(format!(
                "the tiered store's breaker did not close: {:?}",
                tiered.health().breaker
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(tiered)
}

pub fn bare_router() -> Router {
    Router::new()
        .route("/visit", get(|| async { "" }))
        .route("/login/{n}", post(|| async { "" }))
        .route("/read", get(|| async { "user" }))
        .route("/write", post(|| async { "1" }))
}

pub fn ratatoskr_router(store: Arc<dyn ratatoskr_core::SessionStore>) -> Result<Router, String> {
    use ratatoskr_axum::{Session, SessionConfig, SessionError, SessionLayer};
    use ratatoskr_core::{ManagerConfig, SessionManager};

    async fn login(session: Session, Path(n): Path<u32>) -> Result<String, SessionError> {
        session.login(&format!("user-{n}")).await?;
        session.insert("name", &format!("user {n}")).await?;
        session.insert("counter", &0u64).await?;
        Ok(session.csrf_token().await?.unwrap_or_default())
    }
    async fn visit(session: Session) -> Result<String, SessionError> {
        session.insert("visited", &1u8).await?;
        Ok(session.csrf_token().await?.unwrap_or_default())
    }
    async fn read(session: Session) -> Result<Response, SessionError> {
        Ok(match session.get::<String>("name").await? {
            Some(name) => name.into_response(),
            None => StatusCode::UNAUTHORIZED.into_response(),
        })
    }
    async fn write(session: Session) -> Result<String, SessionError> {
        let counter: u64 = session.get("counter").await?.unwrap_or(0) + 1;
        session.insert("counter", &counter).await?;
        Ok(counter.to_string())
    }

    let manager = SessionManager::new(store, ManagerConfig::default());
    let layer = SessionLayer::new(manager, SessionConfig::default()).map_err(err)?;
    Ok(Router::new()
        .route("/visit", get(visit))
        .route("/login/{n}", post(login))
        .route("/read", get(read))
        .route("/write", post(write))
        .layer(layer))
}

async fn tower_router(redis_url: &str) -> Result<Router, String> {
    use tower_sessions::{Session, SessionManagerLayer};
    use tower_sessions_redis_store::RedisStore;
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};

    fn e500(e: impl std::fmt::Display) -> (StatusCode, String) {
        (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
    async fn login(session: Session, Path(n): Path<u32>) -> Result<String, (StatusCode, String)> {
        session.cycle_id().await.map_err(e500)?;
        session.insert("user_id", n).await.map_err(e500)?;
        session
            .insert("name", format!("user {n}"))
            .await
            .map_err(e500)?;
        session.insert("counter", 0u64).await.map_err(e500)?;
        Ok(String::new())
    }
    async fn visit(session: Session) -> Result<String, (StatusCode, String)> {
        session.insert("visited", 1u8).await.map_err(e500)?;
        Ok(String::new())
    }
    async fn read(session: Session) -> Result<Response, (StatusCode, String)> {
        Ok(match session.get::<String>("name").await.map_err(e500)? {
            Some(name) => name.into_response(),
            None => StatusCode::UNAUTHORIZED.into_response(),
        })
    }
    async fn write(session: Session) -> Result<String, (StatusCode, String)> {
        let counter = session
            .get::<u64>("counter")
            .await
            .map_err(e500)?
            .unwrap_or(0)
            + 1;
        session.insert("counter", counter).await.map_err(e500)?;
        Ok(counter.to_string())
    }

    // As in the store's own example: a pool of 6 clients.
    let config = Config::from_url(redis_url).map_err(err)?;
    let pool = Pool::new(config, None, None, None, 6).map_err(err)?;
    let _connection = pool.init().await.map_err(err)?;
    let layer = SessionManagerLayer::new(RedisStore::new(pool));
    Ok(Router::new()
        .route("/visit", get(visit))
        .route("/login/{n}", post(login))
        .route("/read", get(read))
        .route("/write", post(write))
        .layer(layer))
}

// ---------------------------------------------------------------------------------------------
// actix-web servers

fn actix_server(redis_url: Option<String>, threads: usize) -> Result<Server, String> {
    use actix_web::{App, HttpResponse, HttpServer, web};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(err)?;
    let addr = listener.local_addr().map_err(err)?;
    let (tx, rx) = std::sync::mpsc::channel::<Result<actix_web::dev::ServerHandle, String>>();
    let thread = std::thread::Builder::new()
        .name("actix-system".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = match redis_url {
                    None => HttpServer::new(|| {
                        App::new()
                            .route("/visit", web::get().to(HttpResponse::Ok))
                            .route("/login/{n}", web::post().to(HttpResponse::Ok))
                            .route("/read", web::get().to(|| async { "user" }))
                            .route("/write", web::post().to(|| async { "1" }))
                    })
                    .workers(threads)
                    .disable_signals()
                    .shutdown_timeout(1)
                    .listen(listener)
                    .map(|s| s.run()),
                    Some(url) => {
                        use actix_session::SessionMiddleware;
                        use actix_session::storage::RedisSessionStore;
                        use actix_web::cookie::Key;
                        let store = match RedisSessionStore::new(url).await {
                            Ok(s) => s,
                            Err(e) => {
                                let _ = tx.send(Err(format!("actix-session store: {e:#}")));
                                return;
                            }
                        };
                        let key = Key::generate();
                        HttpServer::new(move || {
                            App::new()
                                .wrap(SessionMiddleware::new(store.clone(), key.clone()))
                                .route("/visit", web::get().to(actix_handlers::visit))
                                .route("/login/{n}", web::post().to(actix_handlers::login))
                                .route("/read", web::get().to(actix_handlers::read))
                                .route("/write", web::post().to(actix_handlers::write))
                        })
                        .workers(threads)
                        .disable_signals()
                        .shutdown_timeout(1)
                        .listen(listener)
                        .map(|s| s.run())
                    }
                };
                match server {
                    Ok(server) => {
                        let _ = tx.send(Ok(server.handle()));
                        let _ = server.await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            })
        })
        .map_err(err)?;
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(Ok(handle)) => Ok(Server {
            addr,
            stop: Stop::Actix { handle, thread },
            report: None,
            scratch: None,
            pg: None,
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err("the actix server did not start within 15 s".into()),
    }
}

mod actix_handlers {
    use actix_session::Session;
    use actix_web::{HttpResponse, web};

    pub async fn login(session: Session, n: web::Path<u32>) -> actix_web::Result<HttpResponse> {
        let n = n.into_inner();
        session.renew();
        session.insert("user_id", n)?;
        session.insert("name", format!("user {n}"))?;
        session.insert("counter", 0u64)?;
        Ok(HttpResponse::Ok().finish())
    }

    pub async fn visit(session: Session) -> actix_web::Result<HttpResponse> {
        session.insert("visited", 1u8)?;
        Ok(HttpResponse::Ok().finish())
    }

    pub async fn read(session: Session) -> actix_web::Result<HttpResponse> {
        Ok(match session.get::<String>("name")? {
            Some(name) => HttpResponse::Ok().body(name),
            None => HttpResponse::Unauthorized().finish(),
        })
    }

    pub async fn write(session: Session) -> actix_web::Result<String> {
        let counter = session.get::<u64>("counter")?.unwrap_or(0) + 1;
        session.insert("counter", counter)?;
        Ok(counter.to_string())
    }
}
