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
//! | `i/` | `m`/`g`/`s`, message/campaign/status, delivery id | empty (held: customer) |
//! | `u/` | customer, delivery id (unsettled)     | empty                  |
//! | `t/` | customer, listed_at, delivery id      | empty                  |
//! | `k/` | `m`/`g`, message/campaign id          | `Tally`                |
//! | `s/` | `m`/`g`, message/campaign id, minute  | `[delivered, opened]`  |
//! | `r/` | `m`/`g`, message/campaign id, reason  | count (`i64`)          |
//! | `p/` | idempotency key                       | `SendRecord`           |
//! | `x/` | started (ms), idempotency key         | empty                  |
//!
//! A customer's deliveries are found through their creation keys (`t/`):
//! the customer index (`i/c`) that formats before 9 also wrote said the
//! same again, one more entry for every delivery (see `upgrade`).
//!
//! A status key names the delivery's status, but for `sent`, `delivered`
//! and `opened`, which share one (`reached`, see [`status_key`]): the
//! reports that move a delivery among them leave its index keys as they
//! are, so a report's drain writes the delivery's record and nothing else.
//! A log page for one of the three reads the deliveries the shared key
//! lists and keeps the ones of that status.
//!
//! A delivery held for its time (`scheduled`) has only its record and its
//! status key, whose value is its customer id: its message, campaign,
//! creation and unsettled keys are written when it is released or
//! canceled. Holding a million deliveries for one instant then writes two
//! entries each, not six; the delivery log, erasure and recovery find
//! held ones through their status keys (see `log`, `erase`).
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
/// Failure-reason counters (a snapshot of an older release has none).
pub const REASON: &[u8] = b"r/";
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

/// One piece of a key: raw bytes, or an id written with its length in
/// front.
#[derive(Clone, Copy)]
enum Part<'a> {
    Raw(&'a [u8]),
    Id(&'a str),
}

impl Part<'_> {
    fn len(self) -> usize {
        match self {
            Part::Raw(bytes) => bytes.len(),
            Part::Id(id) => 4 + id.len(),
        }
    }
}

/// The key `parts` spell, in one allocation of its exact size: the drain
/// builds several keys per changed delivery, and growing each as it is
/// written cost a reallocation or two apiece.
fn key(parts: &[Part<'_>]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        match *part {
            Part::Raw(bytes) => key.extend_from_slice(bytes),
            Part::Id(id) => {
                key.extend_from_slice(&(id.len() as u32).to_be_bytes());
                key.extend_from_slice(id.as_bytes());
            }
        }
    }
    key
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

/// The name a status key of deliveries in status `s` holds: `reached` for
/// `sent`, `delivered` and `opened` (see the module's doc), the status's
/// own name for every other.
pub fn status_key(s: MessageStatus) -> &'static str {
    match s {
        MessageStatus::Sent | MessageStatus::Delivered | MessageStatus::Opened => "reached",
        _ => s.as_str(),
    }
}

/// Whether the entries of status `s`'s key list other statuses' deliveries
/// too.
pub fn status_key_shared(s: MessageStatus) -> bool {
    status_key(s) != s.as_str()
}

/// The prefix of the status keys named `name`: the deliveries of a status
/// (see [`status_key`]), or of a status key of an older format (see
/// `upgrade`).
pub fn status_prefix(name: &str) -> Vec<u8> {
    key(&[Part::Raw(INDEX), Part::Raw(b"s"), Part::Id(name)])
}

/// The prefix of the customer index keys formats before 9 wrote (kind
/// `c`, a customer id, a delivery id): the upgrade removes them.
pub fn format_8_customer_index() -> Vec<u8> {
    [INDEX, b"c"].concat()
}

/// A delivery-log index: which field it keys deliveries by (a customer's
/// deliveries are found through their creation keys, [`created_prefix`]).
#[derive(Clone, Copy, Debug)]
pub enum Index<'a> {
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
        self.entry(b"")
    }

    /// The entry of delivery `id` in this index value.
    fn entry(&self, id: &[u8]) -> Vec<u8> {
        let (kind, value) = match self {
            Index::Message(m) => (b'm', *m),
            Index::Campaign(g) => (b'g', *g),
            Index::Status(s) => (b's', status_key(*s)),
        };
        key(&[
            Part::Raw(INDEX),
            Part::Raw(&[kind]),
            Part::Id(value),
            Part::Raw(id),
        ])
    }
}

/// The prefix of a customer's unsettled deliveries.
pub fn unsettled_prefix(customer: &str) -> Vec<u8> {
    key(&[Part::Raw(UNSETTLED), Part::Id(customer)])
}

/// The customer id of an unsettled-index key.
pub fn unsettled_customer(key: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(UNSETTLED)?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    String::from_utf8(rest.get(4..4 + len)?.to_vec()).ok()
}

/// The prefix of a customer's deliveries by the time they were listed:
/// made, or released when scheduled (`Delivery::listed_at`).
pub fn created_prefix(customer: &str) -> Vec<u8> {
    key(&[Part::Raw(CREATED), Part::Id(customer)])
}

