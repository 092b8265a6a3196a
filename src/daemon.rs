//! `pushd serve`: binds the listen address first (so a taken port fails
//! before anything is created), then resolves the keys, opens the snapshot
//! and the journal, starts the engine and the providers, recovers (replays
//! the journal's tail, resumes unsettled deliveries), serves the API until
//! SIGTERM/SIGINT, then drains, checkpoints and exits.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use pushd_actors::engine::{EngineError, PartitionTag, Ports};
use pushd_actors::ports::{Clock, OsEntropy, Store, SystemClock};
use pushd_actors::registry::Registry;

use crate::config::{Config, ConfigError};
use crate::events::EventLog;
use crate::http::{self, AppState, Catalog};
use crate::keys::{self, KeysError};
use crate::partition::{Partition, Partitioning, Partitions};
use crate::persistence::{OpenError, Persistence};
use crate::providers::Providers;
use crate::readiness::{self, Readiness};
use crate::store::Timing;
use crate::template::LiquidRenderer;
use crate::topology::Topology;
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
    #[error("data directory {path}: {source}{}", access_hint(source))]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The delivery event log could not be opened, or not written on start.
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
    if config.cluster.enabled() {
        return serve_cluster(config, listener, clock, banner).await;
    }
    let keys = keys::resolve(&config)?;
    let prometheus =
        crate::telemetry::install_recorder().map_err(|e| ServeError::Metrics(e.to_string()))?;
    crate::telemetry::register();
    let persistence = Persistence::open(
        &config.data_dir,
        config.store_cache_mb << 20,
        Timing::default(),
    )?;
    let store = persistence.store.clone();
    let identity = keys::identity_verification(&config, store.made_requiring_identity());
    let events = open_events(&config, &persistence, clock.clone())?;
    let renderer = Arc::new(LiquidRenderer::default().with_limits(config.templates.limits()));
    let providers = Arc::new(Providers::for_apps(
        &config.apps(),
        &config.client_options(),
    ));
    let ports = Ports {
        provider: providers.clone(),
        journal: persistence.journal.clone(),
        store: store.clone(),
        renderer: renderer.clone(),
        clock: clock.clone(),
        entropy: Arc::new(OsEntropy),
        catalog: store.clone(),
    };
    let registry = Arc::new(Registry::new(
        ports,
        config.engine_config(),
        config.engine.shard_count(),
    ));
    let recovery = registry.recover()?;
    // The replayed records' events are in the log before the API answers,
    // so the feed and the webhooks hold every change the journal held.
    events
        .persist(recovery.replayed.last)
        .map_err(|source| ServeError::Events {
            path: events.dir().display().to_string(),
            source,
        })?;
    registry.start_releases();
    tracing::info!(
        covered = recovery.replayed.covered,
        replayed = recovery.replayed.records,
        held = recovery.held,
        resumed = recovery.resumed,
        "recovered"
    );
    persistence.retain(config.store.retention(clock.clone()));
    let feed = Arc::new(crate::events::LocalEvents::new(events.clone()));
    let webhooks = Webhooks::start(
        Box::new(webhooks::FileBook::new(&config.data_dir)),
        feed.clone(),
        config.webhooks.settings(),
        clock.clone(),
        None,
    )?;

    let partition = Arc::new(Partition {
        tag: PartitionTag::default(),
        registry,
        store: store.clone(),
    });
    let partitions = Arc::new(Partitions::new(Partitioning::single()));
    partitions.insert(partition.clone());
    let readiness = Readiness::new(vec![
        readiness::failed_for_good("journal", {
            let journal = persistence.journal.clone();
            move || journal.failure()
        }),
        Box::new({
            let journal = persistence.journal.clone();
            move || {
                journal.disk_full().map(|why| {
                    format!(
                        "journal's disk is full ({why}): writes answer 507 until space is freed"
                    )
                })
            }
        }),
        readiness::failed_for_good("event log", {
            let events = events.clone();
            move || events.failure()
        }),
        readiness::drains({
            let store = store.clone();
            move || store.drains_failing_for()
        }),
        readiness::free_disk(&config.data_dir, config.store.min_free_bytes),
    ]);
    readiness.watch()?;
    let writes = Arc::new(http::backpressure::WriteGate::new(
        Some(persistence.journal.clone()),
        partitions.clone(),
        &config.store,
    ));
    let state = web::Data::new(AppState {
        partitions,
        catalog: Catalog::Local(partition),
        renderer,
        providers,
        clock,
        feed,
        webhooks: webhooks.clone(),
        backup: Arc::new(crate::backup::Source::new(
            &config.data_dir,
            store.clone(),
            events.clone(),
            webhooks.clone(),
        )),
        topology: Topology::single(),
        max_body: config.max_body_bytes,
        readiness,
        body_timeout: config.http.body_timeout(),
        writes,
    });
    let start = http::server::Start {
        keys,
        identity,
        prometheus,
        banner,
    };
    http::server::run(state, listener, start, &config, None).await?;
    tracing::info!("http drained; checkpointing");
    let budget = config
        .shutdown_timeout()
        .saturating_sub(http::server::drain_time(&config));
    finish_within(budget, move || {
        webhooks.stop();
        persistence.close();
        events.close();
        match store.drains_failing_for() {
            Some(_) => Err("the last checkpoint failed (the error is logged above)".to_string()),
            None => Ok(()),
        }
    });
    Ok(())
}

