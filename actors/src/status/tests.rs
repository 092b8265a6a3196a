//! Exhaustive and randomized checks of the status machines.

use proptest::prelude::*;

use super::*;

/// One event that can happen to a delivery's device.
#[derive(Clone, Debug)]
enum Event {
    Outcome(usize, Outcome),
    Report(usize, Report, Timestamp),
    Goal(Timestamp),
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Sent),
        Just(Outcome::Bounced),
        Just(Outcome::Failed(FailureReason::RetriesExhausted)),
        Just(Outcome::Failed(FailureReason::ProviderRejected)),
        Just(Outcome::Failed(FailureReason::CredentialsNotFound)),
        Just(Outcome::Failed(FailureReason::PayloadTooLarge)),
    ]
}

fn report() -> impl Strategy<Value = Report> {
    prop_oneof![
        Just(Report::Delivered),
        Just(Report::Opened),
        Just(Report::Converted)
    ]
}

/// A person with 0–5 devices (some suppressed), one outcome per device, some
/// reports (duplicates included) and maybe a conversion goal, which comes
/// last: a goal met before anything reached a phone converts nothing.
fn scenario() -> impl Strategy<Value = (Vec<bool>, Vec<Event>)> {
    prop::collection::vec(prop::bool::weighted(0.15), 0..=5).prop_flat_map(|suppressed| {
        let n = suppressed.len();
        let outcomes = prop::collection::vec(outcome(), n);
        let reports = prop::collection::vec((0..n.max(1), report(), 0i64..100), 0..8);
        let goal = prop::option::of(0i64..100);
        (Just(suppressed), outcomes, reports, goal).prop_map(|(sup, outs, reps, goal)| {
            let mut events: Vec<Event> = outs
                .into_iter()
                .enumerate()
                .map(|(i, o)| Event::Outcome(i, o))
                .collect();
            events.extend(reps.into_iter().map(|(i, r, t)| Event::Report(i, r, t)));
            events.extend(goal.map(Event::Goal));
            (sup, events)
        })
    })
}

fn build(suppressed: &[bool]) -> DeliveryState {
    DeliveryState::new(
        suppressed
            .iter()
            .map(|&s| {
                if s {
                    DeviceState::suppressed()
                } else {
                    DeviceState::attempted()
                }
            })
            .collect(),
    )
}

fn apply(state: &mut DeliveryState, event: &Event) {
    match event {
        Event::Outcome(i, o) => state.apply_outcome(*i, o, 10),
        Event::Report(i, r, t) => {
            if *i < state.devices.len() {
                state.apply_report(*i, *r, *t);
            }
        }
        Event::Goal(t) => {
            state.convert(*t);
        }
    }
}

/// Rank of a message status along the path a delivery can take.
fn progress(s: MessageStatus) -> u8 {
    match s {
        MessageStatus::Scheduled | MessageStatus::Attempted => 0,
        MessageStatus::Canceled => 1,
        MessageStatus::Failed | MessageStatus::Bounced | MessageStatus::Undeliverable => 1,
        MessageStatus::Sent => 2,
        MessageStatus::Delivered => 3,
        MessageStatus::Opened => 4,
        MessageStatus::Converted => 5,
    }
}

