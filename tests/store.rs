//! The store over the journal, written the engine's way (each change
//! journaled, then applied): reads see changes at once and after a drain
//! into sled, counters against recounts under concurrent load, the delivery
//! log's filters and paging while snapshots run, the unsettled index,
//! reopening, and an exact replay after the overlay was lost. Delivery
//! retention is in `store/retention.rs`.

#[path = "store/retention.rs"]
mod retention;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pushd::journal::FileJournal;
use pushd::persistence::{OpenError, Persistence};
use pushd::providers::Providers;
use pushd::store::{DeliveryFilter, Error, SledStore, Timing};
use pushd::template::LiquidRenderer;
use pushd_actors::engine::{EngineConfig, EngineCtx, Ports};
use pushd_actors::idempotency::{SendAnswer, SendRecord, SentTo};
use pushd_actors::model::{
    Audience, Customer, DEFAULT_APP, Delivery, DeviceSend, Environment, MessageSpec, Platform,
    PushOptions,
};
use pushd_actors::ports::{Change, Entry, OsEntropy, Store, SystemClock};
use pushd_actors::schedule::Schedule;
use pushd_actors::status::{
    DeliveryState, DeviceState, FailureReason, MessageStatus, Outcome, Report,
};
use pushd_actors::tally::Tally;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};

/// Time-ordered ids: a counter, zero-padded to a ULID's 26 characters.
fn next_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:026}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn delivery(
    customer: &str,
    message: &str,
    campaign: Option<&str>,
    devices: &[(Platform, bool)],
) -> Delivery {
    let states = devices
        .iter()
        .map(|&(_, s)| {
            if s {
                DeviceState::suppressed()
            } else {
                DeviceState::attempted()
            }
        })
        .collect();
    Delivery {
        id: next_id(),
        customer_id: customer.into(),
        message_id: message.into(),
        campaign_id: campaign.map(Into::into),
        created_at: 1_000,
        attempted_at: Some(1_000),
        content: None,
        data: Value::Null,
        goal: None,
        sends: devices
            .iter()
            .enumerate()
            .map(|(i, &(platform, _))| DeviceSend {
                token: format!("{customer}-t{i}"),
                platform,
                app: DEFAULT_APP.into(),
                environment: Environment::Production,
                attempts: 1,
                last_error: None,
                provider_id: None,
                duplicates: 0,
                opted_in: None,
            })
            .collect(),
        state: DeliveryState::new(states),
        failure_detail: None,
        schedule: None,
    }
}

fn random_delivery(
    rng: &mut StdRng,
    customer: &str,
    message: &str,
    campaign: Option<&str>,
) -> Delivery {
    let n = rng.gen_range(0..4);
    let devices: Vec<_> = (0..n)
        .map(|_| {
            let p = if rng.gen_bool(0.5) {
                Platform::Ios
            } else {
                Platform::Android
            };
            (p, rng.gen_bool(0.15))
        })
        .collect();
    let mut d = delivery(customer, message, campaign, &devices);
    // Some are held for their time: they have only their status key.
    if rng.gen_bool(0.2) {
        d.state = DeliveryState::held();
        d.sends.clear();
        d.attempted_at = None;
        d.schedule = Some(Schedule::at(9_000_000));
    }
    d
}

/// One random event on a delivery (a held one is canceled or stays).
fn random_event(rng: &mut StdRng, d: &mut Delivery) {
    if d.state.held {
        if rng.gen_bool(0.5) {
            d.state.cancel();
        }
        return;
    }
    let n = d.state.devices.len();
    if n == 0 {
        return;
    }
    let i = rng.gen_range(0..n);
    let at = 1_000 + rng.gen_range(0..600);
    match rng.gen_range(0..7) {
        0 => d.state.apply_outcome(i, &Outcome::Sent, at),
        1 => d.state.apply_outcome(i, &Outcome::Bounced, at),
        2 => d
            .state
            .apply_outcome(i, &Outcome::Failed(FailureReason::RetriesExhausted), at),
        6 => d
            .state
            .apply_outcome(i, &Outcome::Failed(FailureReason::ProviderRejected), at),
        3 => drop(d.state.apply_report(i, Report::Delivered, at)),
        4 => drop(d.state.apply_report(i, Report::Opened, at)),
        _ => drop(d.state.convert(at)),
    }
}

fn change(before: Option<&Delivery>, after: &Delivery) -> Vec<Change> {
    vec![Change::delivery(before.cloned(), after.clone())]
}

/// Snapshots often, so a workload crosses many drains and checkpoints.
fn busy() -> Timing {
    Timing {
        drain_every: Duration::from_millis(3),
        checkpoint_every: Duration::from_millis(20),
        drain_at: 50,
        ..Timing::default()
    }
}

/// A store and journal in `dir`, and the engine's write path over them.
struct Rig {
    persistence: Persistence,
    ctx: EngineCtx,
}

impl Rig {
    /// Waits (up to 5 s) while sled's file lock is still held: a store
    /// dropped just before (with the engine's tasks, which let go of it a
    /// moment after their context) releases it a moment later.
    fn open(dir: &Path, timing: Timing) -> Rig {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let persistence = loop {
            match Persistence::open(dir, 8 << 20, timing) {
                Err(OpenError::Store(Error::InUse(_))) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                opened => break opened.unwrap(),
            }
        };
        let ctx = engine(persistence.store.clone(), persistence.journal.clone());
        pushd_actors::recovery::replay(&*persistence.journal, &*persistence.store).unwrap();
        Rig { persistence, ctx }
    }

