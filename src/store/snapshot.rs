//! Snapshots: moving the overlay into sled in the background, and
//! checkpoints that make sled durable and let the journal drop what they
//! cover.
//!
//! A *drain* takes the whole set of changes since the last one and writes it
//! to sled in one atomic batch: each changed record once, its delivery-log
//! index changes, the counter and series deltas, and the journal position
//! the set reaches. The snapshot's state and its position therefore always
//! agree, so replaying the journal after that position is exact: counters
//! are never applied twice. (sled may persist a batch before the journal
//! syncs its records; a crash then keeps changes that were never
//! acknowledged, which is allowed, and never loses one that was.)
//!
//! A *checkpoint* drains, flushes sled, and fsyncs its files: sled's own
//! flush uses `sync_file_range`, which makes neither file metadata nor the
//! drive's cache durable. Only then may the journal delete the segments the
//! checkpoint covers.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pushd_actors::ports::Position;
use pushd_actors::tally::Tally;

use super::keys::{self, CUSTOMER, DELIVERY, MESSAGE};
use super::overlay::Dirty;
use super::{Error, SledStore, codec};

/// When the background thread drains and checkpoints.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// A drain at least this often while changes come in.
    pub drain_every: Duration,
    /// A checkpoint at least this often while changes come in.
    pub checkpoint_every: Duration,
    /// Drain early once this many records changed.
    pub drain_at: usize,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            drain_every: Duration::from_millis(250),
            checkpoint_every: Duration::from_secs(2),
            drain_at: 20_000,
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
        let thread = std::thread::Builder::new()
            .name("pushd-snapshot".into())
            .spawn(move || run(&weak, timing, &on_checkpoint))?;
        Ok(Snapshotter { signal, thread })
    }

    /// Stops the thread after a last checkpoint.
    pub fn stop(self) {
        self.signal.close();
        if self.thread.join().is_err() {
            tracing::error!("snapshot thread panicked");
        }
    }
}

fn run(store: &Weak<SledStore>, timing: Timing, on_checkpoint: &OnCheckpoint) {
    let mut checkpointed = Instant::now();
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
        if let Err(e) = result {
            tracing::error!(error = %e, "snapshot failed; retrying");
        }
        if closing {
            return;
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
            self.db.apply_batch(self.batch(&set)?)?;
            self.lock().draining = None;
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

    /// The sled batch of one drained set.
    fn batch(&self, set: &Dirty) -> Result<sled::Batch, Error> {
        let mut batch = sled::Batch::default();
        for (id, customer) in &set.customers {
            let key = keys::record(CUSTOMER, id);
            match customer {
                Some(c) => batch.insert(key, codec::encode(c)?),
                None => batch.remove(key),
            }
        }
        for (id, message) in &set.messages {
            batch.insert(keys::record(MESSAGE, id), codec::encode(message)?);
        }
        for (id, pending) in &set.deliveries {
            batch.insert(keys::record(DELIVERY, id), codec::encode(&pending.latest)?);
            let new = keys::index_keys(&pending.latest);
            let old = pending
                .stored
                .as_ref()
                .map(|was| keys::index_keys_as(&pending.latest, was))
                .unwrap_or_default();
            for key in old.iter().filter(|k| !new.contains(k)) {
                batch.remove(key.as_slice());
            }
            for key in new.into_iter().filter(|k| !old.contains(k)) {
                batch.insert(key, sled::IVec::default());
            }
        }
        for (key, delta) in set.counters.iter().filter(|(_, d)| !d.is_zero()) {
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
        for (key, [delivered, opened]) in &set.series {
            let [d, o] = self.read::<[i64; 2]>(key)?.unwrap_or_default();
            let value = [d + delivered, o + opened];
            match value == [0, 0] {
                true => batch.remove(key.as_slice()),
                false => batch.insert(key.as_slice(), codec::encode(&value)?),
            }
        }
        batch.insert(
            keys::record(keys::META, codec::COVERED_KEY),
            &set.position.to_be_bytes(),
        );
        Ok(batch)
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
