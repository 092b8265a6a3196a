//! `pushd restore`: a new data directory from an archive. The whole archive
//! is checked first (header, version, every length, the CRC, the sections'
//! names); only then is the directory built, in a temporary sibling of the
//! target, and renamed into place: a failure at any step leaves nothing.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use super::Error;
use super::archive::{self, EVENTS_PREFIX, Entry, MANIFEST, Manifest, STORE};
use crate::events::segments;
use crate::store::SledStore;
use crate::webhooks::book;

/// The largest manifest read, bytes.
const MAX_MANIFEST: u64 = 64 << 10;
/// sled's page cache while the restored snapshot is opened to check it.
const CHECK_CACHE_BYTES: u64 = 8 << 20;

/// What a restore made.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The journal position the restored state covers.
    pub position: u64,
    /// When the backup was taken, Unix seconds.
    pub taken_at: i64,
    /// The archive's sections.
    pub sections: usize,
}

/// Where a section goes in the data directory.
enum Place {
    /// The manifest, read, not written.
    Manifest,
    /// The store, imported into `snapshot/`.
    Store,
    /// A file at this path under the data directory.
    File(PathBuf),
}

impl Place {
    /// The place of the section named `name`, if this pushd knows it.
    fn of(name: &str) -> Option<Place> {
        match name {
            MANIFEST => Some(Place::Manifest),
            STORE => Some(Place::Store),
            book::FILE_NAME | crate::keys::FILE_NAME => Some(Place::File(name.into())),
            _ => {
                let file = name.strip_prefix(EVENTS_PREFIX)?;
                if file == crate::events::ERASURES_FILE {
                    return Some(Place::File(name.into()));
                }
                let base: u64 = file.split('.').next()?.parse().ok()?;
                let path = segments::path_of(Path::new(""), base);
                (path == Path::new(file)).then(|| Place::File(name.into()))
            }
        }
    }
}

/// Makes the data directory `data_dir` (absent or empty) from the archive
/// at `path`.
pub fn restore(path: &Path, data_dir: &Path) -> Result<Restored, Error> {
    refuse_non_empty(data_dir)?;
    let mut file = File::open(path).map_err(Error::io(path))?;
    let total = file.metadata().map_err(Error::io(path))?.len();
    let entries = archive::verify(&mut BufReader::new(&mut file), total)?;
    let manifest = read_manifest(&mut file, &entries)?;
    if let Some(cluster) = &manifest.cluster {
        return Err(Error::WrongTarget(format!(
            "this archive is a cluster's ({} partitions): restore it into a new cluster, with \
             [cluster] servers (--cluster, PUSHD_CLUSTER) set for `pushd restore`",
            cluster.partitions
        )));
    }
    let places = places(&entries)?;
    tracing::info!(
        position = manifest.position,
        sections = entries.len(),
        bytes = total,
        "archive checked"
    );
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = data_dir
        .file_name()
        .map_or_else(|| "data".into(), |n| n.to_string_lossy().into_owned());
    let building = tempfile::Builder::new()
        .prefix(&format!(".{name}.restoring-"))
        .tempdir_in(parent)
        .map_err(Error::io(parent))?;
    for (entry, place) in entries.iter().zip(places) {
        match place {
            Place::Manifest => {}
            Place::Store => restore_store(&mut file, entry, building.path(), &manifest)?,
            Place::File(relative) => {
                write_file(&mut file, entry, &building.path().join(relative))?;
            }
        }
    }
    let events = building.path().join(EVENTS_PREFIX);
    if events.exists() {
        sync_dir(&events)?;
    }
    sync_dir(building.path())?;
    // Checked again: something may have been put there meanwhile.
    refuse_non_empty(data_dir)?;
    let built = building.keep();
    if let Err(e) = fs::rename(&built, data_dir) {
        let _ = fs::remove_dir_all(&built);
        return Err(Error::io(data_dir)(e));
    }
    sync_dir(parent)?;
    tracing::info!(position = manifest.position, data_dir = %data_dir.display(), "restored");
    Ok(Restored {
        position: manifest.position,
        taken_at: manifest.taken_at,
        sections: entries.len(),
    })
}

