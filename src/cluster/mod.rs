//! Cluster mode: several pushd nodes sharing the customers over a NATS
//! JetStream cluster.
//!
//! Customers hash into a fixed number of partitions. Each partition is an
//! independent engine (registry, store, journal) run by one node at a time:
//! the holder of its lease in a key-value bucket ([`lease`]). Its journal is
//! its subject of one replicated stream ([`journal`]), fenced so a node that
//! lost the lease cannot write; its snapshots go to the object store
//! ([`snapshots`]) so any node can take it over ([`node`]). Message
//! templates live in a key-value bucket every node reads ([`catalog`]).
//! Any node answers any call: the HTTP layer forwards what another node's
//! partition must do and gathers reads from every node ([`peers`]).

pub mod catalog;
pub mod journal;
pub mod lease;
pub mod node;
pub mod peers;
pub mod snapshots;

use std::time::Duration;

use async_nats::jetstream::{self, kv, object_store, stream};

pub use node::Node;

/// What the HTTP layer of a cluster node uses: the node (who serves which
/// partition, the other members) and the client of node-to-node calls.
pub struct Link {
    /// This node.
    pub node: std::sync::Arc<Node>,
    /// Calls to the other nodes.
    pub peers: peers::Peers,
    /// The API key, which every node shares: what node-to-node reads
    /// authenticate with.
    pub api_key: String,
}

/// Why cluster mode could not start or a partition could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A NATS call failed.
    #[error("nats: {0}")]
    Nats(String),
    /// The settings cannot work.
    #[error("cluster settings: {0}")]
    Settings(String),
    /// Another node wrote to the partition: this node does not own it.
    #[error("{0}")]
    Fenced(String),
    /// The stream lacks records between a snapshot and what follows.
    #[error(
        "{subject}: record {expected} is missing (the next is {found}); a newer snapshot exists"
    )]
    Gap {
        /// The partition's subject.
        subject: String,
        /// The record wanted.
        expected: u64,
        /// The record found.
        found: u64,
    },
    /// A snapshot could not be written, read or loaded.
    #[error("snapshot: {0}")]
    Snapshot(String),
}

/// Any NATS error, as a [`ClusterError`].
pub fn nats(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Nats(e.to_string())
}

/// How the cluster is set up, as every node must agree.
#[derive(Clone, Debug)]
pub struct Settings {
    /// NATS server URLs.
    pub servers: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// The address other nodes reach this node's API at.
    pub advertise: String,
    /// Customer partitions.
    pub partitions: u16,
    /// JetStream replicas of the journal, leases, snapshots and templates.
    pub replicas: usize,
    /// A lease not renewed for this long lapses and another node takes
    /// the partition.
    pub lease: Duration,
    /// How often a partition's snapshot is uploaded.
    pub snapshot_every: Duration,
    /// Names of the stream, buckets and subjects: several clusters can
    /// share one NATS.
    pub prefix: String,
}

impl Settings {
    /// How often leases are renewed and the partitions reviewed.
    pub fn tick(&self) -> Duration {
        (self.lease / 5).max(Duration::from_millis(100))
    }

    /// The journal stream's name.
    pub fn journal_stream(&self) -> String {
        format!("{}-journal", self.prefix)
    }

    /// A partition's journal subject.
    pub fn journal_subject(&self, partition: u16) -> String {
        format!("{}.journal.{partition}", self.prefix)
    }
}

/// The JetStream handles a node uses.
#[derive(Clone)]
pub struct Nats {
    /// The JetStream context.
    pub js: jetstream::Context,
    /// The journal stream (a subject per partition).
    pub journal: stream::Stream,
    /// Partition leases, by partition.
    pub leases: kv::Store,
    /// Live nodes, by node: each renews its key while it runs.
    pub members: kv::Store,
    /// The latest snapshot of each partition (name and covered position).
    pub snapshot_index: kv::Store,
    /// The snapshots' bytes.
    pub snapshots: object_store::ObjectStore,
    /// Message templates.
    pub templates: kv::Store,
    /// The bucket holding cluster-wide facts (the partition count).
    pub facts: kv::Store,
}

impl Nats {
    /// Connects to the servers and makes sure the stream and buckets exist
    /// (the first node creates them), then checks every node agrees on the
    /// partition count.
    pub async fn connect(settings: &Settings) -> Result<Nats, ClusterError> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("pushd {}", settings.node))
            .retry_on_initial_connect()
            .connect(settings.servers.as_slice())
            .await
            .map_err(|e| ClusterError::Nats(format!("cannot reach {:?}: {e}", settings.servers)))?;
        let js = jetstream::new(client);
        let p = &settings.prefix;
        let r = settings.replicas;
        let journal = js
            .get_or_create_stream(stream::Config {
                name: settings.journal_stream(),
                subjects: vec![format!("{p}.journal.*")],
                storage: stream::StorageType::File,
                num_replicas: r,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(nats)?;
        let bucket = |name: &str, max_age: Duration| kv::Config {
            bucket: format!("{p}-{name}"),
            history: 1,
            max_age,
            num_replicas: r,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let kv = |config: kv::Config| {
            let js = js.clone();
            async move {
                match js.get_key_value(&config.bucket).await {
                    Ok(store) => Ok(store),
                    Err(_) => js.create_key_value(config).await.map_err(nats),
                }
            }
        };
        let leases = kv(bucket("leases", settings.lease)).await?;
        let members = kv(bucket("members", settings.lease)).await?;
        let snapshot_index = kv(bucket("snapshot-index", Duration::ZERO)).await?;
        let templates = kv(bucket("templates", Duration::ZERO)).await?;
        let facts = kv(bucket("facts", Duration::ZERO)).await?;
        let snapshots = match js.get_object_store(format!("{p}-snapshots")).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: format!("{p}-snapshots"),
                    num_replicas: r,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(nats)?,
        };
        let nats = Nats {
            js,
            journal,
            leases,
            members,
            snapshot_index,
            snapshots,
            templates,
            facts,
        };
        nats.agree_on_partitions(settings.partitions).await?;
        Ok(nats)
    }

    /// Records the partition count on first start; refuses a node that
    /// counts otherwise (its customers would hash elsewhere).
    async fn agree_on_partitions(&self, count: u16) -> Result<(), ClusterError> {
        let ours = count.to_string();
        match self.facts.create("partitions", ours.clone().into()).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let theirs = self.facts.get("partitions").await.map_err(nats)?;
                let theirs = theirs.map(|v| String::from_utf8_lossy(&v).into_owned());
                match theirs.as_deref() {
                    Some(t) if t == ours => Ok(()),
                    t => Err(ClusterError::Settings(format!(
                        "this cluster has {} partitions, not {count}; set partitions in [cluster] \
                         (or PUSHD_CLUSTER_PARTITIONS) to the same on every node",
                        t.unwrap_or("?")
                    ))),
                }
            }
            Err(e) => Err(nats(e)),
        }
    }
}

/// A key-value key for any id: ids may hold characters keys may not.
pub fn key_of(id: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}
