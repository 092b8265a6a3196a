//! One journal record, framed as every segment record is (see
//! [`crate::segfile::frame`]):
//!
//! ```text
//! | len: u32 LE | crc32: u32 LE | position: u64 LE | payload: len bytes |
//! ```
//!
//! The prefix is the record's position; the payload is its entries in
//! postcard, a compact binary serde format, so it is never empty. Every
//! format frames records alike; the format names the version of the
//! entries ([`records_of`]: formats 1 and 2 hold version-1 records, format 3
//! version-2 ones, and so on up to format 6, version-5 ones). A [`Frame`]
//! carries the format it was read as, and [`Frame::entries`] decodes by it.
//!
//! The cluster journal frames its records so too, inside NATS messages
//! that have no segment header (`src/cluster/journal.rs`).

use pushd_actors::ports::{Change, Entry, Position};

use super::FORMAT;
use crate::records::{self, RecordError};
use crate::segfile::{self, Framing};

/// The largest payload a record may have; a longer length field is corrupt.
pub const MAX_PAYLOAD: usize = 64 << 20;
/// A record's framing: its prefix is its position.
pub const FRAMING: Framing = Framing {
    prefix: 8,
    max_body: MAX_PAYLOAD,
};

/// Appends the frame of the record at `position` holding `changes` to
/// `out`, in the current format. On an error, `out` is left as it was.
pub fn encode(out: &mut Vec<u8>, position: Position, changes: &[Change]) -> Result<(), String> {
    let start = FRAMING.begin(out);
    FRAMING
        .prefix_mut(out, start)
        .copy_from_slice(&position.to_le_bytes());
    if let Err(e) = records::encode_entries(changes, out) {
        out.truncate(start);
        return Err(format!("cannot encode a journal record: {e}"));
    }
    FRAMING
        .finish(out, start)
        .map_err(|e| format!("journal record {position}: {e}"))
}

/// One record read back.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// The format of the segment (or message) it was read from.
    pub version: u32,
    /// Its position.
    pub position: Position,
    /// Its encoded entries.
    pub payload: &'a [u8],
}

impl<'a> Frame<'a> {
    /// The record an intact segment frame holds.
    pub fn of(frame: segfile::Frame<'a>) -> Frame<'a> {
        Frame {
            version: frame.version,
            position: u64::from_le_bytes(frame.prefix.try_into().expect("8 bytes")),
            payload: frame.body,
        }
    }

    /// Decodes the entries, as the record's segment format lays them out.
    pub fn entries(&self) -> Result<Vec<Entry>, RecordError> {
        let records = records_of(self.version).ok_or(RecordError::Newer {
            what: "a journal segment format",
            found: self.version,
            known: FORMAT,
        })?;
        records::decode_entries(records, self.payload)
    }
}

/// The version of the records (see [`crate::records`]) a segment of
/// `format` holds: formats 1 (no header) and 2 hold version-1 records,
/// format 3 version-2 ones (version 1's and the erasure of a customer),
/// format 4 version-3 ones (the failure reasons `template_limit_exceeded` and `internal_error`).
pub fn records_of(format: u32) -> Option<u32> {
    match format {
        1 | 2 => Some(1),
        3 => Some(2),
        4 => Some(3),
        5 => Some(4),
        6 => Some(5),
        _ => None,
    }
}

/// Reads the record at the start of `buf`, which holds records of format
/// `version`.
pub fn read(buf: &[u8], version: u32) -> segfile::Read<Frame<'_>> {
    FRAMING.read(buf, version).map(Frame::of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segfile::Read;
    use pushd_actors::model::MessageSpec;

    fn change(id: &str) -> Change {
        Change::of(Entry::Message(Box::new(MessageSpec {
            id: id.into(),
            name: "n".into(),
            campaign_id: None,
            title: "t".into(),
            body: "b".into(),
            deep_link: None,
            audience: pushd_actors::model::Audience::AllDevices,
            collapse_id: None,
            conversion: None,
            app: pushd_actors::model::DEFAULT_APP.into(),
            push: Default::default(),
            rate_per_minute: None,
            lane: Default::default(),
            created_at: 0,
        })))
    }

    #[test]
    fn round_trip_and_every_cut_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, &[change("a"), change("b")]).unwrap();
        let whole = buf.len();
        encode(&mut buf, 8, &[change("c")]).unwrap();
        let Read::Frame(frame, used) = read(&buf, FORMAT) else {
            panic!("intact record")
        };
        assert_eq!((frame.position, frame.version, used), (7, FORMAT, whole));
        let entries = frame.entries().unwrap();
        assert!(matches!(&entries[1], Entry::Message(m) if m.id == "b"));
        for cut in 1..whole {
            assert!(
                !matches!(read(&buf[..cut], FORMAT), Read::Frame(..)),
                "cut at {cut}"
            );
        }
        let mut filled = buf[..whole].to_vec();
        filled.resize(whole + 4096, 0);
        let Read::Frame(_, used) = read(&filled, FORMAT) else {
            panic!("intact record before the fill")
        };
        assert!(matches!(read(&filled[used..], FORMAT), Read::End));
        filled[whole + 100] = 1;
        assert!(
            matches!(read(&filled[used..], FORMAT), Read::Bad(_)),
            "data after zeros"
        );
        for flip in 0..whole {
            let mut bad = buf[..whole].to_vec();
            bad[flip] ^= 0x20;
            assert!(
                !matches!(read(&bad, FORMAT), Read::Frame(..)),
                "flip at {flip}"
            );
        }
    }

    #[test]
    fn a_record_of_a_format_this_pushd_does_not_know_is_not_decoded() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, &[change("a")]).unwrap();
        let Read::Frame(frame, _) = read(&buf, FORMAT + 1) else {
            panic!("intact record")
        };
        let refused = frame.entries().unwrap_err().to_string();
        assert!(
            refused.contains(&format!("version {}", FORMAT + 1)),
            "{refused}"
        );
        let Read::Frame(legacy, _) = read(&buf, 1) else {
            panic!("intact record")
        };
        assert_eq!(legacy.entries().unwrap().len(), 1);
    }

    #[test]
    fn each_segment_format_names_its_records_version() {
        assert_eq!(records_of(1), Some(1));
        assert_eq!(records_of(2), Some(1));
        assert_eq!(records_of(FORMAT), Some(crate::records::JOURNAL_VERSION));
        assert_eq!(records_of(FORMAT + 1), None);
        let mut buf = Vec::new();
        let erased = Change::of(Entry::CustomerErased("c".into()));
        encode(&mut buf, 1, &[erased]).unwrap();
        let Read::Frame(frame, _) = read(&buf, FORMAT) else {
            panic!("intact record")
        };
        assert!(matches!(&frame.entries().unwrap()[..], [Entry::CustomerErased(id)] if id == "c"));
        let Read::Frame(old, _) = read(&buf, 2) else {
            panic!("intact record")
        };
        assert!(
            old.entries().is_err(),
            "a format-2 segment holds no erasure"
        );
    }
}
