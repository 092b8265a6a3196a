//! Delivery retention on a manual clock: old deliveries leave every read,
//! list and index while the counters and time series stay; unsettled
//! deliveries and ones with a change in memory wait; a change racing the
//! expiry brings a delivery back whole; a pass cut short by a reopen leaves
//! nothing half-deleted; and the snapshot thread runs it on its own once
//! told the retention.

use std::sync::mpsc;

use metrics_exporter_prometheus::PrometheusBuilder;
use pushd::store::{Retention, Snapshotter};
use pushd_actors::delivery_id::DeliveryId;
use pushd_actors::engine::PartitionTag;
use pushd_actors::ports::{ManualClock, OsEntropy};
use pushd_actors::tally::contribution;

use super::*;

const DAY: i64 = 24 * 3600;
/// Where the tests' clock starts (Unix seconds).
const NOW: i64 = 1_700_000_000;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(NOW * 1000))
}

fn days(n: i64) -> Duration {
    Duration::from_secs((n * DAY) as u64)
}

/// A delivery of `message` (campaign g1) to one device of `customer`,
/// created `age` days before [`NOW`] under an id made then; sent and
/// delivered if `settled`, else still waiting for the provider.
fn aged(customer: &str, message: &str, age: i64, settled: bool) -> Delivery {
    let mut d = delivery(customer, message, Some("g1"), &[(Platform::Ios, false)]);
    let created = NOW - age * DAY;
    d.id = DeliveryId::new(PartitionTag::default(), created * 1000, &OsEntropy).to_string();
    d.created_at = created;
    d.attempted_at = Some(created);
    if settled {
        d.state.apply_outcome(0, &Outcome::Sent, created + 1);
        d.state.apply_report(0, Report::Delivered, created + 90);
    }
    d
}

/// Everything the metrics endpoints answer for m1, m2 and g1.
type Counted = (
    Tally,
    Tally,
    Tally,
    Vec<(i64, i64, i64)>,
    Vec<(i64, i64, i64)>,
);

fn counted(s: &SledStore) -> Counted {
    (
        s.message_metrics("m1"),
        s.message_metrics("m2"),
        s.campaign_metrics("g1"),
        s.message_timeseries("m1"),
        s.campaign_timeseries("g1"),
    )
}

/// A whole pass of `retention` from now, one batch per call; answers how
/// many deliveries it removed.
fn expire_all(s: &SledStore, retention: &Retention) -> u64 {
    let mut pass = retention.pass().expect("a retention");
    while !s.expire(&mut pass, 1).unwrap() {}
    pass.expired()
}

fn ids<'a>(ds: impl IntoIterator<Item = &'a Delivery>) -> Vec<String> {
    ds.into_iter().map(|d| d.id.clone()).collect()
}

