//! Delivery events: one each time a delivery's status moves to `sent`,
//! `delivered`, `opened`, `converted`, `failed`, `undeliverable` or
//! `bounced`, kept on disk in order for the webhooks and the event feed.
//!
//! **Where they come from.** The store hands every journal record it
//! applies to the log ([`ChangeSink`]), in journal order, with each
//! delivery's value before and after; the engine's `transition::entered`
//! says which statuses the change entered (see [`record`]). The events
//! wait in a queue until the journal makes their record durable, then one
//! writer thread appends them to segment files (see [`frame`],
//! [`segments`], and [`crate::segfile`] for what they share with the
//! journal's: a header naming the format, the framing, the zero fill, the
//! cut of a torn tail). A cursor is an offset in the log; readers (the feed,
//! the webhook workers) read only what was written, so a page never holds
//! half of a write.
//!
//! **Why the log needs no fsync of its own on the request path**, and
//! loses nothing a webhook or the feed should see:
//!
//! 1. An event is written only once its journal record is durable. So the
//!    log never holds the event of a change a crash can undo, and the
//!    journal holds every record the log has events of.
//! 2. A drain writes nothing to sled before [`EventLog::persist`] has
//!    written and fsynced the events of every record it writes. So sled
//!    never covers a record whose events the log could lose, and the
//!    journal segments a checkpoint deletes (it follows a drain) hold no
//!    record whose events are not durable in the log.
//! 3. On start the log cuts a torn tail back to the last whole record
//!    (a record's events are kept whole or not at all) and knows the last
//!    record it holds. The journal's replay starts after the position sled
//!    covers; records the log holds are skipped, the others queue their
//!    events again. Events are written in journal order, so the log holds
//!    every record up to its last one: nothing is skipped that is missing.
//! 4. A replayed record makes events with the same ids (an id names the
//!    record's position, which never changes once durable), so a receiver
//!    that got an event before a power loss took the log's unsynced tail
//!    drops the copy. After a SIGKILL nothing is lost at all: written
//!    bytes outlive the process.
//!
//! (If the journal cut a corrupt record the log holds events of, the start
//! drops those events first: [`EventLog::align`].) What waits in memory is
//! bounded by the journal's group commit: events of records not yet
//! durable. The webhooks read from disk.
//!
//! A backup copies the log's files as of a journal position, cut back to
//! the store's (see [`export`]).
//! **Erasure.** A journal record erasing a customer reaches the log the
//! same way. Reads (the feed, the webhook workers) skip the customer's
//! events from then on, and the writer records the erasure durably, in
//! journal order, before sled may cover its record (as point 2 asks of
//! events), then compacts in the background: each such event is
//! overwritten in place with a tombstone of the same length, so every
//! offset handed out stays a valid cursor (see [`erasure`]).
//!
//! A failed write is final, as in the journal (the file's state is
//! unknown): nothing more is written and drains fail, so sled covers no
//! record whose events are missing, and the journal keeps every change
//! until a restart replays them.

mod erasure;
mod export;
pub mod frame;
mod log;
pub mod record;
pub mod segments;
pub mod source;

use pushd_actors::ports::{Change, Entry, Position};

pub use erasure::FILE as ERASURES_FILE;
pub use export::{Export, SegmentCopy};
pub use log::{EventLog, NewEvent, Options, Page, ReadError, StoredEvent, Tail, WaitDurable};
pub use source::{LocalEvents, Source};

use crate::segfile::Kind;
use crate::store::ChangeSink;

/// The format new segments are written in. Format 1: no header (segments
/// written before formats were numbered); format 2: the header, then
/// events framed as in format 1, at the same offsets (a header takes
/// none). Segments of formats 1 to this one are read; a newer one stops
/// the open.
pub const FORMAT: u32 = 2;

/// Event log segment files.
pub const KIND: Kind = Kind {
    name: "event log",
    suffix: ".events",
    magic: *b"PUSHDEVT",
    format: FORMAT,
    framing: frame::FRAMING,
};

impl ChangeSink for EventLog {
    fn applied(&self, position: Position, changes: &[Change]) {
        if position > self.complete_through() {
            let events = record::events_of(position, changes, self.clock().now_ms());
            for e in &events {
                metrics::counter!("pushd_events_total", "event" => e.status.as_str()).increment(1);
            }
            self.queue(position, events);
        }
        let erased: Vec<String> = (changes.iter())
            .filter_map(|c| match &c.entry {
                Entry::CustomerErased(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        if !erased.is_empty() {
            self.erase(position, erased);
        }
    }

    fn persist(&self, through: Position) -> std::io::Result<()> {
        EventLog::persist(self, through)
    }
}

#[cfg(test)]
mod tests;
