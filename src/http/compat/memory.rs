//! What the ingestion endpoints remember, in bounded memory: the message
//! ids they took (a client's retry of an event is not applied twice) and
//! the reports they matched to a delivery heuristically (shown in the
//! delivery's detail).

use quick_cache::sync::Cache;
use serde::Serialize;

use super::basic_auth::WriteKeys;
use crate::config::CompatSection;

/// How long a `messageId` is remembered: a client retrying an event within
/// this window has it applied once.
pub const IDEMPOTENCY_SECS: i64 = 24 * 3600;
/// The most message ids remembered; past it the least used are forgotten
/// first, so memory stays bounded under any load.
const MAX_MESSAGE_IDS: usize = 200_000;
/// The most deliveries whose heuristic reports are remembered.
const MAX_NOTED_DELIVERIES: usize = 100_000;
/// The most heuristic reports remembered of one delivery (the first ones).
const MAX_NOTES_PER_DELIVERY: usize = 16;

/// A report matched to its delivery by customer and campaign, not by a
/// delivery id.
#[derive(Clone, Debug, Serialize)]
pub struct HeuristicReport {
    /// `delivered` or `opened`.
    pub event: &'static str,
    /// The device reported for.
    pub device_id: String,
    /// What the match rested on: `customer` or `customer+campaign`.
    pub matched_on: &'static str,
    /// The event's time, Unix seconds.
    pub timestamp: i64,
}

/// The migration endpoints' state (app data beside `AppState`).
pub struct Compat {
    /// The ingestion write keys.
    pub(super) write_keys: WriteKeys,
    /// `messageId` → when it was applied (Unix seconds).
    seen: Cache<String, i64>,
    /// Delivery id → its heuristic reports.
    heuristic: Cache<String, Vec<HeuristicReport>>,
}

impl Compat {
    /// The state for the `[compat]` settings.
    pub fn new(settings: &CompatSection) -> Self {
        Compat {
            write_keys: WriteKeys::new(&settings.ingest_write_keys),
            seen: Cache::new(MAX_MESSAGE_IDS),
            heuristic: Cache::new(MAX_NOTED_DELIVERIES),
        }
    }

    /// Whether the event `message_id` was applied within the last
    /// [`IDEMPOTENCY_SECS`] before `now`.
    pub(super) fn already_applied(&self, message_id: &str, now: i64) -> bool {
        self.seen
            .get(message_id)
            .is_some_and(|at| now - at < IDEMPOTENCY_SECS)
    }

    /// Remembers that `message_id` was applied at `now`.
    pub(super) fn applied(&self, message_id: &str, now: i64) {
        self.seen.insert(message_id.to_owned(), now);
    }

    /// Notes a heuristic report of `delivery_id` (past
    /// [`MAX_NOTES_PER_DELIVERY`] of it, the report is not noted).
    pub(super) fn note_heuristic(&self, delivery_id: &str, report: HeuristicReport) {
        let mut reports = self.heuristic.get(delivery_id).unwrap_or_default();
        if reports.len() >= MAX_NOTES_PER_DELIVERY {
            return;
        }
        reports.push(report);
        self.heuristic.insert(delivery_id.to_owned(), reports);
    }

    /// The reports of `delivery_id` matched heuristically, oldest first.
    pub fn heuristic_reports(&self, delivery_id: &str) -> Vec<HeuristicReport> {
        self.heuristic.get(delivery_id).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_id_is_remembered_for_a_day() {
        let compat = Compat::new(&CompatSection::default());
        assert!(!compat.already_applied("m1", 1_000));
        compat.applied("m1", 1_000);
        assert!(compat.already_applied("m1", 1_000 + IDEMPOTENCY_SECS - 1));
        assert!(!compat.already_applied("m1", 1_000 + IDEMPOTENCY_SECS));
        assert!(!compat.already_applied("m2", 1_000));
    }

    #[test]
    fn a_delivery_keeps_its_first_heuristic_reports() {
        let compat = Compat::new(&CompatSection::default());
        for at in 0..40 {
            let report = HeuristicReport {
                event: "opened",
                device_id: "t1".into(),
                matched_on: "customer",
                timestamp: at,
            };
            compat.note_heuristic("d1", report);
        }
        let kept = compat.heuristic_reports("d1");
        assert_eq!(kept.len(), MAX_NOTES_PER_DELIVERY);
        assert_eq!(kept[0].timestamp, 0);
        assert!(compat.heuristic_reports("d2").is_empty());
    }
}
