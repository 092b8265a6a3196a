//! Applying a commit: records, indexes, counters and time series of every
//! change go into one `sled::Batch`, so a commit is all or nothing.
//!
//! Counter and time-series keys are read-modify-written; each key belongs to
//! the shard of its delivery's customer, and the commit holds the striped
//! locks of all its shards from the reads until the batch is applied, so
//! concurrent commits never lose an update. Deltas are taken from the
//! stored delivery (read under that lock), not from the change's `before`,
//! so a stale `before` cannot skew the counters or leave a stale index key.

use std::collections::{HashMap, HashSet};
use std::sync::{MutexGuard, PoisonError};

use pushd_actors::model::Delivery;
use pushd_actors::ports::Change;
use pushd_actors::tally::{Tally, contribution};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::keys::{self, Counter};
use super::{Error, SledStore};

/// How many counter shards (and lock stripes) there are.
pub const SHARDS: usize = 64;

/// The shard of a customer's counters (FNV-1a).
fn shard_of(customer: &str) -> u8 {
    let hash = customer.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % SHARDS as u64) as u8
}

/// The minute buckets (since creation) in which a delivery was first
/// delivered (`0`) and first opened (`1`).
pub fn series_points(d: &Delivery) -> impl Iterator<Item = (i64, usize)> {
    let targeted = || d.state.devices.iter().filter(|s| s.targeted());
    let delivered = targeted().filter_map(|s| s.delivered_at).min();
    let opened = targeted().filter_map(|s| s.opened_at).min();
    let minute = move |t: i64| (t - d.created_at).div_euclid(60).max(0);
    [(delivered, 0), (opened, 1)]
        .into_iter()
        .filter_map(move |(t, which)| t.map(|t| (minute(t), which)))
}

/// Counter and time-series changes of one commit, by key.
#[derive(Default)]
struct Deltas {
    counters: HashMap<Vec<u8>, Tally>,
    series: HashMap<Vec<u8>, [i64; 2]>,
}

impl Deltas {
    /// Adds (`sign` 1) or takes away (`sign` -1) what `d` counts.
    fn add(&mut self, d: &Delivery, sign: i64) {
        let shard = shard_of(&d.customer_id);
        let tally = if sign < 0 {
            -contribution(d)
        } else {
            contribution(d)
        };
        let counters = [
            Some(Counter::Message(&d.message_id)),
            d.campaign_id.as_deref().map(Counter::Campaign),
        ];
        for counter in counters.into_iter().flatten() {
            *self.counters.entry(counter.shard(shard)).or_default() += tally;
            for (minute, which) in series_points(d) {
                self.series
                    .entry(keys::series(counter, minute, shard))
                    .or_default()[which] += sign;
            }
        }
    }

    /// Adds every delta to its stored value, in `batch`.
    fn stage(self, tree: &sled::Tree, batch: &mut sled::Batch) -> Result<(), Error> {
        for (key, delta) in self.counters {
            if !delta.is_zero() {
                let value = read::<Tally>(tree, &key)?.unwrap_or_default() + delta;
                write(batch, key, &value, value.is_zero())?;
            }
        }
        for (key, [delivered, opened]) in self.series {
            if delivered != 0 || opened != 0 {
                let [d, o] = read::<[i64; 2]>(tree, &key)?.unwrap_or_default();
                let value = [d + delivered, o + opened];
                write(batch, key, &value, value == [0, 0])?;
            }
        }
        Ok(())
    }
}

/// Decodes the JSON value at `key`.
pub fn read<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> Result<Option<T>, Error> {
    tree.get(key)?
        .map(|v| serde_json::from_slice(&v))
        .transpose()
        .map_err(Error::from)
}

fn write<T: Serialize>(
    batch: &mut sled::Batch,
    key: Vec<u8>,
    value: &T,
    remove: bool,
) -> Result<(), Error> {
    if remove {
        batch.remove(key);
    } else {
        batch.insert(key, serde_json::to_vec(value)?);
    }
    Ok(())
}

impl SledStore {
    /// Applies `changes` atomically; reads see them on return.
    pub(super) fn apply(&self, changes: &[Change]) -> Result<(), Error> {
        let _guards = self.lock_shards(changes);
        let mut batch = sled::Batch::default();
        let mut deltas = Deltas::default();
        let mut staged: HashMap<&str, &Delivery> = HashMap::new();
        for change in changes {
            match change {
                Change::Customer(c) => {
                    batch.insert(keys::record(keys::CUSTOMER, &c.id), serde_json::to_vec(c)?)
                }
                Change::CustomerDeleted(id) => batch.remove(keys::record(keys::CUSTOMER, id)),
                Change::Delivery { before, after } => {
                    // The engine is the single writer of a customer's
                    // deliveries, so `before` is what the store holds (or,
                    // for a second change of one commit, the first's value).
                    let stored = staged.get(after.id.as_str()).copied().or(before.as_deref());
                    stage_delivery(&mut batch, &mut deltas, stored, after)?;
                    staged.insert(&after.id, after);
                }
            }
        }
        deltas.stage(&self.db, &mut batch)?;
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Locks the stripes of every delivery's shard, in order.
    fn lock_shards(&self, changes: &[Change]) -> Vec<MutexGuard<'_, ()>> {
        let mut shards: Vec<u8> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Delivery { after, .. } => Some(shard_of(&after.customer_id)),
                _ => None,
            })
            .collect();
        shards.sort_unstable();
        shards.dedup();
        shards
            .into_iter()
            .map(|s| {
                self.stripes[usize::from(s)]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
            })
            .collect()
    }
}

/// Stages a delivery's record, index changes and counter deltas.
fn stage_delivery(
    batch: &mut sled::Batch,
    deltas: &mut Deltas,
    before: Option<&Delivery>,
    after: &Delivery,
) -> Result<(), Error> {
    batch.insert(
        keys::record(keys::DELIVERY, &after.id),
        serde_json::to_vec(after)?,
    );
    let old: HashSet<Vec<u8>> = before
        .map(keys::index_keys)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let new: HashSet<Vec<u8>> = keys::index_keys(after).into_iter().collect();
    for key in old.difference(&new) {
        batch.remove(key.as_slice());
    }
    for key in new.difference(&old) {
        batch.insert(key.as_slice(), sled::IVec::default());
    }
    if let Some(before) = before {
        deltas.add(before, -1);
    }
    deltas.add(after, 1);
    Ok(())
}
