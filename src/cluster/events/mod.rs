//! Cluster mode: the delivery events, in one replicated stream every node
//! reads the event feed from.
//!
//! Each partition's owner makes the events of its partition's journal
//! records as a single node does ([`crate::events::record`]), and publishes
//! them on the partition's subject of the events stream,
//! `<prefix>.events.<partition>`, once their record is durable in the
//! journal, in journal order, a drain's events in as few messages as fit
//! ([`batch`], [`publish`]). Its store's drain waits for them first
//! ([`ChangeSink::persist`](crate::store::ChangeSink::persist)), so a
//! snapshot never covers a record whose events were not published: a node
//! taking the partition over replays only records after the snapshot, and
//! republishes their events from the place the subject's last message
//! names (each message names where the partition's events go on after it).
//!
//! The stream's order is the feed's: a cursor names a message and an event
//! in it ([`cursor`]), so any node pages every event exactly once,
//! whichever nodes published them.

pub mod batch;
pub mod cursor;
mod publish;

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::stream;
use bytes::Bytes;
use pushd_actors::engine::PartitionTag;
use pushd_actors::ports::Position;

use super::{ClusterError, Settings, last_message, nats, next_message};
use crate::events::ReadError;
use cursor::Place;
pub use publish::PartitionEvents;

/// Header of an event message of pushd before batches: its journal
/// record's position.
pub const RECORD_HEADER: &str = "Pushd-Record";
/// Header of an event message of pushd before batches: its place among its
/// record's events and how many the record made, `<place>/<count>`.
pub const PLACE_HEADER: &str = "Pushd-Record-Event";
/// Header of a batch: the first event (`<record>/<index>`) the partition's
/// messages after it hold.
pub const NEXT_HEADER: &str = "Pushd-Next";

/// The place of an event in its partition's journal: its record's
/// position and its index among the record's events.
pub type Resume = (Position, usize);

/// The events stream, and the rewrites of its batches (see [`batch`]).
#[derive(Clone)]
pub struct EventStream {
    js: async_nats::jetstream::Context,
    stream: stream::Stream,
    rewrites: stream::Stream,
    prefix: String,
    rewrites_prefix: String,
}

/// An event of a page of the feed.
pub struct FeedEvent {
    /// The cursor that reads it first.
    pub at: u64,
    /// The cursor just after it.
    pub next: u64,
    /// Its JSON.
    pub body: Bytes,
}

/// A page of the feed.
pub struct FeedPage {
    /// The events, oldest first.
    pub events: Vec<FeedEvent>,
    /// The cursor to read on from.
    pub next: u64,
    /// How many stream messages the page read events from.
    pub messages: usize,
}

