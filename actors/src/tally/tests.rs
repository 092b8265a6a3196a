//! Checks of the metrics arithmetic: known cases, the API body, and that
//! summed deltas always equal a recount.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::model::{DEFAULT_APP, DeviceSend, Environment};
use crate::status::{DeliveryState, DeviceState, Outcome, Report};

fn delivery(devices: &[(Platform, bool)]) -> Delivery {
    let states = devices
        .iter()
        .map(|&(_, suppressed)| {
            if suppressed {
                DeviceState::suppressed()
            } else {
                DeviceState::attempted()
            }
        })
        .collect();
    Delivery {
        id: "d1".into(),
        customer_id: "c1".into(),
        message_id: "m1".into(),
        campaign_id: None,
        created_at: 0,
        attempted_at: None,
        content: None,
        data: Value::Null,
        goal: None,
        schedule: None,
        sends: devices
            .iter()
            .enumerate()
            .map(|(i, &(platform, _))| DeviceSend {
                token: format!("t{i}"),
                platform,
                app: DEFAULT_APP.into(),
                environment: Environment::Production,
                attempts: 0,
                last_error: None,
                provider_id: None,
                duplicates: 0,
                opted_in: None,
            })
            .collect(),
        state: DeliveryState::new(states),
        failure_detail: None,
    }
}

#[test]
fn opened_delivery_counts_along_its_path() {
    let mut d = delivery(&[(Platform::Ios, false), (Platform::Android, false)]);
    d.state.apply_outcome(0, &Outcome::Sent, 1);
    d.state.apply_outcome(1, &Outcome::Bounced, 1);
    d.state.apply_report(0, Report::Opened, 5);
    let t = contribution(&d);
    let m = t.message;
    assert_eq!(
        (m.sends, m.sent, m.delivered, m.opened, m.bounced),
        (1, 1, 1, 1, 0)
    );
    assert_eq!((t.ios.sent, t.ios.opened, t.ios.delivered), (1, 1, 1));
    assert_eq!(
        (t.android.sends, t.android.bounced, t.android.sent),
        (1, 1, 0)
    );
}

#[test]
fn suppressed_person_is_undeliverable_and_suppressed() {
    let d = delivery(&[(Platform::Ios, true)]);
    let t = contribution(&d);
    assert_eq!(
        (
            t.message.undeliverable,
            t.message.suppressed,
            t.message.recipients()
        ),
        (1, 1, 0)
    );
    assert_eq!((t.ios.suppressed, t.ios.undeliverable), (1, 0));
    let none = contribution(&delivery(&[]));
    assert_eq!(
        (none.message.undeliverable, none.message.suppressed),
        (1, 0)
    );
}

#[test]
fn conversion_counts_on_succeeded_devices() {
    let mut d = delivery(&[(Platform::Ios, false), (Platform::Ios, false)]);
    d.state.apply_outcome(0, &Outcome::Sent, 1);
    d.state
        .apply_outcome(1, &Outcome::Failed(FailureReason::ProviderRejected), 1);
    assert!(d.state.convert(9));
    let t = contribution(&d);
    assert_eq!(
        (t.message.converted, t.ios.converted, t.ios.failed),
        (1, 1, 1)
    );
}

#[test]
fn delta_is_after_minus_before() {
    let before = delivery(&[(Platform::Android, false)]);
    let mut after = before.clone();
    after.state.apply_outcome(0, &Outcome::Sent, 1);
    let d = Tally::delta(Some(&before), &after);
    assert_eq!(
        (d.message.sends, d.message.attempted, d.message.sent),
        (0, -1, 1)
    );
    assert_eq!(Tally::delta(None, &after), contribution(&after));
    assert!(Tally::delta(Some(&after), &after).is_zero());
}

#[test]
fn opted_in_counters_count_only_opted_in_devices() {
    // An iOS user who allowed notifications, one who did not, and an
    // Android device whose app did not say.
    let mut d = delivery(&[
        (Platform::Ios, false),
        (Platform::Ios, false),
        (Platform::Android, false),
    ]);
    d.sends[0].opted_in = Some(true);
    d.sends[1].opted_in = Some(false);
    for i in 0..3 {
        d.state.apply_outcome(i, &Outcome::Sent, 1);
    }
    let t = contribution(&d);
    assert_eq!((t.ios.sent, t.ios.opted_in_sent), (2, 1));
    assert_eq!((t.android.sent, t.android.opted_in_sent), (1, 0));
    assert_eq!(
        (t.message.opted_in_sent, t.message.opted_in_delivered),
        (1, 0)
    );
    d.state.apply_report(0, Report::Delivered, 5);
    let t = contribution(&d);
    assert_eq!((t.ios.delivered, t.ios.opted_in_delivered), (1, 1));
    let rates = t.ios.rates();
    assert_eq!((rates.delivered, rates.delivered_of_opted_in), (0.5, 1.0));
    assert_eq!(t.message.opted_in_delivered, 1);
    // A report from the device that had not opted in moves only the plain
    // counters.
    d.state.apply_report(1, Report::Delivered, 6);
    let t = contribution(&d);
    assert_eq!((t.ios.delivered, t.ios.opted_in_delivered), (2, 1));
}

