//! What changed since the last snapshot, in memory: the store's side of
//! "the engine is in memory". Every applied change lands here at once
//! (reads see it); the snapshot thread later moves a whole [`Dirty`] set
//! into sled, so a delivery changed five times between two snapshots costs
//! one write. Each dirty delivery remembers what the snapshot holds for it
//! (its index state and what it counts), so the drain can write it together
//! with its exact counter deltas, in small self-contained batches.
//!
//! The live counters (what the metrics endpoints answer) are here too, for
//! every message and campaign: they are few, and always current.
//!
//! So are the ids of the deliveries expiry removed from the snapshot lately
//! (see `retention`): a change the engine makes to one of them, from a
//! value it read before the removal, brings the delivery back whole.
//!
//! An erased customer's deliveries leave the reads at once: its dirty ones
//! move aside (the drain still writes them, so sled's counters follow the
//! live ones, then removes them with the rest of the customer's), and each
//! set names the customers erased in it, so a read of an older set or of
//! sled skips their deliveries until the drain has removed them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use pushd_actors::idempotency::SendRecord;
use pushd_actors::model::{Customer, Delivery, MessageSpec};
use pushd_actors::ports::{Change, Entry, Position};
use pushd_actors::status::{FailureReason, MessageStatus, Timestamp};
use pushd_actors::tally::{Tally, contribution, counted_failure, series_points};

use super::keys::{self, Counter};

/// The index-relevant part of a delivery as the snapshot holds it: what the
/// drain needs to remove its stale delivery-log index keys. (A delivery's
/// id, customer, message and creation time never change.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indexed {
    /// Its status.
    pub status: MessageStatus,
    /// Whether its send was unsettled.
    pub pending: bool,
    /// Its campaign (a retry takes the message's current one).
    pub campaign_id: Option<String>,
    /// Whether it was held for its time: a held delivery has only its
    /// status key (see `keys::index_keys_as`).
    pub held: bool,
    /// The time of its creation key ([`Delivery::listed_at`]): a scheduled
    /// one's changes when it is released, or held again.
    pub listed_at: Timestamp,
}

impl Indexed {
    /// The index state of `d`.
    pub fn of(d: &Delivery) -> Indexed {
        Indexed {
            status: d.status(),
            pending: d.state.pending(),
            campaign_id: d.campaign_id.clone(),
            held: d.state.held,
            listed_at: d.listed_at(),
        }
    }
}

/// What the snapshot holds for a delivery, as far as its indexes, counters
/// and series go.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// Its index state.
    pub indexed: Indexed,
    /// What it counts.
    pub tally: Tally,
    /// Its time-series points.
    pub points: Vec<(i64, usize)>,
    /// The failure reason it counts under.
    pub failure: Option<FailureReason>,
    /// Whether expiry removed its record and index keys from the snapshot
    /// (its counters and series stay: they are aggregates).
    pub expired: bool,
}

impl Stored {
    /// What a snapshot holding `d` holds.
    pub fn of(d: &Delivery) -> Stored {
        Stored {
            indexed: Indexed::of(d),
            tally: contribution(d),
            points: series_points(d).collect(),
            failure: counted_failure(d),
            expired: false,
        }
    }
}

/// A delivery changed since the last snapshot (boxed parts keep the map's
/// entries small, so it grows without moving whole deliveries).
#[derive(Debug)]
pub struct DirtyDelivery {
    /// What the snapshot holds for it; `None` if it is new.
    pub stored: Option<Box<Stored>>,
    /// Its current value.
    pub latest: Box<Delivery>,
}

