//! One partition's journal on a JetStream stream: the engine's [`Journal`]
//! port, replicated by the NATS cluster instead of synced to a local disk.
//!
//! Records are framed as in the local journal and numbered per partition
//! (1, 2, 3, ...). Appends, waiters and groups are the engine's group
//! commit ([`pushd_actors::group_commit`]); a writer task publishes each
//! group as one message on the partition's subject (a group larger than
//! [`MAX_GROUP_BYTES`] as several, in order), and a group is durable once
//! JetStream acknowledged it (stored on a majority of the stream's
//! replicas). Every publish states
//! the sequence of the last message this writer knows on the subject
//! (`Nats-Expected-Last-Subject-Sequence`): once another node has written
//! to the partition, every later publish of this one is refused, so a node
//! that lost its lease cannot write, even before it notices. Such a refusal
//! (or a publish that keeps failing) fails the journal for good: nothing
//! more is acknowledged, and the node drops the partition.
//!
//! A publish whose answer was lost is sent again with the same
//! `Nats-Msg-Id`; if the first one was stored after all, the subject's last
//! message carries that id and the group counts as written once.
//!
//! Opening a journal reads the partition's records after a snapshot's
//! position from the stream; [`Journal::replay`] hands them to the engine.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use pushd_actors::group_commit::GroupCommit;
use pushd_actors::ports::{BoxFuture, Change, Entry, Journal, JournalError, Position, StoreError};
use tokio::sync::oneshot;

mod read;

use super::ClusterError;
use crate::journal::frame;
use read::read_after;

/// Header naming the first record position a group message holds.
pub const FIRST_HEADER: &str = "Pushd-First";
/// Header naming the version of the records a group message holds
/// ([`crate::records`]); a message without it holds version 1.
pub const FORMAT_HEADER: &str = "Pushd-Format";
/// Largest group message: well under a NATS server's default 1 MiB
/// `max_payload` less headers; a larger group is split.
pub const MAX_GROUP_BYTES: usize = 768 * 1024;
/// How long a group is published again after failures before the journal
/// gives up (a NATS server's leader election takes seconds, not this long).
const PUBLISH_PATIENCE: Duration = Duration::from_secs(20);

/// What the journal's callers and its writer task share.
struct Shared {
    /// Appends, waiters and the groups the writer takes.
    commit: GroupCommit,
    /// Records read at open, handed to the engine's replay once.
    tail: Mutex<Vec<(Position, Vec<Entry>)>>,
    /// The stream sequence and last position of each group message not
    /// yet purged, oldest first: where a purge after a snapshot may cut.
    groups: Mutex<VecDeque<(u64, Position)>>,
}