    fn store(&self) -> &SledStore {
        &self.persistence.store
    }

    /// Journals and applies `changes`; returns once they are durable.
    async fn commit(&self, changes: Vec<Change>) {
        let position = self.ctx.write(changes).unwrap();
        self.ctx.durable(position).await.unwrap();
    }

    fn close(self) {
        self.persistence.close();
    }
}

/// The engine's write path (`EngineCtx::write`) over a store and journal.
fn engine(store: Arc<SledStore>, journal: Arc<FileJournal>) -> EngineCtx {
    let ports = Ports {
        provider: Arc::new(Providers::from_config(
            &Default::default(),
            &Default::default(),
        )),
        journal,
        store: store.clone(),
        renderer: Arc::new(LiquidRenderer::default()),
        clock: Arc::new(SystemClock),
        entropy: Arc::new(OsEntropy),
        catalog: store.clone(),
    };
    EngineCtx::new(ports, EngineConfig::default())
}

fn spec(id: &str, campaign: Option<&str>) -> MessageSpec {
    MessageSpec {
        id: id.into(),
        name: format!("{id} push"),
        campaign_id: campaign.map(Into::into),
        title: "Hi {{customer.first_name}}".into(),
        body: "Body".into(),
        deep_link: None,
        audience: Audience::AllDevices,
        collapse_id: None,
        conversion: None,
        app: DEFAULT_APP.into(),
        push: PushOptions::default(),
        rate_per_minute: None,
        lane: Default::default(),
        created_at: 0,
    }
}

fn customer(id: &str) -> Customer {
    Customer {
        id: id.into(),
        attributes: Map::from_iter([("first_name".to_owned(), Value::from("Ada"))]).into(),
        unsubscribed: false,
        devices: vec![],
    }
}

#[tokio::test]
async fn changes_read_back_from_memory_and_from_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::open(dir.path(), Timing::default());
    let d = delivery("c1", "m1", Some("g1"), &[(Platform::Ios, false)]);
    let mut changes = change(None, &d);
    changes.push(Change::of(Entry::Customer(customer("c1"))));
    changes.push(Change::of(Entry::Message(Box::new(spec("m1", Some("g1"))))));
    rig.commit(changes).await;
    let s = rig.store();
    for drained in [false, true] {
        assert_eq!(
            s.delivery(&d.id).unwrap(),
            Some(d.clone()),
            "drained {drained}"
        );
        assert_eq!(s.customer("c1").unwrap(), Some(customer("c1")));
        assert_eq!(s.message("m1").unwrap(), Some(spec("m1", Some("g1"))));
        let seen = s.delivery_as_of(&d.id).unwrap().expect("the delivery");
        assert_eq!(
            (seen.value, seen.position),
            (d.clone(), 1),
            "drained {drained}"
        );
        assert_eq!(s.delivery("nope").unwrap(), None);
        assert_eq!(s.message("m2").unwrap(), None);
        s.drain().unwrap();
    }
    rig.commit(vec![Change::of(Entry::CustomerDeleted("c1".into()))])
        .await;
    assert_eq!(s.customer("c1").unwrap(), None);
    s.drain().unwrap();
    assert_eq!(s.customer("c1").unwrap(), None);
    assert_eq!(s.messages().unwrap(), vec![spec("m1", Some("g1"))]);
    rig.close();
}

#[tokio::test]
async fn deliveries_between_is_inclusive_and_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::open(dir.path(), Timing::default());
    let mut ids = Vec::new();
    for at in [100, 200, 200, 300] {
        let mut d = delivery("c1", "m1", None, &[]);
        d.created_at = at;
        rig.commit(change(None, &d)).await;
        ids.push(d.id);
        // Half in the snapshot, half in memory.
        if at == 200 {
            rig.store().drain().unwrap();
        }
    }
    let other = delivery("c2", "m1", None, &[]);
    rig.commit(change(None, &other)).await;
    let s = rig.store();
    let got: Vec<_> = s
        .deliveries_between("c1", 200, 300)
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(got, vec![ids[3].clone(), ids[2].clone(), ids[1].clone()]);
    assert_eq!(
        s.deliveries_between("c1", i64::MIN, i64::MAX)
            .unwrap()
            .len(),
        4
    );
    assert!(s.deliveries_between("c1", 301, 200).unwrap().is_empty());
    rig.close();
}

