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
    Serve(Box<Overrides>),
    /// Run the daemon with fake APNs/FCM and a simulated device fleet.
    Demo(pushd::demo::DemoArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo's screen is its overview table: only warnings go beside it.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        Command::Demo(_) => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(overrides) => overrides
            .load()
            .map_err(pushd::daemon::ServeError::from)
            .and_then(|config| actix_web::rt::System::new().block_on(pushd::daemon::serve(config)))
            .map_err(|e| e.to_string()),
        Command::Demo(args) => actix_web::rt::System::new()
            .block_on(pushd::demo::run(args))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
