//! How values sit in sled: postcard, a compact binary serde format (about a
//! tenth of JSON's encoding cost), and the format marker that tells a
//! snapshot this version can read.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Error;

/// The meta key of the format marker.
pub const FORMAT_KEY: &str = "format";
/// The format this version writes and reads (v3: devices' opt-in, message
/// pacing, the opted-in counters and keyed send records).
pub const FORMAT: &[u8] = b"pushd-snapshot-v3 (postcard)";
/// The meta key of the journal position the snapshot covers.
pub const COVERED_KEY: &str = "covered";

/// Encodes a value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_stdvec(value).map_err(Error::from)
}

/// Decodes a value (trailing bytes are ignored, so a prefix of a record's
/// fields decodes on its own).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(Error::from)
}
