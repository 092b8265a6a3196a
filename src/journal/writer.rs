//! The journal's writer thread: takes each group from the group commit
//! ([`pushd_actors::group_commit`]) and makes it durable with one `write`
//! and one `fdatasync`; rolls segments over, and deletes released ones.
//!
//! Groups overwrite the zeros a segment is filled with ahead of its data
//! (see [`crate::segfile::append`]), so a group's `fdatasync` syncs its data
//! alone; one `pwrite` of zeros more extends the fill once the data reaches
//! it (once per megabyte when busy).
//!
//! Appends go only to a segment of the current format ([`super::FORMAT`]):
//! a segment of an older format found at open (one written before an
//! upgrade) is kept as it is and the first group starts a new segment.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pushd_actors::group_commit::{Group, Next};
use pushd_actors::ports::Position;

use super::segments::{self, Segment};
use super::{KIND, Shared};
use crate::segfile::{Appender, Prefix, dir};

/// How often a group refused for want of space is written again.
const NO_SPACE_RETRY: Duration = Duration::from_secs(1);

/// The writer: the segments, and the active one's file.
pub struct Writer {
    dir: PathBuf,
    segments: VecDeque<Segment>,
    /// The active segment: the last of `segments`, open for writing, if it
    /// is of the current format (else the next group starts one).
    active: Option<Appender>,
    /// A segment is closed once it holds this much data.
    segment_bytes: u64,
    /// The last position written.
    written: Position,
    /// Start a new segment with the next group.
    roll: bool,
    /// The release already acted on.
    released: Position,
    /// The erasure already acted on.
    purged: Position,
}

impl Writer {
    /// A writer appending to the last of `segments`, whose kept data is
    /// `tail`, or to a new one.
    pub fn open(
        dir: &Path,
        segments: Vec<Segment>,
        last: Position,
        tail: Option<Prefix>,
        segment_bytes: u64,
    ) -> io::Result<Writer> {
        let active = match (segments.last(), tail) {
            (Some(s), Some(tail)) => Appender::resume(&KIND, &s.path, &tail, segment_bytes)?,
            _ => None,
        };
        Ok(Writer {
            dir: dir.to_path_buf(),
            segments: segments.into(),
            active,
            segment_bytes,
            written: last,
            roll: false,
            released: 0,
            purged: 0,
        })
    }

    /// Writes groups, and deletes released segments between them, until
    /// the journal closes (or fails).
    pub fn run(mut self, shared: &Shared) {
        loop {
            let next = shared
                .commit
                .next_group_blocking(|| shared.released() > self.released);
            match next {
                Next::Group(group) => self.commit(shared, group),
                Next::Other => {}
                Next::Closed => return,
            }
            let released = shared.released();
            if released > self.released {
                self.release(released, shared.erased());
            }
        }
    }

    /// Writes and syncs one group, then publishes its outcome. A write the
    /// disk refuses for want of space is made again every second, the
    /// group kept, until it goes through or the journal closes.
    fn commit(&mut self, shared: &Shared, group: Group) {
        let started = Instant::now();
        let mut result = self.write(group.bytes(), group.first());
        while let Err(Failure::NoSpace(e)) = &result
            && !shared.commit.closing()
        {
            if shared.disk_full.borrow().is_none() {
                tracing::error!(error = %e, "the journal's disk is full: writes are refused (507) until space is freed; nothing acknowledged is lost");
                shared.disk_full.send_replace(Some(e.to_string()));
            }
            std::thread::sleep(NO_SPACE_RETRY);
            result = self.write(group.bytes(), group.first());
        }
        // Receivers are woken only when the disk had been full: every write
        // under way waits on this watch, and a group commits every few
        // milliseconds.
        if result.is_ok()
            && shared
                .disk_full
                .send_if_modified(|full| full.take().is_some())
        {
            tracing::warn!("the journal's disk has space again: writes are taken");
        }
        metrics::histogram!("pushd_journal_sync_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("pushd_journal_bytes_total").increment(group.bytes().len() as u64);
        metrics::counter!("pushd_journal_records_total").increment(group.count());
        let outcome = match result {
            Ok(()) => {
                self.written = group.last();
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "journal write failed; refusing every later change");
                Err(format!("journal write failed: {e}"))
            }
        };
        shared.commit.finish(group, outcome);
    }

