//! The campaign metrics and time series, from the live counters in memory
//! (always current), and a recount from the snapshot for checks.

use std::collections::BTreeMap;

use pushd_actors::model::Delivery;
use pushd_actors::tally::{Tally, contribution, counted_failure};

use super::keys::{self, Counter};
use super::log::DeliveryFilter;
use super::{Error, SledStore, codec};

/// Counts the failure reasons of every delivery in the snapshot once, when a
/// release that keeps those counters first opens it: a snapshot of an older
/// release has none. Deliveries it no longer holds (expired, erased) stay
/// uncounted.
pub(super) fn count_failure_reasons(db: &sled::Db) -> Result<(), Error> {
    let done = keys::record(keys::META, codec::REASONS_KEY);
    if db.get(&done)?.is_some() {
        return Ok(());
    }
    let mut counts: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    for item in db.scan_prefix(keys::DELIVERY) {
        let (_, value) = item?;
        let d: Delivery = codec::decode(&value)?;
        let Some(reason) = counted_failure(&d) else {
            continue;
        };
        let campaign = d.campaign_id.as_deref().map(Counter::Campaign);
        for counter in [Some(Counter::Message(&d.message_id)), campaign]
            .into_iter()
            .flatten()
        {
            *counts
                .entry(keys::reason(counter, reason.code()))
                .or_default() += 1;
        }
    }
    let mut batch = sled::Batch::default();
    for (key, count) in &counts {
        batch.insert(key.as_slice(), codec::encode(count)?);
    }
    batch.insert(done, b"1".as_slice());
    db.apply_batch(batch)?;
    if !counts.is_empty() {
        tracing::info!(
            counters = counts.len(),
            "counted the failure reasons of the deliveries in the snapshot"
        );
    }
    Ok(())
}

impl SledStore {
    /// The metrics of a message (zero if unknown).
    pub fn message_metrics(&self, message_id: &str) -> Tally {
        self.tally(Counter::Message(message_id))
    }

    /// The metrics of a campaign: every delivery of its messages.
    pub fn campaign_metrics(&self, campaign_id: &str) -> Tally {
        self.tally(Counter::Campaign(campaign_id))
    }

    fn tally(&self, counter: Counter<'_>) -> Tally {
        self.lock()
            .live_counters
            .get(&counter.key())
            .copied()
            .unwrap_or_default()
    }

    /// A message's metrics recounted from its deliveries (a full scan; for
    /// checks, not for serving). Erased deliveries still count in the
    /// metrics, not in a recount.
    pub fn recount_message(&self, message_id: &str) -> Result<Tally, Error> {
        self.drain()?;
        let filter = DeliveryFilter {
            message_id: Some(message_id.to_owned()),
            ..Default::default()
        };
        let mut sum = Tally::default();
        self.each_match(&filter, None, |d| {
            sum += contribution(&d);
            true
        })?;
        Ok(sum)
    }

    /// A message's time series: `(minute, delivered, opened)` — how many of
    /// its deliveries were first delivered / first opened that many minutes
    /// after their creation; ascending, empty minutes left out.
    pub fn message_timeseries(&self, message_id: &str) -> Vec<(i64, i64, i64)> {
        self.timeseries(Counter::Message(message_id))
    }

    /// A campaign's time series, as [`SledStore::message_timeseries`] over
    /// all its messages' deliveries.
    pub fn campaign_timeseries(&self, campaign_id: &str) -> Vec<(i64, i64, i64)> {
        self.timeseries(Counter::Campaign(campaign_id))
    }

    /// How many of a message's deliveries ended `failed` or
    /// `undeliverable`, per failure-reason code (see
    /// [`count_failure_reasons`] for what may be missing).
    pub fn message_failure_reasons(&self, message_id: &str) -> BTreeMap<String, i64> {
        self.failure_reasons(Counter::Message(message_id))
    }

    /// [`SledStore::message_failure_reasons`] over a campaign's messages.
    pub fn campaign_failure_reasons(&self, campaign_id: &str) -> BTreeMap<String, i64> {
        self.failure_reasons(Counter::Campaign(campaign_id))
    }

    fn failure_reasons(&self, counter: Counter<'_>) -> BTreeMap<String, i64> {
        let prefix = keys::reason_prefix(counter);
        let overlay = self.lock();
        overlay
            .live_reasons
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .filter(|(_, count)| **count > 0)
            .filter_map(|(key, count)| {
                let code = std::str::from_utf8(&key[prefix.len()..]).ok()?;
                Some((code.to_owned(), *count))
            })
            .collect()
    }

    fn timeseries(&self, counter: Counter<'_>) -> Vec<(i64, i64, i64)> {
        let prefix = keys::series_prefix(counter);
        let overlay = self.lock();
        let minutes: BTreeMap<i64, [i64; 2]> = overlay
            .live_series
            .range(prefix.clone()..)
            .take_while(|(key, _)| key.starts_with(&prefix))
            .filter(|(_, v)| **v != [0, 0])
            .filter_map(|(key, v)| Some((keys::series_minute(key, prefix.len())?, *v)))
            .collect();
        minutes
            .into_iter()
            .map(|(minute, [delivered, opened])| (minute, delivered, opened))
            .collect()
    }
}
