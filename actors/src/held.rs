//! The schedule of held deliveries: a time-ordered index of `(due, delivery
//! id) → customer id`, and the loop that releases what is due into each
//! customer's actor.
//!
//! A held (`scheduled`) delivery is a small record here and in the store,
//! not an actor: its customer's actor stops when idle, and is started again
//! when the delivery is due. The index is rebuilt on start from the store
//! (recovery wakes every customer with an unsettled delivery, and a held one
//! is unsettled), so it is never written anywhere itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use compact_str::CompactString;

use crate::delivery_id::DeliveryId;
use crate::person::ReleaseDelivery;
use crate::registry::Registry;

/// A held delivery's place on the schedule: its due time (Unix ms) and id.
type Due = (i64, HeldId);

/// A held delivery's id: inline when it is one pushd made (a ULID), so
/// holding a delivery allocates nothing apart for its id; as given
/// otherwise.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum HeldId {
    Made(DeliveryId),
    Other(Box<str>),
}

impl HeldId {
    /// The least id: what a split of the schedule at a time starts from.
    const LEAST: HeldId = HeldId::Made(DeliveryId::LEAST);

    fn of(id: &str) -> HeldId {
        match DeliveryId::parse(id) {
            // Only an id that reads back the same, letter for letter.
            Some(made) if made.to_string() == id => HeldId::Made(made),
            _ => HeldId::Other(id.into()),
        }
    }
}

impl std::fmt::Display for HeldId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeldId::Made(id) => id.fmt(f),
            HeldId::Other(id) => f.write_str(id),
        }
    }
}

/// Whose a held delivery is: its customer, and its message (shared with
/// every other held delivery of that message).
struct Owner {
    customer: CompactString,
    message: Arc<str>,
}

/// The schedule itself, under one lock.
#[derive(Default)]
struct Schedule {
    /// Each held delivery's owner, by its place on the schedule.
    due: BTreeMap<Due, Owner>,
    /// How many deliveries of each message are held, by due time: what a
    /// message's next release is read from. Few entries (one per message
    /// and due time), however many deliveries share a time.
    by_message: HashMap<Arc<str>, BTreeMap<i64, u32>>,
}

impl Schedule {
    /// The shared id of `message`, counted once more at `due_ms`.
    fn count(&mut self, message: &str, due_ms: i64) -> Arc<str> {
        let id = match self.by_message.get_key_value(message) {
            Some((id, _)) => id.clone(),
            None => Arc::from(message),
        };
        let times = self.by_message.entry(id.clone()).or_default();
        *times.entry(due_ms).or_default() += 1;
        id
    }

    /// Counts one delivery of `message` at `due_ms` less.
    fn uncount(&mut self, message: &str, due_ms: i64) {
        let Some(times) = self.by_message.get_mut(message) else {
            return;
        };
        if let Some(n) = times.get_mut(&due_ms) {
            *n -= 1;
            if *n == 0 {
                times.remove(&due_ms);
            }
        }
        if times.is_empty() {
            self.by_message.remove(message);
        }
    }
}

/// The held deliveries of one engine, by due time.
#[derive(Default)]
pub struct HeldDeliveries {
    schedule: Mutex<Schedule>,
    /// Woken when an earlier delivery is held, or the engine stops.
    changed: tokio::sync::Notify,
    closed: AtomicBool,
}

