//! One event, framed as every segment record is (see
//! [`crate::segfile::frame`]):
//!
//! ```text
//! | len: u32 | crc32: u32 | offset: u64 | seq: u64 | position: u64 | time_ms: i64 |
//! | status: u8 | flags: u8 | body: len bytes |
//! ```
//!
//! All little-endian; the 34 bytes from `offset` to `flags` are the prefix.
//! `offset` is the frame's own place in the log (a cursor is one: a cursor
//! into the middle of a frame does not match it), `seq` numbers events from
//! 1, `position` is the journal record the event came from, and the flag
//! [`LAST_OF_RECORD`] marks the record's last event, so a record is kept
//! whole or not at all. The body is the event's JSON, exactly as a webhook
//! posts it. Formats 1 and 2 frame events alike.

use pushd_actors::ports::Position;

use crate::segfile::{self, FrameError, Framing};

/// The prefix's bytes.
const PREFIX: usize = 34;
/// Bytes before the body.
pub const HEADER: usize = 8 + PREFIX;
/// The largest body an event may have; a longer length field is corrupt.
pub const MAX_BODY: usize = 1 << 20;
/// Flag: the last event of its journal record.
pub const LAST_OF_RECORD: u8 = 1;
/// An event's framing.
pub const FRAMING: Framing = Framing {
    prefix: PREFIX,
    max_body: MAX_BODY,
};

/// One event as framed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Its place in the log.
    pub offset: u64,
    /// Its number, from 1.
    pub seq: u64,
    /// The journal record it came from.
    pub position: Position,
    /// When it was recorded, Unix ms.
    pub time_ms: i64,
    /// The index of its status in `EVENT_STATUSES`.
    pub status: u8,
    /// [`LAST_OF_RECORD`] or 0.
    pub flags: u8,
    /// Its JSON.
    pub body: &'a [u8],
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl<'a> Frame<'a> {
    /// The bytes it takes.
    pub fn framed_len(&self) -> usize {
        HEADER + self.body.len()
    }

    /// Appends the frame to `out`. An empty body, or one over
    /// [`MAX_BODY`], is refused.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let start = FRAMING.begin(out);
        let prefix = FRAMING.prefix_mut(out, start);
        prefix[0..8].copy_from_slice(&self.offset.to_le_bytes());
        prefix[8..16].copy_from_slice(&self.seq.to_le_bytes());
        prefix[16..24].copy_from_slice(&self.position.to_le_bytes());
        prefix[24..32].copy_from_slice(&self.time_ms.to_le_bytes());
        prefix[32..34].copy_from_slice(&[self.status, self.flags]);
        out.extend_from_slice(self.body);
        FRAMING.finish(out, start)
    }

    /// The event an intact segment frame holds (formats 1 and 2 lay it
    /// out alike).
    pub fn of(frame: segfile::Frame<'a>) -> Frame<'a> {
        let p = frame.prefix;
        Frame {
            offset: u64_at(p, 0),
            seq: u64_at(p, 8),
            position: u64_at(p, 16),
            time_ms: u64_at(p, 24) as i64,
            status: p[32],
            flags: p[33],
            body: frame.body,
        }
    }
}

/// Reads the event at the start of `buf`, from a segment of format
/// `version`.
pub fn read(buf: &[u8], version: u32) -> segfile::Read<Frame<'_>> {
    FRAMING.read(buf, version).map(Frame::of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segfile::Read;

    #[test]
    fn round_trip_and_every_cut_or_flip_is_caught() {
        let frame = Frame {
            offset: 4096,
            seq: 7,
            position: 42,
            time_ms: 1_764_100_000_123,
            status: 3,
            flags: LAST_OF_RECORD,
            body: br#"{"event":"converted"}"#,
        };
        let mut buf = Vec::new();
        frame.encode(&mut buf).unwrap();
        assert_eq!(buf.len(), frame.framed_len());
        match read(&buf, 1) {
            Read::Frame(f, used) => assert_eq!((f, used), (frame.clone(), buf.len())),
            other => panic!("{other:?}"),
        }
        for cut in 1..buf.len() {
            assert!(matches!(read(&buf[..cut], 1), Read::Short), "cut at {cut}");
        }
        for flip in 0..buf.len() {
            let mut bad = buf.clone();
            bad[flip] ^= 0x10;
            assert!(
                !matches!(read(&bad, 1), Read::Frame(f, _) if f == frame),
                "flip at {flip}"
            );
        }
    }
}
