//! Partition leases in a JetStream key-value bucket whose entries expire
//! after the lease time (the bucket's max age): a node holds a partition
//! while it keeps renewing that partition's key. Taking a lease creates the
//! key (refused if it exists); renewing updates it at the revision the node
//! last wrote (refused if anyone else wrote since), so at most one node
//! believes it holds a lease it renewed within the lease time. The journal's
//! fencing, not this, is what stops a writer that lost its lease.

use std::collections::BTreeMap;

use async_nats::jetstream::kv;
use futures_util::future::join_all;
use pushd_actors::engine::PartitionTag;
use serde::{Deserialize, Serialize};

use super::{ClusterError, nats};

/// Who holds a lease: what the bucket's value says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The node's name.
    pub node: String,
    /// Where its API answers (`host:port`).
    pub address: String,
}

/// A lease held by this node, at the revision it last wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The partition.
    pub tag: PartitionTag,
    /// The key's revision this node wrote last.
    pub revision: u64,
}

/// What a renewal found.
#[derive(Debug)]
pub enum Renewal {
    /// Still ours, at this revision.
    Renewed(u64),
    /// Someone else wrote the key, or it lapsed: no longer ours.
    Lost,
    /// NATS did not answer; the lease may still be ours.
    Unknown(String),
}

fn key(tag: PartitionTag) -> String {
    format!("p{}", tag.0)
}

/// The partition a lease key names.
pub fn tag_of(key: &str) -> Option<PartitionTag> {
    key.strip_prefix('p')?.parse().ok().map(PartitionTag)
}

/// Takes partition `tag`'s lease if no one holds it; `None` if someone does.
pub async fn acquire(
    leases: &kv::Store,
    tag: PartitionTag,
    me: &Holder,
) -> Result<Option<Held>, ClusterError> {
    let value = serde_json::to_vec(me).map_err(nats)?;
    match leases.create(key(tag), value.into()).await {
        Ok(revision) => Ok(Some(Held { tag, revision })),
        // A create whose answer was lost is stored, and then found here:
        // the lease is this node's.
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(mine(leases, tag, me)
            .await?
            .map(|revision| Held { tag, revision })),
        Err(e) => Err(nats(e)),
    }
}

/// The revision of partition `tag`'s lease if `me` holds it: what a write
/// of this node whose answer was lost left.
pub async fn mine(
    leases: &kv::Store,
    tag: PartitionTag,
    me: &Holder,
) -> Result<Option<u64>, ClusterError> {
    let entry = leases.entry(key(tag)).await.map_err(nats)?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        .filter(|e| serde_json::from_slice::<Holder>(&e.value).is_ok_and(|h| h == *me))
        .map(|e| e.revision))
}

/// Renews a held lease.
pub async fn renew(leases: &kv::Store, held: Held, me: &Holder) -> Renewal {
    let value = match serde_json::to_vec(me) {
        Ok(v) => v,
        Err(e) => return Renewal::Unknown(e.to_string()),
    };
    match leases
        .update(key(held.tag), value.into(), held.revision)
        .await
    {
        Ok(revision) => Renewal::Renewed(revision),
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Renewal::Lost,
        Err(e) => Renewal::Unknown(e.to_string()),
    }
}

/// Gives a held lease up, unless someone else wrote it since.
pub async fn release(leases: &kv::Store, held: Held) {
    if let Err(e) = leases
        .delete_expect_revision(key(held.tag), Some(held.revision))
        .await
    {
        tracing::warn!(partition = held.tag.0, error = %e, "lease not released; it lapses by itself");
    }
}

/// Who holds partition `tag`'s lease now, if anyone.
pub async fn holder(leases: &kv::Store, tag: PartitionTag) -> Result<Option<Holder>, ClusterError> {
    let entry = leases.entry(key(tag)).await.map_err(nats)?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        .and_then(|e| serde_json::from_slice(&e.value).ok()))
}

/// Who holds each of the `count` partitions' leases now; a partition
/// missing from the map is free.
pub async fn holders(
    leases: &kv::Store,
    count: u16,
) -> Result<BTreeMap<PartitionTag, Holder>, ClusterError> {
    let reads = (0..count).map(|p| async move {
        let entry = leases.entry(key(PartitionTag(p))).await;
        (PartitionTag(p), entry)
    });
    let mut out = BTreeMap::new();
    for (tag, entry) in join_all(reads).await {
        let entry = entry.map_err(nats)?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            continue;
        };
        if let Ok(holder) = serde_json::from_slice::<Holder>(&entry.value) {
            out.insert(tag, holder);
        }
    }
    Ok(out)
}