/// A scheduled delivery is listed from its release (what frequency caps
/// and conversions read), not from its creation days before: in memory
/// and in the snapshot, released, held again and released again, with one
/// creation key at a time.
#[tokio::test]
async fn a_scheduled_delivery_is_listed_from_its_release() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::open(dir.path(), Timing::default());
    let made = delivery("c1", "m1", None, &[(Platform::Ios, false)]);
    let mut held = made.clone();
    (held.state, held.attempted_at) = (DeliveryState::held(), None);
    held.sends.clear();
    held.schedule = Some(Schedule::at(500_000_000));
    rig.commit(change(None, &held)).await;
    let release = |d: &Delivery, ms: i64| {
        let mut out = made.clone();
        out.schedule = (d.schedule.clone()).map(|s| Schedule {
            released_ms: Some(ms),
            ..s
        });
        out
    };
    let listed = |from, to| -> Vec<String> {
        let found = rig.store().deliveries_between("c1", from, to).unwrap();
        found.into_iter().map(|d| d.id).collect()
    };
    let first = release(&held, 500_000_000);
    rig.commit(change(Some(&held), &first)).await;
    assert_eq!(listed(500_000, 500_000), vec![made.id.clone()], "in memory");
    rig.store().drain().unwrap();
    assert_eq!(listed(500_000, 500_000), vec![made.id.clone()], "drained");
    assert!(listed(0, 499_999).is_empty());
    // Held again (a retry inside quiet hours), then released later: its
    // creation key moves, and the snapshot keeps only the new one.
    rig.commit(change(Some(&first), &held)).await;
    let last = release(&held, 900_000_000);
    rig.commit(change(Some(&held), &last)).await;
    rig.store().drain().unwrap();
    assert_eq!(listed(900_000, 900_000), vec![made.id.clone()]);
    assert!(listed(0, 899_999).is_empty());
    assert_eq!(last.listed_at(), 900_000);
    assert!(rig.store().index_problems().unwrap().is_empty());
    rig.close();
}

/// Many tasks create deliveries and move them through random events, all
/// for the same two messages of one campaign, while snapshots run; the kept
/// counters, time series and failure reasons equal a recount, live and
/// after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_equal_recount_after_concurrent_workload() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Arc::new(Rig::open(dir.path(), busy()));
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let rig = Arc::clone(&rig);
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(t);
                let mut mine: Vec<Delivery> = Vec::new();
                for _ in 0..150 {
                    if mine.is_empty() || rng.gen_bool(0.3) {
                        let customer = format!("c{}", rng.gen_range(0..40));
                        let message = if rng.gen_bool(0.5) { "m1" } else { "m2" };
                        let d = random_delivery(
                            &mut rng,
                            &format!("{t}-{customer}"),
                            message,
                            Some("g1"),
                        );
                        rig.commit(change(None, &d)).await;
                        mine.push(d);
                    } else {
                        let i = rng.gen_range(0..mine.len());
                        let before = mine[i].clone();
                        random_event(&mut rng, &mut mine[i]);
                        rig.commit(change(Some(&before), &mine[i])).await;
                    }
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let check = |s: &SledStore| {
        for m in ["m1", "m2"] {
            let kept = s.message_metrics(m);
            assert_eq!(kept, s.recount_message(m).unwrap(), "{m}");
            let expected = all
                .iter()
                .filter(|d| d.message_id == m)
                .map(pushd_actors::tally::contribution)
                .fold(Tally::default(), |a, b| a + b);
            assert_eq!(kept, expected, "{m}");
            assert_eq!(
                s.message_timeseries(m),
                series_of(all.iter().filter(|d| d.message_id == m))
            );
            let reasons = s.message_failure_reasons(m);
            assert_eq!(
                reasons,
                failure_reasons_of(all.iter().filter(|d| d.message_id == m)),
                "{m}"
            );
            assert_eq!(
                reasons.values().sum::<i64>(),
                kept.message.failed + kept.message.undeliverable,
                "{m}: every failure counts under one reason"
            );
        }
        assert_eq!(
            s.campaign_failure_reasons("g1"),
            failure_reasons_of(all.iter())
        );
        let campaign = s.campaign_metrics("g1");
        assert_eq!(campaign, s.message_metrics("m1") + s.message_metrics("m2"));
        assert_eq!(campaign.message.sends, all.len() as i64);
        assert!(s.message_metrics("m3").is_zero());
    };
    check(rig.store());
    Arc::into_inner(rig).unwrap().close();
    let reopened = Rig::open(dir.path(), Timing::default());
    check(reopened.store());
    reopened.close();
}

/// The failure reasons, recounted from final states.
fn failure_reasons_of<'a>(
    ds: impl Iterator<Item = &'a Delivery>,
) -> std::collections::BTreeMap<String, i64> {
    let mut reasons = std::collections::BTreeMap::new();
    for d in ds {
        let status = d.state.status();
        if matches!(status, MessageStatus::Failed | MessageStatus::Undeliverable) {
            let reason = d.state.failure_reason().expect("a failure has a reason");
            *reasons.entry(reason.code().to_owned()).or_default() += 1;
        }
    }
    reasons
}

/// The time series, recounted from final states.
fn series_of<'a>(ds: impl Iterator<Item = &'a Delivery>) -> Vec<(i64, i64, i64)> {
    let mut minutes = std::collections::BTreeMap::<i64, (i64, i64)>::new();
    for d in ds {
        let first = |f: fn(&DeviceState) -> Option<i64>| {
            d.state
                .devices
                .iter()
                .filter(|s| s.targeted())
                .filter_map(f)
                .min()
        };
        if let Some(t) = first(|s| s.delivered_at) {
            minutes
                .entry((t - d.created_at).div_euclid(60))
                .or_default()
                .0 += 1;
        }
        if let Some(t) = first(|s| s.opened_at) {
            minutes
                .entry((t - d.created_at).div_euclid(60))
                .or_default()
                .1 += 1;
        }
    }
    minutes.into_iter().map(|(m, (d, o))| (m, d, o)).collect()
}