impl HeldDeliveries {
    fn lock(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds delivery `id` of `customer` (a send of `message`) until
    /// `due_ms` (Unix ms). Holding one already held changes nothing.
    pub fn hold(&self, due_ms: i64, id: &str, customer: &str, message: &str) {
        let mut schedule = self.lock();
        let place = (due_ms, HeldId::of(id));
        if schedule.due.contains_key(&place) {
            return;
        }
        let earliest = schedule.due.keys().next().map(|(t, _)| *t);
        let message = schedule.count(message, due_ms);
        let owner = Owner {
            customer: CompactString::new(customer),
            message,
        };
        schedule.due.insert(place, owner);
        drop(schedule);
        if earliest.is_none_or(|t| due_ms < t) {
            self.changed.notify_one();
        }
    }

    /// Forgets delivery `id` held until `due_ms` (canceled).
    pub fn forget(&self, due_ms: i64, id: &str) {
        let mut schedule = self.lock();
        if let Some(owner) = schedule.due.remove(&(due_ms, HeldId::of(id))) {
            schedule.uncount(&owner.message, due_ms);
        }
    }

    /// How many deliveries are held.
    pub fn len(&self) -> usize {
        self.lock().due.len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the next one is due (Unix ms).
    pub fn next_due(&self) -> Option<i64> {
        self.lock().due.keys().next().map(|(t, _)| *t)
    }

    /// When the next held delivery of `message` is due (Unix ms).
    pub fn next_due_of(&self, message: &str) -> Option<i64> {
        let schedule = self.lock();
        let times = schedule.by_message.get(message)?;
        times.keys().next().copied()
    }

    /// Takes every delivery due at `now_ms`, earliest first, as
    /// `(delivery id, customer id)`.
    fn take_due(&self, now_ms: i64) -> Vec<(String, String)> {
        let mut schedule = self.lock();
        let later = schedule
            .due
            .split_off(&(now_ms.saturating_add(1), HeldId::LEAST));
        let taken = std::mem::replace(&mut schedule.due, later);
        taken
            .into_iter()
            .map(|((due_ms, id), owner)| {
                schedule.uncount(&owner.message, due_ms);
                (id.to_string(), owner.customer.into())
            })
            .collect()
    }

    /// Ends the release loop (the engine is going away).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.changed.notify_one();
    }
}

/// Releases held deliveries as they fall due, until `registry` is dropped:
/// each due one is handed to its customer's actor, which renders and sends
/// it as any delivery. Sleeps on the engine's clock until the next is due,
/// or until an earlier one is held.
pub(crate) async fn release_loop(registry: Weak<Registry>) {
    loop {
        let Some(engine) = registry.upgrade() else {
            return;
        };
        let (held, clock) = (engine.held().clone(), engine.clock().clone());
        if held.closed.load(Ordering::Acquire) {
            return;
        }
        let now = clock.now_ms();
        for (delivery_id, customer) in held.take_due(now) {
            let engine = engine.clone();
            tokio::spawn(async move {
                let release = ReleaseDelivery {
                    delivery_id: delivery_id.clone(),
                };
                match engine.ask(&customer, release).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) | Err(e) => {
                        tracing::error!(delivery = %delivery_id, error = %e, "cannot release scheduled delivery")
                    }
                }
            });
        }
        let next = held.next_due();
        drop(engine);
        let changed = held.changed.notified();
        match next {
            Some(at) => {
                let wait = clock.sleep(Duration::from_millis((at - now).max(0) as u64));
                tokio::select! {
                    () = wait => {}
                    () = changed => {}
                }
            }
            None => changed.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_deliveries_are_taken_in_time_order_and_later_ones_stay() {
        let held = HeldDeliveries::default();
        held.hold(3_000, "d3", "c", "m");
        held.hold(1_000, "d1", "c", "m");
        held.hold(2_000, "d2", "c", "m");
        held.hold(1_000, "d1", "c", "m");
        assert_eq!(held.len(), 3);
        assert_eq!(held.next_due(), Some(1_000));
        let taken = held.take_due(2_000);
        assert_eq!(
            taken,
            vec![("d1".into(), "c".into()), ("d2".into(), "c".into())]
        );
        assert_eq!(held.next_due(), Some(3_000));
        held.forget(3_000, "d3");
        assert!(held.is_empty());
    }

    #[test]
    fn an_id_pushd_made_is_held_inline_and_handed_back_as_given() {
        let made = DeliveryId::first_at(1_764_100_000_000).to_string();
        assert!(matches!(HeldId::of(&made), HeldId::Made(_)));
        // Lowercase reads as the same ULID, but is handed back as given.
        let lower = made.to_lowercase();
        assert!(matches!(HeldId::of(&lower), HeldId::Other(_)));
        let held = HeldDeliveries::default();
        for id in [made.as_str(), lower.as_str(), "old-style"] {
            held.hold(1_000, id, "c", "m");
        }
        let mut taken: Vec<String> = held.take_due(1_000).into_iter().map(|(id, _)| id).collect();
        taken.sort();
        let mut given = vec![made.clone(), lower, "old-style".to_string()];
        given.sort();
        assert_eq!(taken, given);
        assert!(held.is_empty());
    }

    #[test]
    fn a_message_next_release_follows_its_own_held_deliveries() {
        let held = HeldDeliveries::default();
        held.hold(5_000, "a1", "c1", "a");
        held.hold(5_000, "a2", "c2", "a");
        held.hold(9_000, "a3", "c3", "a");
        held.hold(2_000, "b1", "c1", "b");
        // Holding one twice counts it once.
        held.hold(5_000, "a1", "c1", "a");
        assert_eq!(held.next_due_of("a"), Some(5_000));
        assert_eq!(held.next_due_of("b"), Some(2_000));
        assert_eq!(held.next_due_of("none"), None);
        held.forget(5_000, "a1");
        assert_eq!(held.next_due_of("a"), Some(5_000));
        held.take_due(5_000);
        assert_eq!(held.next_due_of("a"), Some(9_000));
        assert_eq!(held.next_due_of("b"), None);
        held.forget(9_000, "a3");
        assert_eq!(held.next_due_of("a"), None);
        assert!(held.lock().by_message.is_empty());
    }
}
