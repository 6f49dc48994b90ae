//! `ratatoskr`: the reference web application and its admin CLI.

use clap::{Parser, Subcommand};
use ratatoskr_app::cli::{SessionsCommand, UserCommand};
use ratatoskr_app::configuration::{Registration, Settings};
use ratatoskr_app::domain::urls::redact;
use ratatoskr_app::services::tokens::KeySource;
use ratatoskr_app::startup::Application;
use ratatoskr_app::{cli, telemetry};

#[derive(Parser)]
#[command(
    name = "ratatoskr",
    version,
    about = "Server-side sessions, Redis first, with a database that really is a fallback."
)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the web application (the default).
    Serve,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// List and revoke sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Counts: users, platforms, sessions, audit events of the last 24 hours.
    Stats,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.settings).await,
        Command::User(c) => cli::user(&cli.settings, c).await,
        Command::Sessions(c) => cli::sessions(&cli.settings, c).await,
        Command::Stats => cli::stats(&cli.settings).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ratatoskr: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(settings: &Settings) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    let addr = app.local_addr();
    let url = if addr.ip().is_loopback() {
        format!("http://localhost:{}/", addr.port())
    } else {
        format!("http://{addr}/")
    };
    println!("ratatoskr is serving on {url}");
    println!("  database: {}", redact(&settings.database_url));
    match &app.key_source {
        KeySource::Environment => println!("  platform tokens: key from RATATOSKR_SECRET_KEY"),
        KeySource::File(p) => println!("  platform tokens: key file {}", p.display()),
        KeySource::Generated(p) => {
            println!(
                "  platform tokens: generated a new key file {} (keep it with backups)",
                p.display()
            )
        }
    }
    println!(
        "  registration: {}",
        match settings.registration {
            Registration::Open => "open (RATATOSKR_REGISTRATION=closed to close it)",
            Registration::Closed => "closed",
        }
    );
    if app.state.db.count_users().await.unwrap_or(0) == 0 {
        println!("No users yet. Create the first administrator with:");
        println!("  ratatoskr user add NAME --admin      (reads the password from stdin)");
        println!("  e.g. echo 'a long password' | cargo run --release -- user add admin --admin");
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    app.run_until_stopped().await
}