#[test]
fn a_failed_opted_in_device_is_not_opted_in_sent() {
    let mut d = delivery(&[(Platform::Ios, false), (Platform::Ios, false)]);
    d.sends[0].opted_in = Some(true);
    d.state
        .apply_outcome(0, &Outcome::Failed(FailureReason::ProviderRejected), 1);
    d.state.apply_outcome(1, &Outcome::Sent, 1);
    let t = contribution(&d);
    assert_eq!((t.message.sent, t.message.opted_in_sent), (1, 0));
    assert_eq!((t.ios.sent, t.ios.opted_in_sent), (1, 0));
}

#[test]
fn recipients_and_rounded_rates() {
    let c = Counts {
        sends: 1000,
        sent: 950,
        delivered: 700,
        opened: 120,
        converted: 30,
        failed: 20,
        undeliverable: 10,
        bounced: 20,
        suppressed: 5,
        opted_in_sent: 600,
        opted_in_delivered: 540,
        ..Counts::default()
    };
    assert_eq!(c.recipients(), 975);
    assert_eq!(
        c.rates(),
        Rates {
            delivered: 0.7368,
            opened: 0.1263,
            converted: 0.0316,
            opened_of_delivered: 0.1714,
            delivered_of_opted_in: 0.9,
        }
    );
    assert_eq!(Counts::default().rates(), Rates::default());
}

#[test]
fn sent_counts_only_once_every_device_settled() {
    let mut d = delivery(&[(Platform::Ios, false), (Platform::Android, false)]);
    d.state.apply_outcome(0, &Outcome::Sent, 1);
    let t = contribution(&d);
    assert_eq!((t.message.attempted, t.message.sent), (1, 0));
    assert_eq!((t.ios.sent, t.android.attempted), (1, 1));
    assert!(
        !d.state.convert(5),
        "a delivery still attempted does not convert"
    );
    d.state
        .apply_outcome(1, &Outcome::Failed(FailureReason::RetriesExhausted), 2);
    let t = contribution(&d);
    assert_eq!((t.message.attempted, t.message.sent), (0, 1));
    assert!(d.state.convert(5));
}

#[test]
fn series_points_are_first_delivered_and_opened_minutes() {
    let mut d = delivery(&[(Platform::Ios, false), (Platform::Android, false)]);
    d.created_at = 1_000;
    d.state.apply_outcome(0, &Outcome::Sent, 1_000);
    d.state.apply_report(1, Report::Delivered, 1_130);
    d.state.apply_report(0, Report::Opened, 1_200);
    let points: Vec<_> = series_points(&d).collect();
    assert_eq!(points, vec![(2, 0), (3, 1)]);
    let mut early = d.clone();
    early.state.apply_report(0, Report::Delivered, i64::MIN);
    assert_eq!(
        series_points(&early).next(),
        Some((0, 0)),
        "clamped, no overflow"
    );
}

#[test]
fn serde_round_trip() {
    let t = contribution(&delivery(&[(Platform::Ios, false)]));
    let back: Tally = serde_json::from_value(serde_json::to_value(t).unwrap()).unwrap();
    assert_eq!(back, t);
}

/// One step of a random workload.
#[derive(Clone, Debug)]
enum Step {
    Outcome(usize, usize, Outcome),
    Report(usize, usize, Report, i64),
    Goal(usize, i64),
}

fn step(people: usize) -> impl Strategy<Value = Step> {
    let outcome = prop_oneof![
        Just(Outcome::Sent),
        Just(Outcome::Bounced),
        Just(Outcome::Failed(FailureReason::RetriesExhausted)),
    ];
    let report = prop_oneof![
        Just(Report::Delivered),
        Just(Report::Opened),
        Just(Report::Converted)
    ];
    prop_oneof![
        (0..people, 0..4usize, outcome).prop_map(|(p, i, o)| Step::Outcome(p, i, o)),
        (0..people, 0..4usize, report, 0i64..100).prop_map(|(p, i, r, t)| Step::Report(p, i, r, t)),
        (0..people, 0i64..100).prop_map(|(p, t)| Step::Goal(p, t)),
    ]
}

