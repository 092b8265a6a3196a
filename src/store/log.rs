//! The delivery log and the engine's lookups by customer: filtered, paged
//! listing newest first, creation-time ranges and unsettled deliveries.
//!
//! The log is read from the snapshot's indexes after a drain (a read
//! barrier), so a page always includes every change applied before it.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use itertools::Itertools;
use pushd_actors::model::Delivery;
use pushd_actors::status::{MessageStatus, Timestamp};

use super::keys::{self, Index};
use super::range::CreatedRange;
use super::{Error, SledStore, codec};

/// Which deliveries `list_deliveries` returns; `None` fields (and an
/// unbounded range) match all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryFilter {
    /// Only this message status.
    pub status: Option<MessageStatus>,
    /// Only this message.
    pub message_id: Option<String>,
    /// Only this campaign.
    pub campaign_id: Option<String>,
    /// Only this customer.
    pub customer_id: Option<String>,
    /// Only deliveries created in this range.
    pub created: CreatedRange,
}

impl DeliveryFilter {
    /// Whether `d` passes every filter.
    pub fn matches(&self, d: &Delivery) -> bool {
        self.status.is_none_or(|s| d.status() == s)
            && self.message_id.as_ref().is_none_or(|m| *m == d.message_id)
            && self
                .campaign_id
                .as_ref()
                .is_none_or(|c| d.campaign_id.as_ref() == Some(c))
            && self
                .customer_id
                .as_ref()
                .is_none_or(|c| *c == d.customer_id)
            && self.created.contains(d.created_at)
    }

    /// Whether the entries [`DeliveryFilter::candidates`] lists are exactly
    /// the deliveries that match: at most one field set, no range, and not
    /// a status whose key other statuses share (`keys::status_key`).
    fn index_is_exact(&self) -> bool {
        let set = [
            self.status.is_some(),
            self.message_id.is_some(),
            self.campaign_id.is_some(),
            self.customer_id.is_some(),
        ];
        self.created.is_all()
            && set.into_iter().filter(|s| *s).count() <= 1
            && !self.status.is_some_and(keys::status_key_shared)
    }

    /// Where this filter's candidates come from, the most selective first;
    /// `None`: every delivery.
    fn candidates(&self) -> Option<Candidates<'_>> {
        (self.customer_id.as_deref().map(Candidates::Customer)).or_else(|| {
            (self.message_id.as_deref().map(Index::Message))
                .or(self.campaign_id.as_deref().map(Index::Campaign))
                .or(self.status.map(Index::Status))
                .map(Candidates::Index)
        })
    }

    /// Which held deliveries [`DeliveryFilter::candidates`] lack (a held
    /// delivery has only its status key): `None` when they have them all
    /// or the filter leaves them out.
    fn held_lacking(&self) -> Option<Held<'_>> {
        if self.status.is_some_and(|s| s != MessageStatus::Scheduled) {
            return None;
        }
        match self.candidates()? {
            Candidates::Customer(c) => Some(Held::Of(c)),
            Candidates::Index(Index::Message(_) | Index::Campaign(_)) => Some(Held::All),
            Candidates::Index(Index::Status(_)) => None,
        }
    }
}

/// Where a filter's candidate deliveries are listed.
#[derive(Clone, Copy)]
enum Candidates<'a> {
    /// A customer's: under its creation keys (`keys::created_prefix`),
    /// which sort by time, not by id.
    Customer(&'a str),
    /// An index's, in id order.
    Index(Index<'a>),
}

/// The delivery ids of index `range` (keys of a prefix `at` bytes long),
/// newest first; with `held`, only the held deliveries it takes.
fn ids_in(
    range: sled::Iter,
    at: usize,
    held: Option<Held<'_>>,
) -> impl Iterator<Item = Result<Vec<u8>, sled::Error>> + use<'_> {
    range
        .rev()
        .filter(move |item| match (item, held) {
            (Ok((_, customer)), Some(held)) => held.takes(customer),
            _ => true,
        })
        .map(move |item| item.map(|(key, _)| key[at..].to_vec()))
}

/// Held deliveries to merge into an index's: found through their status
/// keys, whose values name their customers.
#[derive(Clone, Copy)]
enum Held<'a> {
    /// A customer's.
    Of(&'a str),
    /// Every one (the filter then reads each).
    All,
}

