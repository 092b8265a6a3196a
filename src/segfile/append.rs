//! Appending to a segment file ahead of a zero fill.
//!
//! A segment is filled with zeros ahead of its data (as far ahead as its
//! data reaches, at least 4 KiB and at most 1 MiB at a time, never past its
//! size), and writes overwrite the zeros. A write that grows the file makes
//! its `fdatasync` commit the new size and blocks to the filesystem's own
//! journal; one that overwrites blocks already on disk syncs its data
//! alone. On ext4 that takes a third less CPU per sync and a third less
//! time (measured with 1.5 KB groups), and it keeps the filesystem's
//! journal thread out of the hot path. (Preallocating with `fallocate`
//! does not do it: unwritten extents still change on the first write.)
//!
//! So the file's length says nothing about where its data ends: zeros to
//! the end of the file do (see [`super::scan`]).
//!
//! Appends go only to a segment of the binary's own format, so that a
//! segment's header describes every record in it: a segment of an older
//! format that holds data is left as it is, and the next append starts a
//! new segment ([`Appender::resume`] answers `None`).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use super::header::{self, HEADER_LEN, Layout};
use super::{Kind, Prefix, dir};

/// How far ahead of its data a segment is zero-filled, at least and at most.
const FILL_MIN: u64 = 4 << 10;
const FILL_MAX: u64 = 1 << 20;

/// The segment file appends go to.
#[derive(Debug)]
pub struct Appender {
    file: File,
    /// Its header's length: where its data starts.
    start: u64,
    /// Its format.
    version: u32,
    /// Where its data ends: the next append goes there.
    end: u64,
    /// Its length: data, then zeros.
    filled: u64,
    /// The zero fill stops here (the header and the segment's size).
    limit: u64,
}

impl Appender {
    /// Creates the segment file `path` of `kind` with its header, and makes
    /// its directory entry durable. The header is made durable by the first
    /// [`Appender::sync`]. `segment_bytes` is the data the segment is meant
    /// to hold: the zero fill goes no further.
    pub fn create(kind: &Kind, path: &Path, segment_bytes: u64) -> io::Result<Appender> {
        let file = OpenOptions::new().create_new(true).write(true).open(path)?;
        file.write_all_at(&header::encode(kind), 0)?;
        if let Some(parent) = path.parent() {
            dir::sync_dir(parent)?;
        }
        Ok(Appender::new(file, kind, segment_bytes))
    }

    /// Opens the existing segment `path` of `kind`, whose kept data the scan
    /// at open found (`kept`), to append after it. A segment of the current
    /// format goes on; one that holds no data is written afresh with the
    /// current header; one of an older format that holds data is left as it
    /// is (`None`: the next append starts a new segment).
    pub fn resume(
        kind: &Kind,
        path: &Path,
        kept: &Prefix,
        segment_bytes: u64,
    ) -> io::Result<Option<Appender>> {
        let layout = kept.layout;
        let current = layout.version == kind.format && kept.end >= layout.start;
        if !current && kept.data > 0 {
            tracing::info!(
                segment = %path.display(),
                format = layout.version,
                "segment of an older format kept as it is; appends go to a new one"
            );
            return Ok(None);
        }
        let file = OpenOptions::new().write(true).open(path)?;
        if !current {
            file.set_len(0)?;
            file.write_all_at(&header::encode(kind), 0)?;
            return Ok(Some(Appender::new(file, kind, segment_bytes)));
        }
        let filled = file.metadata()?.len();
        Ok(Some(Appender {
            file,
            start: layout.start,
            version: layout.version,
            end: kept.end,
            filled,
            limit: layout.start + segment_bytes,
        }))
    }

    fn new(file: File, kind: &Kind, segment_bytes: u64) -> Appender {
        let start = HEADER_LEN as u64;
        Appender {
            file,
            start,
            version: kind.format,
            end: start,
            filled: start,
            limit: start + segment_bytes,
        }
    }

    /// Its layout.
    pub fn layout(&self) -> Layout {
        Layout {
            version: self.version,
            start: self.start,
        }
    }

