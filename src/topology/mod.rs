//! Where each partition is served, as the HTTP layer routes a call: on this
//! node, or on another one it reaches through [`Peers`]. A single node runs
//! every partition ([`Topology::single`]). A cluster node runs some and
//! reaches the others through what cluster mode ([`crate::cluster`])
//! implements [`Peers`] and [`SharedTemplates`] with; the daemon hands those
//! in ([`Topology::cluster`]). The HTTP layer goes through this for every
//! call that may concern another node, and names no cluster type.

pub mod wire;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::Method;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use pushd_actors::engine::PartitionTag;
use pushd_actors::model::MessageSpec;
use serde_json::value::RawValue;

use crate::keys::Caller;
use crate::partition::Partitions;
use wire::{Answer, FORWARDED, Refused, Unreachable};

/// How long a bulk call forwarded to the node serving its customers may
/// take: its size, not only that node's health, sets the wait.
pub const BULK_TIMEOUT: Duration = Duration::from_secs(30);

/// The first pause between tries of a call on a moving partition; later
/// ones grow (up to five times this).
pub const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One call to another node.
pub struct Call<'a> {
    /// How long it may take to be answered whole.
    pub timeout: Duration,
    /// The node's advertised address.
    pub address: &'a str,
    /// The HTTP method.
    pub method: &'a Method,
    /// The path and query.
    pub path_and_query: &'a str,
    /// Whom this node authenticated, if anyone.
    pub caller: Option<Caller>,
    /// Headers set on it besides the signature's.
    pub headers: &'a [(&'a str, &'a str)],
    /// Its body.
    pub body: Bytes,
}

/// The other nodes of a cluster, as this node reaches them.
pub trait Peers: Send + Sync {
    /// How long a call for another node's partition waits for it.
    fn forward_timeout(&self) -> Duration;

    /// The address of the node holding partition `tag`'s lease, as last
    /// read, unless it is this one or none holds it.
    fn owner_address(&self, tag: PartitionTag) -> Option<String>;

    /// [`Peers::owner_address`] read afresh (the partition may have just
    /// moved).
    fn current_owner_address(&self, tag: PartitionTag) -> BoxFuture<'_, Option<String>>;

    /// The addresses of the other nodes.
    fn peer_addresses(&self) -> Vec<String>;

    /// The partitions the node at `address` serves, as last read.
    fn held_by(&self, address: &str) -> BTreeSet<u16>;

    /// What this node serves and sees, for `/healthz`.
    fn status(&self) -> serde_json::Value;

    /// Sends `call`, signed for the node it goes to.
    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Answer, Unreachable>>;

    /// Sends `item` (JSON text) to the node at `address` in the next batch
    /// of relayed reports; answers that node's answer to it.
    fn relay<'a>(
        &'a self,
        address: &'a str,
        item: Box<RawValue>,
    ) -> BoxFuture<'a, Result<Box<RawValue>, Unreachable>>;

    /// This node's advertised address: what a call to it is signed for.
    fn advertised(&self) -> &str;

    /// Whether `signature` is a node's, made with the cluster secret, of
    /// `call`.
    fn verify(&self, signature: Option<&str>, call: &wire::SignedCall<'_>) -> Result<(), Refused>;

    /// POSTs `body` to `path` of the node at `address`: the part of a
    /// backend's call (a send, an import, an ingested batch) split off for
    /// that node's customers, marked forwarded so that it answers the part
    /// whole.
    fn forward_part<'a>(
        &'a self,
        timeout: Duration,
        address: &'a str,
        path: &'a str,
        body: Bytes,
    ) -> BoxFuture<'a, Result<Answer, Unreachable>> {
        Box::pin(async move {
            let post = Method::POST;
            let call = Call {
                timeout,
                address,
                method: &post,
                path_and_query: path,
                caller: Some(Caller::Backend),
                headers: &[(FORWARDED, "1")],
                body,
            };
            self.call(call).await
        })
    }
}

