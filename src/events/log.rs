//! The event log on disk: a pending queue filled by the store, one writer
//! that appends an event only once its journal record is durable, readers
//! that page by offset, retention, erasure (see [`super::erasure`];
//! compaction is in [`compact`]), and the alignment with the journal after
//! a crash.
//!
//! Appends overwrite the zeros a segment is filled with ahead of its data
//! (see [`crate::segfile::append`]), so the `fdatasync` of a drain syncs
//! data alone. They go only to a segment of the current format
//! ([`super::FORMAT`]): a segment of an older format found at open (one
//! written before an upgrade) is kept as it is, with its offsets, and the
//! next write starts a new segment at the log's end.

mod compact;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

use pushd_actors::ports::{Clock, Journal, JournalError, Position};
use pushd_actors::status::MessageStatus;
use pushd_actors::transition::EVENT_STATUSES;
use tokio::sync::watch;

use super::KIND;
use super::erasure::{self, Erased, Erasures};
use super::frame::{self, Frame, HEADER, LAST_OF_RECORD, MAX_BODY};
use super::segments::{self, Segment};
use crate::segfile::{self, Appender, Contents, Read};

/// Blocks until the journal record at a position is durable.
pub type WaitDurable = Box<dyn Fn(Position) -> Result<(), JournalError> + Send + Sync>;

/// How the log keeps its files.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// A segment is closed once it holds this much.
    pub segment_bytes: u64,
    /// Events older than this are deleted, a whole segment at a time.
    pub retention: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_bytes: 64 << 20,
            retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// An event waiting for its journal record to be durable.
#[derive(Debug)]
pub struct NewEvent {
    /// Its status.
    pub status: MessageStatus,
    /// When it was recorded, Unix ms.
    pub time_ms: i64,
    /// Its JSON.
    pub body: Vec<u8>,
}

/// The events of one journal record, or the customers it erased.
struct PendingRecord {
    position: Position,
    events: Vec<NewEvent>,
    erased: Vec<String>,
}

/// One event read back.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// Its offset: the cursor that reads it first.
    pub offset: u64,
    /// The cursor just after it.
    pub next: u64,
    /// Its number, from 1.
    pub seq: u64,
    /// When it was recorded, Unix ms.
    pub time_ms: i64,
    /// Its status.
    pub status: MessageStatus,
    /// Its JSON, as posted.
    pub body: Vec<u8>,
}

/// Events after a cursor.
#[derive(Debug)]
pub struct Page {
    /// Oldest first.
    pub events: Vec<StoredEvent>,
    /// The cursor to read on from.
    pub next: u64,
}

/// Why a cursor cannot be read from.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not an offset this log handed out.
    #[error("cursor {0} is not one this event log handed out")]
    BadCursor(u64),
    /// Past the log's end.
    #[error("cursor {cursor} is past the end of the event log ({end})")]
    PastEnd {
        /// The cursor given.
        cursor: u64,
        /// The log's end.
        end: u64,
    },
    /// A segment could not be read.
    #[error("event log: {0}")]
    Io(#[from] io::Error),
    /// The events are elsewhere (a cluster's stream) and did not answer;
    /// reading again later may.
    #[error("events stream: {0}")]
    Unavailable(String),
}

/// The end of what readers may read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tail {
    /// The offset after the last event.
    pub offset: u64,
    /// The number the next event gets.
    pub next_seq: u64,
}

/// The writer's side: the active segment.
struct Writer {
    /// The last segment, if it is of the current format (else the next
    /// write starts one).
    file: Option<Appender>,
    tail: Tail,
    /// The offset up to which the log is fsynced.
    synced: u64,
    failed: Option<String>,
}

/// What the flusher thread waits on.
struct Pending {
    records: VecDeque<PendingRecord>,
    closing: bool,
    /// Whether the writer sleeps on `work`: only then does queueing wake it
    /// (a wake-up is a system call, under the engine's write lock).
    writer_idle: bool,
    /// The journal's durable position as it last told it
    /// ([`EventLog::follow_journal`]): the writer takes the records up to
    /// it. `Position::MAX` for a log the journal does not tell: the writer
    /// then takes every record and waits for its durability itself.
    durable: Position,
}

