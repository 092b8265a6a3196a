//! Reading the campaign metrics and time series that commits keep.

use std::collections::BTreeMap;

use pushd_actors::model::Delivery;
use pushd_actors::tally::{Tally, contribution};

use super::keys::{self, Counter, Index};
use super::{Error, SledStore};

impl SledStore {
    /// The metrics of a message, kept incrementally (zero if unknown).
    pub fn message_metrics(&self, message_id: &str) -> Result<Tally, Error> {
        self.sum(Counter::Message(message_id))
    }

    /// The metrics of a campaign: every delivery of its messages.
    pub fn campaign_metrics(&self, campaign_id: &str) -> Result<Tally, Error> {
        self.sum(Counter::Campaign(campaign_id))
    }

    fn sum(&self, counter: Counter<'_>) -> Result<Tally, Error> {
        self.db
            .scan_prefix(counter.prefix())
            .try_fold(Tally::default(), |sum, item| {
                let (_, value) = item?;
                Ok(sum + serde_json::from_slice::<Tally>(&value)?)
            })
    }

    /// A message's metrics recounted from its deliveries (a full scan; for
    /// checks, not for serving).
    pub fn recount_message(&self, message_id: &str) -> Result<Tally, Error> {
        self.deliveries_in(Index::Message(message_id))?
            .iter()
            .try_fold(Tally::default(), |sum, d| Ok(sum + contribution(d)))
    }

    /// Every delivery of one index value, oldest first.
    fn deliveries_in(&self, index: Index<'_>) -> Result<Vec<Delivery>, Error> {
        let prefix = index.prefix();
        let mut out = Vec::new();
        for item in self.db.scan_prefix(&prefix) {
            let (key, _) = item?;
            out.extend(self.delivery_by_key(&key[prefix.len()..])?);
        }
        Ok(out)
    }

    /// A message's time series: `(minute, delivered, opened)` — how many of
    /// its deliveries were first delivered / first opened that many minutes
    /// after their creation; ascending, empty minutes left out.
    pub fn message_timeseries(&self, message_id: &str) -> Result<Vec<(i64, i64, i64)>, Error> {
        self.timeseries(Counter::Message(message_id))
    }

    /// A campaign's time series, as [`SledStore::message_timeseries`] over
    /// all its messages' deliveries.
    pub fn campaign_timeseries(&self, campaign_id: &str) -> Result<Vec<(i64, i64, i64)>, Error> {
        self.timeseries(Counter::Campaign(campaign_id))
    }

    fn timeseries(&self, counter: Counter<'_>) -> Result<Vec<(i64, i64, i64)>, Error> {
        let prefix = keys::series_prefix(counter);
        let mut minutes: BTreeMap<i64, [i64; 2]> = BTreeMap::new();
        for item in self.db.scan_prefix(&prefix) {
            let (key, value) = item?;
            let Some(minute) = keys::series_minute(&key, prefix.len()) else {
                tracing::warn!(?key, "malformed time-series key");
                continue;
            };
            let [d, o]: [i64; 2] = serde_json::from_slice(&value)?;
            let slot = minutes.entry(minute).or_default();
            slot[0] += d;
            slot[1] += o;
        }
        Ok(minutes
            .into_iter()
            .filter(|(_, v)| *v != [0, 0])
            .map(|(minute, [delivered, opened])| (minute, delivered, opened))
            .collect())
    }
}