#[tokio::test]
async fn one_record_may_change_a_delivery_twice() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::open(dir.path(), Timing::default());
    let first = delivery("c1", "m1", None, &[(Platform::Android, false)]);
    let mut second = first.clone();
    second.state.apply_outcome(0, &Outcome::Sent, 1_001);
    second.state.apply_report(0, Report::Opened, 1_130);
    let mut changes = change(None, &first);
    changes.extend(change(Some(&first), &second));
    rig.commit(changes).await;
    let s = rig.store();
    assert_eq!(s.message_metrics("m1"), s.recount_message("m1").unwrap());
    assert_eq!(s.message_metrics("m1").message.sends, 1);
    assert_eq!(s.message_timeseries("m1"), vec![(2, 1, 1)]);
    let opened = DeliveryFilter {
        status: Some(MessageStatus::Opened),
        ..Default::default()
    };
    assert_eq!(
        s.list_deliveries(&opened, 10, None).unwrap().0,
        vec![second]
    );
    let attempted = DeliveryFilter {
        status: Some(MessageStatus::Attempted),
        ..Default::default()
    };
    assert!(
        s.list_deliveries(&attempted, 10, None)
            .unwrap()
            .0
            .is_empty()
    );
    rig.close();
}

/// Pages through `filter` to the end.
fn all_pages(store: &SledStore, filter: &DeliveryFilter, limit: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = store
            .list_deliveries(filter, limit, cursor.as_deref())
            .unwrap();
        assert!(page.len() <= limit);
        out.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_pages_correctly_while_inserting() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Arc::new(Rig::open(dir.path(), busy()));
    let mut rng = StdRng::seed_from_u64(7);
    let mut old = Vec::new();
    for i in 0..300 {
        let campaign = ["g1", "g2"][i % 2];
        let mut d = random_delivery(
            &mut rng,
            &format!("c{}", i % 7),
            &format!("m{}", i % 5),
            Some(campaign),
        );
        for _ in 0..rng.gen_range(0..6) {
            random_event(&mut rng, &mut d);
        }
        rig.commit(change(None, &d)).await;
        old.push(d);
    }
    let writer = {
        let rig = Arc::clone(&rig);
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(8);
            for i in 0..300 {
                let d = random_delivery(
                    &mut rng,
                    &format!("c{}", i % 7),
                    &format!("m{}", i % 5),
                    Some("g1"),
                );
                rig.commit(change(None, &d)).await;
                tokio::task::yield_now().await;
            }
        })
    };
    let s = |s: MessageStatus| Some(s);
    let o = |s: &str| Some(s.to_owned());
    let mut filters = vec![
        DeliveryFilter::default(),
        DeliveryFilter {
            customer_id: o("c3"),
            ..Default::default()
        },
        DeliveryFilter {
            message_id: o("m2"),
            ..Default::default()
        },
        DeliveryFilter {
            campaign_id: o("g2"),
            ..Default::default()
        },
        DeliveryFilter {
            customer_id: o("c1"),
            status: s(MessageStatus::Sent),
            ..Default::default()
        },
        DeliveryFilter {
            message_id: o("m4"),
            campaign_id: o("g1"),
            ..Default::default()
        },
        DeliveryFilter {
            customer_id: o("nobody"),
            ..Default::default()
        },
    ];
    filters.extend(MessageStatus::ALL.map(|st| DeliveryFilter {
        status: s(st),
        ..Default::default()
    }));
    let newest_old = old.last().unwrap().id.clone();
    let store = rig.store();
    for filter in &filters {
        for limit in [1, 7, 1000] {
            let got = all_pages(store, filter, limit);
            assert!(
                got.windows(2).all(|w| w[0].id > w[1].id),
                "not newest first / duplicates: {filter:?}"
            );
            assert!(got.iter().all(|d| filter.matches(d)), "{filter:?}");
            let got_old: Vec<_> = got
                .iter()
                .filter(|d| d.id <= newest_old)
                .map(|d| d.id.clone())
                .collect();
            let want: Vec<_> = old
                .iter()
                .rev()
                .filter(|d| filter.matches(d))
                .map(|d| d.id.clone())
                .collect();
            assert_eq!(got_old, want, "{filter:?} limit {limit}");
        }
    }
    writer.await.unwrap();
    assert_eq!(all_pages(store, &DeliveryFilter::default(), 50).len(), 600);
    // The total counts what the pages hold, by index entries (one field)
    // or by a scan (several).
    for filter in &filters {
        let paged = all_pages(store, filter, 1000).len() as u64;
        assert_eq!(store.count_deliveries(filter).unwrap(), paged, "{filter:?}");
    }
    let (page, next) = store
        .list_deliveries(&DeliveryFilter::default(), 600, None)
        .unwrap();
    assert_eq!((page.len(), next), (600, None));
    for bad in ["***", "", "_w"] {
        assert!(matches!(
            store.list_deliveries(&DeliveryFilter::default(), 10, Some(bad)),
            Err(Error::BadCursor)
        ));
    }
    Arc::into_inner(rig).unwrap().close();
}