/// `gone` are in no read, list or index; `kept` are in all of them, and are
/// all the store holds.
fn check_log(s: &SledStore, gone: &[&Delivery], kept: &[&Delivery]) {
    for d in gone {
        assert_eq!(s.delivery(&d.id).unwrap(), None, "{} is gone", d.id);
        assert!(s.delivery_as_of(&d.id).unwrap().is_none());
    }
    for d in kept {
        assert_eq!(s.delivery(&d.id).unwrap().as_ref(), Some(*d));
    }
    let mut newest_first = kept.to_vec();
    newest_first.sort_by(|a, b| b.id.cmp(&a.id));
    let by =
        |customer: Option<&str>, message: Option<&str>, campaign: Option<&str>| DeliveryFilter {
            customer_id: customer.map(Into::into),
            message_id: message.map(Into::into),
            campaign_id: campaign.map(Into::into),
            status: None,
            created: Default::default(),
        };
    let mut filters = vec![
        DeliveryFilter::default(),
        by(Some("c1"), None, None),
        by(Some("c2"), None, None),
        by(None, Some("m1"), None),
        by(None, Some("m2"), None),
        by(None, None, Some("g1")),
    ];
    filters.extend(MessageStatus::ALL.map(|status| DeliveryFilter {
        status: Some(status),
        ..Default::default()
    }));
    for filter in &filters {
        let want = newest_first.iter().copied().filter(|d| filter.matches(d));
        assert_eq!(ids(&all_pages(s, filter, 2)), ids(want), "{filter:?}");
    }
    for customer in ["c1", "c2"] {
        let want = newest_first.iter().copied();
        let between = s.deliveries_between(customer, i64::MIN, i64::MAX);
        assert_eq!(
            ids(&between.unwrap()),
            ids(want.filter(|d| d.customer_id == customer)),
            "{customer}"
        );
    }
    assert_eq!(s.index_problems().unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn old_deliveries_leave_the_log_and_the_counters_stay() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::open(dir.path(), Timing::default());
    let s = rig.store();
    let clock = clock();
    let retention = Retention::days(180, clock.clone());
    rig.commit(vec![
        Change::of(Entry::Customer(customer("c1"))),
        Change::of(Entry::Customer(customer("c2"))),
    ])
    .await;
    let oldest = aged("c1", "m1", 400, true);
    let old = aged("c2", "m2", 200, true);
    let unsettled = aged("c2", "m1", 300, false);
    let turning = aged("c1", "m1", 150, true);
    let young = aged("c1", "m2", 20, true);
    for d in [&oldest, &old, &unsettled, &turning, &young] {
        rig.commit(change(None, d)).await;
    }
    s.drain().unwrap();
    let before = counted(s);

    let later = self::clock();
    later.advance(days(3650));
    let forever = Retention::days(0, later);
    assert!(
        forever.pass().is_none(),
        "0 keeps every delivery, however old"
    );

    let recorder = PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let expired = metrics::with_local_recorder(&recorder, || expire_all(s, &retention));
    assert_eq!(expired, 2, "400 and 200 days old");
    assert!(
        metrics
            .render()
            .contains("pushd_deliveries_expired_total 2"),
        "{}",
        metrics.render()
    );
    check_log(s, &[&oldest, &old], &[&unsettled, &turning, &young]);
    assert_eq!(counted(s), before, "counters and series stay");

    clock.advance(days(40));
    assert_eq!(expire_all(s, &retention), 1, "150 days old, 40 days on");
    check_log(s, &[&oldest, &old, &turning], &[&unsettled, &young]);
    assert_eq!(counted(s), before);
    assert_eq!(expire_all(s, &retention), 0, "nothing left to expire");

    // The customers of expired deliveries go on as before.
    assert_eq!(s.customer("c2").unwrap(), Some(customer("c2")));
    assert_eq!(
        ids(&s.unsettled_deliveries("c2").unwrap()),
        ids([&unsettled])
    );
    let fresh = aged("c2", "m2", -40, true);
    rig.commit(change(None, &fresh)).await;
    check_log(s, &[&oldest, &old, &turning], &[&unsettled, &young, &fresh]);
    rig.close();
}

/// A delivery with a change in memory waits for the drain; a change made
/// after the expiry from a value read before it (a report racing the
/// expiry) brings the delivery back whole, counted once.
#[tokio::test]
async fn changes_in_memory_are_never_half_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::open(dir.path(), Timing::default());
    let s = rig.store();
    let retention = Retention::days(180, clock());
    let waiting = aged("c1", "m1", 200, true);
    let racing = aged("c2", "m1", 300, true);
    for d in [&waiting, &racing] {
        rig.commit(change(None, d)).await;
    }
    s.drain().unwrap();
    let mut opened = waiting.clone();
    opened
        .state
        .apply_report(0, Report::Opened, opened.created_at + 200);
    rig.commit(change(Some(&waiting), &opened)).await;
    let before = counted(s);

    assert_eq!(
        expire_all(s, &retention),
        1,
        "not the one changed in memory"
    );
    check_log(s, &[&racing], &[&opened]);
    s.drain().unwrap();
    assert_eq!(expire_all(s, &retention), 1, "drained, it goes");
    check_log(s, &[&racing, &opened], &[]);
    assert_eq!(counted(s), before);

    // The engine read `racing` before it went, and reports it opened now.
    let mut reported = racing.clone();
    reported
        .state
        .apply_report(0, Report::Opened, racing.created_at + 300);
    rig.commit(change(Some(&racing), &reported)).await;
    assert_eq!(s.delivery(&racing.id).unwrap(), Some(reported.clone()));
    check_log(s, &[&opened], &[&reported]);
    let moved = |t: Tally| t + -contribution(&racing) + contribution(&reported);
    let (m1, _, g1, ..) = counted(s);
    assert_eq!(
        (m1, g1),
        (moved(before.0), moved(before.2)),
        "its change only"
    );
    assert_eq!(expire_all(s, &retention), 1, "and it goes again");
    check_log(s, &[&opened, &reported], &[]);
    assert_eq!((counted(s).0, counted(s).2), (m1, g1));
    rig.close();
}

