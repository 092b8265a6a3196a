//! The daemon's store: the engine's [`Store`] port, and what the HTTP layer
//! reads (delivery log, metrics, messages).
//!
//! Applied changes live in memory first (see [`overlay`]): reads see them at
//! once, and the counters behind the metrics are always current there. sled
//! holds the snapshot — customers, deliveries, messages, the delivery-log
//! indexes and the counters, all under key prefixes of one tree (see
//! [`keys`]) — and receives the overlay in the background, many changes per
//! batch, never on the request path (see [`snapshot`]). The journal, not
//! sled, makes acknowledged changes durable. Deliveries past their
//! retention leave the snapshot, a few batches at a time between drains;
//! the counters keep counting them (see [`retention`]). An erased customer's
//! deliveries leave every read at once and sled at the next drain (see
//! [`overlay`] and [`erase`]); the counters keep what they counted.

mod codec;
mod counters;
mod erase;
mod error;
mod keys;
mod log;
mod overlay;
mod portable;
mod range;
mod retention;
mod snapshot;
mod upgrade;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use pushd_actors::idempotency::SendRecord;
use pushd_actors::model::{Customer, Delivery, MessageSpec};
use pushd_actors::ports::{AsOf, Change, Position, Store, StoreError};
use pushd_actors::status::Timestamp;

pub use error::Error;
pub use log::{DeliveryFilter, cursor_of};
pub use range::{CreatedRange, RangeCount};
pub use retention::{Pass, Retention};
pub use snapshot::{OnCheckpoint, Snapshotter, Timing};

use overlay::{Found, Overlay};

/// Sees every journal record the store applies, in journal order, with
/// each delivery's value before and after (the delivery events are made
/// here); and keeps up with the snapshot: a drain writes nothing to sled
/// before [`ChangeSink::persist`] made durable what the sink saw of the
/// records it writes, so sled never covers a record the sink could lose.
pub trait ChangeSink: Send + Sync {
    /// The changes of the journal record at `position`, before the store
    /// applies them.
    fn applied(&self, position: Position, changes: &[Change]);
    /// Makes what `applied` saw up to `through` durable.
    fn persist(&self, through: Position) -> std::io::Result<()>;
}

/// pushd's store: the overlay in memory and the snapshot in sled.
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    sink: OnceLock<Arc<dyn ChangeSink>>,
    overlay: Mutex<Overlay>,
    /// One drain at a time (the snapshot thread, or a reader's barrier).
    drain_lock: Mutex<()>,
    signal: Arc<snapshot::Signal>,
    /// Drain early past this many changed records.
    drain_at: usize,
    /// When the snapshot thread's drains started failing, while they fail.
    failing_since: Mutex<Option<std::time::Instant>>,
    /// Records changed since the last drain, as of the last apply or drain
    /// (read without the overlay's lock: see [`SledStore::backlog`]).
    undrained: std::sync::atomic::AtomicUsize,
    /// Whether a release that requires identity verification by default
    /// created this store (see [`SledStore::made_requiring_identity`]).
    made_requiring_identity: bool,
}

impl SledStore {
    /// Opens (or creates) the snapshot in directory `path`, with a page cache
    /// of at most `cache_bytes` (sled's default is 1 GiB, which would make
    /// idle customers cost far more memory than they need), and loads the
    /// counters into memory.
    pub fn open(path: impl AsRef<Path>, cache_bytes: u64) -> Result<Arc<SledStore>, Error> {
        let path = path.as_ref().to_path_buf();
        SledStore::over(open_db(&path, cache_bytes)?, path)
    }

