//! The journal's writer thread: one `write` and one `fdatasync` per group,
//! segment rollover, and deletion of released segments.
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
use std::time::Instant;

use pushd_actors::ports::{JournalError, Position};

use super::segments::{self, Segment};
use super::{KIND, Shared};
use crate::segfile::{Appender, Prefix, dir};

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
    /// A spare buffer, swapped with the appenders' so neither allocates.
    spare: Vec<u8>,
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
            spare: Vec::with_capacity(1 << 20),
        })
    }

    /// Writes groups until the journal closes.
    pub fn run(mut self, shared: &Shared) {
        loop {
            let (mut data, first, upto, released) = {
                let mut state = shared.lock();
                while state.buf.is_empty() && state.released <= self.released {
                    if state.closing {
                        return;
                    }
                    state.writer_idle = true;
                    state = shared
                        .work
                        .wait(state)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                state.writer_idle = false;
                let data = std::mem::replace(&mut state.buf, std::mem::take(&mut self.spare));
                (data, state.buf_first, state.last, state.released)
            };
            if !data.is_empty() {
                let started = Instant::now();
                let result = self.write(&data, first);
                metrics::histogram!("pushd_journal_sync_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("pushd_journal_bytes_total").increment(data.len() as u64);
                metrics::counter!("pushd_journal_records_total").increment(upto + 1 - first);
                self.finish(shared, upto, result);
                data.clear();
                self.spare = data;
            }
            if released > self.released {
                self.release(released);
            }
        }
    }

    /// Publishes the group's outcome and wakes its waiters.
    fn finish(&mut self, shared: &Shared, upto: Position, result: io::Result<()>) {
        let mut state = shared.lock();
        let done: Vec<_> = match &result {
            Ok(()) => {
                self.written = upto;
                state.durable = upto;
                state.syncs += 1;
                let (done, waiting) = std::mem::take(&mut state.waiters)
                    .into_iter()
                    .partition(|(p, _)| *p <= upto);
                state.waiters = waiting;
                done
            }
            Err(e) => {
                tracing::error!(error = %e, "journal write failed; refusing every later change");
                state.failed = Some(format!("journal write failed: {e}"));
                std::mem::take(&mut state.waiters)
            }
        };
        let answer = state.failed.clone().map(JournalError);
        drop(state);
        shared.synced.notify_all();
        for (_, waiter) in done {
            let _ = waiter.send(answer.clone().map_or(Ok(()), Err));
        }
    }

    /// Appends one group to the active segment and syncs it.
    fn write(&mut self, data: &[u8], first: Position) -> io::Result<()> {
        let full = |a: &Appender| a.data_len() >= self.segment_bytes;
        if self.active.as_ref().is_none_or(full) || self.roll {
            self.start_segment(first)?;
        }
        let active = self.active.as_mut().expect("an active segment");
        active.append(data)?;
        active.sync()
    }

    /// Starts a new segment whose first record is at `first`.
    fn start_segment(&mut self, first: Position) -> io::Result<()> {
        let path = segments::path_of(&self.dir, first);
        self.active = Some(Appender::create(&KIND, &path, self.segment_bytes)?);
        self.segments.push_back(Segment { first, path });
        self.roll = false;
        metrics::counter!("pushd_journal_segments_total").increment(1);
        Ok(())
    }

    /// Deletes the segments holding only records at or before `covered`,
    /// oldest first; the active one is closed with the next group if it is
    /// wholly covered too.
    fn release(&mut self, covered: Position) {
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
        let holds_data = self.active.as_ref().is_some_and(|a| a.data_len() > 0);
        self.roll = holds_data && self.written <= covered;
    }
}
