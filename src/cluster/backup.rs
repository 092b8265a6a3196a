//! A cluster's backups, and restoring one into a new cluster.
//!
//! **Taking one** (`GET /v1/backup` through any node): each partition's
//! node drains the partition's store and exports it (so it holds every
//! change acknowledged before the call), and the node taking the backup
//! gathers those exports (its own partitions' from its own stores, the
//! others' with a signed `GET /v1/cluster/partitions/{p}/store`, asked
//! again of the new owner while a partition moves), the templates bucket's
//! entries as they are stored, and the webhooks. The archive is the single
//! node's format ([`crate::backup::archive`]) with a section per partition,
//! and a manifest naming the partition count and each store's position.
//!
//! **Restoring one** (`pushd restore FILE` with `[cluster] servers` set):
//! the whole archive is checked first (its CRC, that it is a cluster's of
//! the configured partition count, that each store imports and covers the
//! position the manifest names, that each template and the webhooks
//! decode); then the cluster's NATS must hold no partition snapshot, no
//! journal record and no live node. Only then is it written: the
//! templates, the webhooks, and each partition's store as the partition's
//! first snapshot, which the node taking the partition loads. The events
//! stream is not in a backup: the restored cluster's feed, and its
//! webhooks, start with what happens after the restore.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use pushd_actors::engine::PartitionTag;
use serde::{Deserialize, Serialize};

use super::{ClusterError, Link, Nats, Settings, catalog, scan, snapshots, webhooks};
use crate::backup::archive::{
    self, ClusterManifest, Entry, Manifest, Section, TEMPLATES, partition_section,
};
use crate::backup::{
    Backup, Backups, Error, Spooled, blocking, read_manifest, section, spool_store,
};
use crate::keys::Caller;
use crate::partition::Partitions;
use crate::store::SledStore;
use crate::topology::wire::COVERED;
use crate::topology::{Call, Topology, Try};
use crate::webhooks::book::{self, Book as _};

/// How long a partition's node may take to send its store: its size, not
/// only that node's health, sets the wait.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(600);
/// Partitions gathered at once.
const GATHERING: usize = 4;
/// sled's page cache while a restored store is opened to check it.
const CHECK_CACHE_BYTES: u64 = 8 << 20;

/// What a cluster node backs up: the cluster's state, through it.
pub struct ClusterBackups {
    link: Arc<Link>,
    partitions: Arc<Partitions>,
    nats: Nats,
    /// The webhooks bucket, read as a backup is taken.
    webhooks: Arc<webhooks::SharedBook>,
    /// Where stores are spooled while a backup is gathered and sent.
    spool: PathBuf,
}

impl ClusterBackups {
    /// Backups of the cluster `link` reaches, whose partitions this node
    /// runs are `partitions`, spooled in `spool` (the data directory); its
    /// NATS calls that block run on `runtime`.
    pub fn new(
        link: Arc<Link>,
        partitions: Arc<Partitions>,
        nats: Nats,
        runtime: tokio::runtime::Handle,
        spool: PathBuf,
    ) -> ClusterBackups {
        let webhooks = Arc::new(webhooks::SharedBook::new(nats.webhooks.clone(), runtime));
        ClusterBackups {
            link,
            partitions,
            nats,
            webhooks,
            spool,
        }
    }

    /// Partition `partition`'s store: exported here when this node serves
    /// it, else fetched from the node that does.
    async fn partition_store(&self, partition: u16) -> Result<Spooled, Error> {
        let tag = PartitionTag(partition);
        let unavailable = |why: String| Error::Unavailable { partition, why };
        let topology = Topology::cluster(self.link.clone());
        let fetched = topology
            .on_owner(&self.partitions, tag, |address, _| async move {
                match self.fetch(&address, partition).await {
                    Ok(Some(spooled)) => Try::Answered(spooled),
                    Ok(None) => Try::Moving(format!("node {address} does not serve it now")),
                    Err(why) => Try::Moving(why),
                }
            })
            .await
            .map_err(|e| match e {
                crate::topology::Error::PartitionUnavailable { why, .. } => unavailable(why),
                e => unavailable(e.to_string()),
            })?;
        if let Some(spooled) = fetched {
            return Ok(spooled);
        }
        let exported = self.export_here(partition).await?;
        exported.ok_or_else(|| unavailable("it moved away from this node meanwhile".into()))
    }

