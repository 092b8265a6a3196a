//! Frequency caps and quiet hours over HTTP, black-box: a send's
//! `frequency_caps`, `quiet_hours` and their bypasses, and what they do to
//! its deliveries in the log and the metrics.

mod support;

use pushd::sim::FaultMix;
use serde_json::{Value, json};
use support::{Daemon, android_token, fakes};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn a_capped_push_is_undeliverable_naming_its_cap_and_a_bypass_goes_out() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = Daemon::start(&dir.path().join("data"), &fakes.env());
    d.message("m", "camp", "Hello").await;
    d.customer("c1", json!({}), &[(&android_token(1), "android")])
        .await;
    let caps = json!([{"max": 1, "per_seconds": 86400}]);
    let send = |extra: Value| {
        let mut body = json!({"message_id": "m", "customer_ids": ["c1"]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let first = d
        .ok(
            "POST",
            "/v1/send/push",
            send(json!({"frequency_caps": caps})),
        )
        .await;
    let first = first["deliveries"][0]["delivery_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(d.settled(&first).await["status"], "sent");

    let second = d
        .ok(
            "POST",
            "/v1/send/push",
            send(json!({"frequency_caps": caps})),
        )
        .await;
    let second = second["deliveries"][0]["delivery_id"].as_str().unwrap();
    let (_, capped) = d
        .call("GET", &format!("/v1/deliveries/{second}"), None)
        .await;
    assert_eq!(capped["status"], "undeliverable", "{capped}");
    assert_eq!(capped["failure_reason"], "frequency_capped");
    let words = capped["failure_message"].as_str().unwrap();
    assert!(words.contains("1 per 86400 s"), "{words}");

    let bypass = json!({"frequency_caps": caps, "bypass_frequency_caps": true});
    let third = d.ok("POST", "/v1/send/push", send(bypass)).await;
    let third = third["deliveries"][0]["delivery_id"].as_str().unwrap();
    assert_eq!(d.settled(third).await["status"], "sent");
    assert_eq!(fakes.requests(), 2, "the capped one never went out");

    let m = d.metrics_until("m", |m| m["sent"] == 2).await;
    let reasons = m["failure_reasons"].as_array().unwrap();
    assert_eq!(reasons[0]["reason"], "frequency_capped", "{m}");
    assert_eq!(reasons[0]["count"], 1);

    for bad in [
        json!({"frequency_caps": [{"max": 0, "per_seconds": 60}]}),
        json!({"frequency_caps": [{"max": 1, "per_seconds": 0}]}),
        json!({"frequency_caps": [{"max": 1}]}),
    ] {
        let (status, v) = d
            .call("POST", "/v1/send/push", Some(send(bad.clone())))
            .await;
        assert_eq!((status, code(&v)), (400, "invalid_field"), "{bad}: {v}");
    }
}

/// `HH:MM` of the UTC time `minutes` from now.
fn utc_in(minutes: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let minute = (now / 60 + minutes).rem_euclid(24 * 60);
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

#[tokio::test]
async fn a_send_inside_quiet_hours_is_held_or_dropped_and_a_bad_window_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    d.message("m", "camp", "Hello").await;
    // No timezone attribute: the person's local time is UTC.
    d.customer("c1", json!({}), &[("tok-1", "android")]).await;
    let around_now =
        |action: &str| json!({"start": utc_in(-60), "end": utc_in(60), "action": action});
    let send =
        |quiet: Value| json!({"message_id": "m", "customer_ids": ["c1"], "quiet_hours": quiet});

    let held = d
        .ok("POST", "/v1/send/push", send(around_now("hold")))
        .await;
    let held = held["deliveries"][0]["delivery_id"].as_str().unwrap();
    let (_, v) = d.call("GET", &format!("/v1/deliveries/{held}"), None).await;
    assert_eq!(
        (v["status"].as_str(), v["held_for"].as_str()),
        (Some("scheduled"), Some("quiet_hours")),
        "{v}"
    );
    assert_eq!(v["timezone"], "UTC");

    let dropped = d
        .ok("POST", "/v1/send/push", send(around_now("drop")))
        .await;
    let dropped = dropped["deliveries"][0]["delivery_id"].as_str().unwrap();
    let (_, v) = d
        .call("GET", &format!("/v1/deliveries/{dropped}"), None)
        .await;
    assert_eq!(
        (v["status"].as_str(), v["failure_reason"].as_str()),
        (Some("undeliverable"), Some("quiet_hours")),
        "{v}"
    );

    let mut bypass = send(around_now("drop"));
    bypass["bypass_quiet_hours"] = json!(true);
    let sent = d.ok("POST", "/v1/send/push", bypass).await;
    let sent = sent["deliveries"][0]["delivery_id"].as_str().unwrap();
    // No credentials: it was sent to the provider and failed there.
    assert_eq!(
        d.settled(sent).await["failure_reason"],
        "credentials_not_found"
    );

    for bad in [
        json!({"start": "9pm", "end": "08:00", "action": "hold"}),
        json!({"start": "21:00", "end": "21:00", "action": "hold"}),
        json!({"start": "21:00", "end": "08:00", "action": "later"}),
    ] {
        let (status, v) = d
            .call("POST", "/v1/send/push", Some(send(bad.clone())))
            .await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
}
