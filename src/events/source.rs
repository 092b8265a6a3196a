//! The events as the feed and the webhooks read them: a single node's
//! event log ([`LocalEvents`]), or a cluster's events stream. Both hand out
//! events after a cursor, in one order, and say when more may have come.

use std::sync::Arc;

use pushd_actors::ports::BoxFuture;
use tokio::sync::watch;

use super::{EventLog, Page, ReadError, Tail};

/// The events the feed answers and webhooks post.
pub trait Source: Send + Sync + 'static {
    /// Up to `limit` events after cursor `after`, oldest first.
    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>>;

    /// Where the events end, as last seen (a worker's queue depth).
    fn tail(&self) -> Tail;

    /// Where the events end now, read afresh: a new webhook's cursor.
    /// Called off the async runtime (it may block).
    fn end(&self) -> Tail {
        self.tail()
    }

    /// A receiver that changes when events may have been appended, and
    /// closes when no more will come.
    fn watch(&self) -> watch::Receiver<Tail>;

    /// Deletes what is past its retention, if the source keeps its own.
    fn prune(&self) {}

    /// How many events there are from the one numbered `seq` to the end
    /// (a worker's queue).
    fn behind(&self, seq: u64) -> u64 {
        self.tail().next_seq.saturating_sub(seq)
    }
}

/// A single node's event log, read off the async runtime (its reads are
/// file reads).
pub struct LocalEvents {
    log: Arc<EventLog>,
}

impl LocalEvents {
    /// The events of `log`.
    pub fn new(log: Arc<EventLog>) -> LocalEvents {
        LocalEvents { log }
    }
}

impl Source for LocalEvents {
    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
        let log = self.log.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || log.read(after, limit))
                .await
                .unwrap_or_else(|e| Err(ReadError::Io(std::io::Error::other(e))))
        })
    }

    fn tail(&self) -> Tail {
        self.log.tail()
    }

    fn watch(&self) -> watch::Receiver<Tail> {
        self.log.watch()
    }

    fn prune(&self) {
        self.log.prune();
    }
}

/// Whether the event at `offset` is still in `source`: one erased since it
/// was read is skipped by reads. (A source that cannot be read keeps it.)
pub async fn still_kept(source: &Arc<dyn Source>, offset: u64) -> bool {
    source.read(offset, 1).await.map_or(true, |page| {
        page.events.first().is_some_and(|e| e.offset == offset)
    })
}
