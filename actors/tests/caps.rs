//! Frequency caps over in-memory ports and a manual clock: a person who got
//! as many pushes as a cap allows in its rolling window gets none more
//! (`undeliverable`, `frequency_capped`, the cap named), across messages,
//! until the window moves on; a send may name its own caps or bypass them,
//! and a scheduled send is held to its caps when it is released.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pushd_actors::caps::{CapRule, FrequencyCap};
use pushd_actors::model::MessageSpec;
use pushd_actors::person::SendMessage;
use pushd_actors::rules::SendRules;
use pushd_actors::schedule::SendTime;
use pushd_actors::status::{FailureReason, MessageStatus};
use serde_json::{Map, Value};
use support::{Harness, START_MS, config, wait_for};

const DAY: i64 = 86_400;

fn message(id: &str) -> Arc<MessageSpec> {
    Arc::new(support::news(id, "Hi"))
}

/// A harness whose default caps are `caps`, with customer `c1` (one iOS
/// device) and the messages `a` and `b` stored.
async fn harness(caps: Vec<FrequencyCap>) -> Harness {
    let h = Harness::configured(pushd_actors::engine::EngineConfig {
        frequency_caps: caps,
        ..config()
    });
    for id in ["a", "b"] {
        h.registry
            .put_message((*message(id)).clone())
            .await
            .unwrap();
    }
    h.ios_customer("c1", Map::new(), false).await;
    h
}

async fn send(h: &Harness, message_id: &str, caps: CapRule, time: Option<SendTime>) -> String {
    let msg = SendMessage {
        message: message(message_id),
        data: Value::Null,
        delivery_id: None,
        time,
        rules: SendRules {
            caps,
            ..SendRules::default()
        },
    };
    h.registry.request("c1", msg).await.unwrap()
}

fn reason(h: &Harness, id: &str) -> (MessageStatus, Option<FailureReason>, Option<String>) {
    let d = h.store.delivery_now(id);
    (d.status(), d.state.failure_reason(), d.failure_detail)
}

/// Waits until the provider was called `n` times in all.
async fn pushes_reach(h: &Harness, n: usize) {
    wait_for(&h.provider.called, || {
        h.provider.calls.lock().unwrap().len() >= n
    })
    .await;
}

fn daily(max: u32) -> FrequencyCap {
    FrequencyCap {
        max,
        per_seconds: DAY,
    }
}

#[actix::test]
async fn the_push_past_a_cap_is_not_sent_across_messages_until_the_window_moves_on() {
    let h = harness(vec![daily(2)]).await;
    send(&h, "a", CapRule::default(), None).await;
    h.clock.advance(Duration::from_secs(3_600));
    send(&h, "b", CapRule::default(), None).await;
    let capped = send(&h, "a", CapRule::default(), None).await;
    let (status, why, detail) = reason(&h, &capped);
    assert_eq!(
        (status, why),
        (
            MessageStatus::Undeliverable,
            Some(FailureReason::FrequencyCapped)
        )
    );
    assert_eq!(
        detail.as_deref(),
        Some("the frequency cap of 2 per 86400 s was reached")
    );
    pushes_reach(&h, 2).await;
    assert_eq!(h.store.snapshot().tallies["a"].message.undeliverable, 1);

    // A day after the first push, one more fits.
    h.clock.advance(Duration::from_secs((DAY - 3_600) as u64));
    let next = send(&h, "b", CapRule::default(), None).await;
    assert_eq!(reason(&h, &next).1, None, "{:?}", reason(&h, &next));
    pushes_reach(&h, 3).await;
    assert_eq!(
        h.provider.calls.lock().unwrap().len(),
        3,
        "the capped one never went out"
    );
}

#[actix::test]
async fn a_send_may_name_its_own_caps_or_bypass_them() {
    let h = harness(vec![daily(1)]).await;
    send(&h, "a", CapRule::default(), None).await;
    let bypass = CapRule {
        frequency_caps: None,
        bypass: true,
    };
    let urgent = send(&h, "b", bypass, None).await;
    assert_eq!(reason(&h, &urgent).1, None);
    let looser = CapRule {
        frequency_caps: Some(vec![daily(3)]),
        bypass: false,
    };
    let third = send(&h, "a", looser.clone(), None).await;
    assert_eq!(reason(&h, &third).1, None);
    let fourth = send(&h, "a", looser, None).await;
    assert_eq!(reason(&h, &fourth).1, Some(FailureReason::FrequencyCapped));
    let (_, _, detail) = reason(&h, &fourth);
    assert_eq!(
        detail.as_deref(),
        Some("the frequency cap of 3 per 86400 s was reached")
    );
}

#[actix::test]
async fn a_scheduled_send_is_held_to_its_caps_when_it_is_released() {
    let h = harness(vec![]).await;
    let strict = CapRule {
        frequency_caps: Some(vec![daily(1)]),
        bypass: false,
    };
    let due = START_MS + 3_600_000;
    let held = send(&h, "a", strict, Some(SendTime::At(due))).await;
    // Meanwhile the person gets a push: at its time the held one is capped.
    send(&h, "b", CapRule::default(), None).await;
    wait_for(&h.clock.slept, || h.registry.held().next_due() == Some(due)).await;
    h.clock.advance(Duration::from_secs(3_600));
    wait_for(&h.store.commits, || {
        h.store.delivery_now(&held).status() != MessageStatus::Scheduled
    })
    .await;
    assert_eq!(reason(&h, &held).1, Some(FailureReason::FrequencyCapped));
    pushes_reach(&h, 1).await;
    assert_eq!(h.provider.calls.lock().unwrap().len(), 1);
}

#[actix::test]
async fn a_push_scheduled_days_ahead_counts_from_when_it_went_out() {
    let h = harness(vec![daily(1)]).await;
    // Made now, sent three days later: then the day's one push.
    let due = START_MS + 3 * DAY * 1000;
    let early = send(&h, "a", CapRule::default(), Some(SendTime::At(due))).await;
    wait_for(&h.clock.slept, || h.registry.held().next_due() == Some(due)).await;
    h.clock.advance(Duration::from_secs(3 * DAY as u64));
    wait_for(&h.store.commits, || {
        h.store.delivery_now(&early).status() == MessageStatus::Sent
    })
    .await;
    // An hour later, the same day's window holds it: the next is capped.
    h.clock.advance(Duration::from_secs(3_600));
    let next = send(&h, "b", CapRule::default(), None).await;
    assert_eq!(reason(&h, &next).1, Some(FailureReason::FrequencyCapped));
    assert_eq!(h.provider.calls.lock().unwrap().len(), 1);
}