    /// This node's export of `partition`, if it serves it.
    async fn export_here(&self, partition: u16) -> Result<Option<Spooled>, Error> {
        let Some(running) = self.partitions.get(PartitionTag(partition)) else {
            return Ok(None);
        };
        let spool = self.spool.clone();
        blocking(move || spool_store(&running.store, &spool).map(Some)).await
    }

    /// Partition `partition`'s store from the node at `address`: `None`
    /// if it does not serve it (any more).
    async fn fetch(&self, address: &str, partition: u16) -> Result<Option<Spooled>, String> {
        let spool = tempfile::tempfile_in(&self.spool).map_err(|e| format!("spool: {e}"))?;
        let path = format!("/v1/cluster/partitions/{partition}/store");
        let call = Call {
            timeout: EXPORT_TIMEOUT,
            address,
            method: &Method::GET,
            path_and_query: &path,
            caller: Some(Caller::Backend),
            headers: &[],
            body: Bytes::new(),
        };
        let (status, covered, file) =
            (self.link.client.download(call, COVERED, spool).await).map_err(|e| e.to_string())?;
        match status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => return Ok(None),
            status => return Err(format!("node {address} answered {status}")),
        }
        let position = covered
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("node {address} named no position its export covers"))?;
        let len = file.metadata().map_err(|e| format!("spool: {e}"))?.len();
        Ok(Some(Spooled {
            file,
            len,
            position,
        }))
    }

    /// The templates bucket's entries, as stored.
    async fn templates(&self) -> Result<Vec<u8>, Error> {
        let entries = scan(&self.nats.templates).await.map_err(unreachable)?;
        let stored: Vec<StoredTemplate> = entries
            .into_iter()
            .map(|(key, value)| StoredTemplate {
                key,
                value: value.to_vec(),
            })
            .collect();
        Ok(serde_json::to_vec(&stored).expect("templates serialize"))
    }
}

impl Backups for ClusterBackups {
    fn take(self: Arc<Self>) -> BoxFuture<'static, Result<Backup, Error>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let count = self.partitions.partitioning().count();
            let stores: Vec<(u16, Spooled)> = stream::iter(0..count)
                .map(|p| {
                    let backups = self.clone();
                    async move { Ok::<_, Error>((p, backups.partition_store(p).await?)) }
                })
                .buffered(GATHERING)
                .try_collect()
                .await?;
            let mut positions = BTreeMap::new();
            let mut sections = Vec::with_capacity(stores.len() + 2);
            for (p, store) in stores {
                positions.insert(p, store.position);
                sections.push(Section::file(partition_section(p), store.file, store.len));
            }
            sections.push(Section::bytes(TEMPLATES, self.templates().await?));
            // Read from the bucket: every webhook defined through any node.
            let book = self.webhooks.clone();
            let hooks = blocking(move || {
                let saved = book
                    .load()
                    .map_err(|e| Error::ClusterUnavailable(e.to_string()))?;
                book::encode(saved).map_err(|e| Error::ClusterUnavailable(e.to_string()))
            })
            .await?;
            sections.push(Section::bytes(book::FILE_NAME, hooks));
            let cluster = ClusterManifest {
                partitions: count,
                positions,
            };
            let backup = Backup::new(sections, Manifest::now(0, Some(cluster)));
            tracing::info!(
                partitions = count,
                bytes = backup.size(),
                took_ms = started.elapsed().as_millis() as u64,
                "cluster backup taken; sending it"
            );
            Ok(backup)
        })
    }

    fn export_partition(
        self: Arc<Self>,
        partition: u16,
    ) -> BoxFuture<'static, Result<Option<Spooled>, Error>> {
        Box::pin(async move { self.export_here(partition).await })
    }
}

