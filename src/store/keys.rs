//! The key layout of the store's one sled tree. Every key starts with a
//! two-byte tag; variable-length ids inside a key are length-prefixed so one
//! id's prefix never matches another's, and a delivery id, when it ends a
//! key, is raw so keys sort by it (ids are time-ordered).
//!
//! | tag  | key                                   | value                  |
//! |------|---------------------------------------|------------------------|
//! | `c/` | customer id                           | `Customer`             |
//! | `d/` | delivery id                           | `Delivery`             |
//! | `m/` | message id                            | `MessageSpec`          |
//! | `a/` | meta key                              | raw bytes              |
//! | `i/` | index kind, value, delivery id        | empty                  |
//! | `u/` | customer, delivery id (unsettled)     | empty                  |
//! | `t/` | customer, created_at, delivery id     | empty                  |
//! | `k/` | `m`/`g`, message/campaign id          | `Tally`                |
//! | `s/` | `m`/`g`, message/campaign id, minute  | `[delivered, opened]`  |
//! | `p/` | idempotency key                       | `SendRecord`           |
//! | `x/` | started (ms), idempotency key         | empty                  |
//!
//! Values are versioned records (see `codec`); meta values are raw bytes.
//! The meta keys `a/erasing/<customer id>` mark an erasure whose deliveries
//! are being removed (see `erase`).

use pushd_actors::model::Delivery;
use pushd_actors::status::{MessageStatus, Timestamp};

use super::overlay::Indexed;

/// Customers.
pub const CUSTOMER: &[u8] = b"c/";
/// Deliveries, by id.
pub const DELIVERY: &[u8] = b"d/";
/// Message templates.
pub const MESSAGE: &[u8] = b"m/";
/// Store metadata: the format and the journal position the snapshot covers.
pub const META: &[u8] = b"a/";
/// Unsettled deliveries per customer.
pub const UNSETTLED: &[u8] = b"u/";
/// Delivery-log indexes.
const INDEX: &[u8] = b"i/";
/// Deliveries per customer by creation time.
const CREATED: &[u8] = b"t/";
/// Counter shards.
pub const COUNTER: &[u8] = b"k/";
/// Time-series shards.
pub const SERIES: &[u8] = b"s/";
/// Keyed send records, by idempotency key.
pub const SEND: &[u8] = b"p/";
/// Keyed send records by start time: what expiry scans.
pub const SEND_STARTED: &[u8] = b"x/";
/// The tags of every key [`index_keys`] makes.
pub const DELIVERY_INDEXES: [&[u8]; 3] = [INDEX, CREATED, UNSETTLED];

/// `tag` followed by the raw `id`.
pub fn record(tag: &[u8], id: &str) -> Vec<u8> {
    [tag, id.as_bytes()].concat()
}

/// The prefix of the erasure markers; a customer id ends each.
pub fn erasing_prefix() -> Vec<u8> {
    record(META, "erasing/")
}

/// The marker of customer `id`'s erasure in progress.
pub fn erasing(id: &str) -> Vec<u8> {
    [erasing_prefix(), id.as_bytes().to_vec()].concat()
}

/// Appends `s` with its length in front.
fn push_id(key: &mut Vec<u8>, s: &str) {
    key.extend_from_slice(&(s.len() as u32).to_be_bytes());
    key.extend_from_slice(s.as_bytes());
}

/// A timestamp as bytes that sort like the signed number.
pub fn time(t: Timestamp) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

/// The smallest key greater than every key starting with `prefix`.
pub fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut key = prefix.to_vec();
    while let Some(last) = key.pop() {
        if last < 0xff {
            key.push(last + 1);
            return Some(key);
        }
    }
    None
}