/// Message templates every node reads and writes.
pub trait SharedTemplates: Send + Sync {
    /// The message `id`, if it exists.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<MessageSpec>, Error>>;
    /// Every message.
    fn all(&self) -> BoxFuture<'_, Result<Vec<MessageSpec>, Error>>;
    /// Creates or replaces a message.
    fn put<'a>(&'a self, spec: &'a MessageSpec) -> BoxFuture<'a, Result<(), Error>>;
}

/// Why a call could not be routed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No node served the partition in time: it is moving, or its node
    /// did not answer.
    #[error("partition {partition} could not be reached ({why}); retry in a moment")]
    PartitionUnavailable {
        /// The partition.
        partition: u16,
        /// Why.
        why: String,
    },
    /// What every node shares (NATS) did not answer.
    #[error("{0}")]
    Unavailable(String),
    /// A node-to-node call without a valid signature.
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// What one try of a call on a partition's owner came to.
pub enum Try<T> {
    /// The owner answered.
    Answered(T),
    /// No answer from a node serving it (why): it may be moving.
    Moving(String),
}

/// This node's place: alone, or among peers.
#[derive(Clone)]
pub struct Topology {
    peers: Option<Arc<dyn Peers>>,
}

impl Topology {
    /// A single node: every partition is served here.
    pub fn single() -> Topology {
        Topology { peers: None }
    }

    /// A cluster node reaching the others through `peers`.
    pub fn cluster(peers: Arc<dyn Peers>) -> Topology {
        Topology { peers: Some(peers) }
    }

    /// The other nodes, unless this is a single node.
    pub fn peers(&self) -> Option<&dyn Peers> {
        self.peers.as_deref()
    }

    /// The address of the node serving `tag`, when another node does (as
    /// last read).
    pub fn owner_elsewhere(&self, tag: PartitionTag) -> Option<String> {
        self.peers()?.owner_address(tag)
    }

    /// Tries `ask(owner's address, time left)` on the node holding partition
    /// `tag`'s lease, read afresh before each try after the first, until the
    /// forward timeout: a partition moving (its node gone, paused or handing
    /// it back) is asked of its new owner. `Ok(None)` once `here` runs it
    /// (or on a single node): answer here. Past the timeout,
    /// [`Error::PartitionUnavailable`].
    pub async fn on_owner<T, Fut>(
        &self,
        here: &Partitions,
        tag: PartitionTag,
        mut ask: impl FnMut(String, Duration) -> Fut,
    ) -> Result<Option<T>, Error>
    where
        Fut: Future<Output = Try<T>>,
    {
        let Some(peers) = self.peers() else {
            return Ok(None);
        };
        let timeout = peers.forward_timeout();
        let deadline = Instant::now() + timeout;
        let mut why = String::from("no node serves it now");
        for attempt in 0u32.. {
            if here.get(tag).is_some() {
                return Ok(None);
            }
            let owner = match peers.owner_address(tag).filter(|_| attempt == 0) {
                Some(address) => Some(address),
                None => peers.current_owner_address(tag).await,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if let (Some(address), false) = (owner, left.is_zero()) {
                metrics::counter!("pushd_cluster_forwarded_total").increment(1);
                match ask(address, left).await {
                    Try::Answered(answer) => return Ok(Some(answer)),
                    Try::Moving(moving) => {
                        tracing::debug!(why = %moving, "forwarding failed");
                        why = moving;
                    }
                }
            }
            let pause = RETRY_PAUSE * (attempt + 1).min(5);
            if Instant::now() + pause >= deadline {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        metrics::counter!("pushd_cluster_forward_timeouts_total").increment(1);
        tracing::info!(partition = tag.0, why = %why, "forwarded call timed out");
        Err(Error::PartitionUnavailable {
            partition: tag.0,
            why: format!("{why}; waited {} ms", timeout.as_millis()),
        })
    }
}