    /// The store over the open database `db` at `path`: its format checked
    /// (an older one upgraded), an erasure a crash cut short finished, the
    /// counters loaded.
    fn over(db: sled::Db, path: PathBuf) -> Result<Arc<SledStore>, Error> {
        let fresh = db.is_empty();
        upgrade::open(&db, &path)?;
        let made_requiring_identity = identity_default(&db, fresh)?;
        erase::resume(&db)?;
        counters::count_failure_reasons(&db)?;
        let covered = match db.get(keys::record(keys::META, codec::COVERED_KEY))? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                Error::Format("the snapshot's covered position is malformed".into())
            })?),
            None => 0,
        };
        let mut overlay = Overlay::default();
        overlay.current.position = covered;
        for item in db.scan_prefix(keys::COUNTER) {
            let (key, value) = item?;
            overlay
                .live_counters
                .insert(key.to_vec(), codec::decode(&value)?);
        }
        for item in db.scan_prefix(keys::SERIES) {
            let (key, value) = item?;
            overlay
                .live_series
                .insert(key.to_vec(), codec::decode(&value)?);
        }
        for item in db.scan_prefix(keys::REASON) {
            let (key, value) = item?;
            overlay
                .live_reasons
                .insert(key.to_vec(), codec::decode(&value)?);
        }
        Ok(Arc::new(SledStore {
            db,
            path,
            sink: OnceLock::new(),
            overlay: Mutex::new(overlay),
            drain_lock: Mutex::new(()),
            signal: Arc::default(),
            drain_at: Timing::default().drain_at,
            failing_since: Mutex::new(None),
            undrained: std::sync::atomic::AtomicUsize::new(0),
            made_requiring_identity,
        }))
    }

    /// Notes how the snapshot thread's last drain or checkpoint went.
    fn note_snapshot(&self, failed: Option<&Error>) {
        let mut since = self
            .failing_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match failed {
            None => *since = None,
            Some(_) => {
                since.get_or_insert_with(std::time::Instant::now);
            }
        }
    }

    /// How long the snapshot thread's drains have been failing, if they
    /// are (the journal keeps every change meanwhile, but grows).
    pub fn drains_failing_for(&self) -> Option<std::time::Duration> {
        let since = self
            .failing_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        since.map(|t| t.elapsed())
    }

    /// Records changed since the last drain (the overlay's current set and
    /// the one a drain is writing): what memory holds beyond the snapshot,
    /// which grows while drains are slow or failing.
    pub fn backlog(&self) -> usize {
        self.undrained.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes `overlay`'s undrained records for [`SledStore::backlog`].
    fn note_backlog(&self, overlay: &Overlay) {
        let n = overlay.current.len() + overlay.draining.as_ref().map_or(0, |d| d.len());
        self.undrained
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this store was made by a release that requires identity
    /// verification by default: the default of `[keys]
    /// identity_verification` for its data directory, so an upgrade does
    /// not lock out apps that send no proof yet.
    pub fn made_requiring_identity(&self) -> bool {
        self.made_requiring_identity
    }

    /// Hands every record applied from now on to `sink` too. Attach before
    /// the journal's replay, so the sink sees the replayed records.
    pub fn attach(&self, sink: Arc<dyn ChangeSink>) {
        if self.sink.set(sink).is_err() {
            tracing::error!("a change sink is attached already; the second one is ignored");
        }
    }

    fn lock(&self) -> MutexGuard<'_, Overlay> {
        self.overlay.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A message template.
    pub fn message(&self, id: &str) -> Result<Option<MessageSpec>, Error> {
        match self.lock().message(id) {
            Found::Here(m) => Ok(m),
            Found::Absent => self.read(&keys::record(keys::MESSAGE, id)),
        }
    }

    /// Every message template, by id.
    pub fn messages(&self) -> Result<Vec<MessageSpec>, Error> {
        self.drain()?;
        self.db
            .scan_prefix(keys::MESSAGE)
            .map(|item| codec::decode(&item?.1))
            .collect()
    }

    /// Decodes the snapshot's value at `key`.
    fn read<T: crate::records::Stored>(&self, key: &[u8]) -> Result<Option<T>, Error> {
        self.db.get(key)?.map(|v| codec::decode(&v)).transpose()
    }

    /// The delivery, from the overlay or the snapshot, as of the last record
    /// applied when it was read.
    fn find_delivery(&self, id: &str) -> Result<Option<AsOf<Delivery>>, Error> {
        let (position, found) = {
            let overlay = self.lock();
            let found = match overlay.delivery(id) {
                Found::Here(d) => Ok(d),
                Found::Absent => Err(overlay.erased()),
            };
            (overlay.position(), found)
        };
        // Not in the overlay: sled holds every change up to `position` (a
        // drain finishing meanwhile only makes it newer), and a delivery of
        // a customer erased since the last snapshot is gone.
        let value = match found {
            Ok(d) => d,
            Err(erased) => self
                .read::<Delivery>(&keys::record(keys::DELIVERY, id))?
                .filter(|d| !erased.contains(&d.customer_id)),
        };
        Ok(value.map(|value| AsOf { value, position }))
    }

    /// Hands every held delivery of the snapshot to `each`, a record at a
    /// time.
    fn each_held(&self, each: &mut dyn FnMut(&Delivery)) -> Result<(), Error> {
        let prefix = keys::held_prefix();
        for item in self.db.scan_prefix(&prefix) {
            let id = String::from_utf8_lossy(&item?.0[prefix.len()..]).into_owned();
            if let Some(found) = self.find_delivery(&id)?
                && found.value.state.held
            {
                each(&found.value);
            }
        }
        Ok(())
    }

    /// The customer's deliveries among the snapshot's `keys` (whose tails
    /// past `skip` bytes are delivery ids) and the overlay's, current.
    fn customer_deliveries(
        &self,
        customer: &str,
        snapshot_ids: impl Iterator<Item = Result<Vec<u8>, Error>>,
    ) -> Result<Vec<Delivery>, Error> {
        let mut ids: Vec<String> = self.lock().customer_deliveries(customer);
        for id in snapshot_ids {
            ids.push(String::from_utf8_lossy(&id?).into_owned());
        }
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.find_delivery(&id)?.map(|d| d.value));
        }
        Ok(out)
    }
}

