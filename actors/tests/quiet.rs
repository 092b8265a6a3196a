//! Quiet hours over in-memory ports and a manual clock: a send inside the
//! person's quiet hours (their local time) is held until the window ends
//! (`scheduled`, held for `quiet_hours`) or dropped (`undeliverable`,
//! `quiet_hours`), unless it bypasses them; the engine's default quiet
//! hours apply to a send that names none.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pushd_actors::engine::EngineConfig;
use pushd_actors::model::{DEFAULT_APP, Device, Environment, MessageSpec, Platform};
use pushd_actors::person::{PutCustomer, PutDevice, SendMessage};
use pushd_actors::quiet::{QuietAction, QuietHours, QuietRule};
use pushd_actors::rules::SendRules;
use pushd_actors::schedule::{HeldFor, TimezoneSource};
use pushd_actors::status::{FailureReason, MessageStatus};
use serde_json::{Value, json};
use support::{Harness, START_MS, config, wait_for};

fn message() -> MessageSpec {
    support::news("news", "Hi")
}

/// The harness clock starts at 2025-11-25T19:46:40Z: 14:46 in New York.
/// These quiet hours hold it; they end at 16:00 EST, 21:00Z.
fn afternoon(action: QuietAction) -> QuietHours {
    QuietHours::parse("14:00", "16:00", action).unwrap()
}

const ENDS_MS: i64 = 1_764_104_400_000;

async fn harness(config: EngineConfig) -> Harness {
    let h = Harness::configured(config);
    h.registry.put_message(message()).await.unwrap();
    let attributes = json!({"timezone": "America/New_York"});
    let put = PutCustomer {
        attributes: attributes.as_object().unwrap().clone(),
        unsubscribed: false,
    };
    h.registry.request("ny", put).await.unwrap();
    let device = Device {
        id: "t-ny".into(),
        platform: Platform::Android,
        app: DEFAULT_APP.into(),
        environment: Environment::Production,
        last_used: 1,
        attributes: Default::default(),
        suppressed: false,
        opted_in: None,
    };
    h.registry.request("ny", PutDevice(device)).await.unwrap();
    h
}

async fn send(h: &Harness, quiet: QuietRule) -> String {
    let msg = SendMessage {
        message: Arc::new(message()),
        data: Value::Null,
        delivery_id: None,
        time: None,
        rules: SendRules {
            quiet,
            ..SendRules::default()
        },
    };
    h.registry.request("ny", msg).await.unwrap()
}

fn own(hours: QuietHours) -> QuietRule {
    QuietRule {
        quiet_hours: Some(hours),
        bypass: false,
    }
}

#[actix::test]
async fn a_send_inside_quiet_hours_is_held_until_they_end_then_sent() {
    let h = harness(config()).await;
    let id = send(&h, own(afternoon(QuietAction::Hold))).await;
    let held = h.store.delivery_now(&id);
    assert_eq!(held.status(), MessageStatus::Scheduled);
    let schedule = held.schedule.unwrap();
    assert_eq!(
        (schedule.held_for, schedule.due_ms),
        (HeldFor::QuietHours, ENDS_MS)
    );
    assert_eq!(schedule.timezone.as_deref(), Some("America/New_York"));
    assert_eq!(schedule.timezone_source, Some(TimezoneSource::Customer));
    wait_for(&h.clock.slept, || {
        h.registry.held().next_due() == Some(ENDS_MS)
    })
    .await;
    h.clock
        .advance(Duration::from_millis((ENDS_MS - START_MS - 1) as u64));
    assert_eq!(h.provider.calls.lock().unwrap().len(), 0);
    h.clock.advance(Duration::from_millis(1));
    wait_for(&h.store.commits, || {
        h.store.delivery_now(&id).status() == MessageStatus::Sent
    })
    .await;
}

#[actix::test]
async fn a_send_inside_quiet_hours_that_drop_is_undeliverable_and_a_bypass_goes_out() {
    let h = harness(config()).await;
    let dropped = send(&h, own(afternoon(QuietAction::Drop))).await;
    let d = h.store.delivery_now(&dropped);
    assert_eq!(d.status(), MessageStatus::Undeliverable);
    assert_eq!(d.state.failure_reason(), Some(FailureReason::QuietHours));
    assert_eq!(
        d.failure_detail.as_deref(),
        Some("inside the quiet hours 14:00 to 16:00 (America/New_York)")
    );
    let bypass = QuietRule {
        quiet_hours: Some(afternoon(QuietAction::Drop)),
        bypass: true,
    };
    let urgent = send(&h, bypass).await;
    wait_for(&h.store.commits, || {
        h.store.delivery_now(&urgent).status() == MessageStatus::Sent
    })
    .await;
    // Outside the window (an evening one), nothing is held.
    let evening = QuietHours::parse("21:00", "08:00", QuietAction::Drop).unwrap();
    let now = send(&h, own(evening)).await;
    assert_ne!(
        h.store.delivery_now(&now).status(),
        MessageStatus::Undeliverable
    );
}

#[actix::test]
async fn the_default_quiet_hours_hold_a_send_that_names_none_spread_over_the_release_window() {
    let h = harness(EngineConfig {
        quiet_hours: Some(afternoon(QuietAction::Hold)),
        release_spread_seconds: 600,
        ..config()
    })
    .await;
    let id = send(&h, QuietRule::default()).await;
    let due = h.store.delivery_now(&id).schedule.unwrap().due_ms;
    assert!(
        (ENDS_MS..ENDS_MS + 600_000).contains(&due),
        "released within the spread: {due}"
    );
}