impl Shared {
    fn groups(&self) -> MutexGuard<'_, VecDeque<(u64, Position)>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The records read at open; later, none.
    fn take_tail(&self) -> Vec<(Position, Vec<Entry>)> {
        std::mem::take(&mut *self.tail.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Where a partition's journal lives: the stream, the partition's subject,
/// and who writes.
#[derive(Clone)]
pub struct Place {
    /// The JetStream context publishes go through.
    pub js: async_nats::jetstream::Context,
    /// The journal stream (all partitions).
    pub stream: Stream,
    /// The partition's subject in it.
    pub subject: String,
    /// Names this writer in message ids: node and lease revision.
    pub writer: String,
}

/// The journal of one partition on JetStream.
pub struct StreamJournal {
    shared: Arc<Shared>,
    /// Resolves when the writer stopped (failed or closed).
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

/// What [`StreamJournal::open`] read from the stream.
pub struct Opened {
    /// The journal, writing after the partition's last record.
    pub journal: Arc<StreamJournal>,
    /// Group messages read.
    pub messages: u64,
}

impl StreamJournal {
    /// Reads the partition's records after `covered` (which a snapshot
    /// holds), then starts writing after the last one, on `runtime`. First
    /// writes an empty group: from then on a node that wrote before this
    /// one took the partition over is refused. Fails if the stream lacks a
    /// record just after `covered` (a newer snapshot let it be purged).
    /// `on_stop` runs once the writer stopped (the journal failed or
    /// closed).
    pub async fn open(
        place: Place,
        covered: Position,
        runtime: &tokio::runtime::Handle,
        on_stop: impl FnOnce() + Send + 'static,
    ) -> Result<Opened, ClusterError> {
        let read = read_after(&place, covered).await?;
        let last = read.tail.last().map_or(covered, |(p, _)| *p).max(read.last);
        let shared = Arc::new(Shared {
            commit: GroupCommit::new(last, 0),
            tail: Mutex::new(read.tail),
            groups: Mutex::new(read.groups),
        });
        // Fence off the previous writer before anything is replayed or
        // acknowledged.
        let fence = format!("{}-open", place.writer);
        let seq = publish(&place, read.last_seq, &fence, last + 1, Bytes::new())
            .await
            .map_err(|e| ClusterError::Fenced(e.to_string()))?;
        shared.groups().push_back((seq, last));
        let (done, stopped) = oneshot::channel();
        let writer = shared.clone();
        runtime.spawn(async move {
            write_groups(&writer, &place, seq).await;
            let _ = done.send(());
            on_stop();
        });
        Ok(Opened {
            journal: Arc::new(StreamJournal {
                shared,
                stopped: Mutex::new(Some(stopped)),
            }),
            messages: read.messages,
        })
    }

    /// Why the journal failed, if it did.
    pub fn failure(&self) -> Option<String> {
        self.shared.commit.failure()
    }

    /// The stream sequence below which the subject holds only records at
    /// or before `covered` (a snapshot holds them, so they may be purged);
    /// the subject's last message is always kept, as the next publish
    /// names its sequence.
    pub fn purge_point(&self, covered: Position) -> Option<u64> {
        let mut groups = self.shared.groups();
        let keep = groups
            .iter()
            .position(|(_, upto)| *upto > covered)
            .unwrap_or(groups.len().saturating_sub(1));
        groups.drain(..keep);
        groups.front().map(|(seq, _)| *seq)
    }

    /// Resolves once the writer stopped: the journal failed or closed.
    pub async fn stopped(&self) {
        let rx = self
            .stopped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(rx) = rx {
            let _ = rx.await;
        }
    }

    /// Refuses every later append, publishes what was appended, and stops
    /// the writer.
    pub fn close(&self) {
        self.shared.commit.close();
    }
}

impl Drop for StreamJournal {
    fn drop(&mut self) {
        self.close();
    }
}

impl Journal for StreamJournal {
    fn append(&self, changes: &[Change]) -> Result<Position, JournalError> {
        self.shared
            .commit
            .append(|position, buf| frame::encode(buf, position, changes))
    }

    fn durable(&self, position: Position) -> BoxFuture<Result<(), JournalError>> {
        self.shared.commit.durable(position)
    }

    fn replay(
        &self,
        after: Position,
        apply: &mut dyn FnMut(Position, Vec<Entry>) -> Result<(), StoreError>,
    ) -> Result<Position, JournalError> {
        let tail = self.shared.take_tail();
        let mut last = after;
        for (position, entries) in tail.into_iter().filter(|(p, _)| *p > after) {
            apply(position, entries)
                .map_err(|e| JournalError(format!("replay of {position}: {e}")))?;
            last = position;
        }
        Ok(last)
    }
}

/// Publishes each group, as messages of at most [`MAX_GROUP_BYTES`] (one
/// record at least), until the journal fails or closes; `seq` is the
/// subject's last sequence, this writer's own.
async fn write_groups(shared: &Shared, place: &Place, mut seq: u64) {
    while let Some(group) = shared.commit.next_group().await {
        let mut outcome = Ok(());
        for part in group.parts(MAX_GROUP_BYTES) {
            let started = std::time::Instant::now();
            let msg_id = format!("{}-{}", place.writer, part.first);
            let data = Bytes::copy_from_slice(part.bytes);
            match publish(place, seq, &msg_id, part.first, data).await {
                Ok(stored) => {
                    seq = stored;
                    metrics::histogram!("pushd_cluster_publish_seconds")
                        .record(started.elapsed().as_secs_f64());
                    shared.groups().push_back((stored, part.last));
                }
                Err(e) => {
                    tracing::error!(subject = %place.subject, error = %e, "partition journal failed; nothing more is acknowledged");
                    outcome = Err(e.to_string());
                    break;
                }
            }
        }
        shared.commit.finish(group, outcome);
    }
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    /// Another writer wrote to the subject: this one lost the partition.
    #[error("fenced: another node wrote to {0} (this node lost its lease)")]
    Fenced(String),
    /// JetStream kept failing.
    #[error("publishing to {subject} failed: {reason}")]
    Failed {
        /// The subject.
        subject: String,
        /// The last error.
        reason: String,
    },
}

/// Publishes one group on the subject, expecting `expected` as its last
/// sequence, retrying transient failures with the same message id.
/// Answers the group's stream sequence.
async fn publish(
    place: &Place,
    expected: u64,
    msg_id: &str,
    first: Position,
    data: Bytes,
) -> Result<u64, PublishFailure> {
    let context = &place.js;
    let deadline = tokio::time::Instant::now() + PUBLISH_PATIENCE;
    let mut wait = Duration::from_millis(50);
    let mut tried = false;
    loop {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", expected.to_string());
        headers.insert("Nats-Msg-Id", msg_id);
        headers.insert(FIRST_HEADER, first.to_string());
        headers.insert(FORMAT_HEADER, crate::records::JOURNAL_VERSION.to_string());
        let sent = async {
            context
                .publish_with_headers(place.subject.clone(), headers, data.clone())
                .await?
                .await
        };
        let error = match sent.await {
            Ok(ack) => return Ok(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                // An earlier try of this very group may have been stored.
                if tried && let Some(seq) = last_with_id(place, msg_id).await {
                    return Ok(seq);
                }
                metrics::counter!("pushd_cluster_fenced_total").increment(1);
                return Err(PublishFailure::Fenced(place.subject.clone()));
            }
            Err(e) => e,
        };
        tried = true;
        metrics::counter!("pushd_cluster_publish_retries_total").increment(1);
        if tokio::time::Instant::now() + wait > deadline {
            return Err(PublishFailure::Failed {
                subject: place.subject.clone(),
                reason: error.to_string(),
            });
        }
        tracing::warn!(subject = %place.subject, error = %error, "publish failed; trying again");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

/// The sequence of the subject's last message if it carries `msg_id`.
async fn last_with_id(place: &Place, msg_id: &str) -> Option<u64> {
    let last = place
        .stream
        .get_last_raw_message_by_subject(&place.subject)
        .await
        .ok()?;
    let id = last.headers.get("Nats-Msg-Id")?;
    (id.as_str() == msg_id).then_some(last.sequence)
}
