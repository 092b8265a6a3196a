//! Taking a backup from the running daemon: everything it holds at one
//! journal position, gathered in a moment (the store is spooled to an
//! unnamed temporary file, so drains wait only for a local copy, never for
//! the reader), then written out as an archive at the reader's pace.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;

use super::Error;
use super::archive::{self, EVENTS_PREFIX, MANIFEST, Manifest, STORE, Section};
use crate::events::EventLog;
use crate::store::SledStore;
use crate::webhooks::Webhooks;
use crate::webhooks::book::{self, Saved};

/// A progress line is logged each time this many more bytes are sent.
const PROGRESS_EVERY: u64 = 256 << 20;

/// What a backup is taken from: a single node's state.
pub struct Source {
    data_dir: PathBuf,
    store: Arc<SledStore>,
    events: Arc<EventLog>,
    webhooks: Arc<Webhooks>,
}

impl Source {
    /// The state of the daemon serving `data_dir`.
    pub fn new(
        data_dir: &Path,
        store: Arc<SledStore>,
        events: Arc<EventLog>,
        webhooks: Arc<Webhooks>,
    ) -> Source {
        Source {
            data_dir: data_dir.to_path_buf(),
            store,
            events,
            webhooks,
        }
    }

    /// Gathers a backup of the whole state at one journal position, holding
    /// every change acknowledged before the call. Blocks for a drain and a
    /// local copy of the store; writes go on meanwhile.
    pub fn take(&self) -> Result<Backup, Error> {
        let started = Instant::now();
        let Spooled {
            file: spool,
            len: store_len,
            position,
        } = spool_store(&self.store, &self.data_dir)?;
        let events = self
            .events
            .export(position)
            .map_err(Error::io(self.events.dir()))?;
        let manifest = Manifest::now(position, None);
        let mut sections = vec![
            Section::file(STORE, spool, store_len),
            Section::bytes(book::FILE_NAME, self.webhooks_file(events.end)?),
        ];
        if let Some(keys) = self.keys_file()? {
            sections.push(Section::bytes(crate::keys::FILE_NAME, keys));
        }
        if let Some(erasures) = events.erasures {
            let name = format!("{EVENTS_PREFIX}{}", crate::events::ERASURES_FILE);
            sections.push(Section::bytes(name, erasures));
        }
        sections.extend(
            events
                .segments
                .into_iter()
                .map(|s| Section::file(format!("{EVENTS_PREFIX}{}", s.name), s.file, s.len)),
        );
        let backup = Backup::new(sections, manifest);
        tracing::info!(
            position,
            bytes = backup.size,
            sections = backup.sections.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "backup taken; sending it"
        );
        Ok(backup)
    }

    /// `webhooks.json` as of now, no cursor past `events_end` (where the
    /// backup's event log ends).
    fn webhooks_file(&self, events_end: u64) -> Result<Vec<u8>, Error> {
        let saved: BTreeMap<String, Saved> = self
            .webhooks
            .saved()
            .into_iter()
            .map(|(id, mut hook)| {
                hook.progress.cursor = hook.progress.cursor.min(events_end);
                (id, hook)
            })
            .collect();
        book::encode(saved).map_err(Error::io(book::path(&self.data_dir)))
    }

    /// `keys.toml`, if the data directory has one.
    fn keys_file(&self) -> Result<Option<Vec<u8>>, Error> {
        let path = crate::keys::path(&self.data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path)(e)),
        }
    }
}

/// What `GET /v1/backup` archives: a single node's state ([`Source`]), or
/// a cluster's.
pub trait Backups: Send + Sync {
    /// Gathers a backup holding every change acknowledged before the call.
    fn take(self: Arc<Self>) -> BoxFuture<'static, Result<Backup, Error>>;

    /// Partition `partition`'s store, drained and exported, when this node
    /// serves it: its share of a cluster's backup, which another node is
    /// taking. `None` where it does not serve it (or is a single node).
    fn export_partition(
        self: Arc<Self>,
        partition: u16,
    ) -> BoxFuture<'static, Result<Option<Spooled>, Error>>;
}

