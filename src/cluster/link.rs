//! A cluster node's side of the [`Topology`](crate::topology::Topology):
//! who serves which partition (the [`Node`]'s view of the leases), and the
//! signed calls and relayed batches that reach the other nodes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use pushd_actors::engine::PartitionTag;
use serde_json::value::RawValue;

use super::Node;
use super::peers::Client;
use super::relay::Relay;
use super::trust::NodeCredential;
use crate::topology::wire::{Answer, Refused, SignedCall, Unreachable};
use crate::topology::{Call, Peers};

/// What a cluster node reaches the others with.
pub struct Link {
    /// This node.
    pub node: Arc<Node>,
    /// Calls to the other nodes.
    pub client: Client,
    /// Reports for other nodes' partitions, sent in batches.
    pub reports: Relay,
    /// How long a call for another node's partition waits for it.
    pub forward_timeout: Duration,
    /// This node's advertised address: what a call to it is signed for.
    pub advertise: String,
    /// The cluster secret, which checks the signature of a call from
    /// another node.
    pub credential: NodeCredential,
}

impl Peers for Link {
    fn forward_timeout(&self) -> Duration {
        self.forward_timeout
    }

    fn owner_address(&self, tag: PartitionTag) -> Option<String> {
        self.node.owner_address(tag)
    }

    fn current_owner_address(&self, tag: PartitionTag) -> BoxFuture<'_, Option<String>> {
        Box::pin(self.node.current_owner_address(tag))
    }

    fn peer_addresses(&self) -> Vec<String> {
        self.node.peer_addresses()
    }

    fn held_by(&self, address: &str) -> BTreeSet<u16> {
        self.node.held_by(address)
    }

    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.node.status()).unwrap_or_default()
    }

    fn call<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Answer, Unreachable>> {
        Box::pin(self.client.call(call))
    }

    fn relay<'a>(
        &'a self,
        address: &'a str,
        item: Box<RawValue>,
    ) -> BoxFuture<'a, Result<Box<RawValue>, Unreachable>> {
        Box::pin(self.reports.call(address, item))
    }

    fn advertised(&self) -> &str {
        &self.advertise
    }

    fn verify(&self, signature: Option<&str>, call: &SignedCall<'_>) -> Result<(), Refused> {
        self.credential.verify(signature, call)
    }
}