impl Pending {
    /// Whether the oldest record is one the writer may take now.
    fn ready(&self) -> bool {
        self.records
            .front()
            .is_some_and(|r| r.position <= self.durable)
    }

    /// Takes the records up to `through`, oldest first.
    fn take_through(&mut self, through: Position) -> Vec<PendingRecord> {
        let n = (self.records.iter())
            .take_while(|r| r.position <= through)
            .count();
        self.records.drain(..n).collect()
    }
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            records: VecDeque::new(),
            closing: false,
            writer_idle: false,
            durable: Position::MAX,
        }
    }
}

/// The event log.
pub struct EventLog {
    dir: PathBuf,
    options: Options,
    clock: Arc<dyn Clock>,
    durable: WaitDurable,
    pending: Mutex<Pending>,
    work: Condvar,
    writer: Mutex<Writer>,
    /// The segments readers may open.
    segments: Mutex<Vec<Segment>>,
    /// The erased customers, whose events reads skip and compaction erases.
    erasures: Erasures,
    tail: watch::Sender<Tail>,
    /// Every journal record at or before it has its events in the log.
    complete_through: AtomicU64,
    /// Set when a write failed: nothing more is queued (replay after a
    /// restart brings the events back).
    failed: AtomicBool,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EventLog {
    /// Why a write failed, if one did: no event is logged until a restart
    /// replays them from the journal.
    pub fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        Some(lock(&self.writer).failed.clone().unwrap_or_default())
    }

    /// Opens (or creates) the log in `dir`, cutting a torn tail back to the
    /// last whole record, and starts the writer thread `pushd-events`.
    pub fn open(
        dir: &Path,
        options: Options,
        clock: Arc<dyn Clock>,
        durable: WaitDurable,
    ) -> io::Result<Arc<EventLog>> {
        fs::create_dir_all(dir)?;
        let erasures = Erasures::open(dir)?;
        let mut found = segments::list(dir)?;
        let mut tail = Tail {
            offset: found.first().map_or(0, |s| s.base),
            next_seq: 1,
        };
        let mut complete_through = 0;
        let mut file = None;
        while let Some(last) = found.last() {
            let prefix = segments::intact_prefix(&Contents::read(&KIND, &last.path)?, |_| true);
            let kept = prefix.kept;
            if let Some(why) = kept.cut {
                let offset = last.base + kept.data;
                tracing::warn!(segment = %last.path.display(), offset, why, "event log tail cut");
                segfile::scan::cut(&last.path, kept.end)?;
            }
            if kept.data == 0 && found.len() > 1 {
                fs::remove_file(&last.path)?;
                found.pop();
                continue;
            }
            tail.offset = last.base + kept.data;
            if let Some(l) = prefix.last {
                tail.next_seq = l.seq + 1;
                complete_through = l.position;
            }
            file = Appender::resume(&KIND, &last.path, &kept, options.segment_bytes)?;
            break;
        }
        if let (Some(a), Some(last)) = (&file, found.last_mut()) {
            // An empty segment of an older format was written afresh.
            last.layout = a.layout();
        }
        let writer = Writer {
            file,
            tail,
            synced: tail.offset,
            failed: None,
        };
        let log = Arc::new(EventLog {
            dir: dir.to_path_buf(),
            options,
            clock,
            durable,
            pending: Mutex::default(),
            work: Condvar::new(),
            writer: Mutex::new(writer),
            segments: Mutex::new(found),
            erasures,
            tail: watch::Sender::new(tail),
            complete_through: AtomicU64::new(complete_through),
            failed: AtomicBool::new(false),
            flusher: Mutex::new(None),
        });
        let worker = log.clone();
        let thread = std::thread::Builder::new()
            .name("pushd-events".into())
            .spawn(move || worker.run())?;
        *lock(&log.flusher) = Some(thread);
        Ok(log)
    }

    /// The log's erasures.
    pub(super) fn erasures(&self) -> &Erasures {
        &self.erasures
    }

