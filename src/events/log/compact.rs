//! Compaction: the events of erased customers overwritten in place with
//! tombstones (see [`super::super::erasure`]), on the writer thread, while
//! nothing is queued.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;

use super::super::erasure::{self, Erased};
use super::super::frame::{self, Frame, HEADER, MAX_BODY};
use super::super::segments::Segment;
use super::{EventLog, lock};
use crate::segfile::Read;

/// Bytes of a segment read at a time.
const CHUNK: usize = 1 << 20;

impl EventLog {
    /// Overwrites every event of the erasures due with its tombstone, then
    /// drops those erasures from the file. A failure is logged; the
    /// erasures stay in the file and are compacted again at the next
    /// erasure or start.
    pub(super) fn compact(&self) {
        let Some(due) = self.erasures.take_due() else {
            return;
        };
        let done = self.tombstone(&due).and_then(|(finished, n)| {
            metrics::counter!("pushd_event_log_erased_total").increment(n);
            tracing::info!(events = n, finished, "event log compacted");
            self.erasures.compacted(&due, finished)
        });
        if let Err(e) = done {
            tracing::error!(error = %e, "event log compaction failed; it is done again at the next erasure or start");
        }
    }

    /// Tombstones the events of `due` in every segment, each segment
    /// fsynced once changed. Answers whether it went through every segment
    /// (it stops early when the log closes) and how many events it erased.
    fn tombstone(&self, due: &Erased) -> io::Result<(bool, u64)> {
        let segments = lock(&self.segments).clone();
        let end = self.tail().offset;
        let mut erased = 0;
        for (i, segment) in segments.iter().enumerate() {
            if lock(&self.pending).closing {
                return Ok((false, erased));
            }
            let seg_end = segments.get(i + 1).map_or(end, |n| n.base).min(end);
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .open(&segment.path)
            {
                Ok(file) => file,
                // Deleted by retention since: nothing left to erase.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut changed = false;
            scan(
                &file,
                segment,
                seg_end.max(segment.base),
                |at, framed, f| {
                    if erasure::erases(due, &f) && self.overwrite(&file, at, framed, &f)? {
                        changed = true;
                        erased += 1;
                    }
                    Ok(())
                },
            )?;
            if changed {
                file.sync_data()?;
            }
        }
        Ok((true, erased))
    }

    /// Overwrites the event `f`, read as `framed` at file position `at`,
    /// with its tombstone if it is still there: under the writer's lock, so
    /// no append or cut of the tail runs meanwhile.
    fn overwrite(&self, file: &File, at: u64, framed: &[u8], f: &Frame<'_>) -> io::Result<bool> {
        let _writer = lock(&self.writer);
        let mut head = [0; HEADER];
        match file.read_exact_at(&mut head, at) {
            Ok(()) if head[..] == framed[..HEADER] => {}
            Ok(()) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        self.erasures.overwrite(file, at, f)?;
        Ok(true)
    }
}

/// Calls `each` with the file position, bytes and frame of every event of
/// `segment` (open as `file`) before offset `end`, read a chunk at a time
/// from where its header leaves the events, as its format frames them.
fn scan(
    file: &File,
    segment: &Segment,
    end: u64,
    mut each: impl FnMut(u64, &[u8], Frame<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let (mut offset, mut chunk) = (segment.base, CHUNK);
    while offset < end {
        let at = segment.file_position(offset);
        let mut buf = vec![0; (end - offset).min(chunk as u64) as usize];
        file.read_exact_at(&mut buf, at)?;
        let mut used = 0;
        loop {
            match frame::read(&buf[used..], segment.layout.version) {
                Read::Frame(f, size) => {
                    each(at + used as u64, &buf[used..used + size], f)?;
                    used += size;
                }
                Read::Short | Read::End if used > 0 => break,
                // One frame larger than the chunk: read it whole.
                Read::Short if chunk < HEADER + MAX_BODY => {
                    chunk = HEADER + MAX_BODY;
                    break;
                }
                _ => {
                    let place = offset + used as u64;
                    return Err(io::Error::other(format!("corrupt event at {place}")));
                }
            }
        }
        offset += used as u64;
    }
    Ok(())
}
