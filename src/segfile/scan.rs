//! Reading a segment file back: its frames in order, and at open the
//! intact prefix, after which a torn or corrupt tail is cut.
//!
//! The data of a segment ends where zeros run to the end of the file. A
//! crash in the middle of a write leaves a short frame there, or zeros
//! followed by data (the parts of a write may reach the disk out of order);
//! a flipped bit fails a checksum. Everything from the first such frame on
//! is cut, so it is never read as data and appends continue after the last
//! good frame. The owner judges each intact frame too ([`Step`]): the
//! journal stops at a position out of sequence; the event log keeps a
//! record's events whole or not at all.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;

use super::Kind;
use super::frame::{Frame, Framing, Read};
use super::header::Layout;

/// A segment file read whole.
pub struct Contents {
    layout: Layout,
    framing: Framing,
    bytes: Vec<u8>,
}

/// How the owner judges one intact frame, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// It ends a unit kept whole (a journal record, the events of one
    /// journal record): the data kept may end after it.
    Boundary,
    /// It is part of a unit a later frame ends: kept only with that one.
    Inside,
    /// It is not to be kept, and nothing after it: why.
    Stop(&'static str),
}

/// The data of a segment that is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The segment's layout.
    pub layout: Layout,
    /// Where the kept data ends in the file (0 for a torn header).
    pub end: u64,
    /// Bytes of data kept (the header not counted).
    pub data: u64,
    /// Why the rest (other than zeros) is cut, if anything is.
    pub cut: Option<&'static str>,
}

impl Contents {
    /// Reads the segment file of `kind` at `path`, refusing one of a newer
    /// format or not of `kind` (see [`Layout::of`]).
    pub fn read(kind: &Kind, path: &Path) -> io::Result<Contents> {
        Contents::of(kind, path, fs::read(path)?)
    }

    /// The segment file of `kind` at `path` whose first bytes are `bytes`
    /// (read through a handle opened earlier, say), refused as
    /// [`Contents::read`] refuses.
    pub fn of(kind: &Kind, path: &Path, bytes: Vec<u8>) -> io::Result<Contents> {
        Ok(Contents {
            layout: Layout::of(kind, path, &bytes)?,
            framing: kind.framing,
            bytes,
        })
    }

    /// Its layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Its data: the bytes after the header (none if the header is torn).
    fn data(&self) -> Option<&[u8]> {
        self.bytes.get(self.layout.start as usize..)
    }

    /// Its intact frames, in order, each carrying the segment's format: up
    /// to the end of the data, or the first torn or corrupt frame.
    pub fn frames(&self) -> impl Iterator<Item = Frame<'_>> {
        let mut rest = self.data().unwrap_or_default();
        std::iter::from_fn(move || match self.framing.read(rest, self.layout.version) {
            Read::Frame(f, used) => {
                rest = &rest[used..];
                Some(f)
            }
            _ => None,
        })
    }

    /// The longest prefix of the data that holds only intact frames, each
    /// accepted by `judge`, and ends on a [`Step::Boundary`]. Anything after
    /// it but zeros is cut (see [`cut`]).
    pub fn intact_prefix(&self, mut judge: impl FnMut(&Frame<'_>) -> Step) -> Prefix {
        let layout = self.layout;
        let Some(data) = self.data() else {
            return Prefix {
                layout,
                end: 0,
                data: 0,
                cut: Some("torn header"),
            };
        };
        let (mut at, mut kept) = (0, 0);
        let cut = loop {
            match self.framing.read(&data[at..], layout.version) {
                Read::End => break (kept < at).then_some("a record without its last frame"),
                Read::Short => break Some("torn frame"),
                Read::Bad(why) => break Some(why),
                Read::Frame(f, used) => match judge(&f) {
                    Step::Stop(why) => break Some(why),
                    Step::Inside => at += used,
                    Step::Boundary => {
                        at += used;
                        kept = at;
                    }
                },
            }
        };
        Prefix {
            layout,
            end: layout.start + kept as u64,
            data: kept as u64,
            cut,
        }
    }
}