/// Everything changed since the last snapshot, up to `position`.
#[derive(Debug, Default)]
pub struct Dirty {
    /// The last journal position applied into this set.
    pub position: Position,
    /// Records of this set already written to sled by its drain.
    pub written: AtomicUsize,
    /// Customers; `None` means deleted.
    pub customers: HashMap<String, Option<Customer>>,
    /// Messages.
    pub messages: HashMap<String, MessageSpec>,
    /// Deliveries, by id.
    pub deliveries: HashMap<String, DirtyDelivery>,
    /// Delivery ids by customer: the engine's per-customer reads merge them.
    pub by_customer: HashMap<String, Vec<String>>,
    /// Customers erased in this set: every delivery of theirs made before
    /// the erasure is hidden from reads and removed from sled by the drain.
    pub erased: HashSet<String>,
    /// Deliveries of customers erased in this set that changed since the
    /// last snapshot: written like the others (so a drain cut short leaves
    /// sled's records and counters in step), never read, then removed.
    pub erased_deliveries: Vec<DirtyDelivery>,
    /// Keyed send records, by key.
    pub sends: HashMap<String, SendRecord>,
    /// Send records started before this time (Unix ms) are to be dropped.
    pub sends_expired_before: Option<i64>,
}

impl Dirty {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.sends_expired_before.is_none()
    }

    /// How many records changed.
    pub fn len(&self) -> usize {
        self.customers.len()
            + self.messages.len()
            + self.deliveries.len()
            + self.sends.len()
            + self.erased_deliveries.len()
    }
}

/// The in-memory state of the store.
#[derive(Debug, Default)]
pub struct Overlay {
    /// Changes not yet handed to a drain.
    pub current: Dirty,
    /// The set a drain is writing to sled right now; readers see it until
    /// sled has it.
    pub draining: Option<Arc<Dirty>>,
    /// Every counter, by counter key: the snapshot's plus every change since.
    pub live_counters: HashMap<Vec<u8>, Tally>,
    /// Every time-series point, by series key.
    pub live_series: BTreeMap<Vec<u8>, [i64; 2]>,
    /// Every failure-reason count, by reason key.
    pub live_reasons: BTreeMap<Vec<u8>, i64>,
    /// Deliveries expiry removed from the snapshot lately.
    pub expired: Expired,
}

/// How long the ids of expired deliveries are remembered: far longer than
/// the engine holds a delivery it read before changing it.
const REMEMBER_EXPIRED: Duration = Duration::from_secs(60);

/// The ids of the deliveries expiry removed from the snapshot in the last
/// [`REMEMBER_EXPIRED`], with when.
#[derive(Debug, Default)]
pub struct Expired {
    ids: HashMap<String, Instant>,
    batches: VecDeque<(Instant, Vec<String>)>,
}

impl Expired {
    /// Remembers `ids` as removed at `at`, and forgets what is older than
    /// [`REMEMBER_EXPIRED`].
    fn remember(&mut self, at: Instant, ids: Vec<String>) {
        let stale = |then: &Instant| at.saturating_duration_since(*then) >= REMEMBER_EXPIRED;
        while self.batches.front().is_some_and(|(then, _)| stale(then)) {
            let Some((then, old)) = self.batches.pop_front() else {
                break;
            };
            for id in old {
                // Unless removed again since.
                if self.ids.get(&id) == Some(&then) {
                    self.ids.remove(&id);
                }
            }
        }
        if ids.is_empty() {
            return;
        }
        for id in &ids {
            self.ids.insert(id.clone(), at);
        }
        self.batches.push_back((at, ids));
    }

    /// Forgets `id`; answers whether it was remembered. (Every change of
    /// a delivery asks: most often nothing is remembered.)
    fn forget(&mut self, id: &str) -> bool {
        !self.ids.is_empty() && self.ids.remove(id).is_some()
    }
}

/// The counters a delivery counts in: its message's and its campaign's.
fn counters(d: &Delivery) -> impl Iterator<Item = Counter<'_>> {
    [
        Some(Counter::Message(&d.message_id)),
        d.campaign_id.as_deref().map(Counter::Campaign),
    ]
    .into_iter()
    .flatten()
}

/// Where a lookup in the overlay ended.
pub enum Found<T> {
    /// The overlay has the current value (`None`: deleted).
    Here(Option<T>),
    /// The overlay has nothing: sled's value is current.
    Absent,
}

impl Overlay {
    /// The last journal position applied.
    pub fn position(&self) -> Position {
        self.current.position
    }

