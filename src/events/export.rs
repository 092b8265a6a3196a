//! The log's files as of a journal position, for a backup: every segment up
//! to the readable end, the last ones cut back to the last record at or
//! before the position. A directory of those files opens as a log that
//! ends where a store covering that position does.
//!
//! Events are written in journal order, and a drain writes the events of
//! the records it covers before sled covers them: once the store is
//! exported at a position, the log holds every event up to it, and perhaps
//! some of records after it (made durable since). Those are left out.
//!
//! A segment is copied as it lies on disk (its header, then its frames),
//! up to the end of the data kept; the zeros a segment is filled with
//! ahead of its data are left out. It may so hold events of a customer
//! erased at or before the position that compaction has not overwritten
//! yet: the erasures go with the copy, as the log's erasure file, so a log
//! opened on it skips those events and overwrites them.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;

use pushd_actors::ports::Position;

use super::segments::{self, Segment};
use super::{EventLog, KIND};
use crate::segfile::Contents;

/// A segment file to copy: its first `len` bytes (header and data), under
/// its own name.
#[derive(Debug)]
pub struct SegmentCopy {
    /// Its file name in the events directory.
    pub name: String,
    /// The file, opened when the copy was planned (retention may delete
    /// the name meanwhile).
    pub file: File,
    /// How many of its first bytes to copy.
    pub len: u64,
}

/// What [`EventLog::export`] answers.
#[derive(Debug)]
pub struct Export {
    /// The segments to copy, in offset order.
    pub segments: Vec<SegmentCopy>,
    /// The log offset the copy ends at: where a log opened on it goes on
    /// (a webhook cursor past it is past that log's end).
    pub end: u64,
    /// The content of the events directory's [`ERASURES_FILE`](super::ERASURES_FILE)
    /// for the copy, if erasures at or before the position may have left
    /// events not yet overwritten in the segments copied: a log opened on
    /// the copy skips them from the start, then overwrites them.
    pub erasures: Option<Vec<u8>>,
}

/// A segment being planned.
struct Kept {
    segment: Segment,
    file: File,
    len: u64,
}

impl EventLog {
    /// The segments that hold the log through journal `position`, read up
    /// to the log's readable end now and cut back to the last record at or
    /// before `position`. Call once the log holds every event up to it.
    pub fn export(&self, position: Position) -> io::Result<Export> {
        // Before the segments are read: an erasure whose compaction ends
        // after this left tombstones in them by the time they are copied.
        let erasures = self.erasures().export(position);
        let tail = self.tail().offset;
        let mut kept: Vec<Kept> = Vec::new();
        for segment in segments::list(self.dir())? {
            // Written after the tail was taken.
            if segment.base >= tail {
                break;
            }
            let file = match File::open(&segment.path) {
                Ok(file) => file,
                // Deleted by retention since it was listed: its events are gone.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(at(&segment, e)),
            };
            kept.push(Kept {
                segment,
                file,
                len: 0,
            });
        }
        for i in 0..kept.len() {
            let end = kept.get(i + 1).map_or(tail, |next| next.segment.base);
            let k = &mut kept[i];
            k.len = k.segment.file_position(end);
            let size = k.file.metadata().map_err(|e| at(&k.segment, e))?.len();
            if size < k.len {
                let why = format!("{size} bytes, where the event log reads {}", k.len);
                return Err(at(&k.segment, io::Error::other(why)));
            }
        }
        cut_after(&mut kept, position)?;
        let end = kept
            .last()
            .map_or(0, |k| k.segment.base + (k.len - k.segment.layout.start));
        let segments = kept
            .into_iter()
            .map(|k| SegmentCopy {
                name: k
                    .segment
                    .path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                file: k.file,
                len: k.len,
            })
            .collect();
        Ok(Export {
            segments,
            end,
            erasures,
        })
    }
}

/// Cuts the events of records after `position` off the last segments; a
/// segment left empty goes, unless it is the only one (its name keeps the
/// log's offsets).
fn cut_after(kept: &mut Vec<Kept>, position: Position) -> io::Result<()> {
    let mut count = kept.len();
    while let Some(last) = kept.last_mut() {
        let mut buf = vec![0; last.len as usize];
        last.file
            .read_exact_at(&mut buf, 0)
            .map_err(|e| at(&last.segment, e))?;
        let contents = Contents::of(&KIND, &last.segment.path, buf)?;
        let prefix = segments::intact_prefix(&contents, |p| p <= position).kept;
        if prefix.end == last.len {
            return Ok(());
        }
        tracing::debug!(
            segment = %last.segment.path.display(),
            kept = prefix.end,
            of = last.len,
            position,
            "events of records after the exported position left out"
        );
        if prefix.data == 0 && count > 1 {
            kept.pop();
            count -= 1;
            continue;
        }
        last.len = prefix.end;
        return Ok(());
    }
    Ok(())
}

