//! The backup layer's one error type.

use std::path::PathBuf;

/// Why a backup could not be taken, or an archive not restored.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be drained, exported or imported.
    #[error("snapshot: {0}")]
    Store(#[from] crate::store::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not start as a pushd backup does.
    #[error("not a pushd backup: {0}")]
    NotABackup(String),
    /// The archive is in a format version this pushd does not read.
    #[error(
        "the archive is in format {found}, and this pushd reads {supported}: restore it with the \
         pushd version that took it or a newer one"
    )]
    Version {
        /// The archive's format and version.
        found: String,
        /// The format and version this pushd reads.
        supported: String,
    },
    /// The archive is cut short, or a byte of it changed.
    #[error("the archive is damaged: {0}")]
    Damaged(String),
    /// A cluster's partition could not be gathered: its node did not
    /// answer in time, or NATS did not.
    #[error("partition {partition} could not be backed up: {why}")]
    Unavailable {
        /// The partition.
        partition: u16,
        /// Why.
        why: String,
    },
    /// The cluster's NATS did not answer (or refused a write).
    #[error("the cluster's NATS did not answer: {0}")]
    ClusterUnavailable(String),
    /// The archive is of another kind than the target: a cluster's into a
    /// data directory, a single node's into a cluster, or into a cluster of
    /// another partition count.
    #[error("{0}")]
    WrongTarget(String),
    /// The target of a restore holds something already.
    #[error(
        "{0} is not empty; restore makes a new data directory: give an empty or new --data-dir \
         (PUSHD_DATA_DIR), or move the old one away first"
    )]
    NotEmpty(PathBuf),
}

impl Error {
    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