    /// Applies the changes of the record at `position`.
    pub fn apply(&mut self, position: Position, changes: Vec<Change>) {
        debug_assert!(position > self.current.position, "records apply in order");
        for change in changes {
            match change.entry {
                Entry::Customer(c) => {
                    self.current.customers.insert(c.id.clone(), Some(c));
                }
                Entry::CustomerDeleted(id) => {
                    self.current.customers.insert(id, None);
                }
                Entry::CustomerErased(id) => self.erase(id),
                Entry::Message(m) => {
                    self.current.messages.insert(m.id.clone(), *m);
                }
                Entry::Delivery(after) => self.apply_delivery(change.before.as_deref(), after),
                Entry::SendRecord(record) => {
                    self.current.sends.insert(record.key.clone(), *record);
                }
                Entry::SendRecordsExpired(before) => {
                    let dirty = &mut self.current;
                    dirty.sends.retain(|_, r| r.started_ms >= before);
                    dirty.sends_expired_before = dirty.sends_expired_before.max(Some(before));
                }
            }
        }
        self.current.position = position;
    }

    /// Erases customer `id`: it goes, and its deliveries changed in this set
    /// move aside (their counts stay in the live counters).
    fn erase(&mut self, id: String) {
        let dirty = &mut self.current;
        for delivery in dirty.by_customer.remove(&id).unwrap_or_default() {
            if let Some(pending) = dirty.deliveries.remove(&delivery) {
                dirty.erased_deliveries.push(pending);
            }
        }
        dirty.customers.insert(id.clone(), None);
        dirty.erased.insert(id);
    }

    fn apply_delivery(&mut self, before: Option<&Delivery>, after: Box<Delivery>) {
        self.count(before, &after);
        let dirty = &mut self.current;
        match dirty.deliveries.get_mut(&after.id) {
            Some(pending) => pending.latest = after,
            None => {
                dirty
                    .by_customer
                    .entry(after.customer_id.clone())
                    .or_default()
                    .push(after.id.clone());
                // The snapshot holds `before` once any drain in flight is
                // done (that drain holds `before` if it holds it), unless
                // expiry removed it: then the drain writes it back whole.
                let mut stored = before.map(|b| Box::new(Stored::of(b)));
                if let Some(stored) = &mut stored {
                    stored.expired = self.expired.forget(&after.id);
                }
                let pending = DirtyDelivery {
                    stored,
                    latest: after,
                };
                dirty.deliveries.insert(pending.latest.id.clone(), pending);
            }
        }
    }

    /// Moves the live counters and series by what changing a delivery from
    /// `before` to `after` changes.
    fn count(&mut self, before: Option<&Delivery>, after: &Delivery) {
        if let Some(b) = before.filter(|b| b.campaign_id != after.campaign_id) {
            // A retry took the message's new campaign: out of the old one.
            self.add(b, -contribution(b), -1);
            self.add(after, contribution(after), 1);
            return;
        }
        let delta = Tally::delta(before, after);
        if !delta.is_zero() {
            for counter in counters(after) {
                *self.live_counters.entry(counter.key()).or_default() += delta;
            }
        }
        let old: Vec<(i64, usize)> = before
            .map(|b| series_points(b).collect())
            .unwrap_or_default();
        let new: Vec<(i64, usize)> = series_points(after).collect();
        for point in old.iter().filter(|p| !new.contains(p)) {
            self.add_point(after, *point, -1);
        }
        for point in new.iter().filter(|p| !old.contains(p)) {
            self.add_point(after, *point, 1);
        }
        let (was, is) = (before.and_then(counted_failure), counted_failure(after));
        if was != is {
            was.into_iter().for_each(|r| self.add_failure(after, r, -1));
            is.into_iter().for_each(|r| self.add_failure(after, r, 1));
        }
    }

    /// Adds `tally` and `d`'s series points (with `sign`) to its counters.
    fn add(&mut self, d: &Delivery, tally: Tally, sign: i64) {
        for counter in counters(d) {
            *self.live_counters.entry(counter.key()).or_default() += tally;
        }
        for point in series_points(d) {
            self.add_point(d, point, sign);
        }
        if let Some(reason) = counted_failure(d) {
            self.add_failure(d, reason, sign);
        }
    }

