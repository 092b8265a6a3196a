//! Cluster mode: several pushd nodes sharing the customers over a NATS
//! JetStream cluster.
//!
//! Customers hash into a fixed number of partitions. Each partition is an
//! independent engine (registry, store, journal) run by one node at a time:
//! the holder of its lease in a key-value bucket ([`lease`]). Its journal is
//! its subject of one replicated stream ([`journal`]), fenced so a node that
//! lost the lease cannot write; its snapshots go to a stream every node reads
//! ([`snapshots`]) so any node can take it over ([`node`]). Message
//! templates live in a key-value bucket every node reads ([`catalog`]), and
//! every partition's delivery events in a stream the feed reads ([`events`]).
//! Any node answers any call: the HTTP layer forwards what another node's
//! partition must do and gathers reads from every node ([`peers`]).

pub mod access;
pub mod backup;
pub mod catalog;
pub mod events;
pub mod journal;
pub mod lease;
pub mod link;
pub mod node;
pub mod peers;
pub mod relay;
pub mod serve;
pub mod snapshots;
pub mod trust;
pub mod webhooks;

use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::{self, kv, stream};

pub use link::Link;
pub use node::Node;

/// Why cluster mode could not start or a partition could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A NATS call failed.
    #[error("nats: {0}")]
    Nats(String),
    /// The settings cannot work.
    #[error("cluster settings: {0}")]
    Settings(String),
    /// The configuration cannot start a node.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The node could not start (a local failure: a thread, a file, the
    /// webhooks).
    #[error("starting the node: {0}")]
    Start(String),
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
    /// The partition holds records or a snapshot written by a newer pushd
    /// than this node: a newer node must serve it.
    #[error("{0}")]
    NewerRecords(String),
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
    /// How long a call for another node's partition waits for an owner
    /// to answer it before it is refused (503).
    pub forward_timeout: Duration,
    /// How often a partition's snapshot is uploaded.
    pub snapshot_every: Duration,
    /// Names of the stream, buckets and subjects: several clusters can
    /// share one NATS.
    pub prefix: String,
    /// The node's NATS credentials and TLS settings.
    pub access: access::NatsAccess,
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
    /// The snapshots' chunks (a subject per snapshot).
    pub snapshots: stream::Stream,
    /// The prefix of the snapshot subjects.
    pub snapshot_prefix: String,
    /// Message templates.
    pub templates: kv::Store,
    /// Webhooks: definitions and progress (see `webhooks`).
    pub webhooks: kv::Store,
    /// The bucket holding cluster-wide facts (the partition count).
    pub facts: kv::Store,
}

