//! The header at the start of a segment file, and how a file without one
//! (format 1) is told apart:
//!
//! ```text
//! | magic: 8 bytes | format: u32 LE | reserved: 4 bytes |
//! ```
//!
//! The magic says what the file is (`PUSHDJNL`: a journal segment,
//! `PUSHDEVT`: an event log segment); the format is 2 or more (format 1 has
//! no header); the reserved bytes are written as zeros and not read.
//!
//! A format-1 file starts with a frame, whose first 4 bytes are its body
//! length, or with the zeros of its fill, or is empty. Read as a length, a
//! magic is far larger than any body may be (`PUSH` is 1.2 GB), so the
//! first 4 bytes decide: a length in range, a format-1 file; beyond it, a
//! header, which must then be the kind's. (A format-1 file whose first
//! frame has its length corrupted past the range is refused, not cut.)
//!
//! The header is written when the file is created, before any frame, and
//! made durable by the sync of the first frames; a crash before that may
//! leave it short, which holds no data ([`Layout::start`] past the end).

use std::fs::File;
use std::io::{self, Read as _};
use std::path::Path;

use super::Kind;

/// Bytes of a header.
pub const HEADER_LEN: usize = 16;

/// How a segment file is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Its format: 1 without a header, else the header's.
    pub version: u32,
    /// Where its data starts: the header's length, or 0.
    pub start: u64,
}

impl Layout {
    /// The layout of a file without a header.
    pub const LEGACY: Layout = Layout {
        version: 1,
        start: 0,
    };

    /// The layout of a new file of `kind`.
    pub fn current(kind: &Kind) -> Layout {
        Layout {
            version: kind.format,
            start: HEADER_LEN as u64,
        }
    }

    /// The layout of the file of `kind` at `path`, whose first bytes are
    /// `head` (at least [`HEADER_LEN`] of them, or the whole file). A newer
    /// format than `kind.format`, or a file that is not one of `kind`, is
    /// an error of kind `InvalidData` that says so.
    pub fn of(kind: &Kind, path: &Path, head: &[u8]) -> io::Result<Layout> {
        let first = head
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
        if first.is_none_or(|len| len as usize <= kind.framing.max_body) {
            return Ok(Layout::LEGACY);
        }
        let name = kind.name;
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
        let magic_len = head.len().min(kind.magic.len());
        if head[..magic_len] != kind.magic[..magic_len] {
            let magic = String::from_utf8_lossy(&kind.magic);
            return Err(invalid(format!(
                "{} is not a pushd {name} segment: it starts with neither the header {magic} nor a record",
                path.display()
            )));
        }
        let Some(version) = head.get(8..12) else {
            // Torn at creation: no frame follows.
            return Ok(Layout::current(kind));
        };
        let version = u32::from_le_bytes(version.try_into().expect("4 bytes"));
        if version > kind.format {
            return Err(invalid(format!(
                "{name} segment {} is format {version}; this pushd reads formats 1 to {}",
                path.display(),
                kind.format
            )));
        }
        if version < 2 {
            return Err(invalid(format!(
                "{name} segment {} is corrupt: its header names format {version}, which has no header",
                path.display()
            )));
        }
        Ok(Layout {
            version,
            start: HEADER_LEN as u64,
        })
    }

    /// [`Layout::of`] the file at `path`.
    pub fn read(kind: &Kind, path: &Path) -> io::Result<Layout> {
        Layout::of(kind, path, &head(path, HEADER_LEN)?)
    }
}

/// The header of a new file of `kind`.
pub fn encode(kind: &Kind) -> [u8; HEADER_LEN] {
    let mut header = [0; HEADER_LEN];
    header[..8].copy_from_slice(&kind.magic);
    header[8..12].copy_from_slice(&kind.format.to_le_bytes());
    header
}

/// Up to the first `n` bytes of the file at `path` (fewer if it is shorter).
pub fn head(path: &Path, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    File::open(path)?.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal's kind: a file kind with a header and an 8-byte prefix.
    const KIND: Kind = crate::journal::KIND;

    fn of(head: &[u8]) -> io::Result<Layout> {
        Layout::of(&KIND, Path::new("/d/1.journal"), head)
    }

    #[test]
    fn a_header_names_the_format_and_a_frame_or_zeros_mean_format_1() {
        assert_eq!(of(&encode(&KIND)).unwrap(), Layout::current(&KIND));
        assert_eq!(Layout::current(&KIND).start, HEADER_LEN as u64);
        let mut frame = 300u32.to_le_bytes().to_vec();
        frame.extend_from_slice(&[7; 20]);
        for legacy in [&[][..], &[0; 4096], &frame, &[5, 0]] {
            assert_eq!(of(legacy).unwrap(), Layout::LEGACY);
        }
        // Torn while the file was created: a header, short.
        assert_eq!(of(b"PUSHDJ").unwrap(), Layout::current(&KIND));
    }

    #[test]
    fn a_newer_format_is_refused_naming_both_versions() {
        let mut header = encode(&KIND);
        let newer = KIND.format + 1;
        header[8..12].copy_from_slice(&newer.to_le_bytes());
        let err = of(&header).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            err.to_string(),
            format!(
                "journal segment /d/1.journal is format {newer}; this pushd reads formats 1 to {}",
                KIND.format
            )
        );
        header[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert!(of(&header).unwrap_err().to_string().contains("corrupt"));
    }

    #[test]
    fn a_wrong_magic_is_refused() {
        let mut events = encode(&KIND);
        events[..8].copy_from_slice(b"PUSHDEVT");
        for wrong in [&events[..], b"GIF89a, not a journal", b"PUSHX"] {
            let err = of(wrong).unwrap_err();
            assert!(
                err.to_string()
                    .contains("/d/1.journal is not a pushd journal segment"),
                "{err}"
            );
        }
    }
}
