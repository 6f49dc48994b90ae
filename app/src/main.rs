//! `ratatoskr`: the reference web application and its admin CLI.

use clap::{Parser, Subcommand};
use ratatoskr::configuration::Settings;
use ratatoskr::startup::Application;
use ratatoskr::telemetry;

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
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init_logging();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(&cli.settings).await,
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
    println!("ratatoskr is serving on http://{addr}/");
    app.run_until_stopped().await
}
