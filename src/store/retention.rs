//! Delivery retention: deliveries created longer ago than the retention
//! leave the snapshot — their records and delivery-log index keys — while
//! the counters and time series they counted in stay as they are (they are
//! aggregates, never decremented).
//!
//! The snapshot thread runs it between drains, a few batches of about
//! [`OPS_PER_BATCH`] sled operations at a time, never on the request path,
//! once told the retention after the journal's replay (a replayed change
//! reads the delivery it changes from the store). A *pass* removes every delivery created before its cut-off. Delivery ids
//! are ULIDs made at the delivery's creation (a keyed send's, at its call's
//! start: never later), so the `d/` keys sort by creation time and a pass
//! reads only the range of ids made before its cut-off; the delivery's
//! `created_at` decides.
//!
//! Each batch holds the drain lock, so no drain writes meanwhile. A delivery
//! whose send is unsettled (its customer's actor holds it) or that has a
//! change in the overlay is left for a later pass. A change the engine makes
//! after the removal, from a value it read before (a report racing the
//! expiry), brings the delivery back whole: the overlay remembers the ids it
//! removed lately, and the next drain writes such a delivery with every
//! index key and counts only its change. A later pass expires it again.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use pushd_actors::delivery_id::DeliveryId;
use pushd_actors::model::Delivery;
use pushd_actors::ports::Clock;
use pushd_actors::status::Timestamp;

use super::keys::{self, DELIVERY};
use super::snapshot::OPS_PER_BATCH;
use super::{Error, SledStore, codec};

/// Deliveries read per batch at most (the ones left for a later pass
/// cost a read each, and no operation).
const READS_PER_BATCH: usize = 1024;
/// Batches per step of the snapshot thread: a pass with much to remove
/// goes on after the next drain.
const BATCHES_PER_STEP: usize = 8;
const SECONDS_PER_DAY: i64 = 24 * 3600;

/// How long deliveries are kept, and the clock that tells their age.
#[derive(Clone)]
pub struct Retention {
    days: u64,
    clock: Arc<dyn Clock>,
}

impl Retention {
    /// Deliveries kept `days` days after their creation, as `clock` tells
    /// time; 0 keeps them for ever.
    pub fn days(days: u64, clock: Arc<dyn Clock>) -> Retention {
        Retention { days, clock }
    }

    /// A pass over the deliveries created more than the retention ago,
    /// from now; `None` if they are kept for ever.
    pub fn pass(&self) -> Option<Pass> {
        let keep = i64::try_from(self.days)
            .ok()?
            .checked_mul(SECONDS_PER_DAY)?;
        (keep > 0).then(|| Pass::new(self.clock.now().saturating_sub(keep)))
    }
}

/// One pass of expiry: every delivery created before its cut-off leaves,
/// a few batches per [`SledStore::expire`] call.
#[derive(Debug)]
pub struct Pass {
    before: Timestamp,
    /// The next delivery key to read.
    next: Vec<u8>,
    /// The key of the first id made at the cut-off: the range ends there.
    end: Vec<u8>,
    expired: u64,
}

impl Pass {
    /// A pass over the deliveries created before `before` (Unix seconds).
    fn new(before: Timestamp) -> Pass {
        let first_kept = DeliveryId::first_at(before.saturating_mul(1000)).to_string();
        Pass {
            before,
            next: DELIVERY.to_vec(),
            end: keys::record(DELIVERY, &first_kept),
            expired: 0,
        }
    }

    /// How many deliveries it removed so far.
    pub fn expired(&self) -> u64 {
        self.expired
    }
}

/// The next batch of a pass: the deliveries to remove, and where the pass
/// goes on (`None`: its range is read to the end).
struct Found {
    old: Vec<Delivery>,
    next: Option<Vec<u8>>,
}

