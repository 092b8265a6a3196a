//! Cluster mode: the delivery events, in one replicated stream every node
//! reads the event feed from.
//!
//! Each partition's owner makes the events of its partition's journal
//! records as a single node does ([`crate::events::record`]), and publishes
//! them on the partition's subject of the events stream,
//! `<prefix>.events.<partition>`, once their record is durable in the
//! journal, in journal order. Its store's drain waits for them first
//! ([`ChangeSink::persist`]), so a snapshot never covers a record whose
//! events were not published: a node taking the partition over replays
//! only records after the snapshot, and republishes their events, from the
//! last record whose events the stream holds whole (each event names its
//! record and its place among the record's events); a copy of an event
//! published again is dropped by its message id.
//!
//! The stream's sequence orders every event of every partition: the feed's
//! cursor is the sequence of the last event handed out, so any node pages
//! every event exactly once, whichever nodes published them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::stream::{self, RawMessageErrorKind};
use bytes::Bytes;
use pushd_actors::engine::PartitionTag;
use pushd_actors::ports::{Change, Clock, Entry, Journal, Position};

use super::journal::StreamJournal;
use super::{ClusterError, Settings, nats};
use crate::events::{ReadError, record};
use crate::store::ChangeSink;

/// Header of an event message: its journal record's position.
pub const RECORD_HEADER: &str = "Pushd-Record";
/// Header of an event message: its place among its record's events and
/// how many the record made, `<place>/<count>`.
pub const PLACE_HEADER: &str = "Pushd-Record-Event";
/// How long a drain waits for its events to be published before it fails
/// (and is tried again).
const PUBLISH_WAIT: Duration = Duration::from_secs(30);

/// The events stream.
#[derive(Clone)]
pub struct EventStream {
    js: async_nats::jetstream::Context,
    stream: stream::Stream,
    prefix: String,
}

/// A page of the feed.
pub struct FeedPage {
    /// The events' stream sequences and JSON, oldest first.
    pub events: Vec<(u64, Bytes)>,
    /// The cursor to read on from.
    pub next: u64,
}

impl EventStream {
    /// Makes sure the stream exists (the first node creates it), keeping
    /// events for `retention`.
    pub async fn open(
        js: async_nats::jetstream::Context,
        settings: &Settings,
        retention: Duration,
    ) -> Result<EventStream, ClusterError> {
        let prefix = format!("{}.events", settings.prefix);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: format!("{}-events", settings.prefix),
                subjects: vec![format!("{prefix}.*")],
                storage: stream::StorageType::File,
                num_replicas: settings.replicas,
                max_age: retention,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(nats)?;
        Ok(EventStream { js, stream, prefix })
    }

    /// The stream's last sequence: where the feed ends now.
    pub async fn last_sequence(&self) -> Result<u64, ClusterError> {
        let info = self.stream.get_info().await.map_err(nats)?;
        Ok(info.state.last_sequence)
    }

    fn subject(&self, tag: PartitionTag) -> String {
        format!("{}.{}", self.prefix, tag.0)
    }

    /// Up to `limit` events after cursor `after`, oldest first, or
    /// [`ReadError::PastEnd`] for a cursor the stream never reached.
    pub async fn page(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Result<FeedPage, ReadError>, ClusterError> {
        let every = format!("{}.*", self.prefix);
        let mut page = FeedPage {
            events: Vec::new(),
            next: after,
        };
        while page.events.len() < limit {
            let found = self
                .stream
                .raw_message_builder()
                .sequence(page.next + 1)
                .next_by_subject(every.clone())
                .send()
                .await;
            match found {
                Ok(message) => {
                    page.next = message.sequence;
                    page.events.push((message.sequence, message.payload));
                }
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(nats(e)),
            }
        }
        if page.events.is_empty() && after > 0 {
            let info = self.stream.get_info().await.map_err(nats)?;
            let end = info.state.last_sequence;
            if after > end {
                return Ok(Err(ReadError::PastEnd { cursor: after, end }));
            }
        }
        Ok(Ok(page))
    }

    /// The first record of partition `tag` whose events the stream may
    /// not hold whole: the one after the last record whose last event it
    /// holds, or that record itself when only part of its events are
    /// there.
    async fn first_unpublished(&self, tag: PartitionTag) -> Result<Position, ClusterError> {
        let last = self
            .stream
            .raw_message_builder()
            .last_by_subject(self.subject(tag))
            .send()
            .await;
        let message = match last {
            Ok(m) => m,
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(0),
            Err(e) => return Err(nats(e)),
        };
        let header = |name| message.headers.get(name).map(|v| v.as_str().to_string());
        let position: Position = header(RECORD_HEADER)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| ClusterError::Nats(format!("an event without {RECORD_HEADER}")))?;
        let whole = header(PLACE_HEADER).is_some_and(|place| {
            let (n, count) = place.split_once('/').unwrap_or_default();
            n.parse::<usize>().ok().map(|n| n + 1) == count.parse().ok()
        });
        Ok(if whole { position + 1 } else { position })
    }
}

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

