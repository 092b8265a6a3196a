//! The event log's segment files: `<offset of the first event, 20
//! digits>.events` in the events directory, each a header and a run of
//! framed events (see [`super::frame`], [`crate::segfile`]) that ends on a
//! record boundary. Offsets run on from one segment to the next, so an
//! offset names one place in the whole log; a header takes no offsets: the
//! event at offset `o` of the segment starting at `base` is at
//! `layout.start + (o - base)` in its file.

use std::io;
use std::path::{Path, PathBuf};

use pushd_actors::ports::Position;

use super::KIND;
use super::frame::{Frame, HEADER, LAST_OF_RECORD};
use crate::segfile::{self, Contents, HEADER_LEN, Layout, Step, dir};

/// One segment file.
#[derive(Clone, Debug)]
pub struct Segment {
    /// The offset of its first event.
    pub base: u64,
    /// When its first event was recorded (Unix ms): retention deletes a
    /// segment once the next one starts before the cut-off.
    pub first_time_ms: i64,
    /// Its path.
    pub path: PathBuf,
    /// Its format, and where its events start in the file.
    pub layout: Layout,
}

impl Segment {
    /// Where the event at `offset` is in the file.
    pub fn file_position(&self, offset: u64) -> u64 {
        self.layout.start + (offset - self.base)
    }
}

/// The path of the segment starting at offset `base`.
pub fn path_of(dir: &Path, base: u64) -> PathBuf {
    dir::path_of(&KIND, dir, base)
}

/// The segments in `dir`, in offset order, with the time of each one's
/// first event (0 if it cannot be read: the first to go). A segment of a
/// newer format, or not an event log segment, is an error.
pub fn list(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for (base, path) in dir::list(&KIND, dir)? {
        let head = segfile::header::head(&path, HEADER_LEN + HEADER)?;
        let layout = Layout::of(&KIND, &path, &head)?;
        // The first event's time_ms, at 32 in its frame.
        let at = layout.start as usize + 32;
        let first_time_ms = head
            .get(at..at + 8)
            .map_or(0, |t| i64::from_le_bytes(t.try_into().expect("8 bytes")));
        segments.push(Segment {
            base,
            first_time_ms,
            path,
            layout,
        });
    }
    Ok(segments)
}

/// The last event kept by [`intact_prefix`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Last {
    /// Its number.
    pub seq: u64,
    /// Its journal record.
    pub position: Position,
}

/// What [`intact_prefix`] found.
#[derive(Debug)]
pub struct Prefix {
    /// The data kept: whole records only.
    pub kept: segfile::Prefix,
    /// The last event kept.
    pub last: Option<Last>,
}

/// The longest prefix of a segment's data that holds whole records, all of
/// whose journal positions `keep` accepts: a torn or corrupt frame, or a
/// record whose last event never made it, ends it.
pub fn intact_prefix(contents: &Contents, keep: impl Fn(Position) -> bool) -> Prefix {
    let mut last = None;
    let kept = contents.intact_prefix(|f| {
        let f = Frame::of(*f);
        if !keep(f.position) {
            return Step::Stop("event of a journal record that is not in the journal");
        }
        if f.flags & LAST_OF_RECORD == 0 {
            return Step::Inside;
        }
        last = Some(Last {
            seq: f.seq,
            position: f.position,
        });
        Step::Boundary
    });
    Prefix { kept, last }
}