/// [`serve_with`] for a cluster node: the node joins the cluster, and the
/// API is served over its partitions and [`Topology`] until a shutdown
/// signal, which hands the partitions over before the server drains.
async fn serve_cluster(
    config: Config,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
    banner: bool,
) -> Result<(), ServeError> {
    crate::cluster::serve::check_keys(&config)?;
    let keys = keys::resolve(&config)?;
    let prometheus =
        crate::telemetry::install_recorder().map_err(|e| ServeError::Metrics(e.to_string()))?;
    crate::telemetry::register();
    let node = crate::cluster::serve::start(&config, &listener, clock.clone()).await?;
    let writes = Arc::new(http::backpressure::WriteGate::new(
        None,
        node.partitions.clone(),
        &config.store,
    ));
    let state = web::Data::new(AppState {
        partitions: node.partitions,
        catalog: Catalog::Shared(node.templates),
        renderer: node.renderer,
        providers: node.providers,
        clock,
        feed: node.feed,
        webhooks: node.webhooks,
        backup: node.backups,
        topology: node.topology,
        max_body: config.max_body_bytes,
        readiness: node.readiness,
        body_timeout: config.http.body_timeout(),
        writes,
    });
    // Partitions live in NATS and move between nodes: a cluster has no
    // data directory of its own age, so verification is required unless
    // configured off.
    let start = http::server::Start {
        keys,
        identity: keys::identity_verification(&config, true),
        prometheus,
        banner,
    };
    let served = http::server::run(state, listener, start, &config, Some(node.hand_over)).await;
    tracing::info!("http drained");
    node.after.run();
    Ok(served?)
}

/// What to do about a data directory pushd may not use: the same fix the
/// store names when it cannot write a file inside one.
fn access_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "; it must be readable and writable by the user pushd runs as (chown -R, or \
             another --data-dir)"
        }
        _ => "",
    }
}

/// Runs `close` (the last checkpoint, the journal's and event log's last
/// syncs) on a thread of its own and waits at most `budget` for it. Past
/// it — a full or failing disk can hold a sync for ever — or when `close`
/// says the checkpoint failed, the process exits at once with status 1 and
/// a message: every acknowledged change is in the journal, which the next
/// start replays. Exiting here, not returning, skips the destructors, which
/// would wait on that same disk (sled flushes when its last handle drops).
fn finish_within(budget: Duration, close: impl FnOnce() -> Result<(), String> + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    let closing = std::thread::Builder::new()
        .name("pushd-close".into())
        .spawn(move || {
            let _ = done.send(close());
        });
    let failed = match closing.map(|_| finished.recv_timeout(budget)) {
        Ok(Ok(Ok(()))) => return,
        Ok(Ok(Err(why))) => why,
        Ok(Err(_)) => format!(
            "the last checkpoint was not written within shutdown_timeout_secs ({} s left after \
             draining HTTP)",
            budget.as_secs()
        ),
        Err(e) => format!("cannot start the last checkpoint: {e}"),
    };
    let words = format!(
        "{failed}; every acknowledged change is in the journal and the next start replays it"
    );
    tracing::error!("{words}");
    eprintln!("pushd: {words}");
    std::process::exit(1);
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
    // The journal's writer wakes the log's when records are durable (the
    // engine's thread does not, for each record).
    let follower = Arc::downgrade(&events);
    let tell = Box::new(move |durable| {
        if let Some(events) = follower.upgrade() {
            events.journal_advanced(durable);
        }
    });
    if let Some(durable) = persistence.journal.follow(tell) {
        events.follow_journal(durable);
    }
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