    /// The directory of its segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Every journal record at or before this position has its events in
    /// the log: a replay of it adds nothing.
    pub fn complete_through(&self) -> Position {
        self.complete_through.load(Ordering::Acquire)
    }

    /// Queues the events of the journal record at `position`; they are
    /// written once the record is durable. Records come in journal order.
    pub fn queue(&self, position: Position, events: Vec<NewEvent>) {
        if position <= self.complete_through() || self.failed.load(Ordering::Acquire) {
            return;
        }
        if events.is_empty() {
            return;
        }
        self.push(PendingRecord {
            position,
            events,
            erased: Vec::new(),
        });
    }

    /// Hides the events of `customers` from journal records up to
    /// `position` at once, and queues their erasure: the writer records it
    /// once the record is durable, then compacts. Queued even for a record
    /// whose events the log has (a replay): a compaction a crash cut short
    /// is done again.
    pub fn erase(&self, position: Position, customers: Vec<String>) {
        self.erasures.hide(position, &customers);
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        self.push(PendingRecord {
            position,
            events: Vec::new(),
            erased: customers,
        });
    }

    /// Queues `record`. Its queueing wakes an idle writer only if the
    /// record is durable already: a later one's wake-up comes from the
    /// journal (see [`EventLog::follow_journal`]), not from the engine's
    /// thread that queues it.
    fn push(&self, record: PendingRecord) {
        let mut pending = lock(&self.pending);
        let ready = record.position <= pending.durable;
        pending.records.push_back(record);
        self.wake_if(pending, ready);
    }

    /// Wakes the writer if it sleeps and `ready` says there is work for it.
    fn wake_if(&self, mut pending: MutexGuard<'_, Pending>, ready: bool) {
        let idle = ready && std::mem::take(&mut pending.writer_idle);
        drop(pending);
        if idle {
            self.work.notify_one();
        }
    }

    /// Has the journal tell the log, after each group it made durable, the
    /// position it reached ([`EventLog::journal_advanced`]), from `durable`,
    /// where it is now. The journal's writer then writes the events of each
    /// group it made durable, and the log's writer sleeps: otherwise the
    /// engine's thread wakes it for each record queued, and it sleeps again
    /// until the journal syncs.
    pub fn follow_journal(&self, durable: Position) {
        lock(&self.pending).durable = durable;
    }

    /// The journal made every record up to `durable` durable
    /// (`Position::MAX` once it failed: every record is taken, and the
    /// failure learned from the durability asked). Called on the journal's
    /// writer thread, which is awake anyway: it writes the events of the
    /// records now durable itself, one `write`, so neither thread sleeps
    /// and wakes the other for them. If the log's own writer holds the file
    /// (compacting, or a drain's persist), it is woken to write them.
    pub fn journal_advanced(&self, durable: Position) {
        let mut pending = lock(&self.pending);
        pending.durable = pending.durable.max(durable);
        if !pending.ready() {
            return;
        }
        let through = pending.durable;
        // Tried, not waited for (the others take the file, then the
        // queue): while another holds it, the log's writer is woken for
        // these, or takes them on its next pass if busy.
        let mut w = match self.writer.try_lock() {
            Ok(w) => w,
            Err(TryLockError::Poisoned(w)) => w.into_inner(),
            Err(TryLockError::WouldBlock) => return self.wake_if(pending, true),
        };
        drop(pending);
        self.write_ready(&mut w, through);
    }

    /// Writes every queued event of the records up to `through` (once the
    /// journal has them) and makes the log durable.
    pub fn persist(&self, through: Position) -> io::Result<()> {
        let mut w = lock(&self.writer);
        let batch = lock(&self.pending).take_through(through);
        self.write_durable(&mut w, batch)?;
        if w.synced == w.tail.offset {
            return Ok(());
        }
        if let Some(file) = &w.file {
            file.sync()?;
        }
        w.synced = w.tail.offset;
        Ok(())
    }

    /// Where the readable log ends now.
    pub fn tail(&self) -> Tail {
        *self.tail.borrow()
    }

    /// A receiver that changes whenever events are appended.
    pub fn watch(&self) -> watch::Receiver<Tail> {
        self.tail.subscribe()
    }

