//! The backup archive's format: writing one, and checking one whole.
//!
//! ```text
//! pushd-backup-v1\n                                  the header line
//! | name length: u16 | name | length: u64 | bytes |  a section, repeated
//! | 0: u16 |                                         the end mark
//! | CRC-32 of every byte before it: u32 |
//! ```
//!
//! Integers are big-endian, as in the store's portable export. The
//! sections, in this order: `manifest` (JSON: the journal position, when it
//! was taken, by which pushd), `store` (the store's portable export, with
//! its own header and CRC), `webhooks.json`, `keys.toml` if the data
//! directory has one, `events/erasures.json` if erasures at or before the
//! position may have left events in the segments that compaction has not
//! overwritten yet (see `EventLog::export`), and `events/<offset>.events`
//! for each event-log segment. A file name in the data directory is the
//! section's name.
//!
//! Why not tar (or zip): tar checksums its headers only, so a changed byte
//! of a file passes, and an archive cut at a block boundary reads as a
//! shorter whole one; both would need a checksum and a version of our own
//! around them anyway. Lengths up front also let a restore check every
//! length and the CRC in one streaming pass before it writes anything,
//! and the daemon knows the archive's size before it sends a byte.

use std::fs::File;
use std::io::{self, Read, Seek, Write};

use serde::{Deserialize, Serialize};

use super::Error;

/// The format's name; the header line is the name, `-v`, the version.
pub const FORMAT: &str = "pushd-backup";
/// The version this pushd writes and reads.
pub const VERSION: u32 = 1;

/// The section naming the journal position the archive is taken at.
pub const MANIFEST: &str = "manifest";
/// The section holding the store's portable export.
pub const STORE: &str = "store";
/// The name of an event-log segment's section is this, then its file name.
pub const EVENTS_PREFIX: &str = "events/";

/// Longest section name, bytes.
const MAX_NAME: usize = 255;
/// Longest header line, bytes.
const MAX_HEADER: usize = 64;

/// The header line this pushd writes.
fn header() -> String {
    format!("{FORMAT}-v{VERSION}\n")
}

/// What the `manifest` section says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The journal position the archive covers (a cluster's: 0, each
    /// partition's is in `cluster`).
    pub position: u64,
    /// When it was taken, Unix seconds.
    pub taken_at: i64,
    /// The pushd version that took it.
    pub pushd_version: String,
    /// A cluster's archive: its partitions. Absent from a single node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterManifest>,
}

impl Manifest {
    /// The manifest of an archive this pushd takes now, at `position`.
    pub fn now(position: u64, cluster: Option<ClusterManifest>) -> Manifest {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        Manifest {
            position,
            taken_at: since.map_or(0, |d| d.as_secs() as i64),
            pushd_version: env!("CARGO_PKG_VERSION").to_string(),
            cluster,
        }
    }
}

/// What a cluster's archive holds besides the sections every archive has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterManifest {
    /// How many partitions the cluster has; the archive holds a
    /// [`partition_section`] for each.
    pub partitions: u16,
    /// The journal position each partition's store covers, by partition.
    pub positions: std::collections::BTreeMap<u16, u64>,
}

/// The name of partition `partition`'s store section in a cluster's
/// archive.
pub fn partition_section(partition: u16) -> String {
    format!("partitions/{partition}.store")
}

/// The section of a cluster's archive holding its message templates.
pub const TEMPLATES: &str = "templates.json";

/// Where a section's bytes come from.
enum Body {
    /// Held in memory.
    Bytes(Vec<u8>),
    /// The first `len` bytes of an open file.
    File(File),
}

/// One section to write.
pub struct Section {
    name: String,
    len: u64,
    body: Body,
}

impl Section {
    /// A section of bytes in memory.
    pub fn bytes(name: impl Into<String>, bytes: Vec<u8>) -> Section {
        Section {
            name: name.into(),
            len: bytes.len() as u64,
            body: Body::Bytes(bytes),
        }
    }

    /// A section of the first `len` bytes of `file`, read from its start
    /// when written.
    pub fn file(name: impl Into<String>, file: File, len: u64) -> Section {
        Section {
            name: name.into(),
            len,
            body: Body::File(file),
        }
    }
}

/// The bytes the archive of `sections` takes.
pub fn size(sections: &[Section]) -> u64 {
    let framing: u64 = sections.iter().map(|s| 2 + s.name.len() as u64 + 8).sum();
    let contents: u64 = sections.iter().map(|s| s.len).sum();
    header().len() as u64 + framing + contents + 2 + 4
}

/// A writer that keeps the CRC-32 of what passes through it.
struct Summed<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the archive of `sections` to `out`, calling `progress` with each
/// section's name once it is written.
pub fn write(
    sections: Vec<Section>,
    out: impl Write,
    progress: &mut dyn FnMut(&str),
) -> io::Result<()> {
    let mut sum = Summed {
        inner: out,
        crc: crc32fast::Hasher::new(),
    };
    sum.write_all(header().as_bytes())?;
    for section in sections {
        let name = section.name.as_bytes();
        assert!(
            !name.is_empty() && name.len() <= MAX_NAME,
            "a section name of 1 to {MAX_NAME} bytes"
        );
        sum.write_all(&(name.len() as u16).to_be_bytes())?;
        sum.write_all(name)?;
        sum.write_all(&section.len.to_be_bytes())?;
        match section.body {
            Body::Bytes(bytes) => sum.write_all(&bytes)?,
            Body::File(mut file) => {
                file.rewind()?;
                let copied = io::copy(&mut (&mut file).take(section.len), &mut sum)?;
                if copied != section.len {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "{} shrank to {copied} bytes while it was backed up ({} expected)",
                            section.name, section.len
                        ),
                    ));
                }
            }
        }
        progress(&section.name);
    }
    sum.write_all(&0u16.to_be_bytes())?;
    let crc = sum.crc.clone().finalize();
    sum.inner.write_all(&crc.to_be_bytes())?;
    sum.inner.flush()
}

