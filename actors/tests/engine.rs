//! The actors over in-memory ports: retries, bounces, eviction, recovery.

mod support;

use std::sync::Arc;
use std::time::Duration;

use pushd_actors::engine::EngineError;
use pushd_actors::model::{
    Audience, ConversionGoal, DEFAULT_APP, Device, Environment, MessageSpec, Platform, PushOptions,
};
use pushd_actors::person::{
    CustomerEvent, DeleteCustomer, DeviceReport, EraseCustomer, GetCustomer, MergeCustomer,
    PutCustomer, PutDevice, RetryDelivery, SendMessage,
};
use pushd_actors::ports::Store as _;
use pushd_actors::status::{DeviceStatus, FailureReason, MessageStatus, Report};
use serde_json::{Map, Value, json};
use support::{Answer, Harness, MemJournal, MemStore, wait_for};

fn message(audience: Audience) -> Arc<MessageSpec> {
    Arc::new(MessageSpec {
        id: "welcome".into(),
        name: "Welcome".into(),
        campaign_id: Some("onboarding".into()),
        title: "Hi {{customer.first_name}}".into(),
        body: "Ready".into(),
        deep_link: None,
        audience,
        collapse_id: None,
        conversion: Some(ConversionGoal {
            event: "purchase".into(),
            window_seconds: 3600,
        }),
        app: DEFAULT_APP.into(),
        push: PushOptions::default(),
        rate_per_minute: None,
        lane: Default::default(),
        created_at: 0,
    })
}