impl Nats {
    /// Connects to the servers and makes sure the stream and buckets exist
    /// (the first node creates them), then checks every node agrees on the
    /// partition count.
    pub async fn connect(settings: &Settings) -> Result<Nats, ClusterError> {
        let client = Nats::client(settings).await?;
        let js = jetstream::new(client.clone());
        // A NATS cluster just started elects its JetStream leader first:
        // wait for it (bounded) instead of failing the start.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match Nats::open(js.clone(), client.clone(), settings).await {
                Ok(nats) => return Ok(nats),
                Err(e @ ClusterError::Settings(_)) => return Err(e),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::info!(error = %e, "JetStream not ready; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// A client connected to one of the servers, tried again (without end:
    /// a node may start before NATS) while none answers; refused
    /// credentials or a failed TLS handshake fail at once, naming the
    /// settings to check.
    async fn client(settings: &Settings) -> Result<async_nats::Client, ClusterError> {
        use async_nats::ConnectErrorKind as Kind;
        loop {
            let options = settings.access.options().await?;
            let connecting = options
                .name(format!("pushd {}", settings.node))
                .connect(settings.servers.as_slice())
                .await;
            let e = match connecting {
                Ok(client) => return Ok(client),
                Err(e) => e,
            };
            let refused = |what: &str| {
                ClusterError::Settings(format!("NATS at {:?}: {e}: {what}", settings.servers))
            };
            match e.kind() {
                Kind::AuthorizationViolation | Kind::Authentication => {
                    return Err(refused(settings.access.auth_settings()));
                }
                Kind::Tls => {
                    return Err(refused(
                        "check [cluster] tls_ca_file (PUSHD_CLUSTER_TLS_CA_FILE), tls_cert_file \
                         and tls_key_file, and that the servers speak TLS",
                    ));
                }
                Kind::ServerParse => return Err(refused("check the server URLs (PUSHD_CLUSTER)")),
                _ => {
                    tracing::info!(error = %e, servers = ?settings.servers, "NATS not reachable; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Makes sure the stream and buckets exist and the partition count
    /// agrees.
    async fn open(
        js: jetstream::Context,
        client: async_nats::Client,
        settings: &Settings,
    ) -> Result<Nats, ClusterError> {
        let p = &settings.prefix;
        // Lease and member calls answer within a tick or count as failed,
        // so a NATS server's loss slows the node's loop by no more.
        let mut quick = jetstream::new(client);
        quick.set_timeout(settings.tick());
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
        // Buckets are made as their streams, as async-nats would make them,
        // except that reads go to the stream's leader (no direct gets from
        // replicas that may lag): a template or a lease read is current.
        // (async-nats's own bucket creation also asks for account fields a
        // 2.9 server does not send.)
        let kv = |name: &str, max_age: Duration, js: &jetstream::Context| {
            let (js, bucket) = (js.clone(), format!("{p}-{name}"));
            async move {
                js.get_or_create_stream(stream::Config {
                    name: format!("KV_{bucket}"),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    max_age,
                    storage: stream::StorageType::File,
                    num_replicas: r,
                    allow_rollup: true,
                    deny_delete: true,
                    discard: stream::DiscardPolicy::New,
                    duplicate_window: max_age.min(Duration::from_secs(120)),
                    ..Default::default()
                })
                .await
                .map_err(nats)?;
                js.get_key_value(&bucket).await.map_err(nats)
            }
        };
        let leases = kv("leases", settings.lease, &quick).await?;
        let members = kv("members", settings.lease, &quick).await?;
        let snapshot_index = kv("snapshot-index", Duration::ZERO, &js).await?;
        let templates = kv("templates", Duration::ZERO, &js).await?;
        let webhooks = kv("webhooks", Duration::ZERO, &js).await?;
        let facts = kv("facts", Duration::ZERO, &js).await?;
        let snapshot_prefix = format!("{p}.snapshot");
        let snapshots = js
            .get_or_create_stream(stream::Config {
                name: format!("{p}-snapshots"),
                subjects: vec![format!("{snapshot_prefix}.>")],
                storage: stream::StorageType::File,
                num_replicas: r,
                ..Default::default()
            })
            .await
            .map_err(nats)?;
        let nats = Nats {
            js,
            journal,
            leases,
            members,
            snapshot_index,
            snapshots,
            snapshot_prefix,
            templates,
            webhooks,
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

/// The first message of `stream` at or after sequence `seq` whose subject
/// `filter` matches; `None` past the last.
pub async fn next_message(
    stream: &stream::Stream,
    seq: u64,
    filter: &str,
) -> Result<Option<StreamMessage>, ClusterError> {
    let read = (stream.raw_message_builder())
        .sequence(seq)
        .next_by_subject(filter.to_string())
        .send()
        .await;
    found(read)
}

/// The last message of `stream` on `subject`; `None` if it has none.
pub async fn last_message(
    stream: &stream::Stream,
    subject: &str,
) -> Result<Option<StreamMessage>, ClusterError> {
    found(stream.get_last_raw_message_by_subject(subject).await)
}

/// A message read, `None` for none found, or the NATS error.
fn found(
    read: Result<StreamMessage, stream::LastRawMessageError>,
) -> Result<Option<StreamMessage>, ClusterError> {
    match read {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(nats(e)),
    }
}

/// Every live key of a bucket and its value, read from the bucket's
/// stream message by message (async-nats's key listing waits forever on a
/// 2.9 server). Meant for small buckets: members, templates.
pub async fn scan(bucket: &kv::Store) -> Result<Vec<(String, bytes::Bytes)>, ClusterError> {
    let wildcard = format!("{}>", bucket.prefix);
    let mut out = Vec::new();
    let mut seq = 1;
    loop {
        let Some(message) = next_message(&bucket.stream, seq, &wildcard).await? else {
            return Ok(out);
        };
        tracing::debug!(seq, found = message.sequence, subject = %message.subject, "scan");
        seq = message.sequence + 1;
        let deleted = message
            .headers
            .get("KV-Operation")
            .is_some_and(|op| op.as_str() != "PUT");
        let key = message.subject.as_str().strip_prefix(&bucket.prefix);
        if let (Some(key), false) = (key, deleted) {
            out.push((key.to_string(), message.payload));
        }
    }
}

/// Runs `call` on the node's `runtime` and waits for it, at most `limit`,
/// from this blocking thread (a store's drain, a webhooks call), which
/// may be no part of that runtime.
pub fn wait_on<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    limit: Duration,
    call: impl Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    let (done, result) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        let _ = done.send(call.await);
    });
    result
        .recv_timeout(limit)
        .unwrap_or_else(|_| Err(format!("no answer from NATS within {limit:?}")))
}

/// A key-value key for any id: ids may hold characters keys may not.
pub fn key_of(id: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}