/// A device: its platform, whether it is suppressed, and its opt-in.
type Spec = (Platform, bool, Option<bool>);

fn workload() -> impl Strategy<Value = (Vec<Vec<Spec>>, Vec<Step>)> {
    let platform = prop_oneof![Just(Platform::Ios), Just(Platform::Android)];
    let opt_in = prop_oneof![Just(None), Just(Some(true)), Just(Some(false))];
    let device = (platform, prop::bool::weighted(0.2), opt_in);
    prop::collection::vec(prop::collection::vec(device, 0..=4), 1..6).prop_flat_map(|people| {
        let n = people.len();
        (Just(people), prop::collection::vec(step(n), 0..40))
    })
}

/// The delivery of one person of a workload.
fn person(devices: &[Spec]) -> Delivery {
    let shape: Vec<(Platform, bool)> = devices.iter().map(|&(p, s, _)| (p, s)).collect();
    let mut d = delivery(&shape);
    for (send, &(_, _, opted_in)) in d.sends.iter_mut().zip(devices) {
        send.opted_in = opted_in;
    }
    d
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Summing the delta of every change equals recounting the final states,
    /// and the totals stay consistent along the way.
    #[test]
    fn summed_deltas_equal_recount((people, steps) in workload()) {
        let mut current: Vec<Delivery> = people.iter().map(|p| person(p)).collect();
        let mut kept: Tally = current.iter().map(|d| Tally::delta(None, d)).fold(Tally::default(), Add::add);
        let mut series: HashMap<(i64, usize), i64> = HashMap::new();
        for s in &steps {
            let p = match s { Step::Outcome(p, ..) | Step::Report(p, ..) | Step::Goal(p, _) => *p };
            let before = current[p].clone();
            let d = &mut current[p];
            let n = d.state.devices.len();
            match s {
                Step::Outcome(_, i, o) if *i < n => d.state.apply_outcome(*i, o, 10),
                Step::Report(_, i, r, t) if *i < n => { d.state.apply_report(*i, *r, *t); }
                Step::Goal(_, t) => { d.state.convert(*t); }
                _ => {}
            }
            kept += Tally::delta(Some(&before), d);
            for p in series_points(&before) { *series.entry(p).or_default() -= 1; }
            for p in series_points(d) { *series.entry(p).or_default() += 1; }
            let m = kept.message;
            prop_assert!(m.sent >= m.delivered && m.delivered >= m.opened && m.sent >= m.converted);
            for c in [kept.message, kept.ios, kept.android] {
                prop_assert!(c.entries().iter().all(|&(_, v)| v >= 0));
                prop_assert!(c.opted_in_sent <= c.sent && c.opted_in_delivered <= c.delivered);
                prop_assert!(c.opted_in_delivered <= c.opted_in_sent);
            }
        }
        let recount = current.iter().map(contribution).fold(Tally::default(), Add::add);
        let mut series_recount: HashMap<(i64, usize), i64> = HashMap::new();
        for p in current.iter().flat_map(series_points) { *series_recount.entry(p).or_default() += 1; }
        series.retain(|_, v| *v != 0);
        prop_assert_eq!(series, series_recount);
        prop_assert_eq!(kept, recount);
        prop_assert_eq!(recount.message.sends, people.len() as i64);
        let devices = people.iter().flatten().count() as i64;
        prop_assert_eq!(recount.ios.sends + recount.android.sends, devices);
    }
}

#[test]
fn only_ended_failures_count_a_reason() {
    let mut d = delivery(&[(Platform::Ios, false), (Platform::Android, false)]);
    let failed = Outcome::Failed(FailureReason::CredentialsNotFound);
    d.state.apply_outcome(0, &failed, 1);
    assert_eq!(counted_failure(&d), None, "one device is still attempted");
    d.state.apply_outcome(1, &failed, 2);
    assert_eq!(
        counted_failure(&d),
        Some(FailureReason::CredentialsNotFound)
    );
    let suppressed = delivery(&[(Platform::Ios, true)]);
    assert_eq!(
        counted_failure(&suppressed),
        Some(FailureReason::DevicesSuppressed)
    );
}
