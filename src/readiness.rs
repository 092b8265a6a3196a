//! Readiness: whether pushd can acknowledge writes now, and if not, why.
//!
//! `/healthz` says the process answers (liveness); `/readyz` says a write
//! sent now would be acknowledged. Each [`Check`] looks at one part (the
//! journal, the event log, the snapshot's drains, the free disk, the NATS
//! connection) and names what is wrong with it, in words an operator can
//! act on. A watcher thread runs the checks every second, keeps the
//! `pushd_ready` gauge and logs each change; `/readyz` runs them afresh.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How long the snapshot's drains may fail before pushd is not ready.
pub const DRAINS_FAILING_LIMIT: Duration = Duration::from_secs(60);

/// One part's check: why pushd cannot acknowledge writes because of it,
/// or `None` when it is fine.
pub type Check = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// The checks, and what the watcher saw last.
pub struct Readiness {
    checks: Vec<Check>,
    last: Mutex<Option<Vec<String>>>,
}

impl Readiness {
    /// Readiness over `checks`.
    pub fn new(checks: Vec<Check>) -> Arc<Readiness> {
        Arc::new(Readiness {
            checks,
            last: Mutex::new(None),
        })
    }

    /// Why pushd cannot acknowledge writes now; empty when it can.
    pub fn reasons(&self) -> Vec<String> {
        self.checks.iter().filter_map(|check| check()).collect()
    }

    /// Runs the checks every second on a thread of its own for as long as
    /// the process lives: sets `pushd_ready` (1 or 0) and logs each change.
    pub fn watch(self: &Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("pushd-readiness".into())
            .spawn(move || {
                loop {
                    me.observe();
                    std::thread::sleep(Duration::from_secs(1));
                }
            })?;
        Ok(())
    }

    /// One round of the watcher.
    fn observe(&self) {
        let reasons = self.reasons();
        metrics::gauge!("pushd_ready").set(if reasons.is_empty() { 1.0 } else { 0.0 });
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.as_ref() == Some(&reasons) {
            return;
        }
        match reasons.is_empty() {
            true => tracing::info!("ready: writes are acknowledged"),
            false => tracing::error!(
                reasons = %reasons.join("; "),
                "not ready: writes are not acknowledged"
            ),
        }
        *last = Some(reasons);
    }
}

/// The check of a part that fails for good: `failure` answers why, once it
/// did; `what` names the part (`journal`).
pub fn failed_for_good(
    what: &'static str,
    failure: impl Fn() -> Option<String> + Send + Sync + 'static,
) -> Check {
    Box::new(move || {
        failure().map(|why| format!("{what} failed: {why}; restart pushd to replay the journal"))
    })
}

/// The check of the journal's disk: full (`ENOSPC`), with why, while the
/// journal waits for space; writes answer 507 meanwhile.
pub fn disk_full(full: impl Fn() -> Option<String> + Send + Sync + 'static) -> Check {
    Box::new(move || {
        full().map(|why| {
            format!("journal's disk is full ({why}): writes answer 507 until space is freed")
        })
    })
}

/// The check of the snapshot's drains: failing for longer than
/// [`DRAINS_FAILING_LIMIT`].
pub fn drains(failing_for: impl Fn() -> Option<Duration> + Send + Sync + 'static) -> Check {
    Box::new(move || {
        let failing = failing_for().filter(|d| *d > DRAINS_FAILING_LIMIT)?;
        Some(format!(
            "snapshot drains have failed for {} s (see the error log); the journal grows until \
             they succeed",
            failing.as_secs()
        ))
    })
}

/// The check of the free disk under `dir`: below `min_free` bytes.
pub fn free_disk(dir: &Path, min_free: u64) -> Check {
    let dir: PathBuf = dir.to_path_buf();
    Box::new(move || {
        let free = match free_bytes(&dir) {
            Ok(free) => free,
            Err(e) => {
                return Some(format!(
                    "cannot read the free space of {}: {e}",
                    dir.display()
                ));
            }
        };
        (free < min_free).then(|| {
            format!(
                "free disk below min_free_bytes: {free} bytes free under {}, [store] \
                 min_free_bytes (PUSHD_MIN_FREE_BYTES) is {min_free}",
                dir.display()
            )
        })
    })
}

/// Bytes an unprivileged process may still write on the file system of
/// `dir` (statvfs(3): available blocks times the fragment size). Written
/// with libc because std has no statvfs, and the one call does not warrant
/// another crate.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` points to memory
    // for one statvfs, which the call fills when it answers 0.
    let answer = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if answer != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs answered 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    #[allow(
        clippy::unnecessary_cast,
        reason = "the field types differ across platforms"
    )]
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_each_part_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let ready = Readiness::new(vec![
            failed_for_good("journal", || None),
            drains(|| Some(Duration::from_secs(5))),
            free_disk(dir.path(), 0),
        ]);
        assert!(ready.reasons().is_empty(), "{:?}", ready.reasons());
        let not = Readiness::new(vec![
            failed_for_good("journal", || Some("Input/output error".into())),
            drains(|| Some(Duration::from_secs(61))),
            free_disk(dir.path(), u64::MAX),
        ]);
        let reasons = not.reasons();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].starts_with("journal failed: Input/output error"));
        assert!(reasons[1].contains("failed for 61 s"));
        assert!(reasons[2].starts_with("free disk below min_free_bytes"));
        assert!(free_bytes(dir.path()).unwrap() > 0);
    }
}