/// `e`, naming the segment.
fn at(segment: &Segment, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", segment.path.display()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use pushd_actors::ports::ManualClock;
    use pushd_actors::status::MessageStatus;

    use super::*;
    use crate::events::{NewEvent, Options};

    fn open(dir: &std::path::Path) -> Arc<EventLog> {
        let options = Options {
            // Two records per segment: cuts fall inside and between them.
            segment_bytes: 200,
            retention: Duration::from_secs(24 * 3600),
        };
        let clock = Arc::new(ManualClock::new(1_764_100_000_000));
        EventLog::open(dir, options, clock, Box::new(|_| Ok(()))).unwrap()
    }

    /// The bodies of every event in `log`.
    fn bodies(log: &EventLog) -> Vec<String> {
        let page = log.read(0, 1000).unwrap();
        page.events
            .iter()
            .map(|e| String::from_utf8(e.body.clone()).unwrap())
            .collect()
    }

    /// A log at `dir` made of `export`'s files, as a restore writes them.
    fn copy(export: Export, dir: &std::path::Path) -> Arc<EventLog> {
        std::fs::create_dir_all(dir).unwrap();
        for s in export.segments {
            let mut bytes = vec![0; s.len as usize];
            s.file.read_exact_at(&mut bytes, 0).unwrap();
            std::fs::write(dir.join(&s.name), bytes).unwrap();
        }
        if let Some(erasures) = export.erasures {
            std::fs::write(dir.join(crate::events::ERASURES_FILE), erasures).unwrap();
        }
        open(dir)
    }

    #[test]
    fn segments_are_copied_up_to_the_last_record_at_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(&dir.path().join("log"));
        for position in 1..=6 {
            let events = (0..2)
                .map(|i| NewEvent {
                    status: MessageStatus::Sent,
                    time_ms: 1_764_100_000_000,
                    body: format!(r#"{{"record":{position},"i":{i}}}"#).into_bytes(),
                })
                .collect();
            log.queue(position, events);
            log.persist(position).unwrap();
        }
        let all = bodies(&log);
        assert_eq!(all.len(), 12);
        assert!(
            segments::list(log.dir()).unwrap().len() > 2,
            "the records span several segments"
        );
        for position in 0..=7 {
            let export = log.export(position).unwrap();
            let end = export.end;
            let copy = copy(export, &dir.path().join(format!("at-{position}")));
            let kept = 2 * position.min(6) as usize;
            assert_eq!(bodies(&copy), all[..kept], "at {position}");
            assert_eq!(copy.tail().offset, end, "at {position}");
            assert_eq!(copy.complete_through(), position.min(6), "at {position}");
            copy.close();
        }
        log.close();
    }

    #[test]
    fn a_copy_keeps_an_erased_customers_events_erased() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(&dir.path().join("log"));
        for position in 1..=4 {
            let who = if position % 2 == 0 { "kept" } else { "gone" };
            let body = format!(r#"{{"customer_id":"{who}","secret":"s-{position}."}}"#);
            let event = NewEvent {
                status: MessageStatus::Sent,
                time_ms: 1_764_100_000_000,
                body: body.into_bytes(),
            };
            log.queue(position, vec![event]);
            log.persist(position).unwrap();
        }
        log.erase(5, vec!["gone".into()]);
        // Taken whether or not compaction has overwritten the events yet.
        let export = log.export(5).unwrap();
        let copied = dir.path().join("copy");
        let copy = copy(export, &copied);
        let kept = [
            r#"{"customer_id":"kept","secret":"s-2."}"#,
            r#"{"customer_id":"kept","secret":"s-4."}"#,
        ];
        assert_eq!(bodies(&copy), kept);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let on_disk = |secret: &str| {
            std::fs::read_dir(&copied).unwrap().any(|entry| {
                std::fs::read(entry.unwrap().path())
                    .is_ok_and(|b| b.windows(secret.len()).any(|w| w == secret.as_bytes()))
            })
        };
        while on_disk("s-1.") || on_disk("s-3.") {
            assert!(std::time::Instant::now() < deadline, "not overwritten");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(bodies(&copy), kept);
        copy.close();
        log.close();
    }
}
