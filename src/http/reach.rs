//! Finding what a request is about: the running partition of a customer or
//! a delivery, the message templates, and reads over every partition this
//! node runs (the delivery log, counters and time series of a message or
//! campaign, summed or merged across partitions).

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::http::StatusCode;
use pushd_actors::engine::PartitionTag;
use pushd_actors::model::{Delivery, MessageSpec};
use pushd_actors::tally::Tally;

use super::{ApiError, AppState};
use crate::partition::Partition;
use crate::store::{DeliveryFilter, cursor_of};

/// Where message templates are kept.
pub enum Catalog {
    /// In the single partition's journal and store.
    Local(Arc<Partition>),
}

impl Catalog {
    /// The message `id`, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<MessageSpec>, ApiError> {
        match self {
            Catalog::Local(p) => Ok(p.store.message(id)?),
        }
    }

    /// Every message.
    pub async fn all(&self) -> Result<Vec<MessageSpec>, ApiError> {
        match self {
            Catalog::Local(p) => Ok(p.store.messages()?),
        }
    }

    /// Creates or replaces a message; answers once durable.
    pub async fn put(&self, spec: MessageSpec) -> Result<(), ApiError> {
        match self {
            Catalog::Local(p) => Ok(p.registry.put_message(spec).await?),
        }
    }
}

/// What a counter read is about.
#[derive(Clone, Copy, Debug)]
pub enum Counted<'a> {
    /// One message's deliveries.
    Message(&'a str),
    /// Every delivery of a campaign's messages.
    Campaign(&'a str),
}

impl AppState {
    /// The partition `tag` if this node runs it, else 503: it is moving
    /// between nodes, and the client retries.
    fn running(&self, tag: PartitionTag) -> Result<Arc<Partition>, ApiError> {
        self.partitions.get(tag).ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "partition_unavailable",
                format!(
                    "partition {} is not served by this node right now (it is moving between \
                     nodes); retry in a moment",
                    tag.0
                ),
            )
        })
    }

    /// The running partition of customer `id`.
    pub fn customer_partition(&self, id: &str) -> Result<Arc<Partition>, ApiError> {
        self.running(self.partitions.partitioning().of_customer(id))
    }

    /// The running partition of delivery `id`; 404 if the id names no
    /// partition (no such delivery can exist).
    pub fn delivery_partition(&self, id: &str) -> Result<Arc<Partition>, ApiError> {
        let tag = self
            .partitions
            .partitioning()
            .of_delivery(id)
            .ok_or_else(|| ApiError::not_found("delivery", id))?;
        self.running(tag)
    }

    /// The counters of each of `of`, summed over every partition.
    pub async fn tallies(&self, of: &[Counted<'_>]) -> Result<Vec<Tally>, ApiError> {
        Ok(of.iter().map(|c| self.local_tally(*c)).collect())
    }

    /// A message's or campaign's time series over every partition.
    pub async fn series(&self, of: Counted<'_>) -> Result<Vec<(i64, i64, i64)>, ApiError> {
        Ok(self.local_series(of))
    }

    /// One page of the delivery log over every partition.
    pub async fn deliveries(
        &self,
        filter: &DeliveryFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Delivery>, Option<String>), ApiError> {
        self.local_deliveries(filter, limit, cursor)
    }

    /// A message's or campaign's counters summed over this node's
    /// partitions.
    pub fn local_tally(&self, of: Counted<'_>) -> Tally {
        let mut sum = Tally::default();
        for p in self.partitions.running() {
            sum += match of {
                Counted::Message(id) => p.store.message_metrics(id),
                Counted::Campaign(id) => p.store.campaign_metrics(id),
            };
        }
        sum
    }

    /// A message's or campaign's time series (minute, delivered, opened)
    /// summed over this node's partitions, oldest minute first.
    pub fn local_series(&self, of: Counted<'_>) -> Vec<(i64, i64, i64)> {
        let mut minutes: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for p in self.partitions.running() {
            let points = match of {
                Counted::Message(id) => p.store.message_timeseries(id),
                Counted::Campaign(id) => p.store.campaign_timeseries(id),
            };
            for (minute, delivered, opened) in points {
                let sum = minutes.entry(minute).or_default();
                sum.0 += delivered;
                sum.1 += opened;
            }
        }
        minutes.into_iter().map(|(m, (d, o))| (m, d, o)).collect()
    }

    /// One page of the delivery log over this node's partitions, newest
    /// first, and the cursor of the next. Every partition pages by delivery
    /// id below the same cursor, so their pages merge into one.
    pub fn local_deliveries(
        &self,
        filter: &DeliveryFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Delivery>, Option<String>), ApiError> {
        let mut merged = Vec::new();
        let mut more = false;
        for p in self.partitions.running() {
            let (page, next) = p.store.list_deliveries(filter, limit, cursor)?;
            more |= next.is_some();
            merged.extend(page);
        }
        Ok(newest_page(merged, limit, more, |d| &d.id))
    }
}

/// The first `limit` of `items` by id, newest (greatest) first, and the
/// cursor after the last one when more remain: `more` says whether some
/// source held more than it gave.
pub fn newest_page<T>(
    mut items: Vec<T>,
    limit: usize,
    more: bool,
    id: impl Fn(&T) -> &str,
) -> (Vec<T>, Option<String>) {
    items.sort_by(|a, b| id(b).cmp(id(a)));
    let more = more || items.len() > limit;
    items.truncate(limit);
    let next = match (more, items.last()) {
        (true, Some(last)) => Some(cursor_of(id(last))),
        _ => None,
    };
    (items, next)
}
