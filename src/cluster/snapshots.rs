//! Partition snapshots where every node can read them: the owner exports
//! its store's snapshot (see the store's portable format), waits until the
//! journal holds every record it covers, publishes it in chunks on the
//! snapshot stream's subject `<prefix>.snapshot.<partition>.<covered>`,
//! points the partition's index entry at it (only forward: a late upload of
//! an older snapshot never replaces a newer one), and then purges the older
//! snapshot and the journal messages it covers. A node taking the partition
//! over loads the indexed snapshot and replays the journal after its
//! position.
//!
//! (A stream of chunks read with direct message gets, rather than
//! JetStream's object store: the object store reads through a consumer,
//! which on a 2.9 server stalled for its whole timeout after a server of
//! the cluster died.)

use std::path::Path;
use std::sync::Arc;

use async_nats::jetstream::kv;
use pushd_actors::engine::PartitionTag;
use pushd_actors::ports::{Journal, Position};
use serde::{Deserialize, Serialize};

use super::journal::StreamJournal;
use super::{ClusterError, Nats, nats, next_message};
use crate::store::{Error as StoreError, SledStore};

/// Bytes per snapshot chunk message.
const CHUNK_BYTES: usize = 512 * 1024;

/// A partition's latest snapshot, as its index entry says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latest {
    /// The subject its chunks are on.
    pub subject: String,
    /// The stream sequence of its first chunk.
    pub first_seq: u64,
    /// How many chunks.
    pub chunks: u64,
    /// The journal position it covers.
    pub covered: Position,
}

fn key(tag: PartitionTag) -> String {
    format!("p{}", tag.0)
}

/// The partition's latest snapshot and its index entry's revision.
async fn latest(nats: &Nats, tag: PartitionTag) -> Result<Option<(Latest, u64)>, ClusterError> {
    let entry = nats
        .snapshot_index
        .entry(key(tag))
        .await
        .map_err(nats_err)?;
    let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
        return Ok(None);
    };
    let latest = serde_json::from_slice(&entry.value)
        .map_err(|e| ClusterError::Snapshot(format!("index entry of {}: {e}", key(tag))))?;
    Ok(Some((latest, entry.revision)))
}

fn nats_err(e: impl std::fmt::Display) -> ClusterError {
    nats(e)
}

/// The prefix of partition `tag`'s snapshot subjects.
fn snapshot_subject(nats: &Nats, tag: PartitionTag) -> String {
    format!("{}.{}", nats.snapshot_prefix, tag.0)
}

/// Deletes a snapshot's chunks.
async fn purge(nats: &Nats, subject: &str) {
    if let Err(e) = nats.snapshots.purge().filter(subject).await {
        tracing::warn!(subject, error = %e, "old snapshot not purged");
    }
}

/// Builds the partition's store in `dir` from its latest snapshot (an
/// empty store if it has none), with a page cache of at most
/// `cache_bytes`.
pub async fn load(
    nats: &Nats,
    tag: PartitionTag,
    dir: &Path,
    cache_bytes: u64,
) -> Result<Arc<SledStore>, ClusterError> {
    let dir = dir.to_path_buf();
    for _ in 0..3 {
        let Some((latest, _)) = latest(nats, tag).await? else {
            return blocking(move || SledStore::open(dir, cache_bytes)).await;
        };
        let Some(bytes) = read_chunks(nats, &latest).await? else {
            // Replaced by a newer one meanwhile: read the index again.
            continue;
        };
        let dir = dir.clone();
        return blocking(move || SledStore::import(&dir, &mut &bytes[..], cache_bytes)).await;
    }
    Err(ClusterError::Snapshot(format!(
        "the snapshot of partition {} kept changing while it was read",
        tag.0
    )))
}

/// Runs `open` off the runtime; a snapshot written by a newer pushd is
/// [`ClusterError::NewerRecords`].
async fn blocking(
    open: impl FnOnce() -> Result<Arc<SledStore>, StoreError> + Send + 'static,
) -> Result<Arc<SledStore>, ClusterError> {
    tokio::task::spawn_blocking(open)
        .await
        .map_err(|e| ClusterError::Snapshot(e.to_string()))?
        .map_err(|e| match e {
            StoreError::NewerFormat(why) => ClusterError::NewerRecords(why),
            e => ClusterError::Snapshot(e.to_string()),
        })
}

/// The snapshot's bytes; `None` if its chunks are gone (purged after a
/// newer one).
async fn read_chunks(nats: &Nats, latest: &Latest) -> Result<Option<Vec<u8>>, ClusterError> {
    let mut bytes = Vec::new();
    let mut seq = latest.first_seq;
    for _ in 0..latest.chunks {
        let Some(chunk) = next_message(&nats.snapshots, seq, &latest.subject).await? else {
            return Ok(None);
        };
        seq = chunk.sequence + 1;
        bytes.extend_from_slice(&chunk.payload);
    }
    Ok(Some(bytes))
}