impl Held<'_> {
    /// Whether a held delivery's status key of value `customer` is one.
    fn takes(self, customer: &[u8]) -> bool {
        match self {
            Held::Of(c) => c.as_bytes() == customer,
            Held::All => true,
        }
    }
}

/// The opaque cursor after delivery `id` (partitions merging their pages
/// of the log hand out the same cursors).
pub fn cursor_of(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// The delivery id a cursor points after.
fn cursor_id(cursor: &str) -> Result<String, Error> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| Error::BadCursor)?;
    String::from_utf8(bytes)
        .ok()
        .filter(|id| !id.is_empty())
        .ok_or(Error::BadCursor)
}

impl SledStore {
    /// One page of the delivery log, newest first, and the cursor of the next
    /// page (`None` on the last). Pages stay correct while deliveries are
    /// added: new ids sort greater, and a page continues strictly below its
    /// cursor. A cursor this store did not hand out is [`Error::BadCursor`].
    pub fn list_deliveries(
        &self,
        filter: &DeliveryFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Delivery>, Option<String>), Error> {
        let below = cursor.map(cursor_id).transpose()?;
        self.drain()?;
        let mut page = Vec::new();
        let mut next = None;
        self.each_match(filter, below.as_deref(), |delivery| {
            if page.len() == limit {
                next = page.last().map(|d: &Delivery| cursor_of(&d.id));
                return false;
            }
            page.push(delivery);
            true
        })?;
        Ok((page, next))
    }

    /// How many deliveries `filter` matches (after a drain). Without a
    /// range and with at most one filter field (but a status that shares
    /// its key), a count of index entries (and of the held deliveries the
    /// index lacks); else a scan of the candidates the index and range
    /// leave.
    pub fn count_deliveries(&self, filter: &DeliveryFilter) -> Result<u64, Error> {
        self.drain()?;
        if filter.index_is_exact() && self.lock().erased().is_empty() {
            let prefix = match filter.candidates() {
                Some(Candidates::Customer(c)) => keys::created_prefix(c),
                Some(Candidates::Index(index)) => index.prefix(),
                None => keys::DELIVERY.to_vec(),
            };
            let mut count = 0;
            for item in self.index_range(&prefix, &filter.created, None) {
                item?;
                count += 1;
            }
            if let Some(held) = filter.held_lacking() {
                let prefix = keys::held_prefix();
                let range = self.index_range(&prefix, &filter.created, None);
                for id in ids_in(range, prefix.len(), Some(held)) {
                    let id = id?;
                    count += u64::from(match held {
                        Held::Of(_) => true,
                        Held::All => (self.read::<Delivery>(&[keys::DELIVERY, &id].concat())?)
                            .is_some_and(|d| filter.matches(&d)),
                    });
                }
            }
            return Ok(count);
        }
        let mut count = 0;
        self.each_match(filter, None, |_| {
            count += 1;
            true
        })?;
        Ok(count)
    }

    /// Hands each snapshot delivery `filter` matches, below id `below` when
    /// given, newest first to `f` until it answers false.
    pub(super) fn each_match(
        &self,
        filter: &DeliveryFilter,
        below: Option<&str>,
        mut f: impl FnMut(Delivery) -> bool,
    ) -> Result<(), Error> {
        // Erased after the drain: sled still holds their deliveries.
        let erased = self.lock().erased();
        let mut hand = |delivery: Delivery| {
            let skip = !filter.matches(&delivery) || erased.contains(&delivery.customer_id);
            skip || f(delivery)
        };
        let Some(candidates) = filter.candidates() else {
            for item in self
                .index_range(keys::DELIVERY, &filter.created, below)
                .rev()
            {
                if !hand(codec::decode(&item?.1)?) {
                    break;
                }
            }
            return Ok(());
        };
        let ids = |prefix: Vec<u8>, held| {
            let range = self.index_range(&prefix, &filter.created, below);
            ids_in(range, prefix.len(), held)
        };
        // Both lists are in id order: merged, newest first, each id once.
        let held = (filter.held_lacking().into_iter())
            .flat_map(|held| ids(keys::held_prefix(), Some(held)));
        let listed: Box<dyn Iterator<Item = Result<Vec<u8>, sled::Error>>> = match candidates {
            Candidates::Index(index) => Box::new(ids(index.prefix(), None)),
            Candidates::Customer(c) => Box::new(
                self.customer_ids(c, &filter.created, below)?
                    .into_iter()
                    .map(Ok),
            ),
        };
        let merged = listed
            .merge_by(held, |a, b| match (a, b) {
                (Ok(a), Ok(b)) => a >= b,
                (a, _) => a.is_err(),
            })
            .dedup_by(|a, b| matches!((a, b), (Ok(a), Ok(b)) if a == b));
        for id in merged {
            let record = [keys::DELIVERY, &id?].concat();
            if let Some(delivery) = self.read(&record)?
                && !hand(delivery)
            {
                break;
            }
        }
        Ok(())
    }

