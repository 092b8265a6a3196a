//! Where a webhook's worker reads events: the single node's event log, or
//! a cluster's events stream. Both hand out events after a cursor, in one
//! order, and say when more may have come.

use std::sync::Arc;

use pushd_actors::ports::BoxFuture;
use tokio::sync::watch;

use crate::events::{EventLog, Page, ReadError, Tail};

/// The events webhooks post.
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
}

impl Source for EventLog {
    fn read(&self, after: u64, limit: usize) -> BoxFuture<Result<Page, ReadError>> {
        let page = EventLog::read(self, after, limit);
        Box::pin(async move { page })
    }

    fn tail(&self) -> Tail {
        EventLog::tail(self)
    }

    fn watch(&self) -> watch::Receiver<Tail> {
        EventLog::watch(self)
    }

    fn prune(&self) {
        EventLog::prune(self);
    }
}

/// Whether the event at `offset` is still in `source`: one erased since it
/// was read is skipped by reads. (A source that cannot be read keeps it.)
pub async fn still_kept(source: &Arc<dyn Source>, offset: u64) -> bool {
    source.read(offset, 1).await.map_or(true, |page| {
        page.events.first().is_some_and(|e| e.offset == offset)
    })
}
