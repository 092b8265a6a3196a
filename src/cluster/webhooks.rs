//! Cluster mode: webhooks and the feed. Definitions and progress live in a
//! replicated key-value bucket every node reads ([`SharedBook`]); the events
//! come from the cluster's events stream ([`StreamEvents`]), in the stream's
//! order, the same for the feed and the webhooks.
//!
//! Each webhook's worker runs on one node: the one serving the partition
//! its id hashes to (as a customer id would). It saves its cursor (a place
//! in the stream, as the feed's) and figures to the bucket a few times a second; when
//! the partition moves, the node that takes it starts the worker from the
//! cursor last saved, so events after it are posted again rather than
//! skipped (at least once, as on a single node: receivers drop copies by
//! `event_id`). A webhook is created, replaced or deleted through any node,
//! which answers once the bucket holds the change.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::kv;
use pushd_actors::ports::BoxFuture;
use pushd_actors::status::MessageStatus;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::events::cursor::{self, Place};
use super::events::{EventStream, FeedEvent};
use super::{key_of, scan, wait_on};
use crate::events::{Page, ReadError, Source, StoredEvent, Tail};
use crate::webhooks::book::{Book, Change, Definition, Live, Progress, Saved};

/// How long a call to the bucket may take before the webhook call fails.
const BUCKET_WAIT: Duration = Duration::from_secs(10);
/// How often the end of the events stream is read, to wake the workers.
const TAIL_EVERY: Duration = Duration::from_millis(200);

/// Runs `call` on `runtime` and waits for it from this (blocking) thread.
fn wait<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    call: impl Future<Output = Result<T, String>> + Send + 'static,
) -> io::Result<T> {
    wait_on(runtime, BUCKET_WAIT, call).map_err(io::Error::other)
}

/// A definition as the bucket keeps it, with its id (a key is the id
/// encoded).
#[derive(Serialize, Deserialize)]
struct Defined {
    id: String,
    #[serde(flatten)]
    definition: Definition,
}

/// Progress and live figures as the bucket keeps them.
#[derive(Default, Serialize, Deserialize)]
struct Posted {
    progress: Progress,
    live: Live,
    /// The form of the cursor: absent (0), a bare stream sequence, as
    /// pushd saved it before batches of events.
    #[serde(default)]
    cursor_form: u32,
}

/// The form of cursor saved now: a place ([`cursor`]).
const CURSOR_FORM: u32 = 2;

impl Posted {
    /// Progress as saved, its cursor in today's form.
    fn read(value: &[u8]) -> serde_json::Result<Posted> {
        let mut posted: Posted = serde_json::from_slice(value)?;
        if posted.cursor_form < CURSOR_FORM {
            posted.progress.cursor = cursor::upgraded(posted.progress.cursor);
            posted.cursor_form = CURSOR_FORM;
        }
        Ok(posted)
    }
}

/// The webhooks of a cluster, in the bucket `<prefix>-webhooks`: under
/// `d.<id>` each definition, written by the node a change went through;
/// under `p.<id>` each one's progress, written by the node running its
/// worker. The two never overwrite each other.
pub struct SharedBook {
    bucket: kv::Store,
    runtime: tokio::runtime::Handle,
}

impl SharedBook {
    /// The book in `bucket`, called on `runtime`.
    pub fn new(bucket: kv::Store, runtime: tokio::runtime::Handle) -> SharedBook {
        SharedBook { bucket, runtime }
    }

    fn load_key(&self, key: &str) -> io::Result<Option<bytes::Bytes>> {
        let (bucket, key) = (self.bucket.clone(), key.to_string());
        wait(&self.runtime, async move {
            bucket.get(key).await.map_err(|e| e.to_string())
        })
    }

    /// Puts `webhooks` into a restored cluster's bucket, each as if defined
    /// anew but with its figures, from the start of the events stream: a
    /// new cluster's stream holds only what happens after the restore.
    /// Blocks on the runtime: call it off it.
    pub fn seed(&self, mut webhooks: BTreeMap<String, Saved>) -> io::Result<()> {
        for saved in webhooks.values_mut() {
            saved.progress.cursor = 0;
        }
        for id in webhooks.keys() {
            self.save(&webhooks, &[], Change::Defined(id))?;
        }
        Ok(())
    }