fn attrs(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

async fn customer(h: &Harness, id: &str, tokens: &[(&str, Platform, i64)]) {
    let put = PutCustomer {
        attributes: attrs(json!({"first_name": "Ada"})),
        unsubscribed: false,
    };
    h.registry.request(id, put).await.unwrap();
    for &(token, platform, last_used) in tokens {
        let device = Device {
            id: token.into(),
            platform,
            app: DEFAULT_APP.into(),
            environment: Environment::Production,
            last_used,
            attributes: Default::default(),
            suppressed: false,
            opted_in: None,
        };
        h.registry.request(id, PutDevice(device)).await.unwrap();
    }
}

async fn send(h: &Harness, id: &str, audience: Audience) -> String {
    let msg = SendMessage {
        message: message(audience),
        data: Value::Null,
        delivery_id: None,
        time: None,
        rules: Default::default(),
    };
    h.registry.request(id, msg).await.unwrap()
}

/// Waits until the stored delivery has settled, then returns its status.
async fn settled(h: &Harness, id: &str) -> MessageStatus {
    wait_for(&h.store.commits, || {
        h.store.delivery_now(id).state.settled()
    })
    .await;
    h.store.delivery_now(id).status()
}

/// A delivery to customer `c1`'s iPhone `a` and Android `b`, sent to both.
async fn sent_to_a_and_b(h: &Harness) -> String {
    customer(
        h,
        "c1",
        &[("a", Platform::Ios, 1), ("b", Platform::Android, 2)],
    )
    .await;
    let id = send(h, "c1", Audience::AllDevices).await;
    assert_eq!(settled(h, &id).await, MessageStatus::Sent);
    id
}

/// Answers each retry wait: advances the clock once the send slept.
async fn drive_retries(h: &Harness, token: &str, calls: usize) {
    for n in 1..calls {
        wait_for(&h.provider.called, || h.provider.calls_to(token) >= n).await;
        // Beside the person's idle check, the send now sleeps before its retry.
        wait_for(&h.clock.slept, || h.clock.sleepers() >= 2).await;
        h.clock.advance(Duration::from_secs(5));
    }
}

#[actix::test]
async fn a_message_goes_only_to_its_apps_devices_in_their_environment() {
    let h = Harness::new();
    customer(&h, "c1", &[("main", Platform::Ios, 1)]).await;
    for (token, platform, environment) in [
        ("shop-ios", Platform::Ios, Environment::Sandbox),
        ("shop-android", Platform::Android, Environment::Production),
    ] {
        let device = Device {
            id: token.into(),
            platform,
            app: "shop".into(),
            environment,
            last_used: 9,
            attributes: Default::default(),
            suppressed: false,
            opted_in: None,
        };
        let put = h.registry.request("c1", PutDevice(device)).await;
        put.unwrap();
    }
    let for_app = |app: &str, audience| {
        let mut m = (*message(audience)).clone();
        m.app = app.into();
        SendMessage {
            message: Arc::new(m),
            data: Value::Null,
            delivery_id: None,
            time: None,
            rules: Default::default(),
        }
    };

    let id = h
        .registry
        .request("c1", for_app("shop", Audience::AllDevices))
        .await
        .unwrap();
    assert_eq!(settled(&h, &id).await, MessageStatus::Sent);
    let d = h.store.delivery_now(&id);
    let tokens: Vec<&str> = d.sends.iter().map(|s| s.token.as_str()).collect();
    assert_eq!(tokens, ["shop-ios", "shop-android"]);
    let calls = h.provider.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    let ios = calls.iter().find(|p| &*p.token == "shop-ios").unwrap();
    assert_eq!((&*ios.app, ios.environment), ("shop", Environment::Sandbox));
    assert_eq!(h.provider.calls_to("main"), 0);

    // The default app's last device is "main", though the shop's are newer.
    let id = send(&h, "c1", Audience::LastDevice).await;
    assert_eq!(settled(&h, &id).await, MessageStatus::Sent);
    let d = h.store.delivery_now(&id);
    assert_eq!(d.sends.len(), 1);
    assert_eq!(
        (d.sends[0].token.as_str(), d.sends[0].app.as_str()),
        ("main", DEFAULT_APP)
    );

    // A person with no device of the message's app has nothing to send to.
    let id = h
        .registry
        .request("c1", for_app("other", Audience::AllDevices))
        .await
        .unwrap();
    let d = h.store.delivery_now(&id);
    assert_eq!(d.status(), MessageStatus::Undeliverable);
    assert_eq!(d.state.failure_reason(), Some(FailureReason::NoDevices));
}

#[actix::test]
async fn nine_transient_failures_then_success_is_sent_after_ten_attempts() {
    let h = Harness::new();
    customer(&h, "c1", &[("tok", Platform::Ios, 1)]).await;
    h.provider.script("tok", vec![Answer::Transient; 9]);
    let id = send(&h, "c1", Audience::AllDevices).await;
    drive_retries(&h, "tok", 10).await;
    assert_eq!(settled(&h, &id).await, MessageStatus::Sent);
    let d = h.store.delivery_now(&id);
    assert_eq!(d.sends[0].attempts, 10);
    assert_eq!(h.provider.calls_to("tok"), 10);
    assert!(d.sends[0].provider_id.is_some());
}

#[actix::test]
async fn ten_transient_failures_exhaust_retries() {
    let h = Harness::new();
    customer(&h, "c1", &[("tok", Platform::Android, 1)]).await;
    h.provider.script("tok", vec![Answer::Transient; 10]);
    let id = send(&h, "c1", Audience::AllDevices).await;
    drive_retries(&h, "tok", 10).await;
    assert_eq!(settled(&h, &id).await, MessageStatus::Failed);
    let d = h.store.delivery_now(&id);
    assert_eq!(
        d.state.failure_reason(),
        Some(FailureReason::RetriesExhausted)
    );
    assert_eq!(d.sends[0].attempts, 10);
    assert_eq!(
        d.sends[0].last_error.as_deref(),
        Some("503 ServiceUnavailable")
    );
    assert_eq!(h.provider.calls_to("tok"), 10);
}

/// A provider port that panics (a bug in a client): the device send's
/// guard reports `failed` / `internal_error` for its device, the other
/// device's send goes on, and the customer's actor settles and stops.
#[actix::test]
async fn a_device_send_that_panics_fails_its_device_internal_error_and_its_actor_settles() {
    let h = Harness::new();
    customer(
        &h,
        "c1",
        &[("a", Platform::Ios, 1), ("b", Platform::Android, 2)],
    )
    .await;
    h.provider.script("a", [Answer::Panic]);
    let both = send(&h, "c1", Audience::AllDevices).await;
    assert_eq!(settled(&h, &both).await, MessageStatus::Sent);
    let d = h.store.delivery_now(&both);
    let a = &d.state.devices[0];
    assert_eq!(
        (a.status, a.failure),
        (DeviceStatus::Failed, Some(FailureReason::InternalError))
    );
    assert_eq!(d.state.devices[1].status, DeviceStatus::Sent);
    assert!(
        d.sends[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("internal fault")
    );

    // Its only device panicking fails the delivery, named so.
    customer(&h, "c2", &[("z", Platform::Ios, 1)]).await;
    h.provider.script("z", [Answer::Panic]);
    let only = send(&h, "c2", Audience::AllDevices).await;
    assert_eq!(settled(&h, &only).await, MessageStatus::Failed);
    let d = h.store.delivery_now(&only);
    assert_eq!(d.state.failure_reason(), Some(FailureReason::InternalError));
    assert_eq!(
        h.provider.calls_to("z"),
        1,
        "an internal error is not retried"
    );

    // No send is left in flight: both actors stop once idle, and the
    // customers take the next send.
    evict(&h).await;
    let next = send(&h, "c2", Audience::AllDevices).await;
    assert_eq!(settled(&h, &next).await, MessageStatus::Sent);
}

#[actix::test]
async fn bounce_suppresses_the_token_and_the_next_send_skips_it() {
    let h = Harness::new();
    customer(
        &h,
        "c1",
        &[("old", Platform::Ios, 1), ("new", Platform::Android, 2)],
    )
    .await;
    h.provider.script("old", [Answer::Bounce]);
    let first = send(&h, "c1", Audience::AllDevices).await;
    assert_eq!(settled(&h, &first).await, MessageStatus::Sent);
    assert_eq!(
        h.store.delivery_now(&first).state.devices[0].status,
        DeviceStatus::Bounced
    );
    assert!(h.store.state.lock().unwrap().customers["c1"].devices[0].suppressed);

    let second = send(&h, "c1", Audience::AllDevices).await;
    assert_eq!(settled(&h, &second).await, MessageStatus::Sent);
    let d = h.store.delivery_now(&second);
    assert_eq!(d.state.devices[0].status, DeviceStatus::Suppressed);
    assert_eq!(
        h.provider.calls_to("old"),
        1,
        "a suppressed token is not sent to"
    );

    // A person whose every token bounced is undeliverable, devices_suppressed.
    customer(&h, "c2", &[("gone", Platform::Ios, 1)]).await;
    h.provider.script("gone", [Answer::Bounce]);
    let b = send(&h, "c2", Audience::AllDevices).await;
    assert_eq!(settled(&h, &b).await, MessageStatus::Bounced);
    let u = send(&h, "c2", Audience::AllDevices).await;
    let d = h.store.delivery_now(&u);
    assert_eq!(d.status(), MessageStatus::Undeliverable);
    assert_eq!(
        d.state.failure_reason(),
        Some(FailureReason::DevicesSuppressed)
    );

    // Registering the token again clears the suppression.
    customer(&h, "c2", &[("gone", Platform::Ios, 3)]).await;
    let again = send(&h, "c2", Audience::AllDevices).await;
    assert_eq!(settled(&h, &again).await, MessageStatus::Sent);
}

#[actix::test]
async fn a_bounce_while_the_customer_changed_suppresses_the_token_in_its_current_record() {
    // The actor lets the customer's record go once a delivery's sends
    // start; what it reads back must be every change made since.
    let h = Harness::new();
    customer(&h, "c1", &[("old", Platform::Ios, 1)]).await;
    h.provider
        .script("old", [Answer::Transient, Answer::Bounce]);
    let id = send(&h, "c1", Audience::AllDevices).await;
    wait_for(&h.provider.called, || h.provider.calls_to("old") >= 1).await;
    // While the send waits to try again, the person gets a new phone and
    // a new name.
    customer(&h, "c1", &[("new", Platform::Android, 2)]).await;
    let merge = MergeCustomer {
        attributes: attrs(json!({"first_name": "Grace"})),
        unsubscribed: None,
        create: false,
    };
    h.registry.request("c1", merge).await.unwrap();
    drive_retries(&h, "old", 2).await;
    assert_eq!(settled(&h, &id).await, MessageStatus::Bounced);
    let c = h.store.state.lock().unwrap().customers["c1"].clone();
    let devices: Vec<(&str, bool)> = c.devices.iter().map(|d| (&*d.id, d.suppressed)).collect();
    assert_eq!(devices, [("old", true), ("new", false)]);
    assert_eq!(c.attributes.to_map()["first_name"], json!("Grace"));
}

#[actix::test]
async fn last_device_picks_the_greatest_last_used() {
    let h = Harness::new();
    customer(
        &h,
        "c1",
        &[("a", Platform::Ios, 5), ("b", Platform::Android, 9)],
    )
    .await;
    let id = send(&h, "c1", Audience::LastDevice).await;
    settled(&h, &id).await;
    let d = h.store.delivery_now(&id);
    assert_eq!(d.sends.len(), 1);
    assert_eq!(d.sends[0].token, "b");
}

#[actix::test]
async fn last_device_skips_a_suppressed_token() {
    let h = Harness::new();
    customer(
        &h,
        "c1",
        &[
            ("older", Platform::Ios, 5),
            ("newest", Platform::Android, 9),
        ],
    )
    .await;
    h.provider.script("newest", [Answer::Bounce]);
    let bounced = send(&h, "c1", Audience::LastDevice).await;
    assert_eq!(settled(&h, &bounced).await, MessageStatus::Bounced);
    // The newest token is suppressed now: the last used live one is chosen.
    let id = send(&h, "c1", Audience::LastDevice).await;
    assert_eq!(settled(&h, &id).await, MessageStatus::Sent);
    let d = h.store.delivery_now(&id);
    let tokens: Vec<&str> = d.sends.iter().map(|s| s.token.as_str()).collect();
    assert_eq!(tokens, ["older"]);
    // With every token suppressed, the delivery says so.
    h.provider.script("older", [Answer::Bounce]);
    let second = send(&h, "c1", Audience::LastDevice).await;
    settled(&h, &second).await;
    let none = send(&h, "c1", Audience::LastDevice).await;
    let d = h.store.delivery_now(&none);
    assert_eq!(
        (d.status(), d.state.failure_reason()),
        (
            MessageStatus::Undeliverable,
            Some(FailureReason::DevicesSuppressed)
        )
    );
}

#[actix::test]
async fn a_report_from_a_bounced_device_lifts_its_suppression() {
    let h = Harness::new();
    customer(&h, "c1", &[("tok", Platform::Ios, 1)]).await;
    h.provider.script("tok", [Answer::Bounce]);
    let id = send(&h, "c1", Audience::AllDevices).await;
    assert_eq!(settled(&h, &id).await, MessageStatus::Bounced);
    let suppressed = || h.store.state.lock().unwrap().customers["c1"].devices[0].suppressed;
    assert!(suppressed());
    // The phone got it after all: the device is live again.
    let report = DeviceReport {
        delivery_id: id.clone(),
        token: "tok".into(),
        report: Report::Delivered,
        at: 1_764_100_100,
        seen: None,
    };
    h.registry.request("c1", report).await.unwrap();
    assert_eq!(h.store.delivery_now(&id).status(), MessageStatus::Delivered);
    assert!(
        !suppressed(),
        "a token is suppressed only while its device is bounced"
    );
    let next = send(&h, "c1", Audience::AllDevices).await;
    assert_eq!(settled(&h, &next).await, MessageStatus::Sent);
    assert_eq!(h.provider.calls_to("tok"), 2);
}

/// Waits until every idle actor stopped (the clock moves past idle times).
async fn evict(h: &Harness) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while h.registry.active() > 0 {
            h.clock.advance(Duration::from_secs(61));
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("idle actors stopped");
}

#[actix::test]
async fn an_actor_whose_load_failed_stops_and_the_next_request_loads_afresh() {
    let h = Harness::new();
    customer(&h, "c1", &[("tok", Platform::Ios, 1)]).await;
    evict(&h).await;
    // One failed load: the actor stops, and the request goes to a fresh
    // one that loads the customer (it is not answered with the old error).
    h.store.fail_loads(1);
    let c = h.registry.ask("c1", GetCustomer).await.unwrap().unwrap();
    assert_eq!(c.map(|c| c.devices.len()), Some(1));
    // Loads failing on and on: the request gives up, and nothing stays
    // stuck: once the store answers, so does the customer.
    evict(&h).await;
    h.store.fail_loads(1000);
    let failed = h.registry.ask("c1", GetCustomer).await;
    assert!(
        matches!(failed, Err(EngineError::Unavailable(_))),
        "{failed:?}"
    );
    h.store.fail_loads(0);
    let put = PutCustomer {
        attributes: attrs(json!({"first_name": "Bo"})),
        unsubscribed: false,
    };
    h.registry.request("c1", put).await.unwrap();
    let c = h
        .registry
        .ask("c1", GetCustomer)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            c.attributes.to_map()["first_name"].as_str(),
            c.devices.len()
        ),
        (Some("Bo"), 1)
    );
}

