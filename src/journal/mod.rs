//! The local journal: the engine's [`Journal`] port on segment files.
//!
//! Every acknowledged change is appended here first, as a framed binary
//! record (see [`frame`]) in a segment file (see [`crate::segfile`]: a
//! header naming the format, the records, zeros after them). Appends,
//! waiters and groups are the engine's group commit
//! ([`pushd_actors::group_commit`]); one writer thread (see [`writer`])
//! makes each group durable with one `write` and one `fdatasync`.
//!
//! On open, the segments are scanned and a torn or corrupt tail is cut (see
//! [`segments::scan`]); [`Journal::replay`] then hands the records after a
//! snapshot's position to the engine. A checkpoint calls
//! [`FileJournal::release`] so whole segments it covers are deleted. A
//! record erasing a customer also closes the segment it is written in: the
//! first checkpoint covering it deletes every segment holding the person's
//! records, the active one included, instead of leaving them until the
//! segment fills.
//!
//! A failed sync is final, as in PostgreSQL: what the file holds is
//! unknown, so the journal refuses every later append (and nothing more is
//! acknowledged) until the daemon restarts and replays what is really on
//! disk. A full disk is not: a write refused with `ENOSPC` leaves what was
//! synced as it was, so the writer keeps the group and writes it again
//! every second until space returns ([`FileJournal::disk_full`] says so
//! meanwhile, and the API refuses writes with 507). Any other failed write
//! is final too.

pub(crate) mod frame;
mod segments;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use pushd_actors::group_commit::{AfterGroup, GroupCommit};
use pushd_actors::ports::{BoxFuture, Change, Entry, Journal, JournalError, Position, StoreError};

use crate::segfile::{Contents, Kind};

/// A segment is closed and a new one started once it holds this much.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// The format new segments are written in. Format 1: no header (segments
/// written before formats were numbered); format 2: the header, then
/// records framed and encoded as in format 1 (both hold version-1
/// records); format 3: framed alike, holding version-2 records; format 4:
/// version-3 records; format 5: version-4 records; format 6: version-5
/// records (see [`frame::records_of`]). Segments of formats 1 to this one
/// are read; a newer one stops the open.
pub const FORMAT: u32 = 6;

/// Journal segment files.
pub const KIND: Kind = Kind {
    name: "journal",
    suffix: ".journal",
    magic: *b"PUSHDJNL",
    format: FORMAT,
    framing: frame::FRAMING,
};

/// What the journal's callers and its writer share.
struct Shared {
    dir: PathBuf,
    /// Appends, waiters and the groups the writer takes.
    commit: GroupCommit,
    /// The highest position a checkpoint covers: segments wholly at or
    /// before it may be deleted.
    released: AtomicU64,
    /// The last record erasing a customer: the segments holding records at
    /// or before it go once a checkpoint covers it, the active one too.
    erased: AtomicU64,
    /// Why writes wait for space, while the disk is full.
    disk_full: tokio::sync::watch::Sender<Option<String>>,
}

impl Shared {
    /// The position the last release covers.
    fn released(&self) -> Position {
        self.released.load(Ordering::Acquire)
    }

    /// The position of the last record erasing a customer.
    fn erased(&self) -> Position {
        self.erased.load(Ordering::Acquire)
    }
}

/// The file journal. Cheap to share behind an `Arc`; [`FileJournal::close`]
/// (or dropping it) makes what was appended durable and stops the writer.
pub struct FileJournal {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl FileJournal {
    /// Opens (or creates) the journal in `dir`, cutting a torn tail. Appends
    /// continue after the last intact record, and never at or before
    /// `floor` (the position a snapshot already covers: the segments up to
    /// it may have been deleted). A segment of a newer format than
    /// [`FORMAT`], or a file named as a segment that is not one, is an
    /// error (`InvalidData`) that names it, and nothing is changed.
    pub fn open(dir: impl AsRef<Path>, floor: Position) -> std::io::Result<FileJournal> {
        FileJournal::open_with(dir, floor, SEGMENT_BYTES)
    }

