//! The sled store: commits and reads, counters against recounts under
//! concurrent load, the delivery log's filters and paging, the unsettled
//! index, reopening, and group commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use pushd::store::{DeliveryFilter, Error, SledStore};
use pushd_actors::model::{Audience, Customer, Delivery, DeviceSend, MessageSpec, Platform};
use pushd_actors::ports::{Change, Store};
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
                attempts: 1,
                last_error: None,
                provider_id: None,
                duplicates: 0,
            })
            .collect(),
        state: DeliveryState::new(states),
        failure_detail: None,
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
    delivery(customer, message, campaign, &devices)
}

/// One random event on a delivery.
fn random_event(rng: &mut StdRng, d: &mut Delivery) {
    let n = d.state.devices.len();
    if n == 0 {
        return;
    }
    let i = rng.gen_range(0..n);
    let at = 1_000 + rng.gen_range(0..600);
    match rng.gen_range(0..6) {
        0 => d.state.apply_outcome(i, &Outcome::Sent, at),
        1 => d.state.apply_outcome(i, &Outcome::Bounced, at),
        2 => d
            .state
            .apply_outcome(i, &Outcome::Failed(FailureReason::RetriesExhausted), at),
        3 => drop(d.state.apply_report(i, Report::Delivered, at)),
        4 => drop(d.state.apply_report(i, Report::Opened, at)),
        _ => drop(d.state.convert(at)),
    }
}

fn change(before: Option<&Delivery>, after: &Delivery) -> Vec<Change> {
    vec![Change::Delivery {
        before: before.cloned().map(Box::new),
        after: Box::new(after.clone()),
    }]
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
        created_at: 0,
    }
}

fn customer(id: &str) -> Customer {
    Customer {
        id: id.into(),
        attributes: Map::from_iter([("first_name".to_owned(), Value::from("Ada"))]),
        unsubscribed: false,
        devices: vec![],
    }
}

#[tokio::test]
async fn commit_and_read_back() {
    let store = SledStore::temporary().unwrap();
    let d = delivery("c1", "m1", Some("g1"), &[(Platform::Ios, false)]);
    let mut changes = change(None, &d);
    changes.push(Change::Customer(customer("c1")));
    store.commit(changes).await.unwrap();
    assert_eq!(store.delivery(&d.id).unwrap(), Some(d.clone()));
    assert_eq!(store.customer("c1").unwrap(), Some(customer("c1")));
    assert_eq!(store.delivery("nope").unwrap(), None);

    store
        .commit(vec![Change::CustomerDeleted("c1".into())])
        .await
        .unwrap();
    assert_eq!(store.customer("c1").unwrap(), None);

    store.put_message(&spec("m1", Some("g1"))).await.unwrap();
    assert_eq!(store.message("m1").unwrap(), Some(spec("m1", Some("g1"))));
    assert_eq!(store.message("m2").unwrap(), None);

    assert_eq!(store.meta("api_key").unwrap(), None);
    store.set_meta("api_key", "secret").unwrap();
    assert_eq!(store.meta("api_key").unwrap().as_deref(), Some("secret"));
}

#[tokio::test]
async fn deliveries_between_is_inclusive_and_newest_first() {
    let store = SledStore::temporary().unwrap();
    let mut ids = Vec::new();
    for at in [100, 200, 200, 300] {
        let mut d = delivery("c1", "m1", None, &[]);
        d.created_at = at;
        store.commit(change(None, &d)).await.unwrap();
        ids.push(d.id);
    }
    let other = delivery("c2", "m1", None, &[]);
    store.commit(change(None, &other)).await.unwrap();
    let got: Vec<_> = store
        .deliveries_between("c1", 200, 300)
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(got, vec![ids[3].clone(), ids[2].clone(), ids[1].clone()]);
    assert_eq!(
        store
            .deliveries_between("c1", i64::MIN, i64::MAX)
            .unwrap()
            .len(),
        4
    );
    assert!(store.deliveries_between("c1", 301, 200).unwrap().is_empty());
}