/// A template as the bucket stores it.
#[derive(Serialize, Deserialize)]
struct StoredTemplate {
    key: String,
    value: Vec<u8>,
}

/// What a restore put into the cluster.
#[derive(Clone, Debug)]
pub struct Restored {
    /// Partitions seeded.
    pub partitions: u16,
    /// Templates put.
    pub templates: usize,
    /// Webhooks put.
    pub webhooks: usize,
    /// When the backup was taken, Unix seconds.
    pub taken_at: i64,
}

/// What was read from an archive and checked, ready to write.
struct Checked {
    manifest: Manifest,
    cluster: ClusterManifest,
    /// Each partition's section.
    stores: Vec<Entry>,
    templates: Vec<StoredTemplate>,
    webhooks: BTreeMap<String, book::Saved>,
}

/// Seeds the new cluster `settings` names with the archive at `path`,
/// checking the archive whole (with scratch space in `scratch`) before
/// anything is written; see the module docs.
pub async fn restore(path: &Path, settings: &Settings, scratch: &Path) -> Result<Restored, Error> {
    let (archive, scratch_dir) = (path.to_path_buf(), scratch.to_path_buf());
    let partitions = settings.partitions;
    let checked = blocking(move || check(&archive, partitions, &scratch_dir)).await?;
    let Checked {
        manifest,
        cluster,
        stores,
        templates,
        webhooks,
    } = checked;
    let nats = Nats::connect(settings).await.map_err(unreachable)?;
    refuse_used(&nats, partitions).await?;
    let restored = Restored {
        partitions,
        templates: templates.len(),
        webhooks: webhooks.len(),
        taken_at: manifest.taken_at,
    };
    for t in templates {
        (nats.templates.put(t.key, Bytes::from(t.value)).await)
            .map_err(|e| unreachable(super::nats(e)))?;
    }
    let book = webhooks::SharedBook::new(nats.webhooks.clone(), tokio::runtime::Handle::current());
    blocking(move || (book.seed(webhooks)).map_err(|e| Error::ClusterUnavailable(e.to_string())))
        .await?;
    let mut file = File::open(path).map_err(Error::io(path))?;
    for (p, entry) in stores.iter().enumerate() {
        let p = p as u16;
        let mut bytes = Vec::new();
        section(&mut file, entry)?
            .read_to_end(&mut bytes)
            .map_err(Error::io(path))?;
        let covered = cluster.positions[&p];
        snapshots::seed(&nats, PartitionTag(p), &bytes, covered)
            .await
            .map_err(unreachable)?;
        tracing::info!(partition = p, position = covered, "partition restored");
    }
    Ok(restored)
}

/// NATS failing during a backup or a restore.
fn unreachable(e: ClusterError) -> Error {
    Error::ClusterUnavailable(e.to_string())
}

