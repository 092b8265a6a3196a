//! Snapshots: moving the overlay into sled in the background, and
//! checkpoints that make sled durable and let the journal drop what they
//! cover.
//!
//! A *drain* takes the whole set of changes since the last one and writes it
//! to sled: each changed record once, with its delivery-log index changes
//! and exactly the counter and series deltas it makes, in small batches
//! (sled keeps far more memory for large ones: measured ~35 KB per delivery
//! with 35,000-operation batches, ~0.2 KB with 256). Each batch is atomic
//! and self-contained, and the last one also records the journal position
//! the set reaches. A crash between two batches leaves records in sled past
//! its recorded position; replaying them reads each delivery's previous
//! value from the store, finds the same value, and counts nothing twice. So
//! replay after the recorded position is exact. (sled may also persist a
//! batch before the journal syncs its records; a crash then keeps changes
//! that were never acknowledged, which is allowed, and never loses one that
//! was.)
//!
//! A set holding an erasure also removes the erased customer's
//! deliveries, after its last batch (see [`erase`](super::erase)).
//!
//! A *checkpoint* drains, flushes sled, and fsyncs its files: sled's own
//! flush uses `sync_file_range`, which makes neither file metadata nor the
//! drive's cache durable. Only then may the journal delete the segments the
//! checkpoint covers.
//!
//! Between drains the thread also expires the deliveries past their
//! retention, a few batches at a time (see `retention`), once it is told
//! the retention: after the journal's replay.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pushd_actors::idempotency::SendRecord;
use pushd_actors::ports::Position;
use pushd_actors::status::FailureReason;
use pushd_actors::tally::{Tally, contribution, counted_failure, series_points};

use super::keys::{self, CUSTOMER, Counter, DELIVERY, MESSAGE, SEND};
use super::overlay::{Dirty, DirtyDelivery, Indexed};
use super::retention::{Expiry, Retention};
use super::{Error, SledStore, codec, erase};

/// sled operations per batch (see the module doc).
pub(super) const OPS_PER_BATCH: usize = 256;

/// When the background thread drains and checkpoints.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// A drain at least this often while changes come in.
    pub drain_every: Duration,
    /// A checkpoint at least this often while changes come in.
    pub checkpoint_every: Duration,
    /// Drain early once this many records changed.
    pub drain_at: usize,
    /// A pass of delivery expiry starts at most this often.
    pub expire_every: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            drain_every: Duration::from_millis(250),
            checkpoint_every: Duration::from_secs(2),
            drain_at: 20_000,
            expire_every: Duration::from_secs(600),
        }
    }
}

/// Called with the position a checkpoint made durable in sled.
pub type OnCheckpoint = Box<dyn Fn(Position) + Send>;

/// Wakes the snapshot thread early, and stops it.
#[derive(Default)]
pub struct Signal {
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Signal {
    /// Asks for a drain now.
    pub fn wake(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0 = true;
        self.cv.notify_one();
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1 = true;
        self.cv.notify_one();
    }

    /// Waits up to `timeout` for a wake; answers whether it is closing.
    fn wait(&self, timeout: Duration) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut state, _) = self
            .cv
            .wait_timeout_while(state, timeout, |(woken, closing)| !*woken && !*closing)
            .unwrap_or_else(PoisonError::into_inner);
        state.0 = false;
        state.1
    }
}

/// The running snapshot thread.
pub struct Snapshotter {
    signal: Arc<Signal>,
    retention: Sender<Retention>,
    thread: JoinHandle<()>,
}

impl Snapshotter {
    /// Starts the thread `pushd-snapshot` for `store`.
    pub fn start(
        store: &Arc<SledStore>,
        timing: Timing,
        on_checkpoint: OnCheckpoint,
    ) -> std::io::Result<Snapshotter> {
        let signal = store.signal.clone();
        let weak = Arc::downgrade(store);
        let (retention, retained) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("pushd-snapshot".into())
            .spawn(move || run(&weak, timing, &retained, &on_checkpoint))?;
        Ok(Snapshotter {
            signal,
            retention,
            thread,
        })
    }

    /// From now on, expires the deliveries past `retention` too, between
    /// drains. Call it once the journal is replayed: a replayed change
    /// reads the delivery it changes from the store, so none may leave
    /// before.
    pub fn retain(&self, retention: Retention) {
        if self.retention.send(retention).is_err() {
            tracing::error!("snapshot thread stopped; deliveries are not expired");
        }
    }