    /// Appends one group to the active segment and syncs it.
    fn write(&mut self, data: &[u8], first: Position) -> Result<(), Failure> {
        let full = |a: &Appender| a.data_len() >= self.segment_bytes;
        if self.active.as_ref().is_none_or(full) || self.roll {
            self.start_segment(first).map_err(Failure::of_write)?;
        }
        let active = self.active.as_mut().expect("an active segment");
        active.append(data).map_err(Failure::of_write)?;
        active.sync().map_err(Failure::Other)
    }

    /// Starts a new segment whose first record is at `first`. A segment
    /// that could not be started is removed, so a later try starts afresh.
    fn start_segment(&mut self, first: Position) -> io::Result<()> {
        let path = segments::path_of(&self.dir, first);
        let created = Appender::create(&KIND, &path, self.segment_bytes);
        self.active = Some(created.inspect_err(|_| {
            let _ = std::fs::remove_file(&path);
        })?);
        self.segments.push_back(Segment { first, path });
        self.roll = false;
        metrics::counter!("pushd_journal_segments_total").increment(1);
        Ok(())
    }

    /// Deletes the segments holding only records at or before `covered`,
    /// oldest first; the active one is closed with the next group if it is
    /// wholly covered too. Once `covered` reaches the last erasure, the
    /// active segment, if it holds records up to the erasure, is deleted
    /// at once when wholly covered, else closed with the next group (and
    /// deleted by a later release).
    fn release(&mut self, covered: Position, erased: Position) {
        self.released = covered;
        let mut deleted = false;
        while self.segments.len() >= 2 && self.segments[1].first <= covered + 1 {
            let old = self.segments.pop_front().expect("two segments");
            if let Err(e) = std::fs::remove_file(&old.path) {
                tracing::error!(segment = %old.path.display(), error = %e, "cannot delete a released journal segment");
                self.segments.push_front(old);
                break;
            }
            deleted = true;
        }
        if deleted && let Err(e) = dir::sync_dir(&self.dir) {
            tracing::error!(error = %e, "cannot sync the journal directory");
        }
        let purge = erased > self.purged
            && erased <= covered
            && self.segments.back().is_some_and(|s| s.first <= erased);
        if purge && self.written <= covered && self.delete_active() {
            self.purged = erased;
            return;
        }
        self.purged = self.purged.max(erased.min(covered));
        let holds_data = self.active.as_ref().is_some_and(|a| a.data_len() > 0);
        self.roll = (holds_data && self.written <= covered) || purge;
    }

    /// Deletes the last segment (the next group starts a new one). Answers
    /// whether it went.
    fn delete_active(&mut self) -> bool {
        let Some(last) = self.segments.pop_back() else {
            return false;
        };
        if let Err(e) = std::fs::remove_file(&last.path) {
            tracing::error!(segment = %last.path.display(), error = %e, "cannot delete a released journal segment");
            self.segments.push_back(last);
            return false;
        }
        if let Err(e) = dir::sync_dir(&self.dir) {
            tracing::error!(error = %e, "cannot sync the journal directory");
        }
        (self.active, self.roll) = (None, false);
        true
    }
}

/// Why a group was not made durable.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// A write refused for want of space: nothing was synced, and the
    /// group may be written again.
    #[error("{0}")]
    NoSpace(io::Error),
    /// Any other: the file's state is unknown.
    #[error("{0}")]
    Other(io::Error),
}

impl Failure {
    /// A failed write (not a sync): `ENOSPC` leaves the synced data as it
    /// was.
    fn of_write(e: io::Error) -> Failure {
        match e.raw_os_error() {
            Some(libc::ENOSPC) => Failure::NoSpace(e),
            _ => Failure::Other(e),
        }
    }
}
