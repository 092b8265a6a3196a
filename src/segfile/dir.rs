//! The directory of segment files: each is named by a number, 20 digits
//! and the kind's suffix (`00000000000000000001.journal`), so names sort as
//! numbers do. The journal names a segment by its first record's position,
//! the event log by its first event's offset.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::Kind;

/// The path of the segment of `kind` numbered `n` in `dir`.
pub fn path_of(kind: &Kind, dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}{}", kind.suffix))
}

/// The segment files of `kind` in `dir`, with their numbers, in order.
/// Other files are not listed.
pub fn list(kind: &Kind, dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(n) = name.strip_suffix(kind.suffix).and_then(|n| n.parse().ok()) {
            found.push((n, path));
        }
    }
    found.sort_by_key(|(n, _)| *n);
    Ok(found)
}

/// Makes directory entries (created or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
