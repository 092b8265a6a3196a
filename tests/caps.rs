//! Frequency caps over HTTP, black-box: a send's `frequency_caps` and
//! `bypass_frequency_caps`, the capped delivery in the log and the metrics.

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