impl EventStream {
    /// Makes sure the streams exist (the first node creates them), keeping
    /// events for `retention`.
    pub async fn open(
        js: async_nats::jetstream::Context,
        settings: &Settings,
        retention: Duration,
    ) -> Result<EventStream, ClusterError> {
        // Both keep what they hold for the retention; a rewrite replaces
        // the one before it under its batch's sequence.
        let kept = |name: &str, subject: &str| stream::Config {
            name: format!("{}-{name}", settings.prefix),
            subjects: vec![format!("{subject}.*")],
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            max_age: retention,
            ..Default::default()
        };
        let prefix = format!("{}.events", settings.prefix);
        let stream = (js.get_or_create_stream(stream::Config {
            duplicate_window: Duration::from_secs(120),
            ..kept("events", &prefix)
        }))
        .await
        .map_err(nats)?;
        let rewrites_prefix = format!("{}.event-rewrites", settings.prefix);
        let rewrites = (js.get_or_create_stream(stream::Config {
            max_messages_per_subject: 1,
            ..kept("event-rewrites", &rewrites_prefix)
        }))
        .await
        .map_err(nats)?;
        Ok(EventStream {
            js,
            stream,
            rewrites,
            prefix,
            rewrites_prefix,
        })
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
    /// [`ReadError::PastEnd`] for a cursor the stream never reached. A
    /// batch deleted by an erasure is read from its rewrite, in its place.
    pub async fn page(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Result<FeedPage, ReadError>, ClusterError> {
        let every = format!("{}.*", self.prefix);
        let mut at = Place::of_cursor(after);
        let mut page = FeedPage {
            events: Vec::new(),
            next: at.cursor(),
            messages: 0,
        };
        // The batches rewritten, read at the first gap: a gap is batches
        // deleted, by an erasure or the retention.
        let mut rewritten = None;
        while page.events.len() < limit {
            let Some(message) = next_message(&self.stream, at.seq.max(1), &every).await? else {
                break;
            };
            if at.seq.max(1) < message.sequence {
                let known = match &mut rewritten {
                    Some(known) => known,
                    unread => unread.insert(self.rewritten().await?),
                };
                for &gone in known.range(at.seq..message.sequence) {
                    if let Some(events) = self.rewrite_of(gone).await? {
                        at = take(&mut page, at, gone, events, limit);
                        if page.events.len() == limit {
                            return Ok(Ok(page));
                        }
                    }
                }
            }
            let events = read_events(&message.headers, &message.payload)?;
            at = take(&mut page, at, message.sequence, events, limit);
        }
        if page.events.is_empty() && after > 0 {
            let end = self.last_sequence().await?;
            if at.seq > end + 1 {
                let end = Place::message(end + 1).cursor();
                return Ok(Err(ReadError::PastEnd { cursor: after, end }));
            }
        }
        Ok(Ok(page))
    }

    /// The sequences of the batches rewritten (an erasure is rare: they
    /// are few).
    async fn rewritten(&self) -> Result<std::collections::BTreeSet<u64>, ClusterError> {
        use futures_util::TryStreamExt;
        let every = format!("{}.*", self.rewrites_prefix);
        let subjects = self
            .rewrites
            .info_with_subjects(&every)
            .await
            .map_err(nats)?;
        let subjects: Vec<(String, usize)> = subjects.try_collect().await.map_err(nats)?;
        Ok((subjects.iter())
            .filter_map(|(subject, _)| rewritten_batch(subject))
            .collect())
    }

    /// The events a rewrite of the batch at `seq` keeps, if it was
    /// rewritten.
    async fn rewrite_of(&self, seq: u64) -> Result<Option<Vec<(usize, Bytes)>>, ClusterError> {
        let subject = format!("{}.{seq}", self.rewrites_prefix);
        match last_message(&self.rewrites, &subject).await? {
            Some(m) => read_events(&m.headers, &m.payload).map(Some),
            None => Ok(None),
        }
    }

    /// Writes the rewrite of the batch at `seq` holding `events`, without
    /// those of `customers` (none when no event is left).
    async fn rewrite(
        &self,
        seq: u64,
        events: Vec<(usize, Bytes)>,
        customers: &[String],
    ) -> Result<(), ClusterError> {
        let subject = format!("{}.{seq}", self.rewrites_prefix);
        let kept: Vec<(usize, Bytes)> = (events.into_iter())
            .filter(|(_, e)| !batch::of_any(e, customers))
            .collect();
        if kept.is_empty() {
            return self
                .rewrites
                .purge()
                .filter(&subject)
                .await
                .map(drop)
                .map_err(nats);
        }
        let (headers, body) = batch::rewrite(&kept);
        (self.js.publish_with_headers(subject, headers, body).await)
            .map_err(nats)?
            .await
            .map(drop)
            .map_err(nats)
    }

    /// Removes the events of `customers` from every rewrite.
    async fn erase_from_rewrites(&self, customers: &[String]) -> Result<(), ClusterError> {
        let every = format!("{}.*", self.rewrites_prefix);
        let mut seq = 1;
        while let Some(message) = next_message(&self.rewrites, seq, &every).await? {
            seq = message.sequence + 1;
            let events = read_events(&message.headers, &message.payload)?;
            if events.iter().any(|(_, e)| batch::of_any(e, customers)) {
                let of = rewritten_batch(&message.subject).ok_or_else(|| {
                    ClusterError::Nats(format!("a rewrite on {}", message.subject))
                })?;
                self.rewrite(of, events, customers).await?;
            }
        }
        Ok(())
    }

    /// The sequence of the last message on `subject` and its message id,
    /// if it has one.
    async fn last_message_id(&self, subject: &str) -> Result<Option<(u64, String)>, ClusterError> {
        Ok(last_message(&self.stream, subject).await?.map(|m| {
            let id = m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string());
            (m.sequence, id.unwrap_or_default())
        }))
    }

    /// The sequence of `subject`'s last message and the first event of the
    /// partition the stream does not hold, as that message names it.
    async fn resume(&self, subject: &str) -> Result<(u64, Resume), ClusterError> {
        let Some(message) = last_message(&self.stream, subject).await? else {
            return Ok((0, (0, 0)));
        };
        let next = publish::resume_after(&message.headers).ok_or_else(|| {
            ClusterError::Nats(format!(
                "an events message on {subject} names no record ({NEXT_HEADER} or {RECORD_HEADER})"
            ))
        })?;
        Ok((message.sequence, next))
    }
}

/// The sequence of the batch a rewrite's subject names (its last token).
fn rewritten_batch(subject: &str) -> Option<u64> {
    subject.rsplit('.').next()?.parse().ok()
}

/// A message's events, or why they cannot be read.
fn read_events(headers: &HeaderMap, payload: &Bytes) -> Result<Vec<(usize, Bytes)>, ClusterError> {
    batch::events(headers, payload).map_err(|e| ClusterError::Nats(e.to_string()))
}

/// Adds to `page` the events of message `seq` from place `at` on, up to
/// `limit` in all; answers the place to read on from. Each event's next
/// cursor is the place of the message's next event, or the next message
/// after its last, so that consecutive events chain.
fn take(
    page: &mut FeedPage,
    at: Place,
    seq: u64,
    events: Vec<(usize, Bytes)>,
    limit: usize,
) -> Place {
    let mut events = (events.into_iter())
        .filter(|(i, _)| Place { seq, index: *i } >= at)
        .peekable();
    let mut read_on = at;
    let mut took = false;
    while page.events.len() < limit {
        let Some((index, body)) = events.next() else {
            break;
        };
        took = true;
        read_on = match events.peek() {
            Some((next, _)) => Place { seq, index: *next },
            None => Place::message(seq + 1),
        };
        page.events.push(FeedEvent {
            at: Place { seq, index }.cursor(),
            next: read_on.cursor(),
            body,
        });
    }
    if events.peek().is_none() {
        read_on = Place::message(seq + 1);
    }
    page.next = read_on.cursor();
    page.messages += usize::from(took);
    read_on
}