    /// Stops the thread after a last checkpoint.
    pub fn stop(self) {
        self.signal.close();
        if self.thread.join().is_err() {
            tracing::error!("snapshot thread panicked");
        }
    }
}

fn run(
    store: &Weak<SledStore>,
    timing: Timing,
    retained: &Receiver<Retention>,
    on_checkpoint: &OnCheckpoint,
) {
    let mut checkpointed = Instant::now();
    let mut expiry = None;
    loop {
        let closing = store
            .upgrade()
            .map(|s| s.signal.clone())
            .is_none_or(|signal| signal.wait(timing.drain_every));
        let Some(store) = store.upgrade() else { return };
        let due = closing || checkpointed.elapsed() >= timing.checkpoint_every;
        let result = if due {
            checkpointed = Instant::now();
            store.checkpoint().map(on_checkpoint)
        } else {
            store.drain().map(drop)
        };
        store.note_snapshot(result.as_ref().err());
        if let Err(e) = result {
            tracing::error!(error = %e, "snapshot failed; retrying");
        }
        if closing {
            return;
        }
        if let Some(retention) = retained.try_iter().last() {
            expiry = Some(Expiry::new(retention, timing.expire_every));
        }
        if let Some(expiry) = &mut expiry {
            expiry.step(&store);
        }
    }
}

