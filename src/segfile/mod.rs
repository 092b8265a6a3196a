//! Segmented files: what the journal (`src/journal/`) and the delivery event
//! log (`src/events/`) have in common on disk.
//!
//! Both keep their data in a directory of *segment files*, each named by a
//! number (`<20 digits><suffix>`, see [`dir`]) and laid out as:
//!
//! ```text
//! | header (16 bytes) | frame | frame | ... | frame | zeros to the end of the file |
//! ```
//!
//! - The **header** ([`header`]) says what the file is (a magic) and the
//!   format it is written in. Files written before formats were numbered
//!   have no header: they are format 1.
//! - A **frame** ([`frame`]) is one record: a length, a CRC-32, a fixed-size
//!   prefix the owner lays out (a journal position; an event's offset,
//!   number, time, ...) and a body of that length. Formats 1 and 2 frame
//!   records alike; a frame read back carries its segment's format, so the
//!   code decoding a body can tell the formats apart once they differ.
//! - **Zeros** follow the data ([`append`]): a segment is filled with zeros
//!   ahead of its data and writes overwrite them, so an `fdatasync` syncs
//!   data alone instead of a new file size too. Zeros to the end of the
//!   file mark where its data ends; zeros followed by data are a tear.
//! - On open, the **torn or corrupt tail** is found and cut ([`scan`]): a
//!   crash in the middle of a write, a flipped bit.
//!
//! What differs between the two is a [`Kind`]: the name, file suffix,
//! magic, current format and framing of one kind of segment file.

pub mod append;
pub mod dir;
pub mod frame;
pub mod header;
pub mod scan;

pub use append::Appender;
pub use frame::{Frame, FrameError, Framing, Read};
pub use header::{HEADER_LEN, Layout};
pub use scan::{Contents, Prefix, Step};

/// One kind of segment file.
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    /// What the files hold, as messages name it: `journal`, `event log`.
    pub name: &'static str,
    /// The file name suffix: `.journal`.
    pub suffix: &'static str,
    /// The first 8 bytes of a file with a header.
    pub magic: [u8; 8],
    /// The format new files are written in; files of formats 1 to this one
    /// are read, newer ones refused.
    pub format: u32,
    /// How its records are framed.
    pub framing: Framing,
}
