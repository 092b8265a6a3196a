//! Scheduled sends over in-memory ports and a manual clock: a delivery held
//! (`scheduled`) until its time, released then with the customer and
//! message as they are, canceled on request, and kept across a restart.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pushd_actors::engine::EngineError;
use pushd_actors::model::MessageSpec;
use pushd_actors::person::{CancelDelivery, DeleteCustomer, PutCustomer, SendMessage};
use pushd_actors::schedule::{IfPast, SendTime, TimezoneSource, zone};
use pushd_actors::status::{FailureReason, MessageStatus};
use serde_json::{Map, Value, json};
use support::{Harness, START_MS, wait_for};

const HOUR_MS: i64 = 3_600_000;

fn message(title: &str) -> MessageSpec {
    support::news("news", title)
}

/// Customer `id` with `attributes` and one iOS device, token `t-<id>`.
async fn customer(h: &Harness, id: &str, attributes: Value, unsubscribed: bool) {
    let attributes: Map<String, Value> = attributes.as_object().cloned().unwrap_or_default();
    h.ios_customer(id, attributes, unsubscribed).await;
}

async fn send_at(h: &Harness, id: &str, time: SendTime) -> Result<String, EngineError> {
    let message = h.store.snapshot().messages["news"].clone();
    let msg = SendMessage {
        message: Arc::new(message),
        data: Value::Null,
        delivery_id: None,
        time: Some(time),
        rules: Default::default(),
    };
    h.registry.request(id, msg).await
}

/// A harness with the message `news` stored.
async fn harness() -> Harness {
    let h = Harness::new();
    h.registry.put_message(message("Hi")).await.unwrap();
    h
}

fn calls(h: &Harness) -> usize {
    h.provider.calls.lock().unwrap().len()
}

/// Waits until delivery `id` is on the engine's schedule for `due_ms`.
async fn held_until(h: &Harness, due_ms: i64) {
    wait_for(&h.clock.slept, || {
        h.registry.held().next_due() == Some(due_ms)
    })
    .await;
}

async fn status_becomes(h: &Harness, id: &str, status: MessageStatus) {
    wait_for(&h.store.commits, || {
        h.store.delivery_now(id).status() == status
    })
    .await;
}

#[actix::test]
async fn a_send_at_a_later_instant_is_held_then_rendered_and_sent_at_its_time() {
    let h = harness().await;
    customer(&h, "c1", json!({}), false).await;
    let due = START_MS + HOUR_MS;
    let id = send_at(&h, "c1", SendTime::At(due)).await.unwrap();
    let held = h.store.delivery_now(&id);
    assert_eq!(held.status(), MessageStatus::Scheduled);
    assert_eq!(held.schedule.as_ref().map(|s| s.due_ms), Some(due));
    assert!(held.content.is_none() && held.sends.is_empty());
    let tally = h.store.snapshot().tallies["news"];
    assert_eq!((tally.message.scheduled, tally.ios.scheduled), (1, 1));
    assert_eq!((tally.ios.sends, tally.android.scheduled), (0, 0));
    held_until(&h, due).await;

    // The message changes while the delivery waits: its time renders the new one.
    h.registry.put_message(message("Changed")).await.unwrap();
    h.clock.advance(Duration::from_millis((HOUR_MS - 1) as u64));
    assert_eq!(calls(&h), 0, "nothing goes out before its time");
    assert_eq!(h.store.delivery_now(&id).status(), MessageStatus::Scheduled);
    h.clock.advance(Duration::from_millis(1));
    status_becomes(&h, &id, MessageStatus::Sent).await;
    let sent = h.store.delivery_now(&id);
    assert_eq!(
        sent.content.as_ref().map(|c| c.title.as_str()),
        Some("Changed")
    );
    assert_eq!(
        sent.schedule.as_ref().and_then(|s| s.late_seconds()),
        Some(0)
    );
    assert_eq!(calls(&h), 1);
    let tally = h.store.snapshot().tallies["news"];
    assert_eq!((tally.message.scheduled, tally.message.sent), (0, 1));
    assert_eq!((tally.ios.scheduled, tally.ios.sent), (0, 1));
}