/// A customer's deliveries are listed under their creation keys, which
/// sort by time (a scheduled one's from its release): its pages still go
/// newest first by id, each delivery once, and its total counts them.
#[tokio::test]
async fn a_customers_pages_go_by_id_whatever_their_listing_time() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::open(dir.path(), Timing::default());
    let mut made = Vec::new();
    for (i, created_at) in [5_000, 1_000, 3_000, 2_000].into_iter().enumerate() {
        let mut d = delivery("c1", "m1", None, &[(Platform::Ios, false)]);
        d.created_at = created_at;
        if i == 1 {
            // Released long after the others were made.
            d.schedule = Some(Schedule {
                released_ms: Some(9_000_000),
                ..Schedule::at(9_000_000)
            });
        }
        rig.commit(change(None, &d)).await;
        made.push(d.id);
    }
    rig.commit(change(None, &delivery("c2", "m1", None, &[])))
        .await;
    let store = rig.store();
    store.drain().unwrap();
    let of_c1 = DeliveryFilter {
        customer_id: Some("c1".into()),
        ..Default::default()
    };
    made.reverse();
    for limit in [1, 3, 10] {
        let ids: Vec<String> = (all_pages(store, &of_c1, limit).into_iter())
            .map(|d| d.id)
            .collect();
        assert_eq!(ids, made, "limit {limit}");
    }
    assert_eq!(store.count_deliveries(&of_c1).unwrap(), 4);
    rig.close();
}

#[tokio::test]
async fn unsettled_index_follows_the_send() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::open(dir.path(), Timing::default());
    let store = rig.store();
    let d1 = delivery(
        "c1",
        "m1",
        None,
        &[(Platform::Ios, false), (Platform::Android, false)],
    );
    let d2 = delivery("c2", "m1", None, &[(Platform::Ios, false)]);
    let done = delivery("c3", "m1", None, &[(Platform::Ios, true)]);
    for d in [&d1, &d2, &done] {
        rig.commit(change(None, d)).await;
    }
    let ids = |ds: Vec<Delivery>| ds.into_iter().map(|d| d.id).collect::<Vec<_>>();
    for drained in [false, true] {
        assert_eq!(
            ids(store.unsettled_deliveries("c1").unwrap()),
            vec![d1.id.clone()],
            "drained {drained}"
        );
        store.drain().unwrap();
    }
    assert_eq!(store.customers_with_unsettled().unwrap(), vec!["c1", "c2"]);

    let mut half = d1.clone();
    half.state.apply_outcome(0, &Outcome::Sent, 1_001);
    rig.commit(change(Some(&d1), &half)).await;
    assert_eq!(
        ids(store.unsettled_deliveries("c1").unwrap()),
        vec![d1.id.clone()]
    );

    let mut settled = half.clone();
    settled
        .state
        .apply_outcome(1, &Outcome::Failed(FailureReason::ProviderRejected), 1_002);
    rig.commit(change(Some(&half), &settled)).await;
    assert!(
        store.unsettled_deliveries("c1").unwrap().is_empty(),
        "in memory"
    );
    store.drain().unwrap();
    assert!(
        store.unsettled_deliveries("c1").unwrap().is_empty(),
        "in sled"
    );
    assert_eq!(store.customers_with_unsettled().unwrap(), vec!["c2"]);
    assert!(store.unsettled_deliveries("c3").unwrap().is_empty());
    rig.close();
}

#[tokio::test]
async fn reopen_after_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = delivery("c1", "m1", Some("g1"), &[(Platform::Ios, false)]);
    let before;
    {
        let rig = Rig::open(dir.path(), Timing::default());
        rig.commit(change(None, &d)).await;
        let created = d.clone();
        d.state.apply_report(0, Report::Delivered, 1_070);
        rig.commit(change(Some(&created), &d)).await;
        let pending = delivery("c2", "m1", Some("g1"), &[(Platform::Android, false)]);
        rig.commit(change(None, &pending)).await;
        rig.commit(vec![
            Change::of(Entry::Customer(customer("c1"))),
            Change::of(Entry::Message(Box::new(spec("m1", Some("g1"))))),
        ])
        .await;
        let s = rig.store();
        before = (
            s.message_metrics("m1"),
            s.campaign_metrics("g1"),
            s.message_timeseries("m1"),
        );
        rig.close();
    }
    let rig = Rig::open(dir.path(), Timing::default());
    let store = rig.store();
    assert_eq!(store.delivery(&d.id).unwrap(), Some(d));
    assert_eq!(store.customer("c1").unwrap(), Some(customer("c1")));
    assert_eq!(store.message("m1").unwrap(), Some(spec("m1", Some("g1"))));
    let after = (
        store.message_metrics("m1"),
        store.campaign_metrics("g1"),
        store.message_timeseries("m1"),
    );
    assert_eq!(after, before);
    assert_eq!(after.0, store.recount_message("m1").unwrap());
    assert_eq!(after.2, vec![(1, 1, 0)]);
    assert_eq!(store.customers_with_unsettled().unwrap(), vec!["c2"]);
    let delivered = DeliveryFilter {
        status: Some(MessageStatus::Delivered),
        ..Default::default()
    };
    assert_eq!(
        store.list_deliveries(&delivered, 10, None).unwrap().0.len(),
        1
    );
    rig.close();
}

