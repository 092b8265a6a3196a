//! The engine's state on disk, as one unit: the sled snapshot under
//! `<data_dir>/snapshot`, the journal under `<data_dir>/journal`, and the
//! thread that drains the one into the other and checkpoints.

use std::path::Path;
use std::sync::Arc;

use pushd_actors::ports::Store;

use crate::journal::FileJournal;
use crate::store::{self, Retention, SledStore, Snapshotter, Timing};

/// Why the state on disk could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The snapshot.
    #[error("snapshot: {0}")]
    Store(#[from] store::Error),
    /// The journal, or a thread.
    #[error("journal in {path}: {source}")]
    Journal {
        /// The journal directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Makes the data directory private, whatever the umask pushd was started
/// with: the process's umask becomes 0077, so every directory and file
/// pushd (and sled) creates from now on is 0700 / 0600; the directory is
/// created if need be; and what is already in it with looser modes (an
/// older pushd's, or a copy's) is tightened to 0700 / 0600, said in one
/// log line.
pub fn make_private(data_dir: &Path) -> std::io::Result<()> {
    private_umask();
    std::fs::create_dir_all(data_dir)?;
    let mut tightened = Tightened::default();
    tighten(data_dir, &mut tightened)?;
    if tightened.dirs + tightened.files > 0 {
        tracing::warn!(
            data_dir = %data_dir.display(),
            directories = tightened.dirs,
            files = tightened.files,
            "tightened the data directory's modes: {} directories to 0700, {} files to 0600 \
             (they were readable by others)",
            tightened.dirs,
            tightened.files,
        );
    }
    Ok(())
}

/// Sets the process's umask to `0077`: every directory it creates from now
/// on is `0700` and every file `0600`, whatever umask it inherited.
pub fn private_umask() {
    // SAFETY: umask(2) only sets the process's file mode creation mask; it
    // touches no memory and cannot fail.
    unsafe { libc::umask(0o077) };
}

/// Raises the process's soft limit of open files to its hard limit (every
/// connection is one) and answers the limit in force, logged. A limit that
/// cannot be read or raised is logged as a warning and the soft limit
/// stays; the connection limit is sized from what is in force.
///
/// Two libc calls rather than the `rlimit` crate: libc is already a
/// dependency, and the crate would only wrap these same calls.
pub fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes the one struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "cannot read the open files limit; assuming 1024");
        return 1024;
    }
    let soft = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit(2) only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            let error = std::io::Error::last_os_error();
            tracing::warn!(
                %error,
                soft,
                hard = limit.rlim_max,
                "cannot raise the open files limit to its hard limit; it stays {soft}"
            );
        }
    }
    tracing::info!(
        open_files = limit.rlim_cur,
        was = soft,
        hard = limit.rlim_max,
        "open files limit {}",
        limit.rlim_cur
    );
    limit.rlim_cur
}

/// How many directories and files [`tighten`] changed.
#[derive(Default)]
struct Tightened {
    dirs: usize,
    files: usize,
}

/// Takes group and other access away from `path` and, for a directory,
/// everything under it; symbolic links are left alone (not followed).
fn tighten(path: &Path, tightened: &mut Tightened) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)?;
    let kind = meta.file_type();
    let loose = meta.permissions().mode() & 0o077 != 0;
    if kind.is_dir() {
        if loose {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
            tightened.dirs += 1;
        }
        for entry in std::fs::read_dir(path)? {
            tighten(&entry?.path(), tightened)?;
        }
    } else if kind.is_file() && loose {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        tightened.files += 1;
    }
    Ok(())
}

/// The open snapshot and journal.
pub struct Persistence {
    /// The snapshot and its in-memory overlay.
    pub store: Arc<SledStore>,
    /// The journal.
    pub journal: Arc<FileJournal>,
    snapshots: Snapshotter,
}

impl Persistence {
    /// Opens (or creates) the state in `data_dir` with a sled page cache of
    /// `cache_bytes`, and starts the snapshot thread.
    pub fn open(
        data_dir: &Path,
        cache_bytes: u64,
        timing: Timing,
    ) -> Result<Persistence, OpenError> {
        if data_dir.join("db").exists() && data_dir.join("conf").exists() {
            return Err(store::Error::Format(format!(
                "{} holds state from an older pushd (sled files at its top level); move it away or choose another data dir",
                data_dir.display()
            ))
            .into());
        }
        let store = SledStore::open(data_dir.join("snapshot"), cache_bytes)?;
        let covered = store.covered().map_err(|e| store::Error::Format(e.0))?;
        let journal_dir = data_dir.join("journal");
        let io = |source| OpenError::Journal {
            path: journal_dir.display().to_string(),
            source,
        };
        let journal = Arc::new(FileJournal::open(&journal_dir, covered).map_err(io)?);
        let releaser = journal.clone();
        let snapshots = Snapshotter::start(
            &store,
            timing,
            Box::new(move |covered| releaser.release(covered)),
        )
        .map_err(io)?;
        Ok(Persistence {
            store,
            journal,
            snapshots,
        })
    }

    /// Expires the deliveries past `retention` from now on, in the
    /// snapshot thread. Call it once recovery replayed the journal (see
    /// [`Snapshotter::retain`]).
    pub fn retain(&self, retention: Retention) {
        self.snapshots.retain(retention);
    }

    /// A last checkpoint, then the journal makes the rest durable and closes.
    pub fn close(self) {
        self.snapshots.stop();
        self.journal.close();
    }
}
