//! The event log's segment files: `<offset of the first event, 20
//! digits>.events` in the events directory, each a run of framed events
//! (see [`super::frame`]) that ends on a record boundary. Offsets run
//! on from one segment to the next, so an offset names one place in the
//! whole log.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use pushd_actors::ports::Position;

use super::frame::{self, HEADER, LAST_OF_RECORD, Read};

/// File name suffix of segments.
const SUFFIX: &str = ".events";

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
}

/// The path of the segment starting at offset `base`.
pub fn path_of(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}{SUFFIX}"))
}

/// The segments in `dir`, in offset order, with the time of each one's
/// first event (0 if it cannot be read: the first to go).
pub fn list(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(base) = name.strip_suffix(SUFFIX).and_then(|n| n.parse().ok()) {
            let mut head = [0u8; HEADER];
            let first_time_ms = match File::open(&path)?.read_exact_at(&mut head, 0) {
                Ok(()) => i64::from_le_bytes(head[32..40].try_into().expect("8 bytes")),
                Err(_) => 0,
            };
            segments.push(Segment {
                base,
                first_time_ms,
                path,
            });
        }
    }
    segments.sort_by_key(|s| s.base);
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
    /// Bytes to keep: whole records only.
    pub len: usize,
    /// The last event kept.
    pub last: Option<Last>,
    /// Why the rest is dropped, if anything is.
    pub cut: Option<&'static str>,
}

/// The longest prefix of a segment's bytes that holds whole records, all of
/// whose journal positions `keep` accepts: a torn or corrupt frame, or a
/// record whose last event never made it, ends it.
pub fn intact_prefix(buf: &[u8], keep: impl Fn(Position) -> bool) -> Prefix {
    let (mut offset, mut prefix) = (
        0,
        Prefix {
            len: 0,
            last: None,
            cut: None,
        },
    );
    loop {
        match frame::read(&buf[offset..]) {
            Read::End => break,
            Read::Short => {
                prefix.cut = Some("torn event");
                break;
            }
            Read::Bad(why) => {
                prefix.cut = Some(why);
                break;
            }
            Read::Frame(f) if !keep(f.position) => {
                prefix.cut = Some("event of a journal record that is not in the journal");
                break;
            }
            Read::Frame(f) => {
                offset += f.framed_len();
                if f.flags & LAST_OF_RECORD != 0 {
                    prefix.len = offset;
                    prefix.last = Some(Last {
                        seq: f.seq,
                        position: f.position,
                    });
                }
            }
        }
    }
    if prefix.cut.is_none() && prefix.len < buf.len() {
        prefix.cut = Some("record without its last event");
    }
    prefix
}

/// Makes directory entries (created or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
