//! `pushd serve --cluster ...`: a cluster node. It connects to NATS, joins
//! the members, takes its share of the partitions as the node loop finds
//! them free, and gives the daemon what to serve the whole API over: the
//! partitions it runs, the shared templates, events and webhooks, and the
//! [`Topology`] through which what another node's partition must do goes
//! there. On SIGTERM it leaves the members and hands its partitions back
//! (last snapshots uploaded) while it still answers, so the others take
//! them at once, and only then does the daemon drain its HTTP server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use pushd_actors::ports::Clock;
use pushd_actors::registry::Shards;

use super::backup::ClusterBackups;
use super::catalog::Templates;
use super::events::EventStream;
use super::node::EngineParts;
use super::peers::Client;
use super::relay::Relay;
use super::webhooks::{SharedBook, StreamEvents};
use super::{ClusterError, Link, Nats, Node};
use crate::config::{Config, ConfigError};
use crate::events::Source;
use crate::partition::{Partitioning, Partitions};
use crate::providers::Providers;
use crate::template::LiquidRenderer;
use crate::topology::wire::RELAYED_REPORTS;
use crate::topology::{SharedTemplates, Topology};
use crate::webhooks::{Placement, Webhooks};

/// A cluster node ready to serve: what the daemon's HTTP server runs over,
/// what a shutdown signal hands over first, and what stops once the server
/// drained.
pub struct Started {
    /// The partitions this node runs (and will run).
    pub partitions: Arc<Partitions>,
    /// Where every node reads and writes message templates.
    pub templates: Arc<dyn SharedTemplates>,
    /// Template checks at message upload.
    pub renderer: Arc<LiquidRenderer>,
    /// The provider clients.
    pub providers: Arc<Providers>,
    /// Every partition's delivery events.
    pub feed: Arc<dyn Source>,
    /// The cluster's webhooks.
    pub webhooks: Arc<Webhooks>,
    /// How a call reaches the node serving its partition.
    pub topology: Topology,
    /// The cluster's backups, taken through this node.
    pub backups: Arc<ClusterBackups>,
    /// Whether writes are acknowledged now (connected to NATS).
    pub readiness: Arc<crate::readiness::Readiness>,
    /// Leaves the members and hands the partitions over.
    pub hand_over: Box<dyn FnOnce() -> BoxFuture<'static, ()>>,
    /// What stops once the server drained.
    pub after: Stop,
}

/// The webhooks and the node's NATS runtime, stopped once the server
/// drained.
pub struct Stop {
    webhooks: Arc<Webhooks>,
    background: Background,
}

impl Stop {
    /// Stops them.
    pub fn run(self) {
        self.webhooks.stop();
        drop(self.background);
    }
}

/// Refuses a cluster node without both keys configured: a client may call
/// any node, so every node must have the same ones (never generated ones,
/// which would differ). Checked before the keys are resolved, so a refused
/// node writes no keys file.
pub fn check_keys(config: &Config) -> Result<(), ConfigError> {
    if config.api_key.is_none() || config.sdk_key.is_none() {
        return Err(ConfigError::Invalid(
            "a cluster node needs api_key and sdk_key set (PUSHD_API_KEY, PUSHD_SDK_KEY), the \
             same on every node: a client may call any node"
                .into(),
        ));
    }
    Ok(())
}

/// Threads of the cluster runtime (NATS, the journal's publishes, calls to
/// other nodes): two, or one where the process may use only one core (a
/// container's CPU quota), where a second thread would only add wake-ups.
fn background_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(2))
}