#[actix::test]
async fn prechecks_fail_without_sending() {
    let h = Harness::new();
    let missing = send(&h, "nobody", Audience::AllDevices).await;
    let d = h.store.delivery_now(&missing);
    assert_eq!(
        d.state.failure_reason(),
        Some(FailureReason::CustomerNotFound)
    );

    let put = PutCustomer {
        attributes: Default::default(),
        unsubscribed: false,
    };
    h.registry.request("c1", put).await.unwrap();
    let no_name = send(&h, "c1", Audience::AllDevices).await;
    let d = h.store.delivery_now(&no_name);
    assert_eq!(d.status(), MessageStatus::Failed);
    assert_eq!(
        d.state.failure_reason(),
        Some(FailureReason::LiquidVariableMissing)
    );

    customer(&h, "c2", &[]).await;
    let none = send(&h, "c2", Audience::AllDevices).await;
    let d = h.store.delivery_now(&none);
    assert_eq!(d.status(), MessageStatus::Undeliverable);
    assert_eq!(d.state.failure_reason(), Some(FailureReason::NoDevices));

    let unsub = PutCustomer {
        attributes: attrs(json!({"first_name": "Bo"})),
        unsubscribed: true,
    };
    h.registry.request("c2", unsub).await.unwrap();
    let u = send(&h, "c2", Audience::AllDevices).await;
    let d = h.store.delivery_now(&u);
    assert_eq!(
        d.state.failure_reason(),
        Some(FailureReason::CustomerUnsubscribed)
    );
    assert!(h.provider.calls.lock().unwrap().is_empty());
}