/// Erasure and expiry together: a delivery expiry removed, brought back by
/// a racing change, then erased, leaves sled with the erasure; and expiry
/// leaves the deliveries of a customer erased since the last drain to the
/// erasure (one expired then would lose its index keys, and the drain
/// writing the erased customer's changed deliveries would bring its record
/// back where the erasure no longer finds it).
#[tokio::test]
async fn erased_deliveries_are_not_brought_back_by_expiry_nor_expiry_by_erasure() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::open(dir.path(), Timing::default());
    let s = rig.store();
    let retention = Retention::days(180, clock());

    // Expired, then changed from the value read before: back whole, then
    // its customer erased.
    let racing = aged("c1", "m1", 300, true);
    rig.commit(change(None, &racing)).await;
    s.drain().unwrap();
    assert_eq!(expire_all(s, &retention), 1);
    let mut reported = racing.clone();
    reported
        .state
        .apply_report(0, Report::Opened, racing.created_at + 300);
    rig.commit(change(Some(&racing), &reported)).await;
    assert_eq!(s.delivery(&racing.id).unwrap(), Some(reported.clone()));
    rig.commit(vec![Change::of(Entry::CustomerErased("c1".into()))])
        .await;
    assert_eq!(s.delivery(&racing.id).unwrap(), None);
    s.drain().unwrap();
    check_log(s, &[&racing], &[]);
    assert_eq!(expire_all(s, &retention), 0, "nothing came back");

    // Erased, not yet drained: expiry leaves them to the erasure, the one
    // changed in memory too.
    let changed = aged("c2", "m1", 300, true);
    let still = aged("c2", "m2", 300, true);
    let other = aged("c3", "m1", 300, true);
    for d in [&changed, &still, &other] {
        rig.commit(change(None, d)).await;
    }
    s.drain().unwrap();
    let mut opened = changed.clone();
    opened
        .state
        .apply_report(0, Report::Opened, changed.created_at + 200);
    rig.commit(change(Some(&changed), &opened)).await;
    rig.commit(vec![Change::of(Entry::CustomerErased("c2".into()))])
        .await;
    assert_eq!(expire_all(s, &retention), 1, "the other customer's only");
    check_log(s, &[&racing, &changed, &still, &other], &[]);
    s.drain().unwrap();
    check_log(s, &[&racing, &changed, &still, &other], &[]);
    assert_eq!(expire_all(s, &retention), 0);
    rig.close();
    let rig = Rig::open(dir.path(), Timing::default());
    check_log(rig.store(), &[&racing, &changed, &still, &other], &[]);
    rig.close();
}

