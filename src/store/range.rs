//! Reads over the deliveries created in a time range: the metrics, failure
//! reasons and time series of a message or campaign recounted from its
//! deliveries in the range (the live counters cover all time, not a range),
//! and the key bounds the delivery log scans for one.
//!
//! A delivery id is a ULID whose time is when its send started: never after
//! its `created_at` (the same clock made both), and before it by at most a
//! keyed call's replay window (a keyed call retried fixes its ids at the
//! first try). So the deliveries created in `[from, to)` lie among the ids
//! from `from` minus [`IDS_BEFORE_MS`] to `to` plus [`IDS_AFTER_MS`]: a scan
//! reads those index entries and keeps the deliveries whose `created_at` is
//! in the range.

use std::collections::BTreeMap;

use pushd_actors::delivery_id::DeliveryId;
use pushd_actors::idempotency::WINDOW_MS;
use pushd_actors::model::Delivery;
use pushd_actors::status::Timestamp;
use pushd_actors::tally::{Tally, contribution, counted_failure, series_points};
use serde::{Deserialize, Serialize};

use super::keys;
use super::log::DeliveryFilter;
use super::{Error, SledStore};

/// How long before its `created_at` a delivery's id may be dated: twice a
/// keyed call's replay window, for a call retried near the window's end
/// that takes long.
const IDS_BEFORE_MS: i64 = 2 * WINDOW_MS;
/// How long after its `created_at` a delivery's id may be dated: a minute,
/// for a system clock stepped back between the two readings.
const IDS_AFTER_MS: i64 = 60_000;

/// The deliveries created from `from` (inclusive) to `to` (exclusive), Unix
/// seconds; an open end is unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatedRange {
    /// The earliest creation time included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Timestamp>,
    /// The first creation time past the range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Timestamp>,
}

impl CreatedRange {
    /// Whether the range is unbounded at both ends (every delivery).
    pub fn is_all(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }

    /// Whether a delivery created at `t` is in the range.
    pub fn contains(&self, t: Timestamp) -> bool {
        self.from.is_none_or(|from| t >= from) && self.to.is_none_or(|to| t < to)
    }

    /// The least delivery id a delivery in the range may have.
    pub(super) fn first_id(&self) -> Option<String> {
        self.from
            .map(|from| id_at(from.saturating_mul(1000).saturating_sub(IDS_BEFORE_MS)))
    }

    /// A delivery id greater than any a delivery in the range may have.
    pub(super) fn past_id(&self) -> Option<String> {
        self.to
            .map(|to| id_at(to.saturating_mul(1000).saturating_add(IDS_AFTER_MS)))
    }
}

/// The least delivery id dated `ms`.
fn id_at(ms: i64) -> String {
    DeliveryId::first_at(ms).to_string()
}

/// What a message's or campaign's deliveries created in a range count: the
/// counters, the failure reasons and the time series the live ones would
/// hold for those deliveries alone.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeCount {
    /// The counters.
    pub tally: Tally,
    /// Deliveries that ended `failed` or `undeliverable`, by reason code.
    pub failure_reasons: BTreeMap<String, i64>,
    /// `(minute, delivered, opened)`, ascending, empty minutes left out.
    pub series: Vec<(i64, i64, i64)>,
}

impl RangeCount {
    /// Adds what delivery `d` counts.
    fn add(&mut self, d: &Delivery, minutes: &mut BTreeMap<i64, [i64; 2]>) {
        self.tally += contribution(d);
        if let Some(reason) = counted_failure(d) {
            *self
                .failure_reasons
                .entry(reason.code().to_owned())
                .or_default() += 1;
        }
        for (minute, which) in series_points(d) {
            minutes.entry(minute).or_default()[which] += 1;
        }
    }
}

impl SledStore {
    /// What message `id`'s deliveries created in `range` count (after a
    /// drain; a scan of those deliveries). Deliveries erased, or gone past
    /// their retention, are not counted, though the live counters keep them.
    pub fn message_in_range(&self, id: &str, range: &CreatedRange) -> Result<RangeCount, Error> {
        self.count_in_range(DeliveryFilter {
            message_id: Some(id.to_owned()),
            created: *range,
            ..Default::default()
        })
    }

    /// [`SledStore::message_in_range`] over a campaign's messages.
    pub fn campaign_in_range(&self, id: &str, range: &CreatedRange) -> Result<RangeCount, Error> {
        self.count_in_range(DeliveryFilter {
            campaign_id: Some(id.to_owned()),
            created: *range,
            ..Default::default()
        })
    }

    fn count_in_range(&self, filter: DeliveryFilter) -> Result<RangeCount, Error> {
        self.drain()?;
        let mut count = RangeCount::default();
        let mut minutes = BTreeMap::new();
        self.each_match(&filter, None, |d| {
            count.add(&d, &mut minutes);
            true
        })?;
        count.series = minutes
            .into_iter()
            .filter(|(_, v)| *v != [0, 0])
            .map(|(minute, [delivered, opened])| (minute, delivered, opened))
            .collect();
        Ok(count)
    }

    /// The snapshot's keys under `prefix` (each a delivery id after it)
    /// whose ids a delivery created in `range` may have, below the id
    /// `below` when given, in id order.
    pub(super) fn index_range(
        &self,
        prefix: &[u8],
        range: &CreatedRange,
        below: Option<&str>,
    ) -> sled::Iter {
        let under = |id: &str| [prefix, id.as_bytes()].concat();
        let start = range
            .first_id()
            .map_or_else(|| prefix.to_vec(), |id| under(&id));
        let ends = [below.map(under), range.past_id().map(|id| under(&id))];
        let end = match ends.into_iter().flatten().min() {
            Some(end) => Some(end),
            None => keys::successor(prefix),
        };
        match end {
            Some(end) if end < start => self.db.range(start.clone()..start),
            Some(end) => self.db.range(start..end),
            None => self.db.range(start..),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushd_actors::engine::PartitionTag;

    #[test]
    fn a_range_holds_from_and_not_to() {
        let r = CreatedRange {
            from: Some(100),
            to: Some(200),
        };
        assert!(r.contains(100) && r.contains(199));
        assert!(!r.contains(99) && !r.contains(200));
        assert!(CreatedRange::default().contains(i64::MIN));
        assert!(CreatedRange::default().is_all() && !r.is_all());
    }

    /// Ids made from `created_at`'s clock reading, and a keyed call's ids
    /// dated up to its replay window earlier, fall inside the id bounds.
    #[test]
    fn id_bounds_hold_the_ids_of_the_deliveries_in_range() {
        let r = CreatedRange {
            from: Some(1_764_100_000),
            to: Some(1_764_200_000),
        };
        // The greatest id dated `ms`: every bit below the time set.
        let id = |ms: i64| {
            DeliveryId::keyed_in(ms, u64::MAX, 0xFFFF, PartitionTag(u16::MAX)).to_string()
        };
        let (first, past) = (r.first_id().unwrap(), r.past_id().unwrap());
        for ms in [
            1_764_100_000_000 - WINDOW_MS,
            1_764_100_000_000,
            1_764_199_999_999,
        ] {
            assert!(first <= id(ms) && id(ms) < past, "{ms}");
        }
        let open = CreatedRange {
            from: Some(i64::MIN),
            to: Some(i64::MAX),
        };
        assert_eq!(open.first_id(), Some(id_at(0)));
        assert!(id(1_764_100_000_000) < open.past_id().unwrap());
    }
}