/// One partition's events publisher: the change sink of its store.
pub struct PartitionEvents {
    stream: EventStream,
    subject: String,
    journal: Arc<StreamJournal>,
    clock: Arc<dyn Clock>,
    runtime: tokio::runtime::Handle,
    /// Records before this one have their events in the stream already.
    from: Position,
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
        let from = stream.first_unpublished(tag).await?;
        Ok(Arc::new_cyclic(|me| PartitionEvents {
            subject: stream.subject(tag),
            stream,
            journal,
            clock,
            runtime,
            from,
            waiting: Mutex::default(),
            publishing: tokio::sync::Mutex::default(),
            me: me.clone(),
        }))
    }

    fn waiting(&self) -> MutexGuard<'_, VecDeque<Waiting>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Handles what records up to `through` ask once the journal holds
    /// them, in order: publishes their events, each under a message id
    /// naming its record and place (a copy is dropped), and deletes the
    /// events of customers erased.
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
            match next.as_slice() {
                [] => return Ok(()),
                [Waiting::Erasure(_, customers)] => self.erase(customers).await?,
                records => self.publish(records).await?,
            }
            self.waiting().drain(..next.len());
        }
    }

    /// Publishes the events of `records` and waits for the stream to hold
    /// them all.
    async fn publish(&self, records: &[Waiting]) -> Result<(), String> {
        let mut acks = Vec::new();
        for w in records {
            let Waiting::Events(position, events) = w else {
                continue;
            };
            for (n, body) in events.iter().enumerate() {
                let mut headers = HeaderMap::new();
                let id = format!("{}-{position}-{n}", self.subject);
                headers.insert("Nats-Msg-Id", id.as_str());
                headers.insert(RECORD_HEADER, position.to_string().as_str());
                headers.insert(PLACE_HEADER, format!("{n}/{}", events.len()).as_str());
                let sent = self.stream.js.publish_with_headers(
                    self.subject.clone(),
                    headers,
                    body.clone(),
                );
                acks.push(sent.await.map_err(|e| e.to_string())?);
            }
        }
        for ack in acks {
            ack.await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Deletes every event of `customers` the partition's subject holds,
    /// reading them one by one (an erasure is rare; its cost grows with
    /// the events the partition keeps).
    async fn erase(&self, customers: &[String]) -> Result<(), String> {
        let stream = &self.stream.stream;
        let mut seq = 1;
        loop {
            let found = stream
                .raw_message_builder()
                .sequence(seq)
                .next_by_subject(self.subject.clone())
                .send()
                .await;
            let message = match found {
                Ok(m) => m,
                Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            seq = message.sequence + 1;
            let event: serde_json::Value =
                serde_json::from_slice(&message.payload).unwrap_or_default();
            let of = |c: &String| event["customer_id"].as_str() == Some(c.as_str());
            if customers.iter().any(of) {
                stream
                    .delete_message(message.sequence)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
}

impl ChangeSink for PartitionEvents {
    fn applied(&self, position: Position, changes: &[Change]) {
        if position < self.from {
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
        super::wait_on(&self.runtime, PUBLISH_WAIT, async move {
            me.publish_through(through).await
        })
        .map_err(failed)
    }
}