#[actix::test]
async fn retry_resends_a_failed_delivery_and_refuses_others() {
    let h = Harness::new();
    let put = PutCustomer {
        attributes: Default::default(),
        unsubscribed: false,
    };
    h.registry.request("c1", put).await.unwrap();
    let id = send(&h, "c1", Audience::AllDevices).await;
    assert_eq!(h.store.delivery_now(&id).status(), MessageStatus::Failed);
    customer(&h, "c1", &[("tok", Platform::Ios, 1)]).await;
    let retry = RetryDelivery {
        delivery_id: id.clone(),
        message: message(Audience::AllDevices),
    };
    h.registry.request("c1", retry.clone()).await.unwrap();
    assert_eq!(settled(&h, &id).await, MessageStatus::Sent);
    let again = h.registry.request("c1", retry).await;
    assert_eq!(again, Err(EngineError::NotRetryable("sent")));
}

#[actix::test]
async fn reports_move_status_forward_and_unknown_devices_are_refused() {
    let h = Harness::new();
    let id = sent_to_a_and_b(&h).await;
    let report = |token: &str, report| DeviceReport {
        delivery_id: id.clone(),
        token: token.into(),
        report,
        at: 1_764_100_100,
        seen: None,
    };
    h.registry
        .request("c1", report("b", Report::Opened))
        .await
        .unwrap();
    assert_eq!(h.store.delivery_now(&id).status(), MessageStatus::Opened);
    h.registry
        .request("c1", report("b", Report::Delivered))
        .await
        .unwrap();
    assert_eq!(h.store.delivery_now(&id).status(), MessageStatus::Opened);
    let unknown = h
        .registry
        .request("c1", report("zzz", Report::Opened))
        .await;
    assert_eq!(unknown, Err(EngineError::NotFound("device")));
    let elsewhere = h.registry.request("c2", report("a", Report::Opened)).await;
    assert_eq!(elsewhere, Err(EngineError::NotFound("delivery")));
}

