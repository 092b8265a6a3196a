//! [`Unsettled`]: the deliveries of one customer whose send is not settled.

use crate::model::Delivery;

/// The deliveries of one customer whose send is not settled, kept in memory
/// for the device outcomes that come back for them.
///
/// A customer has one or a few at a time, so a short list found by id costs
/// less than a hash map, whose smallest table (with a copy of each id as
/// its key) is several times the size of a list's: this is memory every
/// in-flight delivery holds.
#[derive(Default)]
pub(super) struct Unsettled(Vec<Delivery>);

impl Unsettled {
    /// The delivery `id`, if unsettled.
    pub(super) fn get(&self, id: &str) -> Option<&Delivery> {
        self.0.iter().find(|d| d.id == id)
    }

    /// Keeps `delivery`, replacing the one with its id.
    pub(super) fn insert(&mut self, delivery: Delivery) {
        match self.0.iter_mut().find(|d| d.id == delivery.id) {
            Some(kept) => *kept = delivery,
            None => {
                // Exactly one more: a vector would otherwise make room for
                // four at its first push.
                self.0.reserve_exact(1);
                self.0.push(delivery);
            }
        }
    }

    /// Forgets the delivery `id`, answering it if it was kept.
    pub(super) fn remove(&mut self, id: &str) -> Option<Delivery> {
        let removed = (self.0.iter().position(|d| d.id == id)).map(|i| self.0.swap_remove(i));
        if self.0.is_empty() {
            // Give the list's memory back with its last delivery.
            self.0 = Vec::new();
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivery `id` told apart by its creation time.
    fn delivery(id: &str, created_at: i64) -> Delivery {
        serde_json::from_value(serde_json::json!({
            "id": id, "customer_id": "c", "message_id": "m", "campaign_id": null,
            "created_at": created_at, "attempted_at": null, "content": null, "goal": null,
            "sends": [], "state": {"devices": [], "precheck": null}
        }))
        .expect("a delivery")
    }

    #[test]
    fn keeps_one_per_id_and_forgets_by_id() {
        let mut u = Unsettled::default();
        u.insert(delivery("a", 1));
        u.insert(delivery("b", 1));
        u.insert(delivery("a", 2));
        assert_eq!(u.get("a").map(|d| d.created_at), Some(2));
        assert_eq!(u.get("b").map(|d| d.created_at), Some(1));
        assert_eq!(u.remove("a").map(|d| d.created_at), Some(2));
        assert!(u.get("a").is_none());
        assert!(u.get("b").is_some());
        assert!(u.remove("b").is_some());
        assert!(u.remove("b").is_none());
        assert!(u.get("b").is_none());
    }
}
