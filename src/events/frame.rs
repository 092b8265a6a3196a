//! The framing of one event in a segment file:
//!
//! ```text
//! | len: u32 | crc32: u32 | offset: u64 | seq: u64 | position: u64 | time_ms: i64 |
//! | status: u8 | flags: u8 | body: len bytes |
//! ```
//!
//! All little-endian. The checksum covers everything after it, so a torn
//! write and a flipped bit are caught. `offset` is the frame's own place in
//! the log (a cursor is one: a cursor into the middle of a frame does not
//! match it), `seq` numbers events from 1, `position` is the journal
//! record the event came from, and the flag [`LAST_OF_RECORD`] marks the
//! record's last event, so a record is kept whole or not at all. The body
//! is the event's JSON, exactly as a webhook posts it.
//!
//! Like the journal's framing (`src/journal/frame.rs`), which frames
//! postcard entries and is not shared so the two formats can change apart.

use pushd_actors::ports::Position;

/// Bytes before the body.
pub const HEADER: usize = 42;
/// The largest body an event may have; a longer length field is corrupt.
pub const MAX_BODY: usize = 1 << 20;
/// Flag: the last event of its journal record.
pub const LAST_OF_RECORD: u8 = 1;

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

impl Frame<'_> {
    /// The bytes it takes.
    pub fn framed_len(&self) -> usize {
        HEADER + self.body.len()
    }

    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out.extend_from_slice(&[self.status, self.flags]);
        out.extend_from_slice(self.body);
        let crc = crc32fast::hash(&out[start + 8..]);
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// What lies at the start of a buffer.
#[derive(Debug)]
pub enum Read<'a> {
    /// An intact frame.
    Frame(Frame<'a>),
    /// Nothing: the end of the data.
    End,
    /// The buffer ends inside a frame: a torn tail, or a partial read.
    Short,
    /// A corrupt frame.
    Bad(&'static str),
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the frame at the start of `buf`.
pub fn read(buf: &[u8]) -> Read<'_> {
    if buf.is_empty() {
        return Read::End;
    }
    if buf.len() < HEADER {
        return Read::Short;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_BODY {
        return Read::Bad("event length out of range");
    }
    let Some(covered) = buf.get(8..HEADER + len) else {
        return Read::Short;
    };
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if crc32fast::hash(covered) != crc {
        return Read::Bad("event checksum mismatch");
    }
    Read::Frame(Frame {
        offset: u64_at(buf, 8),
        seq: u64_at(buf, 16),
        position: u64_at(buf, 24),
        time_ms: u64_at(buf, 32) as i64,
        status: buf[40],
        flags: buf[41],
        body: &buf[HEADER..HEADER + len],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        frame.encode(&mut buf);
        assert_eq!(buf.len(), frame.framed_len());
        match read(&buf) {
            Read::Frame(f) => assert_eq!(f, frame),
            other => panic!("{other:?}"),
        }
        for cut in 1..buf.len() {
            assert!(matches!(read(&buf[..cut]), Read::Short), "cut at {cut}");
        }
        for flip in 0..buf.len() {
            let mut bad = buf.clone();
            bad[flip] ^= 0x10;
            assert!(
                !matches!(read(&bad), Read::Frame(f) if f == frame),
                "flip at {flip}"
            );
        }
    }
}