/// A delivery-log index: which field it keys deliveries by.
#[derive(Clone, Copy, Debug)]
pub enum Index<'a> {
    /// By customer.
    Customer(&'a str),
    /// By message.
    Message(&'a str),
    /// By campaign.
    Campaign(&'a str),
    /// By message status.
    Status(MessageStatus),
}

impl Index<'_> {
    /// The prefix of this index value's entries; a delivery id follows it.
    pub fn prefix(&self) -> Vec<u8> {
        let (kind, value) = match self {
            Index::Customer(c) => (b'c', *c),
            Index::Message(m) => (b'm', *m),
            Index::Campaign(g) => (b'g', *g),
            Index::Status(s) => (b's', s.as_str()),
        };
        let mut key = [INDEX, &[kind]].concat();
        push_id(&mut key, value);
        key
    }
}

/// The prefix of a customer's unsettled deliveries.
pub fn unsettled_prefix(customer: &str) -> Vec<u8> {
    let mut key = UNSETTLED.to_vec();
    push_id(&mut key, customer);
    key
}

/// The customer id of an unsettled-index key.
pub fn unsettled_customer(key: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(UNSETTLED)?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    String::from_utf8(rest.get(4..4 + len)?.to_vec()).ok()
}

/// The prefix of a customer's deliveries by creation time.
pub fn created_prefix(customer: &str) -> Vec<u8> {
    let mut key = CREATED.to_vec();
    push_id(&mut key, customer);
    key
}

/// Every index key a delivery has in its current state.
pub fn index_keys(d: &Delivery) -> Vec<Vec<u8>> {
    index_keys_as(d, &Indexed::of(d))
}

/// The index keys `d` had when its index state was `was` (its id,
/// customer, message and creation time never change).
pub fn index_keys_as(d: &Delivery, was: &Indexed) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = [
        Some(Index::Customer(&d.customer_id)),
        Some(Index::Message(&d.message_id)),
        was.campaign_id.as_deref().map(Index::Campaign),
        Some(Index::Status(was.status)),
    ]
    .into_iter()
    .flatten()
    .map(|i| [i.prefix(), d.id.as_bytes().to_vec()].concat())
    .collect();
    keys.push(
        [
            created_prefix(&d.customer_id).as_slice(),
            &time(d.created_at),
            d.id.as_bytes(),
        ]
        .concat(),
    );
    if was.pending {
        keys.push([unsettled_prefix(&d.customer_id), d.id.as_bytes().to_vec()].concat());
    }
    keys
}

/// The start-time index key of the send record of `key` started at
/// `started_ms`; the key's bytes end it.
pub fn send_started(started_ms: i64, key: &str) -> Vec<u8> {
    [SEND_STARTED, &time(started_ms), key.as_bytes()].concat()
}

/// The start time and idempotency key of a start-time index key.
pub fn send_started_parts(index: &[u8]) -> Option<(i64, String)> {
    let rest = index.strip_prefix(SEND_STARTED)?;
    let bytes: [u8; 8] = rest.get(..8)?.try_into().ok()?;
    let key = String::from_utf8(rest[8..].to_vec()).ok()?;
    Some(((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64, key))
}

/// The counters of a message or a campaign.
#[derive(Clone, Copy, Debug)]
pub enum Counter<'a> {
    /// A message's.
    Message(&'a str),
    /// A campaign's.
    Campaign(&'a str),
}

impl Counter<'_> {
    /// The counter's key, and the prefix of its series.
    fn prefix(&self) -> Vec<u8> {
        let (kind, id) = match self {
            Counter::Message(m) => (b'm', *m),
            Counter::Campaign(g) => (b'g', *g),
        };
        let mut key = [COUNTER, &[kind]].concat();
        push_id(&mut key, id);
        key
    }

    /// Its key.
    pub fn key(&self) -> Vec<u8> {
        self.prefix()
    }
}

/// The prefix of a message's or a campaign's time series.
pub fn series_prefix(counter: Counter<'_>) -> Vec<u8> {
    [SERIES, &counter.prefix()[COUNTER.len()..]].concat()
}

/// One minute of a message's or a campaign's time series.
pub fn series(counter: Counter<'_>, minute: i64) -> Vec<u8> {
    let mut key = series_prefix(counter);
    key.extend_from_slice(&time(minute));
    key
}

/// The minute of a time-series key, given its series' prefix length.
pub fn series_minute(key: &[u8], prefix_len: usize) -> Option<i64> {
    let bytes: [u8; 8] = key.get(prefix_len..prefix_len + 8)?.try_into().ok()?;
    Some((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_like_numbers() {
        let ts = [i64::MIN, -61, -1, 0, 1, 59, i64::MAX];
        assert!(ts.windows(2).all(|w| time(w[0]) < time(w[1])));
    }

    #[test]
    fn successor_bounds_a_prefix() {
        assert_eq!(successor(b"d/"), Some(b"d0".to_vec()));
        assert_eq!(successor(&[1, 0xff]), Some(vec![2]));
        assert_eq!(successor(&[0xff, 0xff]), None);
    }

    #[test]
    fn ids_inside_keys_do_not_overlap() {
        let a = Index::Customer("a").prefix();
        let ab = Index::Customer("a\0\0\0\x01b").prefix();
        assert!(!ab.starts_with(&a) && !a.starts_with(&ab));
        let key = [unsettled_prefix("c/1"), b"D1".to_vec()].concat();
        assert_eq!(unsettled_customer(&key).as_deref(), Some("c/1"));
    }

    #[test]
    fn send_start_keys_sort_by_time_and_read_back() {
        let (early, late) = (send_started(-5, "zz"), send_started(7, "aa"));
        assert!(early < late);
        assert!(late < [SEND_STARTED, &time(8)].concat());
        assert_eq!(send_started_parts(&late), Some((7, "aa".to_owned())));
    }
}