/// Publishes `bytes`, partition `tag`'s snapshot covering `covered`, in
/// chunks on the snapshot stream (not yet indexed).
async fn publish(
    nats: &Nats,
    tag: PartitionTag,
    bytes: &[u8],
    covered: Position,
) -> Result<Latest, ClusterError> {
    let chunk_subject = format!("{}.{covered}", snapshot_subject(nats, tag));
    let mut first_seq = None;
    let mut chunks = 0;
    for chunk in bytes.chunks(CHUNK_BYTES) {
        let ack = nats
            .js
            .publish(chunk_subject.clone(), bytes::Bytes::copy_from_slice(chunk))
            .await
            .map_err(nats_err)?
            .await
            .map_err(nats_err)?;
        first_seq.get_or_insert(ack.sequence);
        chunks += 1;
    }
    Ok(Latest {
        subject: chunk_subject,
        first_seq: first_seq.unwrap_or(0),
        chunks,
        covered,
    })
}

/// Whether partition `tag` has a snapshot.
pub async fn exists(nats: &Nats, tag: PartitionTag) -> Result<bool, ClusterError> {
    Ok(latest(nats, tag).await?.is_some())
}

/// Makes `bytes` (a store's portable export covering `covered`) partition
/// `tag`'s first snapshot: a restored partition's state, which the node
/// taking the partition loads. Fails if the partition has one already.
pub async fn seed(
    nats: &Nats,
    tag: PartitionTag,
    bytes: &[u8],
    covered: Position,
) -> Result<(), ClusterError> {
    let mine = publish(nats, tag, bytes, covered).await?;
    let value = serde_json::to_vec(&mine).map_err(nats_err)?;
    nats.snapshot_index
        .create(key(tag), value.into())
        .await
        .map(drop)
        .map_err(|e| match e.kind() {
            kv::CreateErrorKind::AlreadyExists => {
                ClusterError::Snapshot(format!("partition {} has a snapshot already", tag.0))
            }
            _ => nats_err(e),
        })
}

/// Uploads the partition's snapshot if it covers more than `after`, then
/// purges the journal messages it covers. Answers the position uploaded.
pub async fn upload(
    nats: &Nats,
    tag: PartitionTag,
    subject: &str,
    store: &Arc<SledStore>,
    journal: &StreamJournal,
    after: Position,
) -> Result<Position, ClusterError> {
    let exporting = store.clone();
    let (bytes, covered) = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        exporting.export(&mut bytes).map(|covered| (bytes, covered))
    })
    .await
    .map_err(|e| ClusterError::Snapshot(e.to_string()))?
    .map_err(|e| ClusterError::Snapshot(e.to_string()))?;
    if covered <= after {
        return Ok(after);
    }
    // Only what the journal holds may be in a snapshot others load.
    journal
        .durable(covered)
        .await
        .map_err(|e| ClusterError::Snapshot(format!("not uploaded: {e}")))?;
    let mine = publish(nats, tag, &bytes, covered).await?;
    let value = serde_json::to_vec(&mine).map_err(nats_err)?;
    let replaced = loop {
        let found = latest(nats, tag).await?;
        if let Some((newer, _)) = found.as_ref().filter(|(l, _)| l.covered >= covered) {
            tracing::debug!(
                partition = tag.0,
                newer = newer.covered,
                "a newer snapshot is indexed"
            );
            if newer.subject != mine.subject {
                purge(nats, &mine.subject).await;
            }
            return Ok(covered);
        }
        let written = match &found {
            Some((_, revision)) => nats
                .snapshot_index
                .update(key(tag), value.clone().into(), *revision)
                .await
                .map(drop)
                .map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision),
            None => nats
                .snapshot_index
                .create(key(tag), value.clone().into())
                .await
                .map(drop)
                .map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists),
        };
        match written {
            Ok(()) => break found.map(|(old, _)| old),
            Err(true) => continue,
            Err(false) => {
                return Err(ClusterError::Snapshot(format!(
                    "index of partition {} not updated",
                    tag.0
                )));
            }
        }
    };
    if let Some(old) = replaced.filter(|o| o.subject != mine.subject) {
        purge(nats, &old.subject).await;
    }
    if let Some(seq) = journal.purge_point(covered)
        && let Err(e) = nats.journal.purge().filter(subject).sequence(seq).await
    {
        tracing::warn!(partition = tag.0, error = %e, "journal purge failed; retried after the next snapshot");
    }
    metrics::counter!("pushd_cluster_snapshots_uploaded_total").increment(1);
    Ok(covered)
}