    /// The ids of a customer's snapshot deliveries (not the held ones) in
    /// `range` and below id `below`, newest first: its creation keys, read
    /// whole (they sort by time, and a page goes by id).
    fn customer_ids(
        &self,
        customer: &str,
        range: &CreatedRange,
        below: Option<&str>,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let (first, past) = (range.first_id(), range.past_id());
        let ends = [below.map(str::to_owned), past].into_iter().flatten().min();
        let mut ids = Vec::new();
        for id in self.listed_ids(customer, Timestamp::MIN, Timestamp::MAX) {
            let id = id?;
            let above = first.as_ref().is_none_or(|f| id.as_slice() >= f.as_bytes());
            if above && ends.as_ref().is_none_or(|e| id.as_slice() < e.as_bytes()) {
                ids.push(id);
            }
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// What is wrong between the snapshot's deliveries and their index
    /// keys: each index key no delivery has, and each key a delivery has
    /// but the snapshot lacks. A full scan of a quiet store, for checks,
    /// not for serving.
    pub fn index_problems(&self) -> Result<Vec<String>, Error> {
        self.drain()?;
        let mut expected = HashSet::new();
        for item in self.db.scan_prefix(keys::DELIVERY) {
            expected.extend(keys::index_keys(&codec::decode(&item?.1)?));
        }
        let mut problems = Vec::new();
        for prefix in keys::DELIVERY_INDEXES {
            for item in self.db.scan_prefix(prefix) {
                let (key, _) = item?;
                if !expected.remove(key.as_ref()) {
                    problems.push(format!("index key without its delivery: {key:?}"));
                }
            }
        }
        problems.extend(
            expected
                .into_iter()
                .map(|key| format!("index key missing: {key:?}")),
        );
        Ok(problems)
    }

    /// The ids of a customer's snapshot deliveries listed in `[from, to]`
    /// (made, or released when scheduled: their creation keys' time).
    pub(super) fn listed_ids(
        &self,
        customer_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> impl Iterator<Item = Result<Vec<u8>, Error>> + use<> {
        let prefix = keys::created_prefix(customer_id);
        let start = [prefix.as_slice(), &keys::time(from)].concat();
        let end = match to.checked_add(1) {
            Some(next) => Some([prefix.as_slice(), &keys::time(next)].concat()),
            None => keys::successor(&prefix),
        };
        let range = match (from > to, end) {
            (true, _) => self.db.range(start.clone()..start),
            (false, Some(end)) => self.db.range(start..end),
            (false, None) => self.db.range(start..),
        };
        let skip = prefix.len() + 8;
        range.map(move |item| Ok(item?.0[skip..].to_vec()))
    }

    /// Every customer with an unsettled delivery in the snapshot.
    pub(super) fn unsettled_customers(&self) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        let mut from = keys::UNSETTLED.to_vec();
        while let Some(item) = self.db.range(from.as_slice()..).next() {
            let (key, _) = item?;
            if !key.starts_with(keys::UNSETTLED) {
                break;
            }
            let Some(customer) = keys::unsettled_customer(&key) else {
                tracing::warn!(?key, "malformed unsettled-index key");
                from = [&key[..], &[0]].concat();
                continue;
            };
            let next = keys::successor(&keys::unsettled_prefix(&customer));
            out.push(customer);
            match next {
                Some(next) => from = next,
                None => break,
            }
        }
        Ok(out)
    }
}