/// The overlay is lost (no final checkpoint) after sled took some drains:
/// the journal's tail is replayed onto what sled holds, and every delivery
/// and counter comes out exactly as written — nothing lost, nothing
/// counted twice.
#[tokio::test]
async fn replay_onto_a_partial_snapshot_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let seed = support_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut all: Vec<Delivery> = Vec::new();
    {
        let store = SledStore::open(dir.path().join("snapshot"), 8 << 20).unwrap();
        let journal = Arc::new(FileJournal::open(dir.path().join("journal"), 0).unwrap());
        let ctx = engine(store.clone(), journal.clone());
        for step in 0..400 {
            if all.is_empty() || rng.gen_bool(0.3) {
                let d = random_delivery(&mut rng, &format!("c{}", step % 9), "m1", Some("g1"));
                ctx.write(change(None, &d)).unwrap();
                all.push(d);
            } else {
                let i = rng.gen_range(0..all.len());
                let before = all[i].clone();
                random_event(&mut rng, &mut all[i]);
                ctx.write(change(Some(&before), &all[i])).unwrap();
            }
            match rng.gen_range(0..40) {
                0 => drop(store.drain().unwrap()),
                1 => journal.release(store.checkpoint().unwrap()),
                _ => {}
            }
        }
        // Everything journaled is durable; the overlay is dropped unsaved.
        journal.close();
    }
    let rig = Rig::open(dir.path(), Timing::default());
    let store = rig.store();
    for d in &all {
        assert_eq!(
            store.delivery(&d.id).unwrap().as_ref(),
            Some(d),
            "seed {seed}"
        );
    }
    let expected = all
        .iter()
        .map(pushd_actors::tally::contribution)
        .fold(Tally::default(), |a, b| a + b);
    assert_eq!(store.message_metrics("m1"), expected, "seed {seed}");
    assert_eq!(
        store.recount_message("m1").unwrap(),
        expected,
        "seed {seed}"
    );
    assert_eq!(store.campaign_metrics("g1"), expected, "seed {seed}");
    assert_eq!(
        store.message_timeseries("m1"),
        series_of(all.iter()),
        "seed {seed}"
    );
    rig.close();
}

fn send_record(key: &str, started_ms: i64, answered: bool) -> SendRecord {
    let answer = SendAnswer {
        deliveries: vec![SentTo {
            customer_id: "c1".into(),
            delivery_id: format!("d-{key}-{started_ms}"),
        }],
        failed: vec![],
    };
    SendRecord {
        started_ms,
        key: key.into(),
        fingerprint: "f".into(),
        seed: 7,
        answer: answered.then_some(answer),
    }
}

/// Keyed send records read back from memory, from sled and after a
/// reopen; expiry drops the old ones, but never a key's newer record.
#[tokio::test]
async fn send_records_read_back_and_expire_from_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let put = |r: SendRecord| vec![Change::of(Entry::SendRecord(Box::new(r)))];
    {
        let rig = Rig::open(dir.path(), Timing::default());
        let s = rig.store();
        rig.commit(put(send_record("k1", 5_000, false))).await;
        rig.commit(put(send_record("reused", 1_000, true))).await;
        rig.commit(put(send_record("rewritten", 1_000, true))).await;
        assert_eq!(
            s.send_record("k1").unwrap(),
            Some(send_record("k1", 5_000, false))
        );
        s.drain().unwrap();
        assert_eq!(
            s.send_record("k1").unwrap(),
            Some(send_record("k1", 5_000, false))
        );
        assert_eq!(s.send_record("nope").unwrap(), None);
        // k1 answered; "reused" used again once expired, in its own drain.
        rig.commit(put(send_record("k1", 5_000, true))).await;
        rig.commit(put(send_record("reused", 90_000, false))).await;
        s.drain().unwrap();
        // "rewritten" used again in the same drain as the expiry.
        rig.commit(put(send_record("rewritten", 95_000, true)))
            .await;
        rig.commit(vec![Change::of(Entry::SendRecordsExpired(10_000))])
            .await;
        assert_eq!(
            s.send_record("k1").unwrap(),
            Some(send_record("k1", 5_000, true)),
            "sled's copy is read until the drain"
        );
        s.drain().unwrap();
        assert_eq!(s.send_record("k1").unwrap(), None);
        rig.close();
    }
    let rig = Rig::open(dir.path(), Timing::default());
    let s = rig.store();
    assert_eq!(s.send_record("k1").unwrap(), None);
    assert_eq!(
        s.send_record("reused").unwrap(),
        Some(send_record("reused", 90_000, false))
    );
    assert_eq!(
        s.send_record("rewritten").unwrap(),
        Some(send_record("rewritten", 95_000, true))
    );
    // The newer records' index entries remain: a later expiry drops them.
    rig.commit(vec![Change::of(Entry::SendRecordsExpired(100_000))])
        .await;
    s.drain().unwrap();
    assert_eq!(s.send_record("reused").unwrap(), None);
    assert_eq!(s.send_record("rewritten").unwrap(), None);
    rig.close();
}

