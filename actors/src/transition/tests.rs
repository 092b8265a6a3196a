//! Checks of which statuses a change enters: the known paths, and that a
//! sequence of changes enters each status once and every status it ends in.

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::model::{DEFAULT_APP, DeviceSend, Environment, Platform};
use crate::status::{DeliveryState, FailureReason, Outcome, Report};

fn delivery(devices: usize) -> Delivery {
    Delivery {
        id: "d1".into(),
        customer_id: "c1".into(),
        message_id: "m1".into(),
        campaign_id: None,
        created_at: 0,
        attempted_at: Some(0),
        content: None,
        data: Value::Null,
        goal: None,
        schedule: None,
        sends: (0..devices)
            .map(|i| DeviceSend {
                token: format!("t{i}"),
                platform: Platform::Ios,
                app: DEFAULT_APP.into(),
                environment: Environment::Production,
                attempts: 0,
                last_error: None,
                provider_id: None,
                duplicates: 0,
                opted_in: None,
            })
            .collect(),
        state: DeliveryState::new((0..devices).map(|_| DeviceState::attempted()).collect()),
        failure_detail: None,
    }
}

/// What `change` enters, as (status, device) pairs; `d` moves on.
fn step(
    d: &mut Delivery,
    change: impl FnOnce(&mut DeliveryState),
) -> Vec<(&'static str, Option<usize>)> {
    let before = d.clone();
    change(&mut d.state);
    entered(Some(&before), d)
        .into_iter()
        .map(|e| (e.status.as_str(), e.device))
        .collect()
}

#[test]
fn a_new_delivery_enters_only_an_end_decided_before_sending() {
    assert_eq!(entered(None, &delivery(1)), vec![]);
    let mut failed = delivery(0);
    failed.state = DeliveryState::ended(
        MessageStatus::Failed,
        FailureReason::CustomerNotFound,
        Vec::new(),
    );
    let undeliverable = delivery(0);
    for (d, status) in [
        (failed, MessageStatus::Failed),
        (undeliverable, MessageStatus::Undeliverable),
    ] {
        let device = None;
        assert_eq!(entered(None, &d), vec![Entered { status, device }]);
    }
}

#[test]
fn one_device_through_sent_delivered_opened_converted() {
    let mut d = delivery(1);
    assert_eq!(
        step(&mut d, |s| s.apply_outcome(0, &Outcome::Sent, 1)),
        [("sent", Some(0))]
    );
    assert_eq!(
        step(&mut d, |s| {
            s.apply_report(0, Report::Delivered, 2);
        }),
        [("delivered", Some(0))]
    );
    assert_eq!(
        step(&mut d, |s| {
            s.apply_report(0, Report::Delivered, 3);
        }),
        [],
        "a duplicate report enters nothing"
    );
    assert_eq!(
        step(&mut d, |s| {
            s.apply_report(0, Report::Opened, 4);
        }),
        [("opened", Some(0))]
    );
    assert_eq!(
        step(&mut d, |s| assert!(s.convert(5))),
        [("converted", None)]
    );
}

#[test]
fn a_report_before_the_outcome_enters_every_status_on_the_way() {
    let mut d = delivery(1);
    assert_eq!(
        step(&mut d, |s| {
            s.apply_report(0, Report::Opened, 2);
        }),
        [
            ("sent", Some(0)),
            ("delivered", Some(0)),
            ("opened", Some(0))
        ]
    );
    assert_eq!(
        step(&mut d, |s| s.apply_outcome(0, &Outcome::Sent, 3)),
        [],
        "the late outcome changes no status"
    );
}

#[test]
fn failures_bounces_and_a_retry() {
    let mut d = delivery(1);
    let rejected = Outcome::Failed(FailureReason::ProviderRejected);
    assert_eq!(
        step(&mut d, |s| s.apply_outcome(0, &rejected, 1)),
        [("failed", Some(0))]
    );
    // A retry starts it again: nothing is entered until it ends again.
    assert_eq!(
        step(&mut d, |s| *s =
            DeliveryState::new(vec![DeviceState::attempted()])),
        []
    );
    assert_eq!(
        step(&mut d, |s| s.apply_outcome(0, &rejected, 2)),
        [("failed", Some(0))]
    );
    // The phone got it after all.
    assert_eq!(
        step(&mut d, |s| {
            s.apply_report(0, Report::Delivered, 3);
        }),
        [("sent", Some(0)), ("delivered", Some(0))]
    );

    let mut b = delivery(2);
    assert_eq!(
        step(&mut b, |s| s.apply_outcome(1, &Outcome::Bounced, 1)),
        []
    );
    assert_eq!(
        step(&mut b, |s| s.apply_outcome(0, &Outcome::Bounced, 1)),
        [("bounced", Some(0))]
    );
}

#[test]
fn sent_names_the_device_that_succeeded_in_this_change_only() {
    let mut d = delivery(2);
    assert_eq!(step(&mut d, |s| s.apply_outcome(0, &Outcome::Sent, 1)), []);
    let rejected = Outcome::Failed(FailureReason::ProviderRejected);
    assert_eq!(
        step(&mut d, |s| s.apply_outcome(1, &rejected, 2)),
        [("sent", None)],
        "the second device's failure completes the send"
    );
}

/// One random change: an outcome or a report for a device, or a goal.
#[derive(Clone, Debug)]
enum Change {
    Outcome(usize, Outcome),
    Report(usize, Report),
    Goal,
}

fn change(devices: usize) -> impl Strategy<Value = Change> {
    let outcome = prop_oneof![
        Just(Outcome::Sent),
        Just(Outcome::Bounced),
        Just(Outcome::Failed(FailureReason::ProviderRejected)),
    ];
    let report = prop_oneof![
        Just(Report::Delivered),
        Just(Report::Opened),
        Just(Report::Converted)
    ];
    prop_oneof![
        (0..devices, outcome).prop_map(|(i, o)| Change::Outcome(i, o)),
        (0..devices, report).prop_map(|(i, r)| Change::Report(i, r)),
        Just(Change::Goal),
    ]
}

proptest! {
    /// Without a retry, a delivery enters each status at most once, and has
    /// entered every status it reached by the end.
    #[test]
    fn each_status_once_and_every_reached_one(
        changes in (1usize..4).prop_flat_map(|n| (Just(n), prop::collection::vec(change(n), 0..12)))
    ) {
        let (devices, changes) = changes;
        let mut d = delivery(devices);
        let mut seen: Vec<MessageStatus> = Vec::new();
        for (t, c) in changes.into_iter().enumerate() {
            let at = t as i64;
            let before = d.clone();
            match c {
                Change::Outcome(i, o) => d.state.apply_outcome(i, &o, at),
                Change::Report(i, r) => {
                    d.state.apply_report(i, r, at);
                }
                Change::Goal => {
                    d.state.convert(at);
                }
            }
            for e in entered(Some(&before), &d) {
                prop_assert!(!seen.contains(&e.status), "{:?} entered twice", e.status);
                if let Some(i) = e.device {
                    prop_assert_ne!(&before.state.devices[i], &d.state.devices[i]);
                }
                seen.push(e.status);
            }
        }
        let counts = contribution(&d).message;
        for s in EVENT_STATUSES {
            if reached(&counts, s) {
                prop_assert!(seen.contains(&s), "{:?} reached but never entered", s);
            }
        }
    }
}