/// Every index key a delivery has in its current state.
pub fn index_keys(d: &Delivery) -> Vec<Vec<u8>> {
    index_keys_as(d, &Indexed::of(d))
}

/// The index keys `d` had when its index state was `was` (its id,
/// customer, message and creation time never change). A held delivery has
/// only its status key.
pub fn index_keys_as(d: &Delivery, was: &Indexed) -> Vec<Vec<u8>> {
    let id = d.id.as_bytes();
    let status = Index::Status(was.status).entry(id);
    if was.held {
        return vec![status];
    }
    let mut keys = Vec::with_capacity(5);
    keys.extend(
        [
            Some(Index::Message(&d.message_id)),
            was.campaign_id.as_deref().map(Index::Campaign),
        ]
        .into_iter()
        .flatten()
        .map(|i| i.entry(id)),
    );
    keys.push(status);
    let customer = Part::Id(&d.customer_id);
    keys.push(listed(d, was.listed_at));
    if was.pending {
        keys.push(key(&[Part::Raw(UNSETTLED), customer, Part::Raw(id)]));
    }
    keys
}

/// Whether a delivery whose index state was `a` has the same index keys,
/// and values, with index state `b` (its id, customer, message and
/// creation time never change): a move among the statuses that share a
/// key changes none.
pub fn same_index_keys(a: &Indexed, b: &Indexed) -> bool {
    // Taken apart whole: a field added to `Indexed` must be compared here.
    let Indexed {
        status,
        pending,
        campaign_id,
        held,
        listed_at,
    } = a;
    status_key(*status) == status_key(b.status)
        && (*pending, campaign_id, *held, *listed_at)
            == (b.pending, &b.campaign_id, b.held, b.listed_at)
}

/// The value of `d`'s index keys: a held delivery's one key names its
/// customer; the others are empty.
pub fn index_value(d: &Delivery) -> &[u8] {
    match d.state.held {
        true => d.customer_id.as_bytes(),
        false => &[],
    }
}

/// `d`'s creation key, at time `at` (seconds).
pub fn listed(d: &Delivery, at: Timestamp) -> Vec<u8> {
    let customer = Part::Id(&d.customer_id);
    key(&[
        Part::Raw(CREATED),
        customer,
        Part::Raw(&time(at)),
        Part::Raw(d.id.as_bytes()),
    ])
}

/// The prefix of the status key every held delivery has (its value is
/// the delivery's customer id).
pub fn held_prefix() -> Vec<u8> {
    Index::Status(MessageStatus::Scheduled).prefix()
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
    /// The kind and the id of its keys.
    fn parts(&self) -> [Part<'_>; 2] {
        match self {
            Counter::Message(m) => [Part::Raw(b"m"), Part::Id(m)],
            Counter::Campaign(g) => [Part::Raw(b"g"), Part::Id(g)],
        }
    }

    /// Its key.
    pub fn key(&self) -> Vec<u8> {
        let [kind, id] = self.parts();
        key(&[Part::Raw(COUNTER), kind, id])
    }
}

/// The prefix of a message's or a campaign's time series.
pub fn series_prefix(counter: Counter<'_>) -> Vec<u8> {
    let [kind, id] = counter.parts();
    key(&[Part::Raw(SERIES), kind, id])
}

/// One minute of a message's or a campaign's time series.
pub fn series(counter: Counter<'_>, minute: i64) -> Vec<u8> {
    let [kind, id] = counter.parts();
    key(&[Part::Raw(SERIES), kind, id, Part::Raw(&time(minute))])
}

/// The prefix of a message's or a campaign's failure-reason counters.
pub fn reason_prefix(counter: Counter<'_>) -> Vec<u8> {
    let [kind, id] = counter.parts();
    key(&[Part::Raw(REASON), kind, id])
}