#[actix::test]
async fn a_canceled_delivery_is_never_sent_and_only_a_scheduled_one_cancels() {
    let h = harness().await;
    customer(&h, "c1", json!({}), false).await;
    let due = START_MS + HOUR_MS;
    let id = send_at(&h, "c1", SendTime::At(due)).await.unwrap();
    held_until(&h, due).await;
    assert_eq!(h.store.snapshot().tallies["news"].message.scheduled, 1);
    let cancel = CancelDelivery {
        delivery_id: id.clone(),
    };
    h.registry.request("c1", cancel.clone()).await.unwrap();
    let canceled = h.store.delivery_now(&id);
    assert_eq!(canceled.status(), MessageStatus::Canceled);
    assert_eq!(
        canceled.state.failure_reason(),
        Some(FailureReason::Canceled)
    );
    let tally = h.store.snapshot().tallies["news"];
    assert_eq!((tally.message.scheduled, tally.message.canceled), (0, 1));
    assert_eq!((tally.ios.scheduled, tally.ios.canceled), (0, 0));
    assert!(h.registry.held().is_empty());
    let again = h.registry.request("c1", cancel).await;
    assert!(
        matches!(again, Err(EngineError::NotCancelable("canceled"))),
        "{again:?}"
    );
    h.clock.advance(Duration::from_millis(2 * HOUR_MS as u64));
    assert_eq!(calls(&h), 0);
    assert_eq!(h.store.delivery_now(&id).status(), MessageStatus::Canceled);
}

#[actix::test]
async fn a_customer_deleted_or_unsubscribed_while_scheduled_fails_with_the_usual_reason() {
    let h = harness().await;
    customer(&h, "gone", json!({}), false).await;
    customer(&h, "quiet", json!({}), false).await;
    let due = START_MS + HOUR_MS;
    let gone = send_at(&h, "gone", SendTime::At(due)).await.unwrap();
    let quiet = send_at(&h, "quiet", SendTime::At(due)).await.unwrap();
    held_until(&h, due).await;
    h.registry.request("gone", DeleteCustomer).await.unwrap();
    let unsubscribe = PutCustomer {
        attributes: Map::new(),
        unsubscribed: true,
    };
    h.registry.request("quiet", unsubscribe).await.unwrap();
    h.clock.advance(Duration::from_millis(HOUR_MS as u64));
    status_becomes(&h, &gone, MessageStatus::Failed).await;
    status_becomes(&h, &quiet, MessageStatus::Failed).await;
    let reason = |id: &str| h.store.delivery_now(id).state.failure_reason();
    assert_eq!(reason(&gone), Some(FailureReason::CustomerNotFound));
    assert_eq!(reason(&quiet), Some(FailureReason::CustomerUnsubscribed));
    assert_eq!(calls(&h), 0);
}

#[actix::test]
async fn a_local_time_is_read_in_the_customers_zone_across_the_spring_gap() {
    let h = harness().await;
    customer(&h, "ny", json!({"timezone": "America/New_York"}), false).await;
    customer(&h, "nowhere", json!({"timezone": "Mars/Base"}), false).await;
    let time = SendTime::LocalTime {
        local: "2026-03-08T02:30".parse().unwrap(),
        fallback: zone("Asia/Kathmandu").unwrap(),
        fallback_name: "Asia/Kathmandu".into(),
        if_past: IfPast::Skip,
    };
    let ny = send_at(&h, "ny", time.clone()).await.unwrap();
    let nowhere = send_at(&h, "nowhere", time).await.unwrap();
    let schedule = |id: &str| h.store.delivery_now(id).schedule.unwrap();
    let due: jiff::Timestamp = "2026-03-08T07:30:00Z".parse().unwrap();
    assert_eq!(schedule(&ny).due_ms, due.as_millisecond());
    assert_eq!(
        schedule(&ny).timezone_source,
        Some(TimezoneSource::Customer)
    );
    let kathmandu: jiff::Timestamp = "2026-03-07T20:45:00Z".parse().unwrap();
    assert_eq!(schedule(&nowhere).due_ms, kathmandu.as_millisecond());
    assert_eq!(
        schedule(&nowhere).timezone.as_deref(),
        Some("Asia/Kathmandu")
    );
    assert_eq!(
        schedule(&nowhere).timezone_source,
        Some(TimezoneSource::FallbackInvalid)
    );
    held_until(&h, kathmandu.as_millisecond()).await;
    h.clock.advance(Duration::from_millis(
        (due.as_millisecond() - START_MS) as u64,
    ));
    status_becomes(&h, &ny, MessageStatus::Sent).await;
    status_becomes(&h, &nowhere, MessageStatus::Sent).await;
    assert_eq!(calls(&h), 2, "each goes out once");
}