/// A report hands on the delivery as read to find its customer; one read
/// before another report changed the delivery is stale, and the actor reads
/// again instead of undoing that report.
#[actix::test]
async fn a_report_read_before_another_changed_the_delivery_keeps_both() {
    let h = Harness::new();
    let id = sent_to_a_and_b(&h).await;
    let read = || Some(Box::new(h.store.delivery_as_of(&id).unwrap().unwrap()));
    let (early, late) = (read(), read());
    let report = |token: &str, seen| DeviceReport {
        delivery_id: id.clone(),
        token: token.into(),
        report: Report::Delivered,
        at: 1_764_100_100,
        seen,
    };
    h.registry.request("c1", report("a", early)).await.unwrap();
    h.registry.request("c1", report("b", late)).await.unwrap();
    let d = h.store.delivery_now(&id);
    assert!(
        d.state.devices.iter().all(|s| s.delivered_at.is_some()),
        "both reports kept: {:?}",
        d.state.devices
    );
    assert_eq!(d.status(), MessageStatus::Delivered);
}

#[actix::test]
async fn conversion_goal_marks_the_nearest_delivery_once() {
    let h = Harness::new();
    customer(&h, "c1", &[("a", Platform::Ios, 1)]).await;
    let older = send(&h, "c1", Audience::AllDevices).await;
    settled(&h, &older).await;
    h.clock.advance(Duration::from_secs(600));
    let nearer = send(&h, "c1", Audience::AllDevices).await;
    settled(&h, &nearer).await;
    let now = h.store.delivery_now(&nearer).created_at;
    let event = |at| CustomerEvent {
        name: "purchase".into(),
        at,
    };
    let converted = h.registry.request("c1", event(now + 60)).await.unwrap();
    assert_eq!(converted.as_deref(), Some(nearer.as_str()));
    assert_eq!(
        h.store.delivery_now(&nearer).status(),
        MessageStatus::Converted
    );
    assert_eq!(h.store.delivery_now(&older).status(), MessageStatus::Sent);
    let second = h.registry.request("c1", event(now + 120)).await.unwrap();
    assert_eq!(second, None, "a second event converts nothing more");
    let late = h.registry.request("c1", event(now + 7200)).await.unwrap();
    assert_eq!(late, None, "outside the window");
}

