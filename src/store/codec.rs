//! How values sit in sled: each a versioned record (see
//! [`crate::records`]), and the snapshot's format marker.

use crate::records::Stored;

use super::Error;

/// The meta key of the format marker.
pub const FORMAT_KEY: &str = "format";
/// The meta key of an upgrade in progress: the last key it rewrote.
pub const UPGRADE_KEY: &str = "upgrading";
/// The snapshot format this version writes: every value starts with its
/// record's version (format 3, before it, held version-1 records without
/// that byte); format 5 may hold deliveries of version 3, which format 4
/// did not; format 6 deliveries of version 4 and counters of version 2;
/// in format 7 a held delivery has only its record and status key (see
/// `keys`); format 8 may hold deliveries of version 5 and messages of
/// version 2, which carry a lane; format 9 lists `sent`, `delivered` and
/// `opened` deliveries under one status key (`keys::status_key`) and has
/// no customer index.
pub const FORMAT: u32 = 9;
/// The oldest format this version opens (and upgrades in place).
pub const OLDEST: u32 = 3;
/// The meta key saying the failure-reason counters count every delivery
/// the snapshot holds (they were counted from them once, on the first open
/// by a release that has them).
pub const REASONS_KEY: &str = "reasons_counted";
/// The meta key of the journal position the snapshot covers.
pub const COVERED_KEY: &str = "covered";
/// The meta key of the store's default identity verification
/// (`required` or `off`), recorded when it was first opened.
pub const IDENTITY_KEY: &str = "identity_verification";

/// The marker of snapshot format `format`.
pub fn marker(format: u32) -> Vec<u8> {
    match format {
        // Format 3 named its encoding too.
        3 => b"pushd-snapshot-v3 (postcard)".to_vec(),
        n => format!("pushd-snapshot-v{n}").into_bytes(),
    }
}

/// The format a marker names, if it is one.
pub fn format_of(marker: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(marker).ok()?;
    let rest = text.strip_prefix("pushd-snapshot-v")?;
    let digits = rest.split(' ').next()?;
    digits.parse().ok()
}

/// Encodes a value as its current record.
pub fn encode<T: Stored>(value: &T) -> Result<Vec<u8>, Error> {
    value.encode().map_err(Error::from)
}

/// Decodes a value from a record of any version this binary reads.
pub fn decode<T: Stored>(bytes: &[u8]) -> Result<T, Error> {
    T::decode(bytes).map_err(Error::from)
}