    fn put(&self, key: String, value: Vec<u8>) -> io::Result<()> {
        let bucket = self.bucket.clone();
        wait(&self.runtime, async move {
            bucket
                .put(key, value.into())
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }
}

impl Book for SharedBook {
    fn load(&self) -> io::Result<BTreeMap<String, Saved>> {
        let bucket = self.bucket.clone();
        let entries = wait(&self.runtime, async move {
            scan(&bucket).await.map_err(|e| e.to_string())
        })?;
        let mut defined = BTreeMap::new();
        let mut posted = BTreeMap::new();
        for (key, value) in entries {
            let bad = |e: serde_json::Error| {
                io::Error::new(io::ErrorKind::InvalidData, format!("webhook {key}: {e}"))
            };
            if let Some(k) = key.strip_prefix("d.") {
                let d: Defined = serde_json::from_slice(&value).map_err(bad)?;
                defined.insert(k.to_string(), d);
            } else if let Some(k) = key.strip_prefix("p.") {
                posted.insert(k.to_string(), Posted::read(&value).map_err(bad)?);
            }
        }
        Ok(defined
            .into_iter()
            .map(|(key, d)| {
                let p = posted.remove(&key).unwrap_or_default();
                let saved = Saved {
                    definition: d.definition,
                    progress: p.progress,
                    live: p.live,
                };
                (d.id, saved)
            })
            .collect())
    }

    fn save(
        &self,
        all: &BTreeMap<String, Saved>,
        running: &[String],
        change: Change<'_>,
    ) -> io::Result<()> {
        let posted = |s: &Saved| {
            serde_json::to_vec(&Posted {
                progress: s.progress.clone(),
                live: s.live,
                cursor_form: CURSOR_FORM,
            })
        };
        match change {
            Change::Defined(id) => {
                let Some(saved) = all.get(id) else {
                    return Ok(());
                };
                // A new webhook's starting cursor first: a worker placed
                // elsewhere finds it with the definition.
                let progress = format!("p.{}", key_of(id));
                if self.load_key(&progress)?.is_none() {
                    self.put(progress, posted(saved)?)?;
                }
                let defined = Defined {
                    id: id.to_string(),
                    definition: saved.definition.clone(),
                };
                self.put(format!("d.{}", key_of(id)), serde_json::to_vec(&defined)?)
            }
            Change::Removed(id) => {
                let bucket = self.bucket.clone();
                let key = key_of(id);
                wait(&self.runtime, async move {
                    for k in [format!("d.{key}"), format!("p.{key}")] {
                        bucket.purge(k).await.map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            }
            Change::Progressed => {
                for id in running {
                    if let Some(saved) = all.get(id) {
                        self.put(format!("p.{}", key_of(id)), posted(saved)?)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn shared(&self) -> bool {
        true
    }

    fn place(&self) -> String {
        format!("the cluster's webhooks bucket ({})", self.bucket.name)
    }
}

/// The cluster's events stream as webhooks read it: a cursor is a place in
/// the stream ([`cursor`]), and while a worker runs the end of the stream
/// is read every [`TAIL_EVERY`] to wake it.
pub struct StreamEvents {
    stream: EventStream,
    /// Events read, and the messages they came from: how many events a
    /// message holds, to tell a worker's queue in events.
    events_read: AtomicU64,
    messages_read: AtomicU64,
    tail: watch::Sender<Tail>,
    runtime: tokio::runtime::Handle,
    /// Itself, for a read of the end run on the runtime.
    me: Weak<StreamEvents>,
}

impl StreamEvents {
    /// Reads `stream`, following its end on `runtime`.
    pub async fn start(
        stream: EventStream,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Arc<StreamEvents>, super::ClusterError> {
        let last = stream.last_sequence().await?;
        let (tail, _) = watch::channel(tail_at(last));
        let events = Arc::new_cyclic(|me| StreamEvents {
            stream,
            events_read: AtomicU64::new(0),
            messages_read: AtomicU64::new(0),
            tail,
            runtime: runtime.clone(),
            me: me.clone(),
        });
        runtime.spawn(follow(Arc::downgrade(&events)));
        Ok(events)
    }

    /// Reads the end of the stream now, and wakes the workers if it moved.
    async fn read_tail(&self) -> Tail {
        match self.stream.last_sequence().await {
            Ok(last) => {
                self.tail.send_if_modified(|t| {
                    let moved = t.offset != last;
                    *t = tail_at(last);
                    moved
                });
            }
            Err(e) => tracing::debug!(error = %e, "events stream's end not read"),
        }
        *self.tail.borrow()
    }
}

/// The tail of a stream whose last sequence is `last`.
fn tail_at(last: u64) -> Tail {
    let end = Place::message(last + 1).cursor();
    Tail {
        offset: end,
        next_seq: end,
    }
}

/// Reads the end of the stream, while a worker watches it, until `events`
/// is dropped.
async fn follow(events: Weak<StreamEvents>) {
    let mut every = tokio::time::interval(TAIL_EVERY);
    loop {
        every.tick().await;
        let Some(events) = events.upgrade() else {
            return;
        };
        if events.tail.receiver_count() > 0 {
            events.read_tail().await;
        }
    }
}

impl Source for StreamEvents {
    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
        let (stream, me) = (self.stream.clone(), self.me.clone());
        Box::pin(async move {
            let page = stream
                .page(after, limit)
                .await
                .map_err(|e| ReadError::Unavailable(e.to_string()))??;
            if let Some(me) = me.upgrade() {
                (me.events_read).fetch_add(page.events.len() as u64, Ordering::Relaxed);
                (me.messages_read).fetch_add(page.messages as u64, Ordering::Relaxed);
            }
            let events = page.events.into_iter().map(stored).collect();
            Ok(Page {
                events,
                next: page.next,
            })
        })
    }

    fn tail(&self) -> Tail {
        *self.tail.borrow()
    }

    fn end(&self) -> Tail {
        let Some(me) = self.me.upgrade() else {
            return self.tail();
        };
        wait(&self.runtime, async move { Ok(me.read_tail().await) }).unwrap_or_else(|_| self.tail())
    }

    fn watch(&self) -> watch::Receiver<Tail> {
        self.tail.subscribe()
    }

    /// The messages from `seq`'s to the end, times the events a message
    /// held on average in what was read: an estimate.
    fn behind(&self, seq: u64) -> u64 {
        let from = Place::of_cursor(seq).seq;
        let end = Place::of_cursor(self.tail().offset).seq;
        let messages = self.messages_read.load(Ordering::Relaxed).max(1);
        let events = self.events_read.load(Ordering::Relaxed).max(1);
        end.saturating_sub(from) * events / messages
    }
}

/// An event of the feed as a webhook reads it: its status and time read
/// from its JSON (`event`, `timestamp` in seconds); its cursor orders it.
fn stored(event: FeedEvent) -> StoredEvent {
    #[derive(Deserialize)]
    struct Head {
        event: MessageStatus,
        timestamp: i64,
    }
    let head: Option<Head> = serde_json::from_slice(&event.body).ok();
    StoredEvent {
        offset: event.at,
        next: event.next,
        seq: event.at,
        time_ms: head.as_ref().map_or(0, |h| h.timestamp * 1000),
        // An event that does not read is taken by no webhook (none takes
        // `attempted`) and passed.
        status: head.map_or(MessageStatus::Attempted, |h| h.event),
        body: event.body.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_saved_before_batches_reads_on_after_its_message() {
        let saved = serde_json::to_vec(&Posted::default()).unwrap();
        let mut old: serde_json::Value = serde_json::from_slice(&saved).unwrap();
        old["progress"]["cursor"] = 41.into();
        old.as_object_mut().unwrap().remove("cursor_form");
        let read = Posted::read(&serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(read.progress.cursor, Place::message(42).cursor());

        // Saved again, it is read as it is.
        let again = Posted::read(&serde_json::to_vec(&read).unwrap()).unwrap();
        assert_eq!(again.progress.cursor, Place::message(42).cursor());
    }
}