#[actix::test]
async fn extreme_timestamps_neither_overflow_nor_convert() {
    let h = Harness::new();
    customer(&h, "c1", &[("a", Platform::Ios, 1)]).await;
    let id = send(&h, "c1", Audience::AllDevices).await;
    assert_eq!(settled(&h, &id).await, MessageStatus::Sent);
    for at in [i64::MIN, i64::MAX] {
        let event = CustomerEvent {
            name: "purchase".into(),
            at,
        };
        let converted = h.registry.request("c1", event).await;
        assert_eq!(
            converted,
            Ok(None),
            "an event at {at} is outside the window"
        );
    }
    let report = |report, at| DeviceReport {
        delivery_id: id.clone(),
        token: "a".into(),
        report,
        at,
        seen: None,
    };
    h.registry
        .request("c1", report(Report::Delivered, i64::MIN))
        .await
        .unwrap();
    let d = h.store.delivery_now(&id);
    assert_eq!(
        d.state.devices[0].delivered_at,
        Some(d.created_at),
        "a report dated before the delivery counts at its creation"
    );
    h.registry
        .request("c1", report(Report::Opened, i64::MAX))
        .await
        .unwrap();
    let d = h.store.delivery_now(&id);
    assert_eq!(d.status(), MessageStatus::Opened);
    assert_eq!(d.state.devices[0].opened_at, Some(i64::MAX));
    let points: Vec<_> = pushd_actors::tally::series_points(&d).collect();
    assert_eq!(points.len(), 2, "{points:?}");
}