/// Reads and checks the whole archive: a cluster's, of `partitions`
/// partitions, every section known and sound.
fn check(path: &Path, partitions: u16, scratch: &Path) -> Result<Checked, Error> {
    let mut file = File::open(path).map_err(Error::io(path))?;
    let total = file.metadata().map_err(Error::io(path))?.len();
    let entries = archive::verify(&mut BufReader::new(&mut file), total)?;
    let manifest = read_manifest(&mut file, &entries)?;
    let Some(cluster) = manifest.cluster.clone() else {
        return Err(Error::WrongTarget(
            "this archive is a single node's: restore it into a data directory, with [cluster] \
             servers unset"
                .into(),
        ));
    };
    if cluster.partitions != partitions {
        return Err(Error::WrongTarget(format!(
            "this archive is of a cluster of {} partitions, and [cluster] partitions is {partitions}: \
             restore it into a cluster of as many",
            cluster.partitions
        )));
    }
    let named = |name: &str| entries.iter().find(|e| e.name == name).cloned();
    let mut stores = Vec::with_capacity(usize::from(partitions));
    for p in 0..partitions {
        let entry = named(&partition_section(p))
            .ok_or_else(|| Error::Damaged(format!("it has no store of partition {p}")))?;
        let covered = *cluster.positions.get(&p).ok_or_else(|| {
            Error::Damaged(format!("its manifest names no position of partition {p}"))
        })?;
        check_store(&mut file, &entry, scratch, p, covered)?;
        stores.push(entry);
    }
    let known = stores.len() + 3;
    if entries.len() != known {
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        return Err(Error::Damaged(format!(
            "it holds sections this pushd does not know, or one twice: {names:?}"
        )));
    }
    let read = |file: &mut File, name: &str| -> Result<Vec<u8>, Error> {
        let entry = named(name).ok_or_else(|| Error::Damaged(format!("it has no {name}")))?;
        let mut bytes = Vec::new();
        section(file, &entry)?
            .read_to_end(&mut bytes)
            .map_err(|e| Error::Damaged(format!("{name} could not be read: {e}")))?;
        Ok(bytes)
    };
    let templates: Vec<StoredTemplate> = serde_json::from_slice(&read(&mut file, TEMPLATES)?)
        .map_err(|e| Error::Damaged(format!("its {TEMPLATES} does not parse: {e}")))?;
    for t in &templates {
        catalog::decode(&t.key, &t.value).map_err(|e| Error::Damaged(e.to_string()))?;
        let written = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if t.key.is_empty() || !t.key.chars().all(written) {
            return Err(Error::Damaged(format!(
                "a template's key {:?} is not one pushd writes",
                t.key
            )));
        }
    }
    let webhooks = book::decode(&read(&mut file, book::FILE_NAME)?)
        .map_err(|e| Error::Damaged(format!("its {} does not parse: {e}", book::FILE_NAME)))?;
    Ok(Checked {
        manifest,
        cluster,
        stores,
        templates,
        webhooks,
    })
}

/// Imports partition `p`'s store into scratch space, to check it is sound,
/// in a format this pushd reads, and covers `covered`.
fn check_store(
    file: &mut File,
    entry: &Entry,
    scratch: &Path,
    p: u16,
    covered: u64,
) -> Result<(), Error> {
    let dir = tempfile::tempdir_in(scratch).map_err(Error::io(scratch))?;
    let store = SledStore::import(
        &dir.path().join("snapshot"),
        &mut section(file, entry)?,
        CHECK_CACHE_BYTES,
    )?;
    let found = store.sled_covered()?;
    if found != covered {
        return Err(Error::Damaged(format!(
            "the store of partition {p} covers journal position {found}, its manifest says {covered}"
        )));
    }
    Ok(())
}

/// Refuses a cluster that holds state already: a partition's snapshot, a
/// journal record, or a live node.
async fn refuse_used(nats: &Nats, partitions: u16) -> Result<(), Error> {
    let used = |what: String| {
        Error::WrongTarget(format!(
            "the cluster holds state already ({what}); restore makes a new cluster: stop every \
             node and give a new [cluster] prefix or new NATS servers"
        ))
    };
    let members = scan(&nats.members).await.map_err(unreachable)?;
    if let Some((node, _)) = members.first() {
        return Err(used(format!("node {node} is running")));
    }
    let info = nats
        .journal
        .get_info()
        .await
        .map_err(|e| unreachable(super::nats(e)))?;
    if info.state.messages > 0 {
        return Err(used(format!(
            "the journal holds {} messages",
            info.state.messages
        )));
    }
    for p in 0..partitions {
        if snapshots::exists(nats, PartitionTag(p))
            .await
            .map_err(unreachable)?
        {
            return Err(used(format!("partition {p} has a snapshot")));
        }
    }
    Ok(())
}