    /// The offset of the oldest event kept.
    pub fn oldest(&self) -> u64 {
        lock(&self.segments)
            .first()
            .map_or(self.tail().offset, |s| s.base)
    }

    /// The writer thread: waits for queued records, for the journal to make
    /// them durable, then writes them with one `write` per group; with
    /// nothing to write, compacts the erasures due. Closing, it writes
    /// every record queued.
    fn run(&self) {
        loop {
            {
                let mut pending = lock(&self.pending);
                while !pending.ready() && !pending.closing && !self.erasures.due() {
                    pending.writer_idle = true;
                    pending = self
                        .work
                        .wait(pending)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                pending.writer_idle = false;
                if pending.closing && pending.records.is_empty() {
                    return;
                }
                if !pending.ready() && !pending.closing {
                    drop(pending);
                    self.compact();
                    continue;
                }
            }
            let mut w = lock(&self.writer);
            let through = {
                let pending = lock(&self.pending);
                match pending.closing {
                    true => Position::MAX,
                    false => pending.durable,
                }
            };
            self.write_ready(&mut w, through);
        }
    }

    /// Writes the queued events of the records up to `through`, which the
    /// journal made durable (or will: closing, the writer takes every
    /// record, and waits).
    fn write_ready(&self, w: &mut Writer, through: Position) {
        let batch = lock(&self.pending).take_through(through);
        if let Err(e) = self.write_durable(w, batch) {
            tracing::error!(error = %e, "event log write failed: snapshots wait (the journal keeps every change) until a restart replays the events");
        }
    }

    fn write_durable(&self, w: &mut Writer, batch: Vec<PendingRecord>) -> io::Result<()> {
        if let Some(e) = &w.failed {
            return Err(io::Error::other(e.clone()));
        }
        let Some(last) = batch.last().map(|r| r.position) else {
            return Ok(());
        };
        let result = (self.durable)(last)
            .map_err(io::Error::other)
            .and_then(|()| self.write(w, &batch));
        if let Err(e) = &result {
            w.failed = Some(e.to_string());
            self.failed.store(true, Ordering::Release);
            lock(&self.pending).records.clear();
        }
        result
    }

    /// Appends whole records, starting a new segment between two records
    /// once the active one is full.
    fn write(&self, w: &mut Writer, batch: &[PendingRecord]) -> io::Result<()> {
        let mut buf = Vec::new();
        for record in batch.iter().filter(|r| !r.events.is_empty()) {
            let full = |a: &Appender| a.data_len() + buf.len() as u64 >= self.options.segment_bytes;
            if w.file.as_ref().is_none_or(full) {
                self.flush(w, &mut buf)?;
                let first = record.events.first().map_or(0, |e| e.time_ms);
                self.start_segment(w, first)?;
            }
            let n = record.events.len();
            for (i, event) in record.events.iter().enumerate() {
                let frame = Frame {
                    offset: w.tail.offset + buf.len() as u64,
                    seq: w.tail.next_seq,
                    position: record.position,
                    time_ms: event.time_ms,
                    status: status_index(event.status),
                    flags: if i + 1 == n { LAST_OF_RECORD } else { 0 },
                    body: &event.body[..event.body.len().min(MAX_BODY)],
                };
                frame.encode(&mut buf).map_err(io::Error::other)?;
                w.tail.next_seq += 1;
            }
        }
        self.flush(w, &mut buf)?;
        // Every event before them is written: the erasures are recorded
        // before sled may cover their records, then compacted.
        for record in batch.iter().filter(|r| !r.erased.is_empty()) {
            self.erasures.record(record.position, &record.erased)?;
            let _pending = lock(&self.pending);
            self.work.notify_one();
        }
        if let Some(last) = batch.last() {
            self.complete_through
                .fetch_max(last.position, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Writes `buf` to the active segment and lets readers see it.
    fn flush(&self, w: &mut Writer, buf: &mut Vec<u8>) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let file = w.file.as_mut().expect("an active segment");
        file.append(buf)?;
        w.tail.offset += buf.len() as u64;
        metrics::counter!("pushd_event_log_bytes_total").increment(buf.len() as u64);
        buf.clear();
        self.tail.send_replace(Tail {
            offset: w.tail.offset,
            next_seq: w.tail.next_seq,
        });
        Ok(())
    }

    /// Closes the active segment (durable first) and starts the next at the
    /// log's end.
    fn start_segment(&self, w: &mut Writer, first_time_ms: i64) -> io::Result<()> {
        if let Some(old) = &w.file {
            old.sync()?;
        }
        let base = w.tail.offset;
        let path = segments::path_of(&self.dir, base);
        let file = Appender::create(&KIND, &path, self.options.segment_bytes)?;
        let layout = file.layout();
        w.file = Some(file);
        lock(&self.segments).push(Segment {
            base,
            first_time_ms,
            path,
            layout,
        });
        self.prune();
        Ok(())
    }

    /// Deletes the oldest segments whose every event is older than the
    /// retention (the next segment starts before the cut-off). The active
    /// segment is never deleted. Answers how many went.
    pub fn prune(&self) -> usize {
        let retention = self.options.retention.as_millis() as i64;
        let cutoff = self.clock.now_ms().saturating_sub(retention);
        let mut segments = lock(&self.segments);
        let mut removed = 0;
        while segments.len() >= 2 && segments[1].first_time_ms < cutoff {
            let old = segments.remove(0);
            if let Err(e) = fs::remove_file(&old.path) {
                tracing::error!(segment = %old.path.display(), error = %e, "cannot delete an expired event segment");
                segments.insert(0, old);
                break;
            }
            removed += 1;
        }
        removed
    }

    /// Reads up to `limit` events from cursor `after` on, oldest first. A
    /// cursor older than the oldest event kept reads from the oldest. The
    /// events of erased customers are skipped.
    pub fn read(&self, after: u64, limit: usize) -> Result<Page, ReadError> {
        let end = self.tail().offset;
        if after > end {
            return Err(ReadError::PastEnd { cursor: after, end });
        }
        let found: Vec<Segment> = {
            let all = lock(&self.segments);
            let from = all.partition_point(|s| s.base <= after).saturating_sub(1);
            all[from..].to_vec()
        };
        let oldest = found.first().map_or(end, |s| s.base);
        let mut reader = Reader {
            after,
            at: after.max(oldest),
            check: after >= oldest,
            limit,
            events: Vec::new(),
            erasures: &self.erasures,
            hidden: self.erasures.hidden(),
        };
        for (i, segment) in found.iter().enumerate() {
            let seg_end = found.get(i + 1).map_or(end, |n| n.base).min(end);
            if reader.events.len() >= limit || reader.at >= seg_end {
                continue;
            }
            match File::open(&segment.path) {
                Ok(file) => reader.segment(&file, segment, seg_end)?,
                // Deleted by retention since: its events are gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    (reader.at, reader.check) = (seg_end, false);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Page {
            next: reader.at,
            events: reader.events,
        })
    }

    /// After a crash, drops the events of journal records the journal does
    /// not hold: records appended but never made durable may be gone from
    /// the journal while their events reached the log's file. Call before
    /// the journal's replay, with the position the store covers.
    pub fn align(&self, journal: &dyn Journal, covered: Position) -> Result<(), JournalError> {
        let mine = self.complete_through();
        if mine <= covered {
            return Ok(());
        }
        let mut nothing = |_, _| Ok(());
        if journal.replay(mine - 1, &mut nothing)? >= mine {
            return Ok(());
        }
        let journal_last = journal.replay(covered, &mut nothing)?;
        self.truncate_after(journal_last)
            .map_err(|e| JournalError(format!("event log: {e}")))
    }

    /// Cuts every event of a journal record after `position`.
    fn truncate_after(&self, position: Position) -> io::Result<()> {
        let mut w = lock(&self.writer);
        let mut found = lock(&self.segments);
        while let Some(last) = found.last() {
            let contents = Contents::read(&KIND, &last.path)?;
            let prefix = segments::intact_prefix(&contents, |p| p <= position);
            let kept = prefix.kept;
            if kept.cut.is_some() {
                let offset = last.base + kept.data;
                tracing::warn!(segment = %last.path.display(), offset, journal = position, "events of records the journal lost are dropped");
                segfile::scan::cut(&last.path, kept.end)?;
            }
            if kept.data == 0 && found.len() > 1 {
                fs::remove_file(&last.path)?;
                found.pop();
                continue;
            }
            w.tail.offset = last.base + kept.data;
            w.synced = w.tail.offset;
            w.tail.next_seq = prefix.last.map_or(1, |l| l.seq + 1);
            w.file = Appender::resume(&KIND, &last.path, &kept, self.options.segment_bytes)?;
            break;
        }
        if let (Some(a), Some(last)) = (&w.file, found.last_mut()) {
            last.layout = a.layout();
        }
        self.complete_through.store(position, Ordering::Release);
        self.tail.send_replace(w.tail);
        Ok(())
    }

    /// Writes what is queued, makes it durable, and stops the writer.
    pub fn close(&self) {
        lock(&self.pending).closing = true;
        self.work.notify_one();
        if let Some(thread) = lock(&self.flusher).take()
            && thread.join().is_err()
        {
            tracing::error!("event log writer panicked");
        }
        if let Some(file) = &lock(&self.writer).file
            && let Err(e) = file.sync()
        {
            tracing::error!(error = %e, "cannot sync the event log");
        }
    }
}

/// A read in progress.
struct Reader<'a> {
    /// The cursor asked for.
    after: u64,
    /// Where the next event starts.
    at: u64,
    /// The first event read must start exactly at `at`.
    check: bool,
    limit: usize,
    events: Vec<StoredEvent>,
    erasures: &'a Erasures,
    /// The erasures whose events are skipped (tombstones always are).
    hidden: Arc<Erased>,
}

impl Reader<'_> {
    /// Reads the events of `segment` from `at` up to `seg_end` (or the
    /// limit), in chunks sized to the need.
    fn segment(&mut self, file: &File, segment: &Segment, seg_end: u64) -> Result<(), ReadError> {
        let most = HEADER + MAX_BODY;
        let mut chunk = self.limit.saturating_mul(512).clamp(4096, most);
        while self.at < seg_end && self.events.len() < self.limit {
            let start = self.at;
            let len = (seg_end - start).min(chunk as u64) as usize;
            let mut buf = vec![0; len];
            {
                let _no_rewrite = self.erasures.reading();
                file.read_exact_at(&mut buf, segment.file_position(start))?;
            }
            let mut used = 0;
            while self.events.len() < self.limit {
                let f = match frame::read(&buf[used..], segment.layout.version) {
                    Read::Frame(f, _) if !self.check || f.offset == self.at => f,
                    // The chunk ends inside a frame (zeros inside the data
                    // are corrupt: read again from here, they are caught).
                    Read::Short | Read::End if used > 0 => break,
                    // One frame larger than the chunk: read it whole.
                    Read::Short if chunk < most && (len as u64) < seg_end - start => {
                        chunk = (chunk * 2).min(most);
                        break;
                    }
                    _ if self.check => return Err(ReadError::BadCursor(self.after)),
                    _ => {
                        let at = self.at;
                        let path = segment.path.display();
                        return Err(
                            io::Error::other(format!("corrupt event at {at} in {path}")).into()
                        );
                    }
                };
                self.check = false;
                let next = self.at + f.framed_len() as u64;
                let erased = erasure::is_tombstone(f.body) || erasure::erases(&self.hidden, &f);
                if !erased {
                    self.events.push(StoredEvent {
                        offset: self.at,
                        next,
                        seq: f.seq,
                        time_ms: f.time_ms,
                        status: EVENT_STATUSES[usize::from(f.status) % EVENT_STATUSES.len()],
                        body: f.body.to_vec(),
                    });
                }
                used += f.framed_len();
                self.at = next;
            }
        }
        Ok(())
    }
}

/// The index of a status in [`EVENT_STATUSES`], as framed.
fn status_index(status: MessageStatus) -> u8 {
    EVENT_STATUSES
        .iter()
        .position(|s| *s == status)
        .expect("an event status") as u8
}