/// A pass stopped after one batch, then the store closed: what went stays
/// gone, the rest is whole, and the next pass finishes.
#[tokio::test]
async fn expiry_in_small_batches_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let retention = Retention::days(180, clock());
    let old: Vec<Delivery> = (0..100)
        .map(|i| {
            aged(
                ["c1", "c2"][i % 2],
                ["m1", "m2"][i % 3 % 2],
                181 + i as i64,
                true,
            )
        })
        .collect();
    let young: Vec<Delivery> = (0..10)
        .map(|i| aged(["c1", "c2"][i % 2], "m1", i as i64, true))
        .collect();
    let (before, gone) = {
        let rig = Rig::open(dir.path(), Timing::default());
        let s = rig.store();
        for chunk in old.chunks(25).chain(young.chunks(25)) {
            rig.commit(chunk.iter().flat_map(|d| change(None, d)).collect())
                .await;
        }
        s.drain().unwrap();
        let before = counted(s);
        let mut pass = retention.pass().unwrap();
        assert!(!s.expire(&mut pass, 1).unwrap(), "100 take several batches");
        let gone: Vec<&Delivery> = old
            .iter()
            .filter(|d| s.delivery(&d.id).unwrap().is_none())
            .collect();
        assert!((1..100).contains(&gone.len()), "{}", gone.len());
        assert_eq!(gone.len() as u64, pass.expired());
        assert_eq!(s.index_problems().unwrap(), Vec::<String>::new());
        rig.close();
        (before, gone)
    };
    let rig = Rig::open(dir.path(), Timing::default());
    let s = rig.store();
    for d in &gone {
        assert_eq!(s.delivery(&d.id).unwrap(), None, "stays expired");
    }
    assert_eq!(s.index_problems().unwrap(), Vec::<String>::new());
    assert_eq!(counted(s), before);
    assert_eq!(expire_all(s, &retention), 100 - gone.len() as u64);
    check_log(
        s,
        &old.iter().collect::<Vec<_>>(),
        &young.iter().collect::<Vec<_>>(),
    );
    assert_eq!(counted(s), before);
    rig.close();
}

/// A store holding `d`, with its snapshot thread, and the thread's
/// checkpoints as they happen.
struct Background {
    store: Arc<SledStore>,
    journal: Arc<FileJournal>,
    thread: Snapshotter,
    checkpoints: mpsc::Receiver<u64>,
}

impl Background {
    fn start(dir: &Path, d: &Delivery) -> Background {
        let store = SledStore::open(dir.join("snapshot"), 8 << 20).unwrap();
        let journal = Arc::new(FileJournal::open(dir.join("journal"), 0).unwrap());
        engine(store.clone(), journal.clone())
            .write(change(None, d))
            .unwrap();
        let timing = Timing {
            expire_every: Duration::ZERO,
            ..busy()
        };
        let (tx, checkpoints) = mpsc::channel();
        let on_checkpoint = Box::new(move |p| {
            // The test may have stopped listening.
            let _ = tx.send(p);
        });
        let thread = Snapshotter::start(&store, timing, on_checkpoint).unwrap();
        Background {
            store,
            journal,
            thread,
            checkpoints,
        }
    }

    /// Returns after two checkpoints that start after the call: the thread
    /// took what it was told, and a pass ran, between them.
    fn two_checkpoints(&self) {
        while self.checkpoints.try_recv().is_ok() {}
        self.checkpoints.recv().unwrap();
        self.checkpoints.recv().unwrap();
    }

    fn stop(self) {
        self.thread.stop();
        self.journal.close();
    }
}

/// The snapshot thread expires on its own between drains, once told the
/// retention (after the journal's replay). The test waits for its
/// checkpoints, not for time.
#[tokio::test]
async fn the_snapshot_thread_expires_once_told_the_retention() {
    let d = aged("c1", "m1", 170, true);
    let clock = clock();
    let dir = tempfile::tempdir().unwrap();
    let background = Background::start(dir.path(), &d);
    let store = &background.store;
    clock.advance(days(20));
    background.two_checkpoints();
    assert_eq!(store.delivery(&d.id).unwrap(), Some(d.clone()), "not told");
    background
        .thread
        .retain(Retention::days(180, clock.clone()));
    background.two_checkpoints();
    assert_eq!(store.delivery(&d.id).unwrap(), None, "190 days old");
    background.stop();

    let forever = tempfile::tempdir().unwrap();
    let background = Background::start(forever.path(), &d);
    background.thread.retain(Retention::days(0, clock.clone()));
    clock.advance(days(3650));
    background.two_checkpoints();
    let kept = background.store.delivery(&d.id).unwrap();
    assert_eq!(kept, Some(d), "0 days keeps it");
    background.stop();
}