/// Many tasks create deliveries and move them through random events, all
/// for the same two messages of one campaign; the kept counters and time
/// series equal a recount.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_equal_recount_after_concurrent_workload() {
    let store = Arc::new(SledStore::temporary().unwrap());
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let store = Arc::clone(&store);
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
                        store.commit(change(None, &d)).await.unwrap();
                        mine.push(d);
                    } else {
                        let i = rng.gen_range(0..mine.len());
                        let before = mine[i].clone();
                        random_event(&mut rng, &mut mine[i]);
                        store.commit(change(Some(&before), &mine[i])).await.unwrap();
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
    for m in ["m1", "m2"] {
        let kept = store.message_metrics(m).unwrap();
        assert_eq!(kept, store.recount_message(m).unwrap(), "{m}");
        let expected = all
            .iter()
            .filter(|d| d.message_id == m)
            .map(pushd_actors::tally::contribution)
            .fold(Tally::default(), |a, b| a + b);
        assert_eq!(kept, expected, "{m}");
        assert_eq!(
            store.message_timeseries(m).unwrap(),
            series_of(all.iter().filter(|d| d.message_id == m))
        );
    }
    let campaign = store.campaign_metrics("g1").unwrap();
    assert_eq!(
        campaign,
        store.message_metrics("m1").unwrap() + store.message_metrics("m2").unwrap()
    );
    assert_eq!(campaign.message.sends, all.len() as i64);
    assert!(store.message_metrics("m3").unwrap().is_zero());
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
async fn one_commit_may_change_a_delivery_twice() {
    let store = SledStore::temporary().unwrap();
    let first = delivery("c1", "m1", None, &[(Platform::Android, false)]);
    let mut second = first.clone();
    second.state.apply_outcome(0, &Outcome::Sent, 1_001);
    second.state.apply_report(0, Report::Opened, 1_130);
    let mut changes = change(None, &first);
    changes.extend(change(Some(&first), &second));
    store.commit(changes).await.unwrap();
    assert_eq!(
        store.message_metrics("m1").unwrap(),
        store.recount_message("m1").unwrap()
    );
    assert_eq!(store.message_metrics("m1").unwrap().message.sends, 1);
    assert_eq!(store.message_timeseries("m1").unwrap(), vec![(2, 1, 1)]);
    let opened = DeliveryFilter {
        status: Some(MessageStatus::Opened),
        ..Default::default()
    };
    assert_eq!(
        store.list_deliveries(&opened, 10, None).unwrap().0,
        vec![second]
    );
    let attempted = DeliveryFilter {
        status: Some(MessageStatus::Attempted),
        ..Default::default()
    };
    assert!(
        store
            .list_deliveries(&attempted, 10, None)
            .unwrap()
            .0
            .is_empty()
    );
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
    let store = Arc::new(SledStore::temporary().unwrap());
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
        store.commit(change(None, &d)).await.unwrap();
        old.push(d);
    }
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(8);
            for i in 0..300 {
                let d = random_delivery(
                    &mut rng,
                    &format!("c{}", i % 7),
                    &format!("m{}", i % 5),
                    Some("g1"),
                );
                store.commit(change(None, &d)).await.unwrap();
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
    for filter in &filters {
        for limit in [1, 7, 1000] {
            let got = all_pages(&store, filter, limit);
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
    assert_eq!(all_pages(&store, &DeliveryFilter::default(), 50).len(), 600);
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
}

#[tokio::test]
async fn unsettled_index_follows_the_send() {
    let store = SledStore::temporary().unwrap();
    let d1 = delivery(
        "c1",
        "m1",
        None,
        &[(Platform::Ios, false), (Platform::Android, false)],
    );
    let d2 = delivery("c2", "m1", None, &[(Platform::Ios, false)]);
    let done = delivery("c3", "m1", None, &[(Platform::Ios, true)]);
    for d in [&d1, &d2, &done] {
        store.commit(change(None, d)).await.unwrap();
    }
    let ids = |ds: Vec<Delivery>| ds.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.unsettled_deliveries("c1").unwrap()),
        vec![d1.id.clone()]
    );
    assert_eq!(store.customers_with_unsettled().unwrap(), vec!["c1", "c2"]);

    let mut half = d1.clone();
    half.state.apply_outcome(0, &Outcome::Sent, 1_001);
    store.commit(change(Some(&d1), &half)).await.unwrap();
    assert_eq!(
        ids(store.unsettled_deliveries("c1").unwrap()),
        vec![d1.id.clone()]
    );

    let mut settled = half.clone();
    settled
        .state
        .apply_outcome(1, &Outcome::Failed(FailureReason::ProviderRejected), 1_002);
    store.commit(change(Some(&half), &settled)).await.unwrap();
    assert!(store.unsettled_deliveries("c1").unwrap().is_empty());
    assert_eq!(store.customers_with_unsettled().unwrap(), vec!["c2"]);
    assert!(store.unsettled_deliveries("c3").unwrap().is_empty());
}

#[tokio::test]
async fn reopen_after_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = delivery("c1", "m1", Some("g1"), &[(Platform::Ios, false)]);
    let before;
    {
        let store = SledStore::open(dir.path(), 8 << 20).unwrap();
        store.commit(change(None, &d)).await.unwrap();
        let created = d.clone();
        d.state.apply_report(0, Report::Delivered, 1_070);
        store.commit(change(Some(&created), &d)).await.unwrap();
        let pending = delivery("c2", "m1", Some("g1"), &[(Platform::Android, false)]);
        store.commit(change(None, &pending)).await.unwrap();
        store
            .commit(vec![Change::Customer(customer("c1"))])
            .await
            .unwrap();
        store.put_message(&spec("m1", Some("g1"))).await.unwrap();
        store.set_meta("sdk_key", "k").unwrap();
        before = (
            store.message_metrics("m1").unwrap(),
            store.campaign_metrics("g1").unwrap(),
            store.message_timeseries("m1").unwrap(),
        );
        store.close();
        assert!(store.commit(change(None, &pending)).await.is_err());
    }
    let store = SledStore::open(dir.path(), 8 << 20).unwrap();
    assert_eq!(store.delivery(&d.id).unwrap(), Some(d));
    assert_eq!(store.customer("c1").unwrap(), Some(customer("c1")));
    assert_eq!(store.message("m1").unwrap(), Some(spec("m1", Some("g1"))));
    assert_eq!(store.meta("sdk_key").unwrap().as_deref(), Some("k"));
    let after = (
        store.message_metrics("m1").unwrap(),
        store.campaign_metrics("g1").unwrap(),
        store.message_timeseries("m1").unwrap(),
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_share_flushes() {
    let store = Arc::new(SledStore::temporary().unwrap());
    let start = store.flush_count();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let d = delivery(&format!("c{i}"), "m1", None, &[(Platform::Ios, false)]);
                store.commit(change(None, &d)).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let flushes = store.flush_count() - start;
    eprintln!("{flushes} flushes for 200 commits");
    assert!(flushes >= 1);
    assert!(flushes < 200, "{flushes} flushes for 200 commits");
    assert_eq!(store.message_metrics("m1").unwrap().message.sends, 200);
}