#[actix::test]
async fn idle_actors_stop_and_reload_with_every_delivery() {
    let h = Harness::new();
    customer(&h, "c1", &[("a", Platform::Ios, 1)]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = send(&h, "c1", Audience::AllDevices).await;
        settled(&h, &id).await;
        ids.push(id);
    }
    assert_eq!(h.registry.active(), 1);
    // The last commit may still be finishing when the first check runs; the
    // actor then checks again one idle period later.
    evict(&h).await;
    for id in &ids {
        let report = DeviceReport {
            delivery_id: id.clone(),
            token: "a".into(),
            report: Report::Delivered,
            at: 1_764_100_100,
            seen: None,
        };
        h.registry.request("c1", report).await.unwrap();
        assert_eq!(h.store.delivery_now(id).status(), MessageStatus::Delivered);
    }
    assert_eq!(h.registry.active(), 1, "reloaded on next use");
    h.registry.request("c1", DeleteCustomer).await.unwrap();
    let gone = send(&h, "c1", Audience::AllDevices).await;
    let d = h.store.delivery_now(&gone);
    assert_eq!(
        d.state.failure_reason(),
        Some(FailureReason::CustomerNotFound)
    );
}

#[actix::test]
async fn a_crash_between_persisted_and_sent_resumes_the_send() {
    let first = Harness::new();
    customer(
        &first,
        "c1",
        &[("a", Platform::Ios, 1), ("b", Platform::Android, 2)],
    )
    .await;
    first.provider.script("a", [Answer::Hang]);
    first.provider.script("b", [Answer::Hang]);
    let snapshot = first.store.snapshot();
    let id = send(&first, "c1", Audience::AllDevices).await;
    wait_for(&first.provider.called, || {
        first.provider.calls.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(
        first.store.delivery_now(&id).status(),
        MessageStatus::Attempted
    );
    // The snapshot was taken before the send: the journal's tail holds it.
    let store = Arc::new(support::MemStore::from_snapshot(snapshot));
    let journal = Arc::new(first.journal.crash());
    drop(first);

    let second = Harness::on(store, journal, Default::default());
    assert_eq!(settled(&second, &id).await, MessageStatus::Sent);
    let d = second.store.delivery_now(&id);
    assert_eq!(second.provider.calls.lock().unwrap().len(), 2);
    assert!(d.sends.iter().all(|s| s.duplicates == 1));
}

/// The ids of the stored deliveries of `customer`, sorted.
fn deliveries_of(h: &Harness, customer: &str) -> Vec<String> {
    let state = h.store.snapshot();
    let mut ids: Vec<String> = (state.deliveries.values())
        .filter(|d| d.customer_id == customer)
        .map(|d| d.id.clone())
        .collect();
    ids.sort();
    ids
}

#[actix::test]
async fn an_erased_customer_goes_with_its_deliveries_and_its_sends_in_flight_stop() {
    let h = Harness::new();
    let converted = sent_to_a_and_b(&h).await;
    let at = h.store.delivery_now(&converted).created_at + 60;
    let event = CustomerEvent {
        name: "purchase".into(),
        at,
    };
    let found = h.registry.request("c1", event).await.unwrap();
    assert_eq!(found.as_deref(), Some(converted.as_str()));
    customer(&h, "c2", &[("z", Platform::Ios, 1)]).await;
    let kept = send(&h, "c2", Audience::AllDevices).await;
    assert_eq!(settled(&h, &kept).await, MessageStatus::Sent);
    // In flight: `a` waits to retry, `b` waits for its provider.
    h.provider
        .script("a", [Answer::Transient, Answer::Transient]);
    h.provider.script("b", [Answer::Hang]);
    let flying = send(&h, "c1", Audience::AllDevices).await;
    wait_for(&h.provider.called, || h.provider.calls_to("a") == 2).await;
    // The two actors' idle checks, and `a`'s retry.
    wait_for(&h.clock.slept, || h.clock.sleepers() >= 3).await;
    assert_eq!(deliveries_of(&h, "c1").len(), 2);

    h.registry.request("c1", EraseCustomer).await.unwrap();
    assert!(!h.store.snapshot().customers.contains_key("c1"));
    assert!(deliveries_of(&h, "c1").is_empty(), "{flying} went too");
    assert_eq!(deliveries_of(&h, "c2"), vec![kept.clone()]);
    // The actor stopped; `a`'s send stops at its retry instead of calling.
    tokio::time::timeout(Duration::from_secs(10), async {
        while h.registry.active() > 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the erased customer's actor stopped");
    for _ in 0..5 {
        h.clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.provider.calls_to("a"), 2, "no retry after the erasure");
    assert!(deliveries_of(&h, "c1").is_empty(), "nothing came back");

    // After it: the id is unknown to reports, sends and a second erasure.
    let report = DeviceReport {
        delivery_id: converted.clone(),
        token: "a".into(),
        report: Report::Opened,
        at,
        seen: None,
    };
    let refused = h.registry.request("c1", report).await;
    assert_eq!(refused, Err(EngineError::NotFound("delivery")));
    let again = h.registry.request("c1", EraseCustomer).await;
    assert_eq!(again, Err(EngineError::NotFound("customer")));
    let later = send(&h, "c1", Audience::AllDevices).await;
    assert_eq!(
        h.store.delivery_now(&later).state.failure_reason(),
        Some(FailureReason::CustomerNotFound)
    );

    // The journal replayed onto an empty store comes to the same state.
    let replayed = Harness::on(
        Arc::new(MemStore::default()),
        h.journal.clone(),
        Default::default(),
    );
    assert!(!replayed.store.snapshot().customers.contains_key("c1"));
    assert_eq!(deliveries_of(&replayed, "c1"), vec![later]);
    assert_eq!(deliveries_of(&replayed, "c2"), vec![kept]);
}

#[actix::test]
async fn an_erasure_is_answered_once_durable() {
    let journal = Arc::new(MemJournal::manual());
    let h = Harness::on(Default::default(), journal.clone(), Default::default());
    let registry = h.registry.clone();
    let put = actix::spawn(async move {
        let put = PutCustomer {
            attributes: Map::new(),
            unsubscribed: false,
        };
        registry.request("c1", put).await
    });
    wait_for(&h.store.commits, || {
        h.store.snapshot().customers.contains_key("c1")
    })
    .await;
    journal.sync();
    put.await.unwrap().unwrap();

    let registry = h.registry.clone();
    let erase = actix::spawn(async move { registry.request("c1", EraseCustomer).await });
    wait_for(&h.store.commits, || {
        !h.store.snapshot().customers.contains_key("c1")
    })
    .await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!erase.is_finished(), "answered before it was durable");
    journal.sync();
    erase.await.unwrap().unwrap();
}

#[actix::test]
async fn a_merge_keeps_the_attributes_and_devices_it_does_not_name() {
    let h = Harness::new();
    let merge = |attributes: Value, unsubscribed, create| MergeCustomer {
        attributes: attrs(attributes),
        unsubscribed,
        create,
    };
    let get = |id: &'static str| {
        let registry = h.registry.clone();
        async move { registry.ask(id, GetCustomer).await.unwrap().unwrap() }
    };
    // Without `create`, no one is made.
    let made = h
        .registry
        .request("c0", merge(json!({"a": 1}), None, false));
    assert!(!made.await.unwrap());
    assert!(get("c0").await.is_none());

    customer(&h, "c1", &[("t1", Platform::Ios, 1_764_000_000)]).await;
    let merged = h
        .registry
        .request("c1", merge(json!({"plan": "pro"}), Some(true), false));
    assert!(merged.await.unwrap());
    let c = get("c1").await.unwrap();
    assert_eq!(
        c.attributes.to_map(),
        attrs(json!({"first_name": "Ada", "plan": "pro"}))
    );
    assert!(c.unsubscribed);
    assert_eq!(c.devices.len(), 1);
    let again = h
        .registry
        .request("c1", merge(json!({"first_name": "Bo"}), None, true));
    assert!(again.await.unwrap());
    let c = get("c1").await.unwrap();
    assert_eq!(c.attributes.to_map()["first_name"], "Bo");
    assert!(c.unsubscribed, "kept when not given");
}
