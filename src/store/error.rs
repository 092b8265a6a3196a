//! The store's one error type.

use pushd_actors::ports::StoreError;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A delivery-log cursor this store did not hand out (HTTP 400).
    #[error("invalid cursor")]
    BadCursor,
    /// sled failed (I/O, corruption).
    #[error("sled: {0}")]
    Db(#[from] sled::Error),
    /// A stored value does not decode, or a value does not encode.
    #[error("codec: {0}")]
    Codec(#[from] serde_json::Error),
    /// The store was closed.
    #[error("store is closed")]
    Closed,
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        StoreError(e.to_string())
    }
}