/// Starts a cluster node that will serve on `listener` (its address is the
/// one other nodes are told of); its keys were checked ([`check_keys`]).
pub async fn start(
    config: &Config,
    listener: &TcpListener,
    clock: Arc<dyn Clock>,
) -> Result<Started, ClusterError> {
    let listening = listener.local_addr().map_err(io)?.to_string();
    let settings = config.cluster.settings(&listening)?;
    let credential = config.cluster.node_credential()?;
    crate::telemetry::register_cluster();
    let background = Background(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(background_threads())
            .thread_name("pushd-cluster")
            .enable_all()
            .build()
            .map_err(io)?,
    ));
    let runtime = background.handle();
    let connecting = settings.clone();
    let nats = runtime
        .spawn(async move { Nats::connect(&connecting).await })
        .await
        .map_err(|e| ClusterError::Nats(e.to_string()))??;
    let (js, opening) = (nats.js.clone(), settings.clone());
    let retention = config.events.options().retention;
    let events = runtime
        .spawn(async move { EventStream::open(js, &opening, retention).await })
        .await
        .map_err(|e| ClusterError::Nats(e.to_string()))??;
    let renderer = Arc::new(LiquidRenderer::default().with_limits(config.templates.limits()));
    let providers = Arc::new(Providers::for_apps(
        &config.apps(),
        &config.client_options(),
    ));
    let templates = Arc::new(Templates::new(nats.templates.clone()));
    let engine = EngineParts {
        catalog: templates.clone(),
        provider: providers.clone(),
        renderer: renderer.clone(),
        clock: clock.clone(),
        config: config.engine_config(),
        shards: Shards::new(config.engine.shard_count()),
        retention: config.store.retention(clock.clone()),
        events: events.clone(),
    };
    // Partitions live in NATS; what a previous run left here is stale.
    let stale = config.data_dir.join("partitions");
    if stale.exists() {
        std::fs::remove_dir_all(&stale).map_err(io)?;
    }
    let partitions = Arc::new(Partitions::new(Partitioning::new(settings.partitions)));
    // Each partition keeps its own page cache: the node's share of it.
    let cache_bytes = ((config.store_cache_mb << 20) / 8).max(4 << 20);
    let node = Node::new(
        settings.clone(),
        nats.clone(),
        partitions.clone(),
        engine,
        config.data_dir.clone(),
        cache_bytes,
        runtime.clone(),
    );
    tracing::info!(node = %settings.node, partitions = settings.partitions, "joining the cluster");
    let running = runtime.spawn(node.clone().run());
    let (stream, following) = (events.clone(), runtime.clone());
    let feed = runtime
        .spawn(async move { StreamEvents::start(stream, &following).await })
        .await
        .map_err(|e| ClusterError::Nats(e.to_string()))??;
    let webhooks = start_webhooks(config, &nats, feed.clone(), &partitions, &clock, &runtime)?;
    let client = nats.js.client();
    let readiness = crate::readiness::Readiness::new(vec![Box::new(move || {
        let state = client.connection_state();
        (state != async_nats::connection::State::Connected)
            .then(|| format!("not connected to NATS ({state})"))
    })]);
    readiness.watch().map_err(io)?;
    let peers = Client::new(credential.clone());
    let link = Arc::new(Link {
        node: node.clone(),
        client: peers.clone(),
        reports: Relay::new(
            peers,
            RELAYED_REPORTS,
            // Under the receiving node's body limits: its own, and the
            // 256 KiB a raw body is read up to.
            (config.max_body_bytes / 2).min(128 << 10),
            settings.forward_timeout,
            runtime.clone(),
        ),
        forward_timeout: settings.forward_timeout,
        advertise: settings.advertise.clone(),
        credential,
    });
    let backups = Arc::new(ClusterBackups::new(
        link.clone(),
        partitions.clone(),
        nats.clone(),
        runtime.clone(),
        config.data_dir.clone(),
    ));
    let leaving = node.clone();
    let posting = webhooks.clone();
    let hand_over = Box::new(move || -> BoxFuture<'static, ()> {
        Box::pin(async move {
            // The loop stops first: it would announce the node again and
            // take partitions back.
            running.abort();
            // The webhook workers stop next, their progress saved, so the
            // nodes taking the partitions go on from where they were.
            let stopped = tokio::task::spawn_blocking(move || posting.stop());
            if stopped.await.is_err() {
                tracing::warn!(
                    "webhook workers not stopped cleanly; their new nodes post again from the last saved progress"
                );
            }
            let left = runtime.spawn(async move { leaving.leave().await });
            if tokio::time::timeout(Duration::from_secs(20), left)
                .await
                .is_err()
            {
                tracing::warn!("partitions not all handed over in time; their leases lapse");
            }
        })
    });
    Ok(Started {
        partitions,
        templates,
        renderer,
        providers,
        feed,
        webhooks: webhooks.clone(),
        topology: Topology::cluster(link),
        backups,
        readiness,
        hand_over,
        after: Stop {
            webhooks,
            background,
        },
    })
}

/// A local failure while starting, as a [`ClusterError`].
fn io(e: std::io::Error) -> ClusterError {
    ClusterError::Start(e.to_string())
}

/// Starts the cluster's webhooks: kept in the webhooks bucket, posting the
/// events stream, each one's worker on the node serving the partition its
/// id hashes to.
fn start_webhooks(
    config: &Config,
    nats: &Nats,
    source: Arc<StreamEvents>,
    partitions: &Arc<Partitions>,
    clock: &Arc<dyn Clock>,
    runtime: &tokio::runtime::Handle,
) -> Result<Arc<Webhooks>, ClusterError> {
    let served = partitions.clone();
    let placement: Placement = Box::new(move |id| {
        let tag = served.partitioning().of_customer(id);
        served.get(tag).is_some()
    });
    let book = SharedBook::new(nats.webhooks.clone(), runtime.clone());
    Webhooks::start(
        Box::new(book),
        source,
        config.webhooks.settings(),
        clock.clone(),
        Some(placement),
    )
    .map_err(|e| ClusterError::Start(format!("webhooks: {e}")))
}

/// The runtime of the node's NATS calls and loops, stopped without waiting
/// when dropped (it is dropped inside the HTTP server's runtime, where
/// waiting is not allowed).
struct Background(Option<tokio::runtime::Runtime>);

impl Background {
    fn handle(&self) -> tokio::runtime::Handle {
        self.0.as_ref().expect("running").handle().clone()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
