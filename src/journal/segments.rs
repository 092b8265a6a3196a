//! The journal's segment files: `<first position, 20 digits>.journal` in the
//! journal directory, each a header and a run of framed records with
//! consecutive positions (see [`crate::segfile`]). Opening scans them once,
//! cuts a torn or corrupt tail (and any segment after it), and finds where
//! appends continue.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use pushd_actors::ports::Position;

use super::KIND;
use super::frame::Frame;
use crate::segfile::{self, Contents, Layout, Prefix, Step, dir};

/// One segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The position of its first record.
    pub first: Position,
    /// Its path.
    pub path: PathBuf,
}

/// The path of the segment whose first record is at `first`.
pub fn path_of(dir: &Path, first: Position) -> PathBuf {
    dir::path_of(&KIND, dir, first)
}

/// The segments in `dir`, in position order.
pub fn list(dir: &Path) -> io::Result<Vec<Segment>> {
    let found = dir::list(&KIND, dir)?;
    Ok(found
        .into_iter()
        .map(|(first, path)| Segment { first, path })
        .collect())
}

/// What a scan found.
pub struct Scan {
    /// The intact segments, in order.
    pub segments: Vec<Segment>,
    /// The last intact position (0 if none).
    pub last: Position,
    /// The data kept in the last segment, if any: appends continue after it
    /// (over the zero fill) if it is of the current format.
    pub tail: Option<Prefix>,
}

/// Walks every record of every segment, checking framing, checksums and
/// consecutive positions. At the first bad record it cuts: that segment is
/// truncated there and every later segment is deleted, so the bad bytes
/// are never replayed and appends continue after the last good record.
/// Segments wholly at or before `floor` (a snapshot covers them; a crash
/// may have undone their deletion) are deleted first. Before anything is
/// cut or deleted, every segment's header is read: a segment of a newer
/// format, or not a journal segment, is an error.
pub fn scan(dir: &Path, floor: Position) -> io::Result<Scan> {
    let mut kept: Vec<Segment> = Vec::new();
    let mut last: Position = 0;
    let mut tail = None;
    let mut all = list(dir)?;
    for segment in &all {
        Layout::read(&KIND, &segment.path)?;
    }
    let covered = all
        .windows(2)
        .take_while(|w| w[1].first <= floor + 1)
        .count();
    if covered > 0 {
        remove_all(all.drain(..covered), dir)?;
    }
    let mut segments = all.into_iter();
    while let Some(segment) = segments.next() {
        if !kept.is_empty() && segment.first != last + 1 {
            tracing::error!(segment = %segment.path.display(), after = last, "journal segment out of sequence; cut");
            remove_all(std::iter::once(segment).chain(segments), dir)?;
            break;
        }
        let mut expected = segment.first;
        let prefix = Contents::read(&KIND, &segment.path)?.intact_prefix(|f| {
            let position = Frame::of(*f).position;
            if position != expected {
                return Step::Stop("record out of sequence");
            }
            last = position;
            expected += 1;
            Step::Boundary
        });
        let Some(why) = prefix.cut else {
            kept.push(segment);
            tail = Some(prefix);
            continue;
        };
        tracing::warn!(
            segment = %segment.path.display(),
            offset = prefix.end,
            why,
            "journal tail cut: a torn or corrupt record and everything after it are dropped"
        );
        if prefix.data == 0 {
            fs::remove_file(&segment.path)?;
        } else {
            segfile::scan::cut(&segment.path, prefix.end)?;
            kept.push(segment);
            tail = Some(prefix);
        }
        remove_all(segments, dir)?;
        break;
    }
    Ok(Scan {
        segments: kept,
        last,
        tail,
    })
}

/// Deletes `segments` and makes the deletion durable.
fn remove_all(segments: impl Iterator<Item = Segment>, dir: &Path) -> io::Result<()> {
    for segment in segments {
        tracing::warn!(segment = %segment.path.display(), "journal segment dropped");
        fs::remove_file(&segment.path)?;
    }
    dir::sync_dir(dir)
}