    /// [`FileJournal::open`] with segments closed at `segment_bytes`.
    pub fn open_with(
        dir: impl AsRef<Path>,
        floor: Position,
        segment_bytes: u64,
    ) -> std::io::Result<FileJournal> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let scan = segments::scan(&dir, floor)?;
        let last = scan.last.max(floor);
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            commit: GroupCommit::new(last, 1 << 20),
            released: AtomicU64::new(0),
            erased: AtomicU64::new(0),
            disk_full: tokio::sync::watch::Sender::new(None),
        });
        let writer = writer::Writer::open(&dir, scan.segments, last, scan.tail, segment_bytes)?;
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("pushd-journal".into())
            .spawn(move || writer.run(&worker))?;
        Ok(FileJournal {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Blocks until every record up to `position` is durable.
    pub fn wait_durable(&self, position: Position) -> Result<(), JournalError> {
        self.shared.commit.wait_durable(position)
    }

    /// Has `tell` called with the durable position after each group (see
    /// [`GroupCommit::after_each_group`]) and answers the position durable
    /// now, from which on it tells; `None` if another follows already.
    pub fn follow(&self, tell: AfterGroup) -> Option<Position> {
        let commit = &self.shared.commit;
        commit.after_each_group(tell).then(|| commit.last_durable())
    }

    /// A checkpoint made the store durable up to `covered`: the segments
    /// holding only records at or before it are deleted (by the writer,
    /// between two groups).
    pub fn release(&self, covered: Position) {
        self.shared.released.fetch_max(covered, Ordering::AcqRel);
        self.shared.commit.wake_writer();
    }

    /// Why the journal failed for good, if it did: every later change is
    /// refused until a restart replays it.
    pub fn failure(&self) -> Option<String> {
        self.shared.commit.failure()
    }

    /// Why the journal waits for space (its disk is full), while it does:
    /// changes appended meanwhile are kept, and made durable once space
    /// returns.
    pub fn disk_full(&self) -> Option<String> {
        self.shared.disk_full.borrow().clone()
    }

    /// Follows [`FileJournal::disk_full`] as it changes.
    pub fn watch_disk_full(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.shared.disk_full.subscribe()
    }

    /// Bytes of changes appended and waiting for the writer (the queue a
    /// slow disk grows).
    pub fn backlog(&self) -> usize {
        self.shared.commit.backlog()
    }

    /// Groups written so far (each one `write` and one `fdatasync`).
    pub fn syncs(&self) -> u64 {
        self.shared.commit.groups()
    }

    /// The segment files now in the journal directory.
    pub fn segment_count(&self) -> usize {
        segments::list(&self.shared.dir).map_or(0, |s| s.len())
    }

    /// Makes everything appended durable and stops the writer; later
    /// appends fail. Idempotent.
    pub fn close(&self) {
        self.shared.commit.close();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("journal writer panicked");
        }
    }
}

impl Drop for FileJournal {
    fn drop(&mut self) {
        self.close();
    }
}

impl FileJournal {
    /// Appends `changes` as one record: in the caller's turn (see
    /// [`Journal::append_in_turn`]) or waking the writer at once.
    fn append_record(&self, changes: &[Change], in_turn: bool) -> Result<Position, JournalError> {
        let encode = |position, buf: &mut Vec<u8>| frame::encode(buf, position, changes);
        let commit = &self.shared.commit;
        let position = match in_turn {
            true => commit.append_in_turn(encode)?,
            false => commit.append(encode)?,
        };
        if changes
            .iter()
            .any(|c| matches!(c.entry, Entry::CustomerErased(_)))
        {
            self.shared.erased.fetch_max(position, Ordering::AcqRel);
        }
        Ok(position)
    }
}

impl Journal for FileJournal {
    fn append(&self, changes: &[Change]) -> Result<Position, JournalError> {
        self.append_record(changes, false)
    }

    fn append_in_turn(&self, changes: &[Change]) -> Result<Position, JournalError> {
        self.append_record(changes, true)
    }

    fn end_turn(&self) {
        self.shared.commit.wake_writer();
    }

    fn durable(&self, position: Position) -> BoxFuture<Result<(), JournalError>> {
        self.shared.commit.durable(position)
    }

    fn replay(
        &self,
        after: Position,
        apply: &mut dyn FnMut(Position, Vec<Entry>) -> Result<(), StoreError>,
    ) -> Result<Position, JournalError> {
        let io = |e: std::io::Error| JournalError(format!("replay: {e}"));
        let mut last = after;
        let found = segments::list(&self.shared.dir).map_err(io)?;
        let durable = self.shared.commit.last_durable();
        for (i, segment) in found.iter().enumerate() {
            let next_first = found.get(i + 1).map(|s| s.first);
            if next_first.is_some_and(|n| n <= after + 1) {
                continue;
            }
            let contents = Contents::read(&KIND, &segment.path).map_err(io)?;
            // The scan at open checked every frame; only a record being
            // appended now may stop the reading, and only durable records
            // are replayed. Each is decoded as its segment's format says.
            for frame in contents.frames().map(frame::Frame::of) {
                if frame.position <= after || frame.position > durable {
                    continue;
                }
                let entries = frame.entries().map_err(|e| {
                    JournalError(format!("record {} does not decode: {e}", frame.position))
                })?;
                apply(frame.position, entries)
                    .map_err(|e| JournalError(format!("replay of {}: {e}", frame.position)))?;
                last = frame.position;
            }
        }
        Ok(last)
    }
}

#[cfg(test)]
mod tests;
