//! The schedule of held deliveries: a time-ordered index of `(due, delivery
//! id) → customer id`, and the loop that releases what is due into each
//! customer's actor.
//!
//! A held (`scheduled`) delivery is a small record here and in the store,
//! not an actor: its customer's actor stops when idle, and is started again
//! when the delivery is due. The index is rebuilt on start from the store
//! (recovery wakes every customer with an unsettled delivery, and a held one
//! is unsettled), so it is never written anywhere itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::person::ReleaseDelivery;
use crate::registry::Registry;

/// A held delivery's place on the schedule: its due time (Unix ms) and id.
type Due = (i64, Box<str>);

/// The held deliveries of one engine, by due time.
#[derive(Default)]
pub struct HeldDeliveries {
    /// Each held delivery's customer, by its place on the schedule.
    due: Mutex<BTreeMap<Due, Box<str>>>,
    /// Woken when an earlier delivery is held, or the engine stops.
    changed: tokio::sync::Notify,
    closed: AtomicBool,
}

impl HeldDeliveries {
    /// Holds delivery `id` of `customer` until `due_ms` (Unix ms). Holding
    /// one already held changes nothing.
    pub fn hold(&self, due_ms: i64, id: &str, customer: &str) {
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        let earliest = due.keys().next().map(|(t, _)| *t);
        due.insert((due_ms, id.into()), customer.into());
        drop(due);
        if earliest.is_none_or(|t| due_ms < t) {
            self.changed.notify_one();
        }
    }

    /// Forgets delivery `id` held until `due_ms` (canceled).
    pub fn forget(&self, due_ms: i64, id: &str) {
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        due.remove(&(due_ms, id.into()));
    }

    /// How many deliveries are held.
    pub fn len(&self) -> usize {
        self.due
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// When the next one is due (Unix ms).
    pub fn next_due(&self) -> Option<i64> {
        let due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        due.keys().next().map(|(t, _)| *t)
    }

    /// Takes every delivery due at `now_ms`, earliest first, as
    /// `(delivery id, customer id)`.
    fn take_due(&self, now_ms: i64) -> Vec<(String, String)> {
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        let later = due.split_off(&(now_ms.saturating_add(1), Box::from("")));
        let taken = std::mem::replace(&mut *due, later);
        taken
            .into_iter()
            .map(|((_, id), customer)| (id.into(), customer.into()))
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
        held.hold(3_000, "d3", "c");
        held.hold(1_000, "d1", "c");
        held.hold(2_000, "d2", "c");
        held.hold(1_000, "d1", "c");
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
}
