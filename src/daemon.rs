//! `pushd serve`: binds the listen address first (so a taken port fails
//! before anything is created), then resolves the keys, opens the snapshot
//! and the journal, starts the engine and the providers, recovers (replays
//! the journal's tail, resumes unsettled deliveries), serves the API until
//! SIGTERM/SIGINT, then drains, checkpoints and exits.

use std::net::TcpListener;
use std::sync::Arc;
use std::task::Poll;

use actix_web::middleware::{ErrorHandlers, from_fn};
use actix_web::{App, HttpServer, web};
use metrics_exporter_prometheus::PrometheusBuilder;
use pushd_actors::engine::{EngineError, PartitionTag, Ports};
use pushd_actors::ports::{Clock, Store, SystemClock};
use pushd_actors::registry::Registry;

use crate::config::{Config, ConfigError};
use crate::events::EventLog;
use crate::http::{self, AppState, Catalog};
use crate::keys::{self, KeysError, Source};
use crate::partition::{Partition, Partitioning, Partitions};
use crate::persistence::{OpenError, Persistence};
use crate::providers::Providers;
use crate::store::Timing;
use crate::template::LiquidRenderer;
use crate::webhooks::{self, Webhooks};

/// Why the daemon could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration, or the listen address cannot be bound.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The keys could not be read, kept or accepted.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// The state on disk could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The engine could not recover its state.
    #[error("recovery: {0}")]
    Recover(#[from] EngineError),
    /// The data directory could not be created or made private.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The delivery event log could not be opened.
    #[error("event log in {path}: {source}")]
    Events {
        /// Its directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The webhooks could not be loaded or started.
    #[error("webhooks: {0}")]
    Webhooks(#[from] webhooks::Error),
    /// The server failed.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    /// The metrics recorder could not be installed.
    #[error("metrics: {0}")]
    Metrics(String),
    /// Cluster mode could not start.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// Binds `config.listen`: the first thing `serve` needs, done before
/// anything is created so a taken port fails fast, naming the address and
/// the setting.
pub fn bind(config: &Config) -> Result<TcpListener, ConfigError> {
    let addrs = config.listen_addrs()?;
    let listener =
        TcpListener::bind(&addrs[..]).map_err(|e| ConfigError::bind(&config.listen, e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| ConfigError::bind(&config.listen, e))?;
    Ok(listener)
}

/// Runs the daemon on an already bound `listener` until a shutdown signal,
/// printing where it listens and where its keys are.
pub async fn serve(config: Config, listener: TcpListener) -> Result<(), ServeError> {
    serve_with(config, listener, Arc::new(SystemClock), true).await
}

/// [`serve`] on another clock, with or without the start-up banner: the
/// demo runs on compressed simulated time and prints its own lines.
pub async fn serve_with(
    config: Config,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
    banner: bool,
) -> Result<(), ServeError> {
    crate::persistence::make_private(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let open_files = crate::persistence::raise_open_files();
    let connections = config.http.connection_limit(open_files);
    connections.report(open_files);
    if config.cluster.enabled() {
        return crate::cluster::serve::run(config, listener, clock, connections, banner).await;
    }
    let keys = keys::resolve(&config)?;
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| ServeError::Metrics(e.to_string()))?;
    crate::telemetry::register();
    let persistence = Persistence::open(
        &config.data_dir,
        config.store_cache_mb << 20,
        Timing::default(),
    )?;
    let store = persistence.store.clone();
    let events = open_events(&config, &persistence, clock.clone())?;
    let renderer = Arc::new(LiquidRenderer::default());
    let providers = Arc::new(Providers::for_apps(
        &config.apps(),
        &config.engine.client_options(),
    ));
    let ports = Ports {
        provider: providers,
        journal: persistence.journal.clone(),
        store: store.clone(),
        renderer: renderer.clone(),
        clock: clock.clone(),
    };
    let registry = Arc::new(Registry::new(
        ports,
        config.engine.engine_config(),
        config.engine.shard_count(),
    ));
    let recovery = registry.recover()?;
    tracing::info!(
        covered = recovery.replayed.covered,
        replayed = recovery.replayed.records,
        resumed = recovery.resumed,
        "recovered"
    );
    persistence.retain(config.store.retention(clock.clone()));
    let webhooks = Webhooks::start(
        &config.data_dir,
        events.clone(),
        config.webhooks.settings(),
        clock.clone(),
    )?;

    let partition = Arc::new(Partition {
        tag: PartitionTag::default(),
        registry,
        store: store.clone(),
    });
    let partitions = Arc::new(Partitions::new(Partitioning::single()));
    partitions.insert(partition.clone());
    let state = web::Data::new(AppState {
        partitions,
        catalog: Catalog::Local(partition),
        renderer,
        clock,
        events: Some(events.clone()),
        webhooks: Some(webhooks.clone()),
        backup: Some(Arc::new(crate::backup::Source::new(
            &config.data_dir,
            store.clone(),
            events.clone(),
            webhooks.clone(),
        ))),
        cluster: None,
        max_body: config.max_body_bytes,
        body_timeout: config.http.body_timeout(),
    });
    run_api(state, &keys, listener, prometheus, connections, banner).await?;
    tracing::info!("http drained; checkpointing");
    webhooks.stop();
    persistence.close();
    events.close();
    Ok(())
}

/// Serves the API on `listener` until SIGTERM/SIGINT has drained it, with
/// at most `limit` connections; with `banner`, prints where the keys are
/// and where it listens once ready.
pub(crate) async fn run_api(
    state: web::Data<AppState>,
    keys: &keys::ResolvedKeys,
    listener: TcpListener,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    limit: http::ConnectionLimit,
    banner: bool,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    let key_data = web::Data::new(http::KeyCheck::new(&keys.keys));
    let prometheus = web::Data::new(prometheus);
    let max_body = state.max_body;
    let connections = http::Connections::new(limit);
    let server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(http::forward::to_owner))
            .wrap(ErrorHandlers::new().default_handler(http::contract_body))
            .wrap(from_fn(http::deadline::enforce))
            .wrap(from_fn(http::gate))
            .app_data(state.clone())
            .app_data(key_data.clone())
            .app_data(prometheus.clone())
            .configure(|cfg| http::extractors(cfg, max_body))
            .configure(http::routes)
    })
    .shutdown_timeout(10)
    .on_connect(move |io, data| connections.accepted(io, data))
    // actix-web's own limit is per worker and stops accepting when reached:
    // above ours (one worker may hold them all), it is never reached.
    .max_connections(limit.total().saturating_mul(2))
    .listen(listener)?;
    let mut server = server.run();
    // The first poll starts the workers and installs the SIGTERM/SIGINT
    // handlers: only then may the banner say the daemon is ready (a signal
    // sent on seeing it must drain the daemon, not kill it).
    match futures_util::poll!(&mut server) {
        Poll::Ready(result) => result?,
        Poll::Pending => {
            if banner {
                print_banner(keys, addr);
            }
            server.await?
        }
    }
    Ok(())
}

/// Opens the delivery event log under `<data_dir>/events`, drops events of
/// journal records the journal no longer holds, and attaches it to the
/// store before the journal's replay, so replayed records make their
/// events again.
fn open_events(
    config: &Config,
    persistence: &Persistence,
    clock: Arc<dyn Clock>,
) -> Result<Arc<EventLog>, ServeError> {
    let dir = config.data_dir.join("events");
    let failed = |source| ServeError::Events {
        path: dir.display().to_string(),
        source,
    };
    let journal = persistence.journal.clone();
    let durable = Box::new(move |position| journal.wait_durable(position));
    let events = EventLog::open(&dir, config.events.options(), clock, durable).map_err(failed)?;
    let covered = persistence
        .store
        .covered()
        .map_err(|e| failed(std::io::Error::other(e)))?;
    events
        .align(&*persistence.journal, covered)
        .map_err(|e| failed(std::io::Error::other(e)))?;
    persistence.store.attach(events.clone());
    Ok(events)
}

/// What `serve` prints on start: generated keys (once), where the keys are
/// kept, the dashboard, and last the address (a script waits for that line).
fn print_banner(keys: &keys::ResolvedKeys, addr: std::net::SocketAddr) {
    let generated = [
        ("api_key", &keys.keys.api, &keys.api_source),
        ("sdk_key", &keys.keys.sdk, &keys.sdk_source),
    ];
    for (name, key, source) in generated {
        if let Source::Generated(path) = source {
            println!("generated {name}: {key} (kept in {})", path.display());
        }
    }
    println!("{}", keys.whereabouts());
    println!("dashboard: http://{addr}/ (sign in with the API key)");
    println!("pushd listening on http://{addr}");
}
