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
    /// A file of the snapshot could not be synced.
    #[error("snapshot files: {0}")]
    Io(#[from] std::io::Error),
    /// A stored value is not a record this version reads, or a value does
    /// not encode.
    #[error("snapshot: {0}")]
    Record(#[from] crate::records::RecordError),
    /// The data directory holds a snapshot this version cannot read.
    #[error("{0}")]
    Format(String),
    /// Another process holds the snapshot's lock (sled locks its files).
    #[error(
        "{} is in use by another process (is another pushd running on this data \
         directory?): stop it first, or give this one its own --data-dir",
        .0.display()
    )]
    InUse(std::path::PathBuf),
    /// This user may not write the snapshot's directory.
    #[error("{0}")]
    Unusable(String),
    /// The snapshot was written by a newer pushd.
    #[error("{0}")]
    NewerFormat(String),
    /// The store was closed.
    #[error("store is closed")]
    Closed,
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        StoreError(e.to_string())
    }
}
