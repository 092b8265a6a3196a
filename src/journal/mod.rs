//! The local journal: the engine's [`Journal`] port on segment files.
//!
//! Every acknowledged change is appended here first, as a framed binary
//! record (see [`frame`]). One writer thread makes each group of records
//! durable with one `write` and one `fdatasync`: whatever is appended while
//! one sync runs is the next group, so the group grows with the load and no
//! one sleeps to gather it. Waiters of a group are woken together.
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
//! A failed write or sync is final: the file's state is unknown, so the
//! journal refuses every later append (and nothing more is acknowledged)
//! until the daemon restarts and replays what is really on disk.

pub(crate) mod frame;
mod segments;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use pushd_actors::ports::{BoxFuture, Change, Entry, Journal, JournalError, Position, StoreError};
use tokio::sync::oneshot;

use frame::Read;

/// A segment is closed and a new one started once it holds this much.
pub const SEGMENT_BYTES: u64 = 64 << 20;

type Waiter = oneshot::Sender<Result<(), JournalError>>;

/// What appenders and the writer share, under one lock.
struct State {
    /// Framed records appended and not yet handed to the writer.
    buf: Vec<u8>,
    /// The position of the first record in `buf`.
    buf_first: Position,
    /// The last position appended.
    last: Position,
    /// The last position made durable.
    durable: Position,
    /// Async waiters for positions not yet durable.
    waiters: Vec<(Position, Waiter)>,
    /// Set when a write or sync failed: every later append fails.
    failed: Option<String>,
    /// Set by [`FileJournal::close`].
    closing: bool,
    /// Groups written (one write and one sync each).
    syncs: u64,
    /// Whether the writer sleeps on `work`: only then does an append wake it
    /// (a wake-up is a system call; a busy writer takes the next group by
    /// itself).
    writer_idle: bool,
    /// The highest position a checkpoint covers: segments wholly at or
    /// before it may be deleted.
    released: Position,
    /// The last record erasing a customer: the segments holding records at
    /// or before it go once a checkpoint covers it, the active one too.
    erased: Position,
}

struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    /// Wakes the writer: records appended, a release, or closing.
    work: Condvar,
    /// Wakes blocking waiters when `durable` moves or the journal fails.
    synced: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// it may have been deleted).
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
            state: Mutex::new(State {
                buf: Vec::with_capacity(1 << 20),
                buf_first: last + 1,
                last,
                durable: last,
                waiters: Vec::new(),
                failed: None,
                closing: false,
                syncs: 0,
                writer_idle: false,
                released: 0,
                erased: 0,
            }),
            work: Condvar::new(),
            synced: Condvar::new(),
        });
        let writer = writer::Writer::open(&dir, scan.segments, last, scan.end, segment_bytes)?;
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
        let mut state = self.shared.lock();
        loop {
            if let Some(e) = &state.failed {
                return Err(JournalError(e.clone()));
            }
            if state.durable >= position {
                return Ok(());
            }
            state = self
                .shared
                .synced
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// A checkpoint made the store durable up to `covered`: the segments
    /// holding only records at or before it are deleted (by the writer,
    /// between two groups).
    pub fn release(&self, covered: Position) {
        let mut state = self.shared.lock();
        state.released = state.released.max(covered);
        drop(state);
        self.shared.work.notify_one();
    }

    /// Groups written so far (each one `write` and one `fdatasync`).
    pub fn syncs(&self) -> u64 {
        self.shared.lock().syncs
    }

    /// The segment files now in the journal directory.
    pub fn segment_count(&self) -> usize {
        segments::list(&self.shared.dir).map_or(0, |s| s.len())
    }

    /// Makes everything appended durable and stops the writer; later
    /// appends fail. Idempotent.
    pub fn close(&self) {
        self.shared.lock().closing = true;
        self.shared.work.notify_one();
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

impl Journal for FileJournal {
    fn append(&self, changes: &[Change]) -> Result<Position, JournalError> {
        let mut state = self.shared.lock();
        if let Some(e) = &state.failed {
            return Err(JournalError(e.clone()));
        }
        if state.closing {
            return Err(JournalError("the journal is closed".into()));
        }
        let position = state.last + 1;
        if state.buf.is_empty() {
            state.buf_first = position;
        }
        frame::encode(&mut state.buf, position, changes).map_err(JournalError)?;
        state.last = position;
        if changes
            .iter()
            .any(|c| matches!(c.entry, Entry::CustomerErased(_)))
        {
            state.erased = position;
        }
        let idle = std::mem::take(&mut state.writer_idle);
        drop(state);
        if idle {
            self.shared.work.notify_one();
        }
        Ok(position)
    }

    fn durable(&self, position: Position) -> BoxFuture<Result<(), JournalError>> {
        let mut state = self.shared.lock();
        if let Some(e) = &state.failed {
            return Box::pin(std::future::ready(Err(JournalError(e.clone()))));
        }
        if position <= state.durable {
            return Box::pin(std::future::ready(Ok(())));
        }
        let (tx, rx) = oneshot::channel();
        state.waiters.push((position, tx));
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(JournalError("the journal closed".into())))
        })
    }

    fn replay(
        &self,
        after: Position,
        apply: &mut dyn FnMut(Position, Vec<Entry>) -> Result<(), StoreError>,
    ) -> Result<Position, JournalError> {
        let io = |e: std::io::Error| JournalError(format!("replay: {e}"));
        let mut last = after;
        let found = segments::list(&self.shared.dir).map_err(io)?;
        let durable = self.shared.lock().durable;
        for (i, segment) in found.iter().enumerate() {
            let next_first = found.get(i + 1).map(|s| s.first);
            if next_first.is_some_and(|n| n <= after + 1) {
                continue;
            }
            let buf = segments::read_all(&segment.path).map_err(io)?;
            let mut offset = 0;
            // The scan at open checked every frame; only a record being
            // appended now may stop the reading, and only durable records
            // are replayed.
            while let Read::Record(frame, used) = frame::read(&buf[offset..]) {
                offset += used;
                if frame.position <= after || frame.position > durable {
                    continue;
                }
                let entries = frame
                    .entries(crate::records::JOURNAL_VERSION)
                    .map_err(|e| {
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