/// `PUSHD_TEST_SEED` replays a run; otherwise a fresh seed.
fn support_seed() -> u64 {
    let seed = std::env::var("PUSHD_TEST_SEED")
        .map(|s| s.parse().expect("PUSHD_TEST_SEED is a number"))
        .unwrap_or_else(|_| rand::random());
    eprintln!("seed {seed} (PUSHD_TEST_SEED={seed} replays it)");
    seed
}

/// What the store holds of an erased customer and of one kept: checks
/// that the erased one's deliveries are gone from every read, the kept
/// one's all there, and the counters as they were.
struct Erased {
    gone: Vec<Delivery>,
    kept: Vec<Delivery>,
    /// Deliveries made for the erased id after its erasure: they stay.
    later: Vec<Delivery>,
    counted: (Tally, Tally, Vec<(i64, i64, i64)>),
}

impl Erased {
    /// Customer `ERASED` and `kept`, with deliveries of message `m1`, some
    /// drained to sled, some changed since, some new.
    async fn make(ctx: &EngineCtx, store: &SledStore, rng: &mut StdRng) -> Erased {
        let commit = async |changes| {
            let position = ctx.write(changes).unwrap();
            ctx.durable(position).await.unwrap();
        };
        let customers = [ERASED, "kept"].map(|c| Change::of(Entry::Customer(customer(c))));
        commit(customers.into()).await;
        let (mut gone, mut kept) = (Vec::new(), Vec::new());
        for i in 0..60 {
            let who = if i % 4 == 3 { "kept" } else { ERASED };
            let mut d = random_delivery(rng, who, "m1", Some("g1"));
            commit(change(None, &d)).await;
            if i == 30 {
                store.drain().unwrap();
            }
            if i % 3 == 0 {
                let before = d.clone();
                random_event(rng, &mut d);
                commit(change(Some(&before), &d)).await;
            }
            match who {
                ERASED => gone.push(d),
                _ => kept.push(d),
            }
        }
        Erased {
            gone,
            kept,
            later: Vec::new(),
            counted: counted(store),
        }
    }

    fn check(&self, s: &SledStore, when: &str) {
        assert_eq!(s.customer(ERASED).unwrap(), None, "{when}");
        assert_eq!(
            s.customer("kept").unwrap(),
            Some(customer("kept")),
            "{when}"
        );
        for d in &self.gone {
            assert_eq!(s.delivery(&d.id).unwrap(), None, "{when}");
            assert!(s.delivery_as_of(&d.id).unwrap().is_none(), "{when}");
        }
        for d in &self.kept {
            assert_eq!(s.delivery(&d.id).unwrap().as_ref(), Some(d), "{when}");
        }
        for d in &self.later {
            assert_eq!(s.delivery(&d.id).unwrap().as_ref(), Some(d), "{when}");
        }
        let ids = |ds: Vec<Delivery>| {
            let mut ids: Vec<String> = ds.into_iter().map(|d| d.id).collect();
            ids.sort();
            ids
        };
        let later = ids(self.later.clone());
        assert!(s.unsettled_deliveries(ERASED).unwrap().is_empty(), "{when}");
        let between = s.deliveries_between(ERASED, i64::MIN, i64::MAX).unwrap();
        assert_eq!(ids(between), later, "{when}");
        let mine = DeliveryFilter {
            customer_id: Some(ERASED.into()),
            ..Default::default()
        };
        assert_eq!(ids(all_pages(s, &mine, 7)), later, "{when}");
        let listed = ids(all_pages(s, &DeliveryFilter::default(), 7));
        let expected = ids([&self.kept[..], &self.later].concat());
        assert_eq!(listed, expected, "{when}");
        assert!(
            !s.customers_with_unsettled()
                .unwrap()
                .contains(&ERASED.to_string()),
            "{when}"
        );
        assert_eq!(counted(s), self.counted, "{when}: counters stay");
    }

    /// Checks that sled holds nothing of the erased customer: neither its
    /// id nor any of its deliveries' ids, in a key or a value.
    fn check_sled(&self, s: &SledStore) {
        s.drain().unwrap();
        let mut export = Vec::new();
        s.export(&mut export).unwrap();
        let holds = |what: &str| export.windows(what.len()).any(|w| w == what.as_bytes());
        if self.later.is_empty() {
            assert!(!holds(ERASED), "the customer's id is gone from sled");
        }
        for d in &self.gone {
            assert!(!holds(&d.id), "delivery {} left a key or a value", d.id);
        }
        assert!(self.kept.iter().all(|d| holds(&d.id)));
    }
}

/// The erased customer of [`Erased`].
const ERASED: &str = "erased-customer";

/// Message `m1`'s and campaign `g1`'s counters, and `m1`'s series.
fn counted(s: &SledStore) -> (Tally, Tally, Vec<(i64, i64, i64)>) {
    (
        s.message_metrics("m1"),
        s.campaign_metrics("g1"),
        s.message_timeseries("m1"),
    )
}