impl Backups for Source {
    fn take(self: Arc<Self>) -> BoxFuture<'static, Result<Backup, Error>> {
        Box::pin(blocking(move || Source::take(&self)))
    }

    fn export_partition(
        self: Arc<Self>,
        _: u16,
    ) -> BoxFuture<'static, Result<Option<Spooled>, Error>> {
        Box::pin(std::future::ready(Ok(None)))
    }
}

/// Runs `work` (file and store I/O) on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Io {
            path: PathBuf::new(),
            source: io::Error::other(e.to_string()),
        })?
}

/// A store's portable export, in an unnamed temporary file.
pub struct Spooled {
    /// The file, read from its start.
    pub file: std::fs::File,
    /// Its length, bytes.
    pub len: u64,
    /// The journal position the export covers.
    pub position: u64,
}

/// Drains `store` (every change applied so far goes into sled, so every
/// change acknowledged before the call) and exports it into a temporary
/// file in `dir`. Drains wait meanwhile; writes do not.
pub fn spool_store(store: &SledStore, dir: &Path) -> Result<Spooled, Error> {
    store.drain()?;
    let spool = tempfile::tempfile_in(dir).map_err(Error::io(dir))?;
    let mut out = BufWriter::new(spool);
    let position = store.export(&mut out)?;
    let file = out
        .into_inner()
        .map_err(|e| Error::io(dir)(e.into_error()))?;
    let len = file.metadata().map_err(Error::io(dir))?.len();
    Ok(Spooled {
        file,
        len,
        position,
    })
}

/// A backup gathered and ready to write.
pub struct Backup {
    sections: Vec<Section>,
    manifest: Manifest,
    size: u64,
}

impl Backup {
    /// The backup of `sections`, described by `manifest` (which is written
    /// as the first section).
    pub fn new(mut sections: Vec<Section>, manifest: Manifest) -> Backup {
        let described = serde_json::to_vec(&manifest).expect("a manifest serializes");
        sections.insert(0, Section::bytes(MANIFEST, described));
        Backup {
            size: archive::size(&sections),
            sections,
            manifest,
        }
    }

    /// The bytes its archive takes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// A file name for it, with the time it was taken (UTC):
    /// `pushd-backup-20251125T194640Z.pushd`.
    pub fn file_name(&self) -> String {
        format!("pushd-backup-{}.pushd", utc_stamp(self.manifest.taken_at))
    }

    /// Writes the archive to `out`, logging progress.
    pub fn write(self, out: impl Write) -> io::Result<()> {
        let started = Instant::now();
        let (position, total) = (self.manifest.position, self.size);
        let mut counted = Counted {
            inner: out,
            sent: 0,
            total,
        };
        archive::write(self.sections, &mut counted, &mut |name| {
            tracing::debug!(section = name, "backup section sent");
        })?;
        tracing::info!(
            position,
            bytes = total,
            took_ms = started.elapsed().as_millis() as u64,
            "backup sent"
        );
        Ok(())
    }
}

/// A writer that logs every [`PROGRESS_EVERY`] bytes.
struct Counted<W> {
    inner: W,
    sent: u64,
    total: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let before = self.sent / PROGRESS_EVERY;
        self.sent += n as u64;
        if self.sent / PROGRESS_EVERY > before {
            tracing::info!(
                sent = self.sent,
                total = self.total,
                "backup {}% sent",
                self.sent * 100 / self.total.max(1)
            );
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Unix seconds as a compact UTC time, `20251125T194640Z` (the civil-date
/// conversion of Howard Hinnant's `civil_from_days`).
fn utc_stamp(secs: i64) -> String {
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rest / 3600, rest % 3600 / 60, rest % 60);
    format!("{year:04}{month:02}{day:02}T{h:02}{m:02}{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::utc_stamp;

    #[test]
    fn file_names_carry_the_utc_time() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(utc_stamp(1_764_100_000), "20251125T194640Z");
    }
}