/// Refuses a target that exists and is not an empty directory.
fn refuse_non_empty(data_dir: &Path) -> Result<(), Error> {
    match fs::read_dir(data_dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(Error::NotEmpty(data_dir.to_path_buf())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            Err(Error::NotEmpty(data_dir.to_path_buf()))
        }
        Err(e) => Err(Error::io(data_dir)(e)),
    }
}

/// The place of each section: each one known, none twice, a manifest and
/// a store among them.
fn places(entries: &[Entry]) -> Result<Vec<Place>, Error> {
    let mut seen = BTreeSet::new();
    let mut places = Vec::with_capacity(entries.len());
    for entry in entries {
        let place = Place::of(&entry.name).ok_or_else(|| {
            Error::Damaged(format!(
                "it holds a section this pushd does not know, {:?}",
                entry.name
            ))
        })?;
        if !seen.insert(entry.name.as_str()) {
            return Err(Error::Damaged(format!(
                "it holds section {:?} twice",
                entry.name
            )));
        }
        places.push(place);
    }
    for needed in [MANIFEST, STORE] {
        if !seen.contains(needed) {
            return Err(Error::Damaged(format!("it has no section {needed:?}")));
        }
    }
    Ok(places)
}

/// Reads the manifest (the archive has one: see [`places`]).
pub(crate) fn read_manifest(file: &mut File, entries: &[Entry]) -> Result<Manifest, Error> {
    let entry = entries
        .iter()
        .find(|e| e.name == MANIFEST)
        .ok_or_else(|| Error::Damaged(format!("it has no section {MANIFEST:?}")))?;
    if entry.len > MAX_MANIFEST {
        return Err(Error::Damaged(format!(
            "its manifest is {} bytes long (at most {MAX_MANIFEST})",
            entry.len
        )));
    }
    let mut bytes = Vec::new();
    section(file, entry)?
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Damaged(format!("its manifest could not be read: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Damaged(format!("its manifest does not parse: {e}")))
}

/// A reader of `entry`'s bytes.
pub(crate) fn section<'a>(file: &'a mut File, entry: &Entry) -> Result<impl Read + 'a, Error> {
    file.seek(SeekFrom::Start(entry.offset))
        .map_err(|e| Error::Damaged(format!("it could not be read again: {e}")))?;
    Ok(BufReader::new(file).take(entry.len))
}

/// Imports the store into `<dir>/snapshot`, checks it covers the
/// manifest's position and opens in this pushd's format, and makes it
/// durable.
fn restore_store(
    file: &mut File,
    entry: &Entry,
    dir: &Path,
    manifest: &Manifest,
) -> Result<(), Error> {
    let path = dir.join("snapshot");
    let store = SledStore::import(&path, &mut section(file, entry)?, CHECK_CACHE_BYTES)?;
    let covered = store.sled_covered()?;
    if covered != manifest.position {
        return Err(Error::Damaged(format!(
            "its store covers journal position {covered}, its manifest says {}",
            manifest.position
        )));
    }
    store.checkpoint()?;
    tracing::info!(position = covered, "store imported");
    Ok(())
}

/// Writes `entry`'s bytes to `path` (mode 0600: keys and webhook secrets),
/// durably.
fn write_file(file: &mut File, entry: &Entry, path: &Path) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(Error::io(dir))?;
    }
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io(path))?;
    let copied = io::copy(&mut section(file, entry)?, &mut out).map_err(Error::io(path))?;
    if copied != entry.len {
        return Err(Error::Damaged(format!(
            "section {:?} changed after it was checked ({copied} of {} bytes)",
            entry.name, entry.len
        )));
    }
    out.sync_all().map_err(Error::io(path))
}

/// Makes a directory's entries durable.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(dir))
}
