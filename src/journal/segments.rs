//! The journal's segment files: `<first position, 20 digits>.journal` in the
//! journal directory, each a run of framed records with consecutive
//! positions. Opening scans them once, cuts a torn or corrupt tail (and any
//! segment after it), and finds where appends continue.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use pushd_actors::ports::Position;

use super::frame::{self, Read};

/// File name suffix of segments.
const SUFFIX: &str = ".journal";

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
    dir.join(format!("{first:020}{SUFFIX}"))
}

/// The segments in `dir`, in position order.
pub fn list(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(first) = name.strip_suffix(SUFFIX).and_then(|n| n.parse().ok()) {
            segments.push(Segment { first, path });
        }
    }
    segments.sort_by_key(|s| s.first);
    Ok(segments)
}

/// Reads a whole segment file.
pub fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Makes directory entries (created or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What a scan found.
pub struct Scan {
    /// The intact segments, in order.
    pub segments: Vec<Segment>,
    /// The last intact position (0 if none).
    pub last: Position,
    /// Where the last segment's data ends (the zero fill after it is
    /// overwritten by the next appends).
    pub end: u64,
}

/// Walks every record of every segment, checking framing, checksums and
/// consecutive positions. At the first bad record it cuts: that segment is
/// truncated there and every later segment is deleted, so the bad bytes
/// are never replayed and appends continue after the last good record.
/// Segments wholly at or before `floor` (a snapshot covers them; a crash
/// may have undone their deletion) are deleted first.
pub fn scan(dir: &Path, floor: Position) -> io::Result<Scan> {
    let mut kept: Vec<Segment> = Vec::new();
    let mut last: Position = 0;
    let mut end = 0;
    let mut all = list(dir)?;
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
        let buf = read_all(&segment.path)?;
        let (mut offset, mut expected) = (0, segment.first);
        let bad = loop {
            match frame::read(&buf[offset..]) {
                Read::End => break None,
                Read::Bad(why) => break Some(why),
                Read::Record(f, _) if f.position != expected => {
                    break Some("record out of sequence");
                }
                Read::Record(f, used) => {
                    last = f.position;
                    expected += 1;
                    offset += used;
                }
            }
        };
        let Some(why) = bad else {
            kept.push(segment);
            end = offset as u64;
            continue;
        };
        tracing::warn!(
            segment = %segment.path.display(),
            offset,
            why,
            "journal tail cut: a torn or corrupt record and everything after it are dropped"
        );
        if offset == 0 {
            fs::remove_file(&segment.path)?;
        } else {
            let file = OpenOptions::new().write(true).open(&segment.path)?;
            file.set_len(offset as u64)?;
            file.sync_all()?;
            kept.push(segment);
            end = offset as u64;
        }
        remove_all(segments, dir)?;
        break;
    }
    Ok(Scan {
        segments: kept,
        last,
        end,
    })
}

/// Deletes `segments` and makes the deletion durable.
fn remove_all(segments: impl Iterator<Item = Segment>, dir: &Path) -> io::Result<()> {
    for segment in segments {
        tracing::warn!(segment = %segment.path.display(), "journal segment dropped");
        fs::remove_file(&segment.path)?;
    }
    sync_dir(dir)
}