/// A section found in a checked archive: where its bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Where its bytes start in the archive.
    pub offset: u64,
    /// Its length, bytes.
    pub len: u64,
}

/// Reads an archive of `total` bytes from `input` and checks it whole:
/// the header and its version, every length against what is left, the end
/// mark, the CRC, nothing after it. Answers its sections, to be read again
/// from their offsets. Reads in one pass, holding one section name at a
/// time.
pub fn verify(input: &mut impl Read, total: u64) -> Result<Vec<Entry>, Error> {
    let mut at = Reading {
        input: Summed {
            inner: io::sink(),
            crc: crc32fast::Hasher::new(),
        },
        source: input,
        at: 0,
        total,
    };
    at.header()?;
    let mut entries = Vec::new();
    loop {
        let name_len = u16::from_be_bytes(at.exact("the next section or the end mark")?);
        if name_len == 0 {
            break;
        }
        let name = at.name(usize::from(name_len))?;
        let len = u64::from_be_bytes(at.exact(&format!("the length of section {name:?}"))?);
        let left = total - at.at;
        if len > left {
            return Err(Error::Damaged(format!(
                "cut short: section {name:?} says it holds {len} bytes, and {left} are left"
            )));
        }
        let offset = at.at;
        at.skip(len, &name)?;
        entries.push(Entry { name, offset, len });
    }
    let computed = at.input.crc.clone().finalize();
    let recorded = u32::from_be_bytes(at.exact("the checksum after the end mark")?);
    if computed != recorded {
        return Err(Error::Damaged(format!(
            "its checksum does not match (CRC-32 {computed:08x} of its bytes, {recorded:08x} \
             recorded): a byte changed"
        )));
    }
    if at.at < total {
        return Err(Error::Damaged(format!(
            "{} bytes follow its end",
            total - at.at
        )));
    }
    Ok(entries)
}

/// An archive being checked: the bytes read so far go through the CRC.
struct Reading<'a, R> {
    input: Summed<io::Sink>,
    source: &'a mut R,
    at: u64,
    total: u64,
}

impl<R: Read> Reading<'_, R> {
    /// The header line, with a version this pushd reads.
    fn header(&mut self) -> Result<(), Error> {
        let mut line = Vec::new();
        while line.last() != Some(&b'\n') {
            if line.len() == MAX_HEADER || self.at == self.total {
                return Err(Error::NotABackup(format!(
                    "it does not start with the line {:?}",
                    header().trim_end()
                )));
            }
            line.extend(self.exact::<1>("the header")?);
        }
        let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
        let prefix = format!("{FORMAT}-v");
        let Some(version) = line.strip_prefix(&prefix) else {
            return Err(Error::NotABackup(format!(
                "it starts with {line:?}, not {:?}",
                header().trim_end()
            )));
        };
        match version.parse::<u32>() {
            Ok(VERSION) => Ok(()),
            Ok(v) if v > VERSION => Err(Error::Version {
                found: line,
                supported: header().trim_end().to_string(),
            }),
            _ => Err(Error::Damaged(format!(
                "its header {line:?} names no version this pushd knows"
            ))),
        }
    }

    /// The next `N` bytes; `what` names them if the archive ends first.
    fn exact<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Error> {
        let mut buf = [0u8; N];
        if self.total - self.at < N as u64 {
            return Err(Error::Damaged(format!(
                "cut short after {} bytes, where {what} should be",
                self.total
            )));
        }
        self.source.read_exact(&mut buf).map_err(read_error)?;
        self.input.write_all(&buf).map_err(read_error)?;
        self.at += N as u64;
        Ok(buf)
    }

    /// A section name of `len` bytes.
    fn name(&mut self, len: usize) -> Result<String, Error> {
        if len > MAX_NAME {
            return Err(Error::Damaged(format!(
                "a section name of {len} bytes (at most {MAX_NAME})"
            )));
        }
        let mut name = Vec::with_capacity(len);
        for _ in 0..len {
            name.extend(self.exact::<1>("a section name")?);
        }
        String::from_utf8(name).map_err(|_| Error::Damaged("a section name is not UTF-8".into()))
    }

    /// Reads `len` bytes (known to be there) of section `name` into the CRC.
    fn skip(&mut self, len: u64, name: &str) -> Result<(), Error> {
        let copied =
            io::copy(&mut (&mut *self.source).take(len), &mut self.input).map_err(read_error)?;
        if copied != len {
            return Err(Error::Damaged(format!(
                "cut short in section {name:?} ({copied} of its {len} bytes)"
            )));
        }
        self.at += len;
        Ok(())
    }
}

/// A read that failed while checking: the file changed under us or the
/// disk failed.
fn read_error(e: io::Error) -> Error {
    Error::Damaged(format!("it could not be read whole: {e}"))
}

#[cfg(test)]
mod tests;
