//! One partition's events publisher: the change sink of its store.
//!
//! A drain's events go out as few messages as fit ([`MAX_EVENTS`],
//! [`MAX_BYTES`]), one after the other, each expecting the subject's last
//! sequence so that none lands twice or out of order, and each naming
//! where the partition's events go on after it ([`NEXT_HEADER`]): the
//! place a node taking the partition over republishes from.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use bytes::Bytes;
use pushd_actors::engine::PartitionTag;
use pushd_actors::ports::{Change, Clock, Entry, Journal, Position};

use super::batch::{self, FORMAT, FORMAT_HEADER};
use super::{EventStream, NEXT_HEADER, PLACE_HEADER, RECORD_HEADER, Resume};
use crate::cluster::journal::StreamJournal;
use crate::cluster::{ClusterError, next_message};
use crate::events::record;
use crate::store::ChangeSink;

/// How long a drain waits for its events to be published before it fails
/// (and is tried again).
const PUBLISH_WAIT: Duration = Duration::from_secs(30);
/// The most events one message holds.
const MAX_EVENTS: usize = 1024;
/// The most bytes of events one message holds (NATS's default payload
/// limit is 1 MiB).
const MAX_BYTES: usize = 256 * 1024;

/// What a record asks of the events stream once it is durable.
#[derive(Clone)]
enum Waiting {
    /// Publish the record's events (their JSON).
    Events(Position, Vec<Bytes>),
    /// Delete every event of these customers (erased).
    Erasure(Position, Vec<String>),
}

impl Waiting {
    fn position(&self) -> Position {
        match self {
            Waiting::Events(p, _) | Waiting::Erasure(p, _) => *p,
        }
    }
}

/// What the stream holds of the partition's events.
struct Published {
    /// The subject's last sequence, or `None` after a failed publish: read
    /// it again before the next.
    last_seq: Option<u64>,
    /// The first event (record, index) the stream does not hold.
    next: Resume,
}

/// One partition's events publisher.
pub struct PartitionEvents {
    stream: EventStream,
    subject: String,
    journal: Arc<StreamJournal>,
    clock: Arc<dyn Clock>,
    runtime: tokio::runtime::Handle,
    published: Mutex<Published>,
    /// What records not yet handled ask, oldest first.
    waiting: Mutex<VecDeque<Waiting>>,
    /// Held while publishing: a drain tried again after its wait ran out
    /// goes on where the first left off.
    publishing: tokio::sync::Mutex<()>,
    /// Itself, for the publishing task a drain starts.
    me: std::sync::Weak<PartitionEvents>,
}

impl PartitionEvents {
    /// The publisher of partition `tag`, whose records `journal` makes
    /// durable; publishes on `runtime`. Attach it to the store before the
    /// journal's replay.
    pub async fn open(
        stream: EventStream,
        tag: PartitionTag,
        journal: Arc<StreamJournal>,
        clock: Arc<dyn Clock>,
        runtime: tokio::runtime::Handle,
    ) -> Result<Arc<PartitionEvents>, ClusterError> {
        let subject = stream.subject(tag);
        let (last_seq, next) = stream.resume(&subject).await?;
        Ok(Arc::new_cyclic(|me| PartitionEvents {
            subject,
            stream,
            journal,
            clock,
            runtime,
            published: Mutex::new(Published {
                last_seq: Some(last_seq),
                next,
            }),
            waiting: Mutex::default(),
            publishing: tokio::sync::Mutex::default(),
            me: me.clone(),
        }))
    }