/// How many of a message's or a campaign's deliveries failed for `code`.
pub fn reason(counter: Counter<'_>, code: &str) -> Vec<u8> {
    let [kind, id] = counter.parts();
    key(&[Part::Raw(REASON), kind, id, Part::Raw(code.as_bytes())])
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
        let a = Index::Message("a").prefix();
        let ab = Index::Message("a\0\0\0\x01b").prefix();
        assert!(!ab.starts_with(&a) && !a.starts_with(&ab));
        let key = [unsettled_prefix("c/1"), b"D1".to_vec()].concat();
        assert_eq!(unsettled_customer(&key).as_deref(), Some("c/1"));
    }

    /// Delivery `D1` of customer `ada`, message `m1`, campaign `spring`.
    fn delivery() -> Delivery {
        Delivery {
            id: "D1".into(),
            customer_id: "ada".into(),
            message_id: "m1".into(),
            campaign_id: Some("spring".into()),
            created_at: 60,
            attempted_at: None,
            content: None,
            data: serde_json::Value::Null,
            goal: None,
            sends: Vec::new(),
            state: pushd_actors::status::DeliveryState::new(Vec::new()),
            failure_detail: None,
            schedule: None,
        }
    }

    /// The drain writes no index key when `same_index_keys` says a change
    /// keeps them all: over every pair of index states, it says so only
    /// when the keys are the same, and (for a delivery not held, whose
    /// keys name every part of the state) whenever they are.
    #[test]
    fn same_index_keys_holds_exactly_when_the_keys_do() {
        let d = delivery();
        let mut states = Vec::new();
        for status in MessageStatus::ALL {
            for (pending, held) in [(false, false), (true, false), (false, true)] {
                for campaign_id in [None, Some("spring".to_string()), Some("fall".into())] {
                    for listed_at in [60, 120] {
                        states.push(Indexed {
                            status,
                            pending,
                            campaign_id: campaign_id.clone(),
                            held,
                            listed_at,
                        });
                    }
                }
            }
        }
        for a in &states {
            for b in &states {
                let same_keys = index_keys_as(&d, a) == index_keys_as(&d, b);
                let said = same_index_keys(a, b);
                assert!(!said || same_keys, "{a:?} and {b:?}");
                if !a.held && !b.held {
                    assert_eq!(said, same_keys, "{a:?} and {b:?}");
                }
            }
        }
    }

    /// The layout is what every data directory holds: these bytes must
    /// never change.
    #[test]
    fn keys_are_laid_out_as_stored() {
        let t = time(60);
        let id = |s: &str| [&(s.len() as u32).to_be_bytes()[..], s.as_bytes()].concat();
        let d = delivery();
        let was = Indexed {
            status: MessageStatus::Sent,
            campaign_id: Some("spring".into()),
            pending: true,
            held: false,
            listed_at: 60,
        };
        let expected: Vec<Vec<u8>> = vec![
            [b"i/m".as_slice(), &id("m1"), b"D1"].concat(),
            [b"i/g".as_slice(), &id("spring"), b"D1"].concat(),
            // Format 9: `sent`, `delivered` and `opened` share one key.
            [b"i/s".as_slice(), &id("reached"), b"D1"].concat(),
            [b"t/".as_slice(), &id("ada"), &t, b"D1"].concat(),
            [b"u/".as_slice(), &id("ada"), b"D1"].concat(),
        ];
        assert_eq!(index_keys_as(&d, &was), expected);
        let held = Indexed {
            status: MessageStatus::Scheduled,
            held: true,
            ..was
        };
        let expected_held: Vec<Vec<u8>> =
            vec![[b"i/s".as_slice(), &id("scheduled"), b"D1"].concat()];
        assert_eq!(index_keys_as(&d, &held), expected_held);
        // Released at 3:00 (held since 1:00): listed from its release.
        let mut released = d.clone();
        released.schedule = Some(pushd_actors::schedule::Schedule {
            released_ms: Some(180_500),
            ..pushd_actors::schedule::Schedule::at(180_000)
        });
        assert_eq!(
            index_keys(&released)[3],
            [b"t/".as_slice(), &id("ada"), &time(180), b"D1"].concat()
        );
        assert_eq!(
            held_prefix(),
            [b"i/s".as_slice(), &id("scheduled")].concat()
        );
        for shared in [
            MessageStatus::Sent,
            MessageStatus::Delivered,
            MessageStatus::Opened,
        ] {
            assert_eq!(
                Index::Status(shared).prefix(),
                [b"i/s".as_slice(), &id("reached")].concat()
            );
        }
        assert_eq!(
            Index::Status(MessageStatus::Converted).prefix(),
            [b"i/s".as_slice(), &id("converted")].concat()
        );
        assert_eq!(format_8_customer_index(), b"i/c");
        assert_eq!(
            status_prefix("sent"),
            [b"i/s".as_slice(), &id("sent")].concat()
        );
        assert_eq!(
            Index::Message("m1").prefix(),
            [b"i/m".as_slice(), &id("m1")].concat()
        );
        assert_eq!(
            created_prefix("ada"),
            [b"t/".as_slice(), &id("ada")].concat()
        );
        assert_eq!(
            unsettled_prefix("ada"),
            [b"u/".as_slice(), &id("ada")].concat()
        );
        let (m, g) = (Counter::Message("m1"), Counter::Campaign("spring"));
        assert_eq!(m.key(), [b"k/m".as_slice(), &id("m1")].concat());
        assert_eq!(g.key(), [b"k/g".as_slice(), &id("spring")].concat());
        assert_eq!(
            series_prefix(g),
            [b"s/g".as_slice(), &id("spring")].concat()
        );
        assert_eq!(series(m, 60), [b"s/m".as_slice(), &id("m1"), &t].concat());
        assert_eq!(
            reason(g, "no_devices"),
            [b"r/g".as_slice(), &id("spring"), b"no_devices"].concat()
        );
        assert_eq!(reason_prefix(m), [b"r/m".as_slice(), &id("m1")].concat());
    }

    #[test]
    fn send_start_keys_sort_by_time_and_read_back() {
        let (early, late) = (send_started(-5, "zz"), send_started(7, "aa"));
        assert!(early < late);
        assert!(late < [SEND_STARTED, &time(8)].concat());
        assert_eq!(send_started_parts(&late), Some((7, "aa".to_owned())));
    }
}