    /// Bytes of data it holds (its header not counted).
    pub fn data_len(&self) -> u64 {
        self.end - self.start
    }

    /// Writes `data` after the data, over the zeros, with one `pwrite`, and
    /// a second one of zeros when the data goes past the fill. Not synced.
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let end = self.end + data.len() as u64;
        self.file.write_all_at(data, self.end)?;
        if end > self.filled {
            // As far ahead as the segment holds, so a quiet segment stays
            // small and a busy one grows its file once per megabyte.
            let ahead = (end + end.clamp(FILL_MIN, FILL_MAX)).min(self.limit);
            let ahead = ahead.max(end);
            self.file
                .write_all_at(&vec![0; (ahead - end) as usize], end)?;
            self.filled = ahead;
        }
        self.end = end;
        Ok(())
    }

    /// Makes what was appended durable (`fdatasync`).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segfile::{Contents, Step};

    /// The journal's kind: a file kind with a header and an 8-byte prefix.
    const KIND: Kind = crate::journal::KIND;

    fn record(n: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let start = KIND.framing.begin(&mut out);
        KIND.framing.prefix_mut(&mut out, start).fill(n);
        out.extend_from_slice(&[n; 100]);
        KIND.framing.finish(&mut out, start).unwrap();
        out
    }

    fn kept(path: &Path) -> Prefix {
        Contents::read(&KIND, path)
            .unwrap()
            .intact_prefix(|_| Step::Boundary)
    }

    #[test]
    fn appends_overwrite_zeros_filled_ahead_and_a_reopen_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.journal");
        let mut a = Appender::create(&KIND, &path, 1 << 20).unwrap();
        assert_eq!(a.layout(), Layout::current(&KIND));
        a.append(&record(1)).unwrap();
        a.sync().unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        let end = (HEADER_LEN + record(1).len()) as u64;
        assert_eq!(len, end + FILL_MIN, "zeros ahead of the data");
        drop(a);
        let found = kept(&path);
        assert_eq!((found.end, found.data, found.cut), (end, end - 16, None));
        let mut a = Appender::resume(&KIND, &path, &found, 1 << 20)
            .unwrap()
            .unwrap();
        for n in 2..=60 {
            a.append(&record(n)).unwrap();
        }
        assert_eq!(a.data_len(), 60 * record(1).len() as u64);
        drop(a);
        let contents = Contents::read(&KIND, &path).unwrap();
        let bodies: Vec<u8> = contents.frames().map(|f| f.body[0]).collect();
        assert_eq!(bodies, (1..=60).collect::<Vec<u8>>());
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len > kept(&path).end, "still zeros ahead");
    }

    #[test]
    fn the_fill_stops_at_the_segment_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.journal");
        let mut a = Appender::create(&KIND, &path, 300).unwrap();
        a.append(&record(1)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16 + 300);
        a.append(&record(2)).unwrap();
        a.append(&record(3)).unwrap();
        let end = 16 + 3 * record(1).len() as u64;
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            end,
            "no fill past it"
        );
    }

    #[test]
    fn an_older_segment_with_data_is_left_and_an_empty_one_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("1.journal");
        std::fs::write(&legacy, [record(1), vec![0; 500]].concat()).unwrap();
        let found = kept(&legacy);
        assert_eq!(found.layout, Layout::LEGACY);
        assert!(
            Appender::resume(&KIND, &legacy, &found, 1 << 20)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            std::fs::read(&legacy).unwrap()[..4],
            record(1)[..4],
            "untouched"
        );
        let empty = dir.path().join("2.journal");
        std::fs::write(&empty, [0; 500]).unwrap();
        let mut a = Appender::resume(&KIND, &empty, &kept(&empty), 1 << 20)
            .unwrap()
            .unwrap();
        a.append(&record(2)).unwrap();
        let contents = Contents::read(&KIND, &empty).unwrap();
        assert_eq!(contents.layout(), Layout::current(&KIND));
        assert_eq!(contents.frames().count(), 1);
    }
}