/// The status rule (docs/statuses.md), written independently of `DeliveryState::status`:
/// from the set of events, not from the folded device states.
fn rule(suppressed: &[bool], events: &[Event]) -> MessageStatus {
    let targeted: Vec<usize> = (0..suppressed.len()).filter(|&i| !suppressed[i]).collect();
    if targeted.is_empty() {
        return MessageStatus::Undeliverable;
    }
    let reported = |i: usize, which: &[Report]| {
        events
            .iter()
            .any(|e| matches!(e, Event::Report(j, r, _) if *j == i && which.contains(r)))
    };
    let any_kind = [Report::Delivered, Report::Opened, Report::Converted];
    let outcome = |i: usize| {
        events.iter().find_map(|e| match e {
            Event::Outcome(j, o) if *j == i => Some(o.clone()),
            _ => None,
        })
    };
    let succeeded = targeted
        .iter()
        .any(|&i| outcome(i) == Some(Outcome::Sent) || reported(i, &any_kind));
    let goal = events.iter().any(|e| matches!(e, Event::Goal(_)));
    if targeted.iter().any(|&i| reported(i, &[Report::Converted])) || (goal && succeeded) {
        MessageStatus::Converted
    } else if targeted.iter().any(|&i| reported(i, &[Report::Opened])) {
        MessageStatus::Opened
    } else if targeted.iter().any(|&i| reported(i, &any_kind)) {
        MessageStatus::Delivered
    } else if targeted.iter().any(|&i| outcome(i).is_none()) {
        MessageStatus::Attempted
    } else if succeeded {
        MessageStatus::Sent
    } else if targeted
        .iter()
        .all(|&i| outcome(i) == Some(Outcome::Bounced))
    {
        MessageStatus::Bounced
    } else {
        MessageStatus::Failed
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the order, the final state equals the rule, and the status
    /// never moves backwards along the way.
    #[test]
    fn aggregate_follows_rule_in_any_order(
        (suppressed, events) in scenario(),
        seed in any::<u64>(),
    ) {
        use rand::{SeedableRng, seq::SliceRandom};
        let mut shuffled = events.clone();
        let goal = shuffled.pop_if(|e| matches!(e, Event::Goal(_)));
        shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));

        let mut a = build(&suppressed);
        let mut b = build(&suppressed);
        let mut last = progress(b.status());
        for e in &events {
            apply(&mut a, e);
        }
        for e in shuffled.iter().chain(&goal) {
            apply(&mut b, e);
            let now = progress(b.status());
            prop_assert!(now >= last, "status went back: {:?} after {:?}", b.status(), e);
            last = now;
        }
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.status(), rule(&suppressed, &events));
    }

    /// Applying every event twice changes nothing.
    #[test]
    fn duplicates_are_idempotent((suppressed, events) in scenario()) {
        let mut once = build(&suppressed);
        let mut twice = build(&suppressed);
        for e in &events {
            apply(&mut once, e);
            apply(&mut twice, e);
            apply(&mut twice, e);
        }
        prop_assert_eq!(once, twice);
    }

    /// A held delivery is `scheduled` and unsettled whatever reports and
    /// goals arrive for it (it has no device yet); canceled, it is
    /// `canceled` for good; released (its devices chosen), it follows the
    /// rule like any delivery.
    #[test]
    fn a_held_delivery_waits_then_cancels_or_follows_the_rule(
        (suppressed, events) in scenario(),
        cancel in any::<bool>(),
    ) {
        let not_outcomes = || events.iter().filter(|e| !matches!(e, Event::Outcome(..)));
        let mut held = DeliveryState::held();
        for e in not_outcomes() {
            apply(&mut held, e);
        }
        prop_assert_eq!(&held, &DeliveryState::held());
        prop_assert_eq!(held.status(), MessageStatus::Scheduled);
        prop_assert!(held.pending() && held.failure_reason().is_none());
        if cancel {
            held.cancel();
            for e in not_outcomes() {
                apply(&mut held, e);
            }
            prop_assert_eq!(held.status(), MessageStatus::Canceled);
            prop_assert!(held.settled());
            prop_assert_eq!(held.failure_reason(), Some(FailureReason::Canceled));
        } else {
            let mut released = build(&suppressed);
            for e in &events {
                apply(&mut released, e);
            }
            prop_assert_eq!(released.status(), rule(&suppressed, &events));
        }
    }

    /// A failed or undeliverable delivery carries a reason; no other does.
    #[test]
    fn failure_reason_matches_status((suppressed, events) in scenario()) {
        let mut s = build(&suppressed);
        for e in &events {
            apply(&mut s, e);
        }
        match s.status() {
            MessageStatus::Failed | MessageStatus::Undeliverable => {
                prop_assert!(s.failure_reason().is_some())
            }
            _ => prop_assert_eq!(s.failure_reason(), None),
        }
    }
}

#[test]
fn no_devices_is_undeliverable() {
    let s = DeliveryState::new(vec![]);
    assert_eq!(s.status(), MessageStatus::Undeliverable);
    assert_eq!(s.failure_reason(), Some(FailureReason::NoDevices));
    let s = DeliveryState::new(vec![DeviceState::suppressed(); 2]);
    assert_eq!(s.failure_reason(), Some(FailureReason::DevicesSuppressed));
    assert!(s.settled());
}

#[test]
fn opened_before_delivered_and_report_after_failure() {
    let mut s = DeliveryState::new(vec![DeviceState::attempted(); 2]);
    s.apply_outcome(0, &Outcome::Failed(FailureReason::RetriesExhausted), 5);
    assert_eq!(s.status(), MessageStatus::Attempted);
    s.apply_outcome(1, &Outcome::Failed(FailureReason::RetriesExhausted), 5);
    assert_eq!(s.status(), MessageStatus::Failed);
    assert_eq!(s.failure_reason(), Some(FailureReason::RetriesExhausted));
    assert!(s.apply_report(1, Report::Opened, 30));
    assert_eq!(s.status(), MessageStatus::Opened);
    assert_eq!(s.devices[1].delivered_at, Some(30));
    s.apply_report(1, Report::Delivered, 20);
    assert_eq!(s.status(), MessageStatus::Opened);
    assert_eq!(s.devices[1].delivered_at, Some(20));
    assert_eq!(s.failure_reason(), None);
}

#[test]
fn goal_needs_a_reached_device_and_counts_once() {
    let mut s = DeliveryState::new(vec![DeviceState::attempted()]);
    assert!(!s.convert(5));
    s.apply_outcome(0, &Outcome::Sent, 1);
    assert!(s.convert(5));
    assert!(!s.convert(6));
    assert_eq!(s.converted_at, Some(5));
    assert_eq!(s.status(), MessageStatus::Converted);
}

#[test]
fn reports_on_suppressed_devices_are_refused() {
    let mut s = DeliveryState::new(vec![DeviceState::suppressed(), DeviceState::attempted()]);
    assert!(!s.apply_report(0, Report::Delivered, 1));
    assert_eq!(s.devices[0].status, DeviceStatus::Suppressed);
    assert!(s.apply_report(1, Report::Delivered, 1));
}

#[test]
fn status_names_round_trip() {
    for s in MessageStatus::ALL {
        assert_eq!(MessageStatus::parse(s.as_str()), Some(s));
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
}

#[test]
fn failure_codes_round_trip() {
    for r in FailureReason::ALL {
        assert_eq!(FailureReason::parse(r.code()), Some(r));
        assert_eq!(serde_json::to_value(r).unwrap(), r.code());
    }
}
