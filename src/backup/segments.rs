//! The event log's part of a backup: its segment files up to its readable
//! end, the last ones cut back to the last record at or before the
//! backup's position.
//!
//! Events are written in journal order, and a drain writes the events of
//! the records it covers before sled covers them: once the store is
//! exported at a position, the log holds every event up to it, and perhaps
//! some of records after it (made durable since). Those are left out, so
//! the restored log ends where the restored store does.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;

use pushd_actors::ports::Position;

use super::Error;
use super::archive::{EVENTS_PREFIX, Section};
use crate::events::EventLog;
use crate::events::segments::{self, Segment};

/// A segment to copy: its first `len` bytes.
struct Kept {
    segment: Segment,
    file: File,
    len: u64,
}

/// The sections of `log`'s segments up to `position`, and the log offset
/// they end at (where the restored log goes on).
pub fn sections(log: &EventLog, position: Position) -> Result<(Vec<Section>, u64), Error> {
    let dir = log.dir();
    let tail = log.tail().offset;
    let mut kept: Vec<Kept> = Vec::new();
    for segment in segments::list(dir).map_err(Error::io(dir))? {
        // Written after the tail was taken.
        if segment.base >= tail {
            break;
        }
        // Opened now, so retention deleting it meanwhile changes nothing.
        let file = match File::open(&segment.path) {
            Ok(file) => file,
            // Deleted by retention since it was listed: its events are gone.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&segment.path)(e)),
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
        k.len = end - k.segment.base;
        let size = k.file.metadata().map_err(Error::io(&k.segment.path))?.len();
        if size < k.len {
            return Err(Error::io(&k.segment.path)(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{size} bytes, where the event log reads {}", k.len),
            )));
        }
    }
    cut_after(&mut kept, position)?;
    let end = kept.last().map_or(0, |k| k.segment.base + k.len);
    let sections = kept
        .into_iter()
        .map(|k| {
            let name = k.segment.path.file_name().map_or_else(String::new, |n| {
                format!("{EVENTS_PREFIX}{}", n.to_string_lossy())
            });
            Section::file(name, k.file, k.len)
        })
        .collect();
    Ok((sections, end))
}

/// Cuts the events of records after `position` off the last segments; a
/// segment left empty goes, unless it is the only one (its name keeps the
/// log's offsets).
fn cut_after(kept: &mut Vec<Kept>, position: Position) -> Result<(), Error> {
    let mut count = kept.len();
    while let Some(last) = kept.last_mut() {
        let mut buf = vec![0; last.len as usize];
        last.file
            .read_exact_at(&mut buf, 0)
            .map_err(Error::io(&last.segment.path))?;
        let prefix = segments::intact_prefix(&buf, |p| p <= position);
        if prefix.len == buf.len() {
            return Ok(());
        }
        tracing::debug!(
            segment = %last.segment.path.display(),
            kept = prefix.len,
            of = buf.len(),
            position,
            "events of records after the backup's position left out"
        );
        if prefix.len == 0 && count > 1 {
            kept.pop();
            count -= 1;
            continue;
        }
        last.len = prefix.len as u64;
        return Ok(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use pushd_actors::ports::ManualClock;
    use pushd_actors::status::MessageStatus;

    use super::*;
    use crate::backup::archive;
    use crate::events::{NewEvent, Options};

    fn open(dir: &std::path::Path) -> Arc<EventLog> {
        let options = Options {
            // A few records per segment: cuts fall inside and between them.
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

    /// A log at `dir` made of `sections`, as a restore writes them.
    fn copy(sections: Vec<Section>, dir: &std::path::Path) -> Arc<EventLog> {
        let mut bytes = Vec::new();
        archive::write(sections, &mut bytes, &mut |_| {}).unwrap();
        let entries = archive::verify(&mut &bytes[..], bytes.len() as u64).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        for e in entries {
            let name = e.name.strip_prefix(EVENTS_PREFIX).unwrap();
            let at = e.offset as usize;
            std::fs::write(dir.join(name), &bytes[at..at + e.len as usize]).unwrap();
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
            crate::events::segments::list(log.dir()).unwrap().len() > 2,
            "the records span several segments"
        );
        for position in 0..=7 {
            let (sections, end) = sections(&log, position).unwrap();
            let copy = copy(sections, &dir.path().join(format!("at-{position}")));
            let kept = 2 * position.min(6) as usize;
            assert_eq!(bodies(&copy), all[..kept], "at {position}");
            assert_eq!(copy.tail().offset, end, "at {position}");
            assert_eq!(copy.complete_through(), position.min(6), "at {position}");
            copy.close();
        }
        log.close();
    }
}