    fn add_failure(&mut self, d: &Delivery, reason: FailureReason, sign: i64) {
        for counter in counters(d) {
            *self
                .live_reasons
                .entry(keys::reason(counter, reason.code()))
                .or_default() += sign;
        }
    }

    fn add_point(&mut self, d: &Delivery, (minute, which): (i64, usize), sign: i64) {
        for counter in counters(d) {
            self.live_series
                .entry(keys::series(counter, minute))
                .or_default()[which] += sign;
        }
    }

    /// A customer as the overlay knows it.
    pub fn customer(&self, id: &str) -> Found<Customer> {
        self.find(|d| d.customers.get(id).cloned())
    }

    /// A delivery as the overlay knows it. One found in the set being
    /// drained is gone if the current set erased its customer.
    pub fn delivery(&self, id: &str) -> Found<Delivery> {
        if let Some(pending) = self.current.deliveries.get(id) {
            return Found::Here(Some((*pending.latest).clone()));
        }
        let Some(pending) = self.draining.as_deref().and_then(|d| d.deliveries.get(id)) else {
            return Found::Absent;
        };
        let d = &pending.latest;
        let erased = self.current.erased.contains(&d.customer_id);
        Found::Here((!erased).then(|| (**d).clone()))
    }

    /// The customers erased since the last snapshot: sled may still hold
    /// their deliveries, which reads skip.
    pub fn erased(&self) -> HashSet<String> {
        let sets = std::iter::once(&self.current).chain(self.draining.as_deref());
        sets.flat_map(|d| d.erased.iter().cloned()).collect()
    }

    /// A message as the overlay knows it.
    pub fn message(&self, id: &str) -> Found<MessageSpec> {
        self.find(|d| d.messages.get(id).map(|m| Some(m.clone())))
    }

    /// A keyed send record as the overlay knows it.
    pub fn send_record(&self, key: &str) -> Found<SendRecord> {
        self.find(|d| d.sends.get(key).map(|r| Some(r.clone())))
    }

    /// The ids of a customer's deliveries changed since the last snapshot.
    pub fn customer_deliveries(&self, customer: &str) -> Vec<String> {
        let sets = std::iter::once(&self.current).chain(self.draining.as_deref());
        sets.flat_map(|d| d.by_customer.get(customer).into_iter().flatten())
            .cloned()
            .collect()
    }

    /// Of `found`, the deliveries expiry may remove from the snapshot: the
    /// ones the overlay holds no change of, and whose customer no set not
    /// yet written erased (the erasure removes those: one expired now would
    /// lose its index keys, and the drain writing the erased set's changed
    /// deliveries would bring its record back where the erasure no longer
    /// finds it). They are remembered as removed from now on (see
    /// [`Overlay::unexpire`] if the removal fails).
    pub fn expire(&mut self, found: Vec<Delivery>) -> Vec<Delivery> {
        let sets = || std::iter::once(&self.current).chain(self.draining.as_deref());
        let left = |d: &Delivery| {
            sets().any(|s| s.deliveries.contains_key(&d.id) || s.erased.contains(&d.customer_id))
        };
        let doomed: Vec<Delivery> = found.into_iter().filter(|d| !left(d)).collect();
        let ids = doomed.iter().map(|d| d.id.clone()).collect();
        self.expired.remember(Instant::now(), ids);
        doomed
    }

    /// Undoes [`Overlay::expire`] for `ids`, whose removal failed: the
    /// snapshot still holds them, and the changes made since to them
    /// change what it holds.
    pub fn unexpire<'a>(&mut self, ids: impl Iterator<Item = &'a str>) {
        for id in ids {
            self.expired.forget(id);
            let dirty = self.current.deliveries.get_mut(id);
            if let Some(stored) = dirty.and_then(|d| d.stored.as_mut()) {
                stored.expired = false;
            }
        }
    }

    /// Looks in the current set, then in the one being drained.
    fn find<T>(&self, look: impl Fn(&Dirty) -> Option<Option<T>>) -> Found<T> {
        if let Some(found) = look(&self.current) {
            return Found::Here(found);
        }
        match self.draining.as_deref().and_then(look) {
            Some(found) => Found::Here(found),
            None => Found::Absent,
        }
    }
}