    fn waiting(&self) -> MutexGuard<'_, VecDeque<Waiting>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn published(&self) -> MutexGuard<'_, Published> {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Handles what records up to `through` ask once the journal holds
    /// them, in order: publishes their events and deletes the events of
    /// customers erased.
    async fn publish_through(&self, through: Position) -> Result<(), String> {
        let _one = self.publishing.lock().await;
        self.journal
            .durable(through)
            .await
            .map_err(|e| e.to_string())?;
        loop {
            // The events of records up to the next erasure, or the erasure.
            let next: Vec<Waiting> = {
                let waiting = self.waiting();
                let mut next = Vec::new();
                for w in waiting.iter().take_while(|w| w.position() <= through) {
                    match w {
                        Waiting::Erasure(..) if next.is_empty() => {
                            next.push(w.clone());
                            break;
                        }
                        Waiting::Erasure(..) => break,
                        Waiting::Events(..) => next.push(w.clone()),
                    }
                }
                next
            };
            let done = match next.as_slice() {
                [] => return Ok(()),
                [Waiting::Erasure(position, customers)] => self.erase(*position, customers).await,
                records => self.publish(records).await,
            };
            if done.is_err() {
                self.published().last_seq = None;
            }
            done?;
            self.waiting().drain(..next.len());
        }
    }

    /// Publishes the events of `records` the stream does not hold yet.
    async fn publish(&self, records: &[Waiting]) -> Result<(), String> {
        let mut last_seq = self.last_seq().await?;
        let next = self.published().next;
        let pending = records.iter().flat_map(|w| match w {
            Waiting::Events(position, events) => (events.iter().enumerate())
                .map(|(n, e)| ((*position, n), e))
                .collect(),
            Waiting::Erasure(..) => Vec::new(),
        });
        let mut chunk: Vec<Bytes> = Vec::new();
        let (mut first, mut after, mut bytes) = (next, next, 0);
        for (place, event) in pending.filter(|(place, _)| *place >= next) {
            if chunk.len() == MAX_EVENTS || (!chunk.is_empty() && bytes + event.len() > MAX_BYTES) {
                last_seq = self.send(last_seq, first, after, &chunk).await?;
                (chunk, bytes) = (Vec::new(), 0);
            }
            if chunk.is_empty() {
                first = place;
            }
            bytes += event.len() + 1;
            chunk.push(event.clone());
            after = (place.0, place.1 + 1);
        }
        if !chunk.is_empty() {
            self.send(last_seq, first, after, &chunk).await?;
        }
        Ok(())
    }

    /// The subject's last sequence, read again after a failure, when what
    /// the stream holds moves the next event to publish on.
    async fn last_seq(&self) -> Result<u64, String> {
        if let Some(seq) = self.published().last_seq {
            return Ok(seq);
        }
        let (seq, held) = (self.stream.resume(&self.subject).await).map_err(|e| e.to_string())?;
        let mut published = self.published();
        published.last_seq = Some(seq);
        // Behind what this node published when the erasure deleted the
        // last batches.
        published.next = published.next.max(held);
        Ok(seq)
    }

    /// Publishes `events`, the places from `first` up to before `after`,
    /// as one message after the subject's message `last_seq`. Answers its
    /// sequence.
    async fn send(
        &self,
        last_seq: u64,
        first: Resume,
        after: Resume,
        events: &[Bytes],
    ) -> Result<u64, String> {
        let id = format!(
            "{}-{}.{}-{}.{}",
            self.subject, first.0, first.1, after.0, after.1
        );
        let seq = self
            .publish_after(last_seq, &id, after, batch::body(events))
            .await?;
        let mut published = self.published();
        published.last_seq = Some(seq);
        published.next = after;
        metrics::counter!("pushd_cluster_event_messages_total").increment(1);
        Ok(seq)
    }

    /// Publishes a message of id `id` on the subject, naming `after` as
    /// where the partition's events go on, and expecting `last_seq` as the
    /// subject's last sequence; answers its sequence. A copy already stored
    /// (an earlier try whose answer was lost) counts as this one.
    async fn publish_after(
        &self,
        last_seq: u64,
        id: &str,
        after: Resume,
        body: Bytes,
    ) -> Result<u64, String> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id);
        headers.insert(FORMAT_HEADER, FORMAT.to_string().as_str());
        headers.insert(NEXT_HEADER, format!("{}/{}", after.0, after.1).as_str());
        headers.insert("Nats-Expected-Last-Subject-Sequence", last_seq.to_string());
        let sent = async {
            (self.stream.js)
                .publish_with_headers(self.subject.clone(), headers, body)
                .await?
                .await
        };
        match sent.await {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                match self.stream.last_message_id(&self.subject).await {
                    Ok(Some((seq, last))) if last == id => Ok(seq),
                    _ => Err(format!(
                        "{}: another node published events (this one lost the partition)",
                        self.subject
                    )),
                }
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Deletes every event of `customers` (erased by the record at
    /// `position`) from the partition's batches, and from rewrites: a
    /// batch that holds others' events too is rewritten without them
    /// first. Then marks the erasure done in the subject (a message of no
    /// events), so that a node taking over goes on after it. Reads every
    /// batch of the partition: an erasure is rare, and its cost grows
    /// with the events the partition keeps.
    async fn erase(&self, position: Position, customers: &[String]) -> Result<(), String> {
        let stream = &self.stream;
        let mut seq = 1;
        while let Some(message) =
            (next_message(&stream.stream, seq, &self.subject).await).map_err(|e| e.to_string())?
        {
            seq = message.sequence + 1;
            let events =
                batch::events(&message.headers, &message.payload).map_err(|e| e.to_string())?;
            if events.iter().any(|(_, e)| batch::of_any(e, customers)) {
                stream
                    .rewrite(message.sequence, events, customers)
                    .await
                    .map_err(|e| e.to_string())?;
                stream
                    .stream
                    .delete_message(message.sequence)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        stream
            .erase_from_rewrites(customers)
            .await
            .map_err(|e| e.to_string())?;
        // The subject's last batch may be gone: expect what is last now.
        let last_seq = (stream.last_message_id(&self.subject).await)
            .map_err(|e| e.to_string())?
            .map_or(0, |(seq, _)| seq);
        let after = (position + 1, 0);
        let id = format!("{}-erased-{position}", self.subject);
        let seq = self
            .publish_after(last_seq, &id, after, Bytes::new())
            .await?;
        let mut published = self.published();
        published.last_seq = Some(seq);
        published.next = published.next.max(after);
        Ok(())
    }
}

/// What [`EventStream::resume`] reads from a message's headers: the place
/// after it (this pushd's batches), or after its event (an event message
/// of pushd before batches: its record and its place among the record's
/// events).
pub(super) fn resume_after(headers: &HeaderMap) -> Option<Resume> {
    let header = |name| headers.get(name).map(|v| v.as_str().to_string());
    if let Some(next) = header(NEXT_HEADER) {
        let (position, index) = next.split_once('/')?;
        return Some((position.parse().ok()?, index.parse().ok()?));
    }
    let position: Position = header(RECORD_HEADER)?.parse().ok()?;
    let place = header(PLACE_HEADER)?;
    let (n, _count) = place.split_once('/')?;
    Some((position, n.parse::<usize>().ok()? + 1))
}

impl ChangeSink for PartitionEvents {
    fn applied(&self, position: Position, changes: &[Change]) {
        if position < self.published().next.0 {
            return;
        }
        let events = record::events_of(position, changes, self.clock.now_ms());
        for e in &events {
            metrics::counter!("pushd_events_total", "event" => e.status.as_str()).increment(1);
        }
        let erased: Vec<String> = (changes.iter())
            .filter_map(|c| match &c.entry {
                Entry::CustomerErased(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        let mut waiting = self.waiting();
        if !events.is_empty() {
            let bodies = events.into_iter().map(|e| Bytes::from(e.body)).collect();
            waiting.push_back(Waiting::Events(position, bodies));
        }
        if !erased.is_empty() {
            waiting.push_back(Waiting::Erasure(position, erased));
        }
    }

    fn persist(&self, through: Position) -> std::io::Result<()> {
        if self
            .waiting()
            .front()
            .is_none_or(|w| w.position() > through)
        {
            return Ok(());
        }
        let failed = |why: String| std::io::Error::other(format!("events not published: {why}"));
        let me = self
            .me
            .upgrade()
            .ok_or_else(|| failed("the partition closed".into()))?;
        // The drain's thread waits; the publishing runs on the node's
        // runtime.
        super::super::wait_on(&self.runtime, PUBLISH_WAIT, async move {
            me.publish_through(through).await
        })
        .map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_takeover_goes_on_after_a_batch_or_an_old_event_message() {
        let mut batch = HeaderMap::new();
        batch.insert(NEXT_HEADER, "12/3");
        assert_eq!(resume_after(&batch), Some((12, 3)));
        let mut old = HeaderMap::new();
        old.insert(RECORD_HEADER, "7");
        old.insert(PLACE_HEADER, "1/2");
        assert_eq!(resume_after(&old), Some((7, 2)));
        old.insert(PLACE_HEADER, "0/2");
        assert_eq!(resume_after(&old), Some((7, 1)));
        assert_eq!(resume_after(&HeaderMap::new()), None);
    }
}