impl SledStore {
    /// Writes every change not yet in sled to it, in one batch. Readers see
    /// every change throughout. Answers the position sled now holds.
    pub fn drain(&self) -> Result<Position, Error> {
        let _one = self
            .drain_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            let (set, retry) = {
                let mut overlay = self.lock();
                match &overlay.draining {
                    // A drain that failed is retried before anything newer.
                    Some(failed) => (failed.clone(), true),
                    None if overlay.current.is_empty() => return Ok(overlay.position()),
                    None => {
                        let position = overlay.current.position;
                        let set = Arc::new(std::mem::take(&mut overlay.current));
                        overlay.current.position = position;
                        overlay.draining = Some(set.clone());
                        (set, false)
                    }
                }
            };
            let started = Instant::now();
            if let Some(sink) = self.sink.get() {
                sink.persist(set.position)?;
            }
            self.write_set(&set)?;
            let mut overlay = self.lock();
            overlay.draining = None;
            self.note_backlog(&overlay);
            drop(overlay);
            metrics::counter!("pushd_snapshot_drains_total").increment(1);
            metrics::counter!("pushd_snapshot_records_total").increment(set.len() as u64);
            metrics::histogram!("pushd_snapshot_drain_seconds")
                .record(started.elapsed().as_secs_f64());
            if !retry {
                return Ok(set.position);
            }
        }
    }

    /// Drains, then makes sled durable: flush, and fsync of its files.
    /// Answers the journal position the durable snapshot covers.
    pub fn checkpoint(&self) -> Result<Position, Error> {
        let started = Instant::now();
        let covered = self.drain()?;
        self.db.flush()?;
        sync_tree(&self.path)?;
        metrics::counter!("pushd_checkpoints_total").increment(1);
        metrics::histogram!("pushd_checkpoint_seconds").record(started.elapsed().as_secs_f64());
        Ok(covered)
    }

    /// Writes a drained set in batches of about [`OPS_PER_BATCH`]
    /// operations, the last with the set's position. A set whose writing
    /// failed part-way resumes after its last written batch.
    fn write_set(&self, set: &Dirty) -> Result<(), Error> {
        let customers = set.customers.iter().map(Item::Customer);
        let messages = set.messages.iter().map(Item::Message);
        // Expiry before the set's own send records: a record written again
        // in this set is never removed by it.
        let expired = set.sends_expired_before.map(Item::SendsExpired);
        let sends = set.sends.values().map(Item::Send);
        // Erased ones first: a delivery made after the erasure under an id
        // erased in this set (a keyed send tried again) overwrites it.
        let deliveries = (set.erased_deliveries.iter())
            .chain(set.deliveries.values())
            .map(Item::Delivery);
        let items: Vec<Item<'_>> = customers
            .chain(messages)
            .chain(expired)
            .chain(sends)
            .chain(deliveries)
            .collect();
        let mut chunk = Chunk::default();
        for (i, item) in items
            .iter()
            .enumerate()
            .skip(set.written.load(Ordering::Acquire))
        {
            chunk.stage(item, &self.db)?;
            if chunk.ops >= OPS_PER_BATCH {
                self.commit(std::mem::take(&mut chunk), None)?;
                set.written.store(i + 1, Ordering::Release);
            }
        }
        // The erasures of the set: marked with its position, then done.
        let erasures: Vec<(&String, HashSet<String>)> = (set.erased.iter())
            .map(|customer| {
                let later = set.deliveries.values().map(|p| &p.latest);
                let keep = later.filter(|d| d.customer_id == *customer);
                (customer, keep.map(|d| d.id.clone()).collect())
            })
            .collect();
        for (customer, keep) in &erasures {
            let marker = erase::marker(keep.iter().map(String::as_str));
            chunk.batch.insert(keys::erasing(customer), marker);
        }
        // An erased delivery's id used again: the index keys only the
        // erased one had go (its record was overwritten).
        for erased in &set.erased_deliveries {
            if let Some(again) = set.deliveries.get(&erased.latest.id) {
                let kept = keys::index_keys(&again.latest);
                for key in keys::index_keys(&erased.latest) {
                    if !kept.contains(&key) {
                        chunk.batch.remove(key);
                    }
                }
            }
        }
        self.commit(chunk, Some(set.position))?;
        set.written.store(items.len(), Ordering::Release);
        if !erasures.is_empty() {
            let erasures: Vec<(&str, &HashSet<String>)> = erasures
                .iter()
                .map(|(c, keep)| (c.as_str(), keep))
                .collect();
            let removed = erase::remove(&self.db, &erasures)?;
            tracing::debug!(removed, "erased deliveries removed from the snapshot");
        }
        Ok(())
    }

    /// Applies one chunk: its records, and its deltas added to the stored
    /// counters and series, and the position if it is the set's last.
    fn commit(&self, chunk: Chunk, position: Option<Position>) -> Result<(), Error> {
        let mut batch = chunk.batch;
        for (key, delta) in chunk.counters.iter().filter(|(_, d)| !d.is_zero()) {
            let value = self.read::<Tally>(key)?.unwrap_or_default() + *delta;
            debug_assert!(
                [value.message, value.ios, value.android]
                    .iter()
                    .all(|c| c.entries().iter().all(|&(_, n)| n >= 0)),
                "counters never go negative"
            );
            match value.is_zero() {
                true => batch.remove(key.as_slice()),
                false => batch.insert(key.as_slice(), codec::encode(&value)?),
            }
        }
        for (key, [delivered, opened]) in chunk.series.iter().filter(|(_, d)| **d != [0, 0]) {
            let [d, o] = self.read::<[i64; 2]>(key)?.unwrap_or_default();
            let value = [d + delivered, o + opened];
            match value == [0, 0] {
                true => batch.remove(key.as_slice()),
                false => batch.insert(key.as_slice(), codec::encode(&value)?),
            }
        }
        // A count may go below 0 when a failed delivery the counters never
        // counted changes: one that left the snapshot before they were
        // counted from it, or that an older release made.
        for (key, delta) in chunk.reasons.iter().filter(|(_, d)| **d != 0) {
            let value = self.read::<i64>(key)?.unwrap_or_default() + delta;
            match value == 0 {
                true => batch.remove(key.as_slice()),
                false => batch.insert(key.as_slice(), codec::encode(&value)?),
            }
        }
        if let Some(position) = position {
            batch.insert(
                keys::record(keys::META, codec::COVERED_KEY),
                &position.to_be_bytes(),
            );
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }
}