/// An erased customer's deliveries leave every read at once; the drain
/// removes them from sled with every index key (in many batches), never
/// touching the counters; and a reopen keeps it so.
#[tokio::test]
async fn an_erasure_leaves_no_key_of_the_customer_in_sled_and_counters_stay() {
    let dir = tempfile::tempdir().unwrap();
    let seed = support_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let rig = Rig::open(dir.path(), Timing::default());
    let mut made = Erased::make(&rig.ctx, rig.store(), &mut rng).await;
    assert!(!made.gone.is_empty() && !made.kept.is_empty());
    rig.commit(vec![Change::of(Entry::CustomerErased(ERASED.into()))])
        .await;
    made.check(rig.store(), "before the drain");
    made.check_sled(rig.store());
    made.check(rig.store(), "after the drain");

    // Erased again with its id used again in between, all in one set: the
    // delivery made after the erasure stays.
    rig.commit(vec![Change::of(Entry::Customer(customer(ERASED)))])
        .await;
    let erased_too = delivery(ERASED, "m1", Some("g1"), &[]);
    rig.commit(change(None, &erased_too)).await;
    made.gone.push(erased_too);
    rig.commit(vec![Change::of(Entry::CustomerErased(ERASED.into()))])
        .await;
    let again = delivery(ERASED, "m2", None, &[]);
    rig.commit(change(None, &again)).await;
    made.later.push(again);
    made.counted = counted(rig.store());
    made.check(rig.store(), "used again");
    made.check_sled(rig.store());
    rig.close();

    let rig = Rig::open(dir.path(), Timing::default());
    made.check(rig.store(), "reopened");
    rig.close();
}

/// The overlay is lost after the erasure was journaled and before any
/// drain wrote it: the replay erases again, with the same result.
#[tokio::test]
async fn an_erasure_replayed_after_a_crash_gives_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let seed = support_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let made = {
        let store = SledStore::open(dir.path().join("snapshot"), 8 << 20).unwrap();
        let journal = Arc::new(FileJournal::open(dir.path().join("journal"), 0).unwrap());
        let ctx = engine(store.clone(), journal.clone());
        let made = Erased::make(&ctx, &store, &mut rng).await;
        let erasure = vec![Change::of(Entry::CustomerErased(ERASED.into()))];
        ctx.durable(ctx.write(erasure).unwrap()).await.unwrap();
        // No read here: the delivery log's drains it would write the erasure.
        journal.close();
        made
    };
    let rig = Rig::open(dir.path(), Timing::default());
    made.check(rig.store(), "replayed");
    made.check_sled(rig.store());
    made.check(rig.store(), "replayed and drained");
    rig.close();
}

/// The keys of an export (the portable snapshot's stream) that end with
/// `id`.
fn keys_ending_with(export: &[u8], id: &str) -> Vec<Vec<u8>> {
    let mut rest = &export[export.iter().position(|&b| b == b'\n').unwrap() + 1..];
    let mut found = Vec::new();
    let take = |rest: &mut &[u8]| {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap());
        let part = (len != u32::MAX).then(|| rest[4..4 + len as usize].to_vec());
        *rest = &rest[4 + part.as_ref().map_or(0, Vec::len)..];
        part
    };
    while let Some(key) = take(&mut rest) {
        take(&mut rest);
        if key.ends_with(id.as_bytes()) {
            found.push(key);
        }
    }
    found
}

/// A keyed send tried again after the erasure may make a delivery under an
/// erased delivery's id, in the same set: the new one stays, with its own
/// index keys only.
#[tokio::test]
async fn a_delivery_id_used_again_after_its_erasure_keeps_only_its_own_keys() {
    let dir = tempfile::tempdir().unwrap();
    let rig = Rig::open(dir.path(), Timing::default());
    let s = rig.store();
    let old = delivery(ERASED, "m1", Some("g1"), &[(Platform::Ios, false)]);
    rig.commit(change(None, &old)).await;
    s.drain().unwrap();
    let mut sent = old.clone();
    sent.state.apply_outcome(0, &Outcome::Sent, 1_001);
    rig.commit(change(Some(&old), &sent)).await;
    rig.commit(vec![Change::of(Entry::CustomerErased(ERASED.into()))])
        .await;
    let mut again = delivery(ERASED, "m2", None, &[]);
    again.id = old.id.clone();
    again.state = DeliveryState::ended(
        MessageStatus::Failed,
        FailureReason::CustomerNotFound,
        Vec::new(),
    );
    rig.commit(change(None, &again)).await;
    assert_eq!(s.delivery(&again.id).unwrap().as_ref(), Some(&again));
    s.drain().unwrap();
    assert_eq!(s.delivery(&again.id).unwrap().as_ref(), Some(&again));
    let mut export = Vec::new();
    s.export(&mut export).unwrap();
    // Its record, and its message, status and creation indexes.
    assert_eq!(keys_ending_with(&export, &again.id).len(), 4);
    let counted = (s.message_metrics("m1"), s.message_metrics("m2"));
    assert_eq!(
        counted.0.message.sent, 1,
        "the erased delivery still counts"
    );
    rig.close();
    let rig = Rig::open(dir.path(), Timing::default());
    let s = rig.store();
    assert_eq!((s.message_metrics("m1"), s.message_metrics("m2")), counted);
    assert_eq!(s.delivery(&again.id).unwrap(), Some(again));
    rig.close();
}
