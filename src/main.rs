//! The `pushd` command: `serve` runs the daemon, `keys` prints its keys,
//! `restore` makes a data directory (or a new cluster) from a backup, `demo`
//! shows it working against local fake providers and a simulated device
//! fleet.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Subcommand};

/// See Cargo.toml: jemalloc holds pushd's many small allocations with
/// little waste and gives freed memory back.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at its start (`_RJEM_MALLOC_CONF` in the
/// environment overrides them): a background thread returns freed pages to
/// the system within about a second, so memory once used by a burst of
/// work does not stay resident; and one arena instead of four per core, so
/// memory any thread freed serves every thread's next allocations (each
/// thread still allocates from its own cache first). The load bench on 2
/// cores: ~4.8 KB per in-flight delivery against ~5.8 KB with two arenas
/// and ~6.7 KB with jemalloc's default, at the same CPU per push and per
/// report. A machine with many cores allocating at once may want
/// `_RJEM_MALLOC_CONF=narenas:<cores>`.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf =
    MallocConf(c"background_thread:true,dirty_decay_ms:1000,narenas:1".as_ptr());

/// A C string pointer jemalloc reads once.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);
// SAFETY: it points to a static, immutable C string.
unsafe impl Sync for MallocConf {}

use pushd::config::Overrides;
use tracing_subscriber::EnvFilter;

/// Push-notification delivery and tracking daemon.
#[derive(clap::Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (HTTP API, engine, providers) until SIGTERM/SIGINT.
    Serve(Box<ServeArgs>),
    /// Print the API key and the SDK key as shell exports
    /// (`eval "$(pushd keys)"`), with where each is kept.
    Keys(Box<Overrides>),
    /// Make the data directory (which must be new or empty) from an archive
    /// of `GET /v1/backup`; with `--cluster`, seed a new cluster from a
    /// cluster's archive. A damaged archive is refused and nothing is
    /// written.
    Restore(Box<RestoreArgs>),
    /// Run the daemon with fake APNs/FCM and a simulated device fleet.
    Demo(pushd::demo::DemoArgs),
}

/// `pushd serve`: the configuration, and whether to send to simulated
/// providers.
#[derive(clap::Args)]
struct ServeArgs {
    /// Send to fake APNs and FCM that this process runs on loopback, not to
    /// Apple and Google: every push is accepted, except to a token starting
    /// with `dead`, which bounces. For trying the API and the dashboard;
    /// NOT for production (no phone receives anything)
    #[arg(long)]
    simulated_providers: bool,
    #[command(flatten)]
    overrides: Overrides,
}

/// `pushd restore FILE`: the archive, and the configuration that names the
/// data directory, or the cluster (as `serve` reads them).
#[derive(clap::Args)]
struct RestoreArgs {
    /// The archive, as `GET /v1/backup` answered it
    archive: PathBuf,
    #[command(flatten)]
    overrides: Overrides,
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let mut config = args.overrides.load().map_err(|e| e.to_string())?;
    // Bind before anything else: a taken port fails before keys or a data
    // directory are created.
    let listener = pushd::daemon::bind(&config).map_err(|e| e.to_string())?;
    actix_web::rt::System::new().block_on(async move {
        // Their credentials live as long as they do, outside the data
        // directory (which holds nothing of theirs).
        let credentials = tempfile::tempdir().map_err(|e| e.to_string())?;
        let _fakes = match args.simulated_providers {
            true => {
                let fakes = pushd::sim::FakeProviders::simulated(credentials.path())
                    .await
                    .map_err(|e| format!("cannot start the simulated providers: {e}"))?;
                fakes.serve_every_app(&mut config);
                tracing::warn!(
                    "SIMULATED PROVIDERS: pushes go to fake APNs and FCM in this process, not to \
                     Apple or Google, and no phone receives them (tokens starting with `dead` \
                     bounce); not for production"
                );
                Some(fakes)
            }
            false => None,
        };
        pushd::daemon::serve(config, listener)
            .await
            .map_err(|e| e.to_string())
    })
}

fn keys(overrides: Overrides) -> Result<(), String> {
    let config = overrides.load().map_err(|e| e.to_string())?;
    let keys = pushd::keys::current(&config).map_err(|e| e.to_string())?;
    print!("{}", keys.export_lines());
    Ok(())
}

fn restore(args: RestoreArgs) -> Result<(), String> {
    let config = args.overrides.load().map_err(|e| e.to_string())?;
    if config.cluster.enabled() {
        return restore_cluster(&args.archive, &config);
    }
    let (archive, data_dir) = (args.archive.display(), config.data_dir.display());
    // The data directory it makes is as private as one `serve` makes.
    pushd::persistence::private_umask();
    let restored = pushd::backup::restore(&args.archive, &config.data_dir).map_err(|e| {
        format!("cannot restore {archive} into {data_dir}: {e}; nothing was written")
    })?;
    println!(
        "restored {archive} into {data_dir}: journal position {}, taken at {} (Unix seconds), \
         {} sections; `pushd serve` with this data directory serves it",
        restored.position, restored.taken_at, restored.sections
    );
    Ok(())
}

/// `pushd restore FILE` with `[cluster] servers` set: seeds a new cluster
/// from a cluster's archive.
fn restore_cluster(
    archive: &std::path::Path,
    config: &pushd::config::Config,
) -> Result<(), String> {
    let settings = config
        .cluster
        .settings(&config.listen)
        .map_err(|e| e.to_string())?;
    let shown = archive.display();
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let scratch = std::env::temp_dir();
    let restored = runtime
        .block_on(pushd::cluster::backup::restore(
            archive, &settings, &scratch,
        ))
        .map_err(|e| {
            format!("cannot restore {shown} into the cluster: {e}; nothing was written")
        })?;
    println!(
        "restored {shown} into the cluster: {} partitions, {} templates, {} webhooks, taken at {} \
         (Unix seconds); start the nodes (`pushd serve` with the same [cluster] settings) to \
         serve it",
        restored.partitions, restored.templates, restored.webhooks, restored.taken_at
    );
    Ok(())
}

/// Why a key given as a flag is refused: every user of the machine can read
/// a process's arguments (`ps`, /proc/<pid>/cmdline).
fn key_on_command_line(matches: &ArgMatches) -> Option<String> {
    let (_, sub) = matches.subcommand()?;
    let given = |id: &str| {
        sub.try_get_raw(id).is_ok() && sub.value_source(id) == Some(ValueSource::CommandLine)
    };
    let (flag, var, key) = [
        ("--api-key", "PUSHD_API_KEY", "api_key"),
        ("--sdk-key", "PUSHD_SDK_KEY", "sdk_key"),
    ]
    .into_iter()
    .find(|(_, _, id)| given(id))?;
    Some(format!(
        "{flag} would show the key to every user of this machine (ps); give it in {var}, or as \
         {key} in the configuration file, or leave it out and pushd generates one and keeps it in \
         the data directory's keys.toml"
    ))
}

fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    if let Some(refusal) = key_on_command_line(&matches) {
        eprintln!("pushd: {refusal}");
        return std::process::ExitCode::FAILURE;
    }
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The demo's screen is its overview table: only warnings go beside it.
    let default_level = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // A log file or a pipe gets plain text, not colour escape codes.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Keys(overrides) => keys(*overrides),
        Command::Restore(args) => restore(*args),
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