/// One record of a drained set.
enum Item<'a> {
    Customer((&'a String, &'a Option<pushd_actors::model::Customer>)),
    Message((&'a String, &'a pushd_actors::model::MessageSpec)),
    /// Send records started before this time (Unix ms) go.
    SendsExpired(i64),
    Send(&'a SendRecord),
    Delivery(&'a DirtyDelivery),
}

/// A batch being built, with the counter and series deltas of its records.
#[derive(Default)]
struct Chunk {
    batch: sled::Batch,
    ops: usize,
    counters: HashMap<Vec<u8>, Tally>,
    series: HashMap<Vec<u8>, [i64; 2]>,
    reasons: HashMap<Vec<u8>, i64>,
}

impl Chunk {
    /// Adds one record's writes; `db` is read for what a send record's
    /// change removes.
    fn stage(&mut self, item: &Item<'_>, db: &sled::Db) -> Result<(), Error> {
        match item {
            Item::Customer((id, customer)) => {
                let key = keys::record(CUSTOMER, id);
                match customer {
                    Some(c) => self.batch.insert(key, codec::encode(c)?),
                    None => self.batch.remove(key),
                }
                self.ops += 1;
            }
            Item::Message((id, message)) => {
                self.batch
                    .insert(keys::record(MESSAGE, id), codec::encode(*message)?);
                self.ops += 1;
            }
            Item::SendsExpired(before) => self.stage_expiry(*before, db)?,
            Item::Send(record) => {
                let key = keys::record(SEND, &record.key);
                // The key's older record (a key used again once expired)
                // leaves the start-time index.
                if let Some(old) = db.get(&key)? {
                    let old: SendRecord = codec::decode(&old)?;
                    if old.started_ms != record.started_ms {
                        self.batch
                            .remove(keys::send_started(old.started_ms, &record.key));
                        self.ops += 1;
                    }
                }
                self.batch.insert(key, codec::encode(*record)?);
                let started = keys::send_started(record.started_ms, &record.key);
                self.batch.insert(started, sled::IVec::default());
                self.ops += 2;
            }
            Item::Delivery(pending) => self.stage_delivery(pending)?,
        }
        Ok(())
    }

    /// Removes every send record started before `before` (Unix ms), found
    /// through the start-time index.
    fn stage_expiry(&mut self, before: i64, db: &sled::Db) -> Result<(), Error> {
        let end = [keys::SEND_STARTED, &keys::time(before)].concat();
        for item in db.range(keys::SEND_STARTED.to_vec()..end) {
            let (index, _) = item?;
            self.batch.remove(index.clone());
            self.ops += 1;
            let Some((started_ms, key)) = keys::send_started_parts(&index) else {
                continue;
            };
            let record = keys::record(SEND, &key);
            // The record may be a newer one of the same key.
            let current = db.get(&record)?;
            let current = current
                .map(|v| codec::decode::<SendRecord>(&v))
                .transpose()?;
            if current.is_some_and(|c| c.started_ms == started_ms) {
                self.batch.remove(record);
                self.ops += 1;
            }
        }
        Ok(())
    }

    /// A delivery's record, its index changes, and what its change counts.
    fn stage_delivery(&mut self, pending: &DirtyDelivery) -> Result<(), Error> {
        let d = &pending.latest;
        self.batch
            .insert(keys::record(DELIVERY, &d.id), codec::encode(&**d)?);
        // An expired delivery brought back by a change has no index keys.
        let was = pending.stored.as_ref().filter(|was| !was.expired);
        let now = Indexed::of(d);
        // Most changes (a report, a device's outcome) keep every key: none
        // is built to find that out.
        if !was.is_some_and(|was| keys::same_index_keys(&was.indexed, &now)) {
            let new = keys::index_keys_as(d, &now);
            let old = was
                .map(|was| keys::index_keys_as(d, &was.indexed))
                .unwrap_or_default();
            for key in old.iter().filter(|k| !new.contains(k)) {
                self.batch.remove(key.as_slice());
                self.ops += 1;
            }
            for key in new.iter().filter(|k| !old.contains(k)) {
                self.batch.insert(key.as_slice(), keys::index_value(d));
                self.ops += 1;
            }
        }
        self.ops += 1;
        if let Some(was) = &pending.stored {
            let campaign = was.indexed.campaign_id.as_deref();
            self.count(
                &d.message_id,
                campaign,
                -was.tally,
                &was.points,
                was.failure,
                -1,
            );
        }
        let points: Vec<_> = series_points(d).collect();
        self.count(
            &d.message_id,
            d.campaign_id.as_deref(),
            contribution(d),
            &points,
            counted_failure(d),
            1,
        );
        Ok(())
    }

    /// Adds a tally, and series points and a failure (with `sign`), to a
    /// message's and its campaign's deltas.
    fn count(
        &mut self,
        message: &str,
        campaign: Option<&str>,
        tally: Tally,
        points: &[(i64, usize)],
        failure: Option<FailureReason>,
        sign: i64,
    ) {
        let counters = [
            Some(Counter::Message(message)),
            campaign.map(Counter::Campaign),
        ];
        for counter in counters.into_iter().flatten() {
            *self.counters.entry(counter.key()).or_default() += tally;
            for &(minute, which) in points {
                self.series
                    .entry(keys::series(counter, minute))
                    .or_default()[which] += sign;
            }
            if let Some(reason) = failure {
                *self
                    .reasons
                    .entry(keys::reason(counter, reason.code()))
                    .or_default() += sign;
            }
        }
    }
}

/// fsyncs every file under `dir` (sled's `db`, `conf`, `blobs/*`, ...) and
/// the directories themselves.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}
