//! The framing of one record:
//!
//! ```text
//! | len: u32 LE | crc32: u32 LE | prefix: fixed size | body: len bytes |
//! ```
//!
//! `len` counts the body alone; the checksum covers the prefix and the
//! body, so a torn write (a short tail) and a flipped bit are both caught.
//! The prefix is the owner's fixed-size fields (the journal's is a position,
//! 8 bytes; the event log's an offset, a number, a position, a time, a
//! status and flags, 34 bytes). A body is never empty, so a zero length is
//! not a frame: it is the zero fill after the data (see [`Read::End`]).
//!
//! This is also how records are framed where there is no segment file (the
//! cluster journal's NATS messages).

/// The framing of one kind of record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    /// Bytes of the prefix.
    pub prefix: usize,
    /// The largest body a frame may have; a longer length is corrupt.
    pub max_body: usize,
}

/// A frame that cannot be encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// An empty body would read as the zero fill.
    #[error("an empty record cannot be framed")]
    Empty,
    /// Past [`Framing::max_body`].
    #[error("a record of {0} bytes is too large")]
    TooLarge(usize),
}

/// One intact frame read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The format of the segment (or message) it was read from: what its
    /// prefix and body are to be decoded as.
    pub version: u32,
    /// Its prefix.
    pub prefix: &'a [u8],
    /// Its body.
    pub body: &'a [u8],
}

/// What lies at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<F> {
    /// An intact frame, and the bytes it takes.
    Frame(F, usize),
    /// Nothing, or only zeros: the end of the data.
    End,
    /// The buffer ends inside a frame: a torn tail, or a partial read.
    Short,
    /// A corrupt frame, or zeros followed by data (a torn write: the parts
    /// of a write may reach the disk out of order).
    Bad(&'static str),
}

impl<F> Read<F> {
    /// The same outcome with the frame decoded by `f`.
    pub fn map<G>(self, f: impl FnOnce(F) -> G) -> Read<G> {
        match self {
            Read::Frame(frame, used) => Read::Frame(f(frame), used),
            Read::End => Read::End,
            Read::Short => Read::Short,
            Read::Bad(why) => Read::Bad(why),
        }
    }
}

impl Framing {
    /// Bytes before the body: length, checksum, prefix.
    pub const fn head(&self) -> usize {
        8 + self.prefix
    }

    /// Starts a frame at the end of `out`: its length, checksum and prefix
    /// are zeros to be filled in. Answers where it starts; write the prefix
    /// through [`Framing::prefix_mut`], append the body, then
    /// [`Framing::finish`].
    pub fn begin(&self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.resize(start + self.head(), 0);
        start
    }

    /// The prefix of the frame begun at `start`.
    pub fn prefix_mut<'a>(&self, out: &'a mut [u8], start: usize) -> &'a mut [u8] {
        &mut out[start + 8..start + self.head()]
    }

    /// Completes the frame begun at `start`, whose body is everything after
    /// its prefix: writes its length and checksum. An empty or too large
    /// body is refused, and the frame removed from `out`.
    pub fn finish(&self, out: &mut Vec<u8>, start: usize) -> Result<(), FrameError> {
        let len = out.len() - start - self.head();
        let refused = match len {
            0 => Some(FrameError::Empty),
            n if n > self.max_body => Some(FrameError::TooLarge(n)),
            _ => None,
        };
        if let Some(e) = refused {
            out.truncate(start);
            return Err(e);
        }
        let crc = crc32fast::hash(&out[start + 8..]);
        out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// Reads the frame at the start of `buf`, which comes from a segment
    /// (or message) of format `version`.
    pub fn read<'a>(&self, buf: &'a [u8], version: u32) -> Read<Frame<'a>> {
        if buf.iter().take(4).all(|&b| b == 0) {
            return match buf.iter().all(|&b| b == 0) {
                true => Read::End,
                false => Read::Bad("zeros where a frame should start"),
            };
        }
        if buf.len() < self.head() {
            return Read::Short;
        }
        let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        if len > self.max_body {
            return Read::Bad("frame length out of range");
        }
        let Some(covered) = buf.get(8..self.head() + len) else {
            return Read::Short;
        };
        let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
        if crc32fast::hash(covered) != crc {
            return Read::Bad("frame checksum mismatch");
        }
        let (prefix, body) = covered.split_at(self.prefix);
        Read::Frame(
            Frame {
                version,
                prefix,
                body,
            },
            self.head() + len,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal's layout (a position) and the event log's (offset, seq,
    /// position, time, status, flags).
    const LAYOUTS: [Framing; 2] = [
        Framing {
            prefix: 8,
            max_body: 64 << 20,
        },
        Framing {
            prefix: 34,
            max_body: 1 << 20,
        },
    ];

    fn framed(framing: &Framing, fill: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0xee; 3];
        let start = framing.begin(&mut out);
        framing.prefix_mut(&mut out, start).fill(fill);
        out.extend_from_slice(body);
        framing.finish(&mut out, start).unwrap();
        out.split_off(3)
    }

    #[test]
    fn both_layouts_round_trip_and_every_cut_or_flip_is_caught() {
        for framing in &LAYOUTS {
            let body = br#"{"event":"converted"}"#;
            let buf = framed(framing, 0x5a, body);
            assert_eq!(buf.len(), framing.head() + body.len());
            assert_eq!(&buf[..4], &(body.len() as u32).to_le_bytes());
            let Read::Frame(f, used) = framing.read(&buf, 2) else {
                panic!("an intact frame")
            };
            assert_eq!(used, buf.len());
            assert_eq!(f.version, 2, "the segment's format is carried");
            assert_eq!(f.prefix, &vec![0x5a; framing.prefix][..]);
            assert_eq!(f.body, body);
            for cut in 1..buf.len() {
                assert_eq!(framing.read(&buf[..cut], 2), Read::Short, "cut at {cut}");
            }
            for flip in 0..buf.len() {
                for bit in 0..8 {
                    let mut bad = buf.clone();
                    bad[flip] ^= 1 << bit;
                    assert!(
                        !matches!(framing.read(&bad, 2), Read::Frame(..)),
                        "flip of bit {bit} at {flip}"
                    );
                }
            }
        }
    }

    #[test]
    fn zeros_end_the_data_and_zeros_before_data_are_a_tear() {
        let framing = LAYOUTS[0];
        let mut buf = framed(&framing, 1, b"record");
        let whole = buf.len();
        buf.resize(whole + 4096, 0);
        let Read::Frame(_, used) = framing.read(&buf, 1) else {
            panic!("the record before the zeros")
        };
        assert_eq!(used, whole);
        assert_eq!(framing.read(&buf[used..], 1), Read::End);
        assert_eq!(framing.read(&[], 1), Read::End);
        buf[whole + 100] = 1;
        assert!(matches!(framing.read(&buf[used..], 1), Read::Bad(_)));
    }

    #[test]
    fn empty_and_too_large_bodies_are_refused_and_leave_nothing() {
        let framing = Framing {
            prefix: 8,
            max_body: 16,
        };
        let mut out = b"kept".to_vec();
        let start = framing.begin(&mut out);
        assert_eq!(framing.finish(&mut out, start), Err(FrameError::Empty));
        let start = framing.begin(&mut out);
        out.extend_from_slice(&[1; 17]);
        assert_eq!(
            framing.finish(&mut out, start),
            Err(FrameError::TooLarge(17))
        );
        assert_eq!(out, b"kept");
    }
}
