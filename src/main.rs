//! The `pushd` command: `serve` runs the daemon, `demo` shows it working
//! against local fake providers and a simulated device fleet.

use clap::{Parser, Subcommand};
use pushd::config::Overrides;
use tracing_subscriber::EnvFilter;

/// Push-notification delivery and tracking daemon.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (HTTP API, engine, providers) until SIGTERM/SIGINT.
    Serve(Overrides),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(overrides) => overrides
            .load()
            .map_err(pushd::daemon::ServeError::from)
            .and_then(|config| actix_web::rt::System::new().block_on(pushd::daemon::serve(config))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
