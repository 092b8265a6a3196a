//! The framing of one journal record in a segment file:
//!
//! ```text
//! | len: u32 LE | crc32: u32 LE | position: u64 LE | payload: len bytes |
//! ```
//!
//! The checksum covers the position and the payload, so a torn write (a
//! short tail) and a flipped bit are both caught. The payload is the
//! record's entries in postcard, a compact binary serde format, so it is
//! never empty: a zero length field is not a record. Segments are
//! zero-filled ahead of their data (see the writer), so zeros to the end
//! of the file mark where the data ends.

use pushd_actors::ports::{Change, Entry, Position};

use crate::records::{self, RecordError};

/// Bytes before the payload.
pub const HEADER: usize = 16;
/// The largest payload a record may have; a longer length field is corrupt.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// Appends the frame of the record at `position` holding `changes` to `out`.
pub fn encode(out: &mut Vec<u8>, position: Position, changes: &[Change]) -> Result<(), String> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    match records::encode_entries(changes, std::mem::take(out)) {
        Ok(buf) => *out = buf,
        Err(e) => return Err(format!("cannot encode a journal record: {e}")),
    }
    let len = out.len() - start - HEADER;
    if len > MAX_PAYLOAD {
        out.truncate(start);
        return Err(format!("journal record of {len} bytes is too large"));
    }
    out[start + 8..start + HEADER].copy_from_slice(&position.to_le_bytes());
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// One record read back.
pub struct Frame<'a> {
    /// Its position.
    pub position: Position,
    /// Its encoded entries.
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Decodes the entries of a record of `version`.
    pub fn entries(&self, version: u32) -> Result<Vec<Entry>, RecordError> {
        records::decode_entries(version, self.payload)
    }
}

/// What lies at the start of `buf`.
pub enum Read<'a> {
    /// An intact record, and the bytes it takes.
    Record(Frame<'a>, usize),
    /// Nothing, or only the zeros a segment is filled with ahead of its
    /// data: the end of the data.
    End,
    /// A torn or corrupt record: everything from here on is cut.
    Bad(&'static str),
}

/// Reads the record at the start of `buf`.
pub fn read(buf: &[u8]) -> Read<'_> {
    if buf.iter().take(4).all(|&b| b == 0) {
        // A torn group may reach the disk out of order: zeros followed by
        // data are a tear, not the end.
        return match buf.iter().all(|&b| b == 0) {
            true => Read::End,
            false => Read::Bad("zeros where a record should start"),
        };
    }
    if buf.len() < HEADER {
        return Read::Bad("torn record header");
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD {
        return Read::Bad("record length out of range");
    }
    let Some(body) = buf.get(8..HEADER + len) else {
        return Read::Bad("torn record");
    };
    if crc32fast::hash(body) != crc {
        return Read::Bad("record checksum mismatch");
    }
    let position = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
    let frame = Frame {
        position,
        payload: &body[8..],
    };
    Read::Record(frame, HEADER + len)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            created_at: 0,
        })))
    }

    #[test]
    fn round_trip_and_every_cut_is_detected() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, &[change("a"), change("b")]).unwrap();
        let whole = buf.len();
        encode(&mut buf, 8, &[change("c")]).unwrap();
        let Read::Record(frame, used) = read(&buf) else {
            panic!("intact record")
        };
        assert_eq!((frame.position, used), (7, whole));
        let entries = frame.entries(records::JOURNAL_VERSION).unwrap();
        assert!(matches!(&entries[1], Entry::Message(m) if m.id == "b"));
        for cut in 1..whole {
            assert!(matches!(read(&buf[..cut]), Read::Bad(_)), "cut at {cut}");
        }
        let mut filled = buf[..whole].to_vec();
        filled.resize(whole + 4096, 0);
        let Read::Record(_, used) = read(&filled) else {
            panic!("intact record before the fill")
        };
        assert!(matches!(read(&filled[used..]), Read::End));
        filled[whole + 100] = 1;
        assert!(
            matches!(read(&filled[used..]), Read::Bad(_)),
            "data after zeros"
        );
        for flip in 0..whole {
            let mut bad = buf[..whole].to_vec();
            bad[flip] ^= 0x20;
            assert!(matches!(read(&bad), Read::Bad(_)), "flip at {flip}");
        }
    }
}