/// Opens sled at `path` with a page cache of at most `cache_bytes`.
/// Reads, or records on first open, whether identity verification is
/// required by default for this store: yes for one made now (`fresh`: it
/// was empty), no for one an earlier release made (records but no mark).
fn identity_default(db: &sled::Db, fresh: bool) -> Result<bool, Error> {
    let key = keys::record(keys::META, codec::IDENTITY_KEY);
    if let Some(value) = db.get(&key)? {
        return Ok(value.as_ref() == b"required");
    }
    let required = fresh;
    db.insert(key, if required { &b"required"[..] } else { b"off" })?;
    Ok(required)
}

fn open_db(path: &Path, cache_bytes: u64) -> Result<sled::Db, Error> {
    let opened = sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        // Checkpoints flush; sled's own timer would only add writes.
        .flush_every_ms(None)
        .open();
    match opened {
        // sled locks its database file and, when another process holds the
        // lock, says so only in its message (sled 0.34's words; the startup
        // test checks them).
        Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
            Err(Error::InUse(path.to_owned()))
        }
        Err(sled::Error::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(Error::Unusable(format!(
                "cannot write {}: {e}; the data directory and everything in it must be \
                 writable by the user pushd runs as (chown -R, or another --data-dir)",
                path.display()
            )))
        }
        opened => Ok(opened?),
    }
}

/// A single node's templates: the messages its store holds.
impl pushd_actors::ports::Catalog for SledStore {
    fn message(
        &self,
        id: &str,
    ) -> pushd_actors::ports::BoxFuture<Result<Option<MessageSpec>, StoreError>> {
        let found = SledStore::message(self, id).map_err(StoreError::from);
        Box::pin(std::future::ready(found))
    }
}

impl Store for SledStore {
    fn customer(&self, id: &str) -> Result<Option<Customer>, StoreError> {
        match self.lock().customer(id) {
            Found::Here(c) => Ok(c),
            Found::Absent => Ok(self.read(&keys::record(keys::CUSTOMER, id))?),
        }
    }

    fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        Ok(self.find_delivery(id)?.map(|d| d.value))
    }

    fn delivery_as_of(&self, id: &str) -> Result<Option<AsOf<Delivery>>, StoreError> {
        Ok(self.find_delivery(id)?)
    }

    fn unsettled_deliveries(&self, customer_id: &str) -> Result<Vec<Delivery>, StoreError> {
        let prefix = keys::unsettled_prefix(customer_id);
        let ids = self
            .db
            .scan_prefix(&prefix)
            .map(|item| Ok(item?.0[prefix.len()..].to_vec()));
        let mut all = self.customer_deliveries(customer_id, ids)?;
        all.retain(|d| d.customer_id == customer_id && d.state.pending() && !d.state.held);
        Ok(all)
    }

    fn held_deliveries(&self, each: &mut dyn FnMut(&Delivery)) -> Result<(), StoreError> {
        self.drain()?;
        Ok(self.each_held(each)?)
    }

    fn deliveries_between(
        &self,
        customer_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut all =
            self.customer_deliveries(customer_id, self.listed_ids(customer_id, from, to))?;
        all.retain(|d| d.customer_id == customer_id && (from..=to).contains(&d.listed_at()));
        all.sort_by(|a, b| (b.listed_at(), &b.id).cmp(&(a.listed_at(), &a.id)));
        Ok(all)
    }

    fn customers_with_unsettled(&self) -> Result<Vec<String>, StoreError> {
        self.drain()?;
        Ok(self.unsettled_customers()?)
    }

    fn send_record(&self, key: &str) -> Result<Option<SendRecord>, StoreError> {
        match self.lock().send_record(key) {
            Found::Here(r) => Ok(r),
            Found::Absent => Ok(self.read(&keys::record(keys::SEND, key))?),
        }
    }

    fn covered(&self) -> Result<Position, StoreError> {
        Ok(self.lock().position())
    }

    fn apply(&self, position: Position, changes: Vec<Change>) {
        if let Some(sink) = self.sink.get() {
            sink.applied(position, &changes);
        }
        let mut overlay = self.lock();
        overlay.apply(position, changes);
        let full = overlay.current.len() >= self.drain_at;
        self.note_backlog(&overlay);
        drop(overlay);
        if full {
            self.signal.wake();
        }
    }
}