#[actix::test]
async fn a_passed_local_time_is_skipped_when_the_send_says_so() {
    let h = harness().await;
    customer(&h, "c1", json!({}), false).await;
    let time = SendTime::LocalTime {
        local: "2025-01-01T09:00".parse().unwrap(),
        fallback: zone("UTC").unwrap(),
        fallback_name: "UTC".into(),
        if_past: IfPast::Skip,
    };
    let id = send_at(&h, "c1", time).await.unwrap();
    let d = h.store.delivery_now(&id);
    assert_eq!(d.status(), MessageStatus::Undeliverable);
    assert_eq!(
        d.state.failure_reason(),
        Some(FailureReason::LocalTimePassed)
    );
}

#[actix::test]
async fn scheduled_deliveries_survive_a_restart_and_a_late_one_says_how_late() {
    let first = harness().await;
    customer(&first, "c1", json!({}), false).await;
    customer(&first, "c2", json!({}), false).await;
    let (soon, later) = (START_MS + HOUR_MS, START_MS + 3 * HOUR_MS);
    let missed = send_at(&first, "c1", SendTime::At(soon)).await.unwrap();
    let pending = send_at(&first, "c2", SendTime::At(later)).await.unwrap();
    let (store, journal) = (first.store.clone(), Arc::new(first.journal.crash()));
    drop(first);

    // Down for two hours: the first one's time passed meanwhile.
    let down_until = START_MS + 2 * HOUR_MS;
    let second = Harness::at(down_until, store, journal, Default::default());
    status_becomes(&second, &missed, MessageStatus::Sent).await;
    let late = second.store.delivery_now(&missed).schedule.unwrap();
    assert_eq!(late.late_seconds(), Some(3_600));
    assert_eq!(
        second.store.delivery_now(&pending).status(),
        MessageStatus::Scheduled
    );
    held_until(&second, later).await;
    second.clock.advance(Duration::from_millis(HOUR_MS as u64));
    status_becomes(&second, &pending, MessageStatus::Sent).await;
    let on_time = second.store.delivery_now(&pending).schedule.unwrap();
    assert_eq!(on_time.late_seconds(), Some(0));
    assert_eq!(second.provider.calls.lock().unwrap().len(), 2, "each once");
}

#[actix::test]
async fn a_local_time_in_the_fall_back_fold_goes_out_once_at_its_first_occurrence() {
    let h = harness().await;
    customer(&h, "ny", json!({"timezone": "America/New_York"}), false).await;
    let time = SendTime::LocalTime {
        local: "2026-11-01T01:30".parse().unwrap(),
        fallback: zone("UTC").unwrap(),
        fallback_name: "UTC".into(),
        if_past: IfPast::Skip,
    };
    let id = send_at(&h, "ny", time).await.unwrap();
    // 01:30 EDT; 01:30 EST comes an hour later.
    let first: jiff::Timestamp = "2026-11-01T05:30:00Z".parse().unwrap();
    held_until(&h, first.as_millisecond()).await;
    h.clock.advance(Duration::from_millis(
        (first.as_millisecond() - START_MS) as u64,
    ));
    status_becomes(&h, &id, MessageStatus::Sent).await;
    // Past the second 01:30: still the one push.
    h.clock.advance(Duration::from_secs(2 * 3_600));
    assert_eq!(calls(&h), 1);
    assert!(h.registry.held().is_empty());
}