/// Cuts the file at `path` to `len` bytes, durably.
pub fn cut(path: &Path, len: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    if file.metadata()?.len() != len {
        file.set_len(len)?;
        file.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segfile::header::{self, HEADER_LEN};

    const KIND: Kind = Kind {
        name: "event log",
        suffix: ".events",
        magic: *b"PUSHDEVT",
        format: 2,
        framing: Framing {
            prefix: 34,
            max_body: 1 << 20,
        },
    };

    /// A frame whose prefix starts with `unit` and whose body is `body`.
    fn frame(unit: u8, body: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let start = KIND.framing.begin(&mut out);
        KIND.framing.prefix_mut(&mut out, start)[0] = unit;
        out.extend_from_slice(body.as_bytes());
        KIND.framing.finish(&mut out, start).unwrap();
        out
    }

    /// Units are runs of frames of one number; a body `last` ends one.
    fn judge(f: &Frame<'_>) -> Step {
        match (f.prefix[0], f.body) {
            (9, _) => Step::Stop("unit 9 is refused"),
            (_, b"last") => Step::Boundary,
            _ => Step::Inside,
        }
    }

    fn prefix(bytes: &[u8]) -> Prefix {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.events");
        std::fs::write(&path, bytes).unwrap();
        Contents::read(&KIND, &path).unwrap().intact_prefix(judge)
    }

    #[test]
    fn the_prefix_ends_on_the_last_whole_unit_of_either_layout() {
        let units = [
            frame(1, "a"),
            frame(1, "last"),
            frame(2, "b"),
            frame(2, "last"),
        ]
        .concat();
        let half = frame(3, "c");
        for header in [&[][..], &header::encode(&KIND)] {
            let start = header.len() as u64;
            let whole = [header, &units, &[0; 300]].concat();
            let p = prefix(&whole);
            assert_eq!(p.layout.start, start);
            assert_eq!(
                (p.end, p.data, p.cut),
                (start + units.len() as u64, units.len() as u64, None)
            );
            let unfinished = [header, &units, &half].concat();
            assert_eq!(prefix(&unfinished).data, units.len() as u64);
            assert_eq!(
                prefix(&unfinished).cut,
                Some("a record without its last frame")
            );
            let refused = [header, &units, &frame(9, "last")].concat();
            assert_eq!(prefix(&refused).cut, Some("unit 9 is refused"));
            // Every cut into the last unit, and every flipped bit in it, is
            // cut back to the unit before.
            let at = units.len() - frame(2, "last").len() - frame(2, "b").len();
            for cut in at + 1..units.len() {
                let p = prefix(&[header, &units[..cut]].concat());
                assert_eq!(p.data, at as u64, "cut at {cut}");
                assert!(p.cut.is_some());
            }
            for flip in at..units.len() {
                let mut bad = [header, &units].concat();
                bad[header.len() + flip] ^= 0x08;
                let p = prefix(&bad);
                assert_eq!(
                    (p.data, p.cut.is_some()),
                    (at as u64, true),
                    "flip at {flip}"
                );
            }
            let torn = [header, &units, &[0; 64], &frame(3, "last")].concat();
            assert_eq!(prefix(&torn).cut, Some("zeros where a frame should start"));
        }
    }

    #[test]
    fn frames_carry_the_format_of_their_segment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.events");
        for (header, version) in [(&[][..], 1), (&header::encode(&KIND)[..], 2)] {
            std::fs::write(
                &path,
                [header, &frame(1, "a"), &frame(1, "last"), &[0; 9]].concat(),
            )
            .unwrap();
            let contents = Contents::read(&KIND, &path).unwrap();
            let read: Vec<(u32, &[u8])> = contents.frames().map(|f| (f.version, f.body)).collect();
            assert_eq!(read, [(version, &b"a"[..]), (version, &b"last"[..])]);
        }
    }

    #[test]
    fn a_torn_header_holds_nothing_and_cut_is_durable_and_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.events");
        std::fs::write(&path, &header::encode(&KIND)[..HEADER_LEN - 5]).unwrap();
        let p = Contents::read(&KIND, &path).unwrap().intact_prefix(judge);
        assert_eq!((p.end, p.data, p.cut), (0, 0, Some("torn header")));
        cut(&path, 0).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