impl SledStore {
    /// Goes on with `pass` for at most `batches` batches of about
    /// [`OPS_PER_BATCH`] sled operations, each atomic; answers whether the
    /// pass is over. A failed batch changes nothing, and the pass retries
    /// it on the next call.
    pub fn expire(&self, pass: &mut Pass, batches: usize) -> Result<bool, Error> {
        for _ in 0..batches {
            if self.expire_batch(pass)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes the next batch of `pass`'s deliveries that may go, with
    /// their index keys; answers whether the pass is over.
    fn expire_batch(&self, pass: &mut Pass) -> Result<bool, Error> {
        let _one = self
            .drain_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let found = self.find_expired(pass)?;
        let doomed = self.lock().expire(found.old);
        if !doomed.is_empty() {
            self.remove_expired(&doomed)?;
            pass.expired += doomed.len() as u64;
            metrics::counter!("pushd_deliveries_expired_total").increment(doomed.len() as u64);
        }
        match found.next {
            Some(next) => pass.next = next,
            None => return Ok(true),
        }
        Ok(false)
    }

    /// Removes `doomed` and their index keys in one batch; if it fails,
    /// the overlay forgets they were to go.
    fn remove_expired(&self, doomed: &[Delivery]) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for d in doomed {
            batch.remove(keys::record(DELIVERY, &d.id));
            for key in keys::index_keys(d) {
                batch.remove(key);
            }
        }
        self.db.apply_batch(batch).map_err(|e| {
            self.lock().unexpire(doomed.iter().map(|d| d.id.as_str()));
            e.into()
        })
    }

    /// Reads `pass`'s range on from where it stands, for about a batch of
    /// settled deliveries created before its cut-off.
    fn find_expired(&self, pass: &Pass) -> Result<Found, Error> {
        let mut found = Found {
            old: Vec::new(),
            next: None,
        };
        let (mut ops, mut reads) = (0, 0);
        for item in self.db.range(pass.next.clone()..pass.end.clone()) {
            if ops >= OPS_PER_BATCH || reads >= READS_PER_BATCH {
                return Ok(found);
            }
            let (key, value) = item?;
            reads += 1;
            found.next = Some([&key[..], &[0]].concat());
            let d: Delivery = codec::decode(&value)?;
            if d.created_at < pass.before && d.state.settled() {
                ops += 1 + keys::index_keys(&d).len();
                found.old.push(d);
            }
        }
        found.next = None;
        Ok(found)
    }
}

/// The snapshot thread's side of retention: when passes start, and the
/// one under way.
pub(super) struct Expiry {
    retention: Retention,
    /// A pass starts at most this often.
    every: Duration,
    /// The pass under way.
    pass: Option<Pass>,
    /// When the last pass started.
    started: Option<Instant>,
}

impl Expiry {
    /// Passes of `retention`, one at most every `every`.
    pub(super) fn new(retention: Retention, every: Duration) -> Expiry {
        Expiry {
            retention,
            every,
            pass: None,
            started: None,
        }
    }

    /// One step, between drains: goes on with the pass under way, or
    /// starts one when it is time.
    pub(super) fn step(&mut self, store: &SledStore) {
        if self.pass.is_none() && self.started.is_none_or(|at| at.elapsed() >= self.every) {
            self.started = Some(Instant::now());
            self.pass = self.retention.pass();
        }
        let Some(pass) = &mut self.pass else {
            return;
        };
        match store.expire(pass, BATCHES_PER_STEP) {
            Ok(false) => {}
            Ok(true) => self.finish(),
            Err(e) => tracing::error!(error = %e, "delivery expiry failed; retrying"),
        }
    }

    /// Ends the pass under way, logging what it removed, if anything.
    fn finish(&mut self) {
        let Some(pass) = self.pass.take() else {
            return;
        };
        if pass.expired > 0 {
            let seconds = self.started.map_or(0.0, |at| at.elapsed().as_secs_f64());
            tracing::info!(
                expired = pass.expired,
                created_before = pass.before,
                seconds,
                "deliveries expired"
            );
        }
    }
}
