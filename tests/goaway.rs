//! Providers that close their HTTP/2 connections gracefully (GOAWAY), as
//! APNs, FCM and hypercorn do after a number of requests, an idle spell or
//! at shutdown: every device of a large send is pushed exactly once, in at
//! most two provider calls, as the fakes count them.

mod support;

use std::collections::BTreeMap;

use futures_util::{StreamExt, stream};
use pushd::sim::{Fake, FakeProviders, FaultMix};
use serde_json::{Value, json};
use support::{Daemon, android_token, fakes, ios_token};

/// Customers of a send, each with an iOS and an Android device.
const CUSTOMERS: usize = 2000;
/// Customers per `POST /v1/batch`.
const IMPORT: usize = 1000;
/// Customers per `POST /v1/send/push`.
const SEND: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_every_1000_requests_pushes_each_device_once() {
    let mix = FaultMix {
        goaway_every: Some(1000),
        ..FaultMix::default()
    };
    send_through(mix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_at_random_pushes_each_device_once() {
    let mix = FaultMix {
        goaway: 0.002,
        seed: support::seed("goaway_at_random"),
        ..FaultMix::default()
    };
    send_through(mix).await;
}

/// Sends one message to [`CUSTOMERS`] customers through fakes with `mix`
/// and checks every device: `sent`, at most two provider calls as the fake
/// counts them, one attempt as pushd counts them (a GOAWAY costs none), one
/// push accepted.
async fn send_through(mix: FaultMix) {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), mix).await;
    let d = Daemon::start(&dir.path().join("data"), &fakes.env());
    for start in (0..CUSTOMERS).step_by(IMPORT) {
        let customers: Vec<Value> = (start..start + IMPORT)
            .map(|i| {
                json!({"id": format!("c{i}"), "devices": [
                    {"id": ios_token(i), "platform": "ios"},
                    {"id": android_token(i), "platform": "android"}]})
            })
            .collect();
        let v = d
            .ok("POST", "/v1/batch", json!({"customers": customers}))
            .await;
        assert_eq!(v["imported"], IMPORT, "{v}");
    }
    d.message("promo", "spring", "Hello").await;
    let mut deliveries = Vec::new();
    for start in (0..CUSTOMERS).step_by(SEND) {
        let ids: Vec<String> = (start..start + SEND).map(|i| format!("c{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        deliveries.extend(d.send("promo", &ids).await);
    }
    d.metrics_until("promo", |m| m["sends"] == CUSTOMERS && m["attempted"] == 0)
        .await;

    let d = &d;
    let details: Vec<Value> = stream::iter(&deliveries)
        .map(|id| async move {
            let (status, v) = d.call("GET", &format!("/v1/deliveries/{id}"), None).await;
            assert_eq!(status, 200, "{v}");
            v
        })
        .buffer_unordered(16)
        .collect()
        .await;
    // Provider calls per device as the fakes counted them, and pushd's.
    let mut histogram = BTreeMap::<(u32, u64), usize>::new();
    let mut wrong = Vec::new();
    for delivery in &details {
        for device in delivery["devices"].as_array().unwrap() {
            let token = device["token"].as_str().unwrap();
            let calls = provider_calls(&fakes, device);
            let attempts = device["attempts"].as_u64().unwrap();
            *histogram.entry((calls, attempts)).or_default() += 1;
            let pushes = match device["platform"].as_str() {
                Some("ios") => fakes.apns.pushes(token).len(),
                _ => fakes.fcm.pushes(token).len(),
            };
            // A graceful GOAWAY loses no answer: it costs no attempt.
            if device["status"] != "sent" || calls > 2 || attempts != 1 || pushes != 1 {
                wrong.push(format!("{calls} calls, {pushes} pushes: {device}"));
            }
        }
    }
    eprintln!(
        "devices by (provider calls, attempts): {histogram:?}; GOAWAYs: APNs {}, FCM {}",
        fakes.apns.goaways(),
        fakes.fcm.goaways()
    );
    assert!(
        wrong.is_empty(),
        "{} devices not sent once in one attempt and at most 2 calls, e.g. {}",
        wrong.len(),
        wrong[0]
    );
    assert!(
        fakes.apns.goaways() + fakes.fcm.goaways() > 0,
        "the fakes closed no connection"
    );
    // The operator sees the connections given up on a GOAWAY.
    let metrics = reqwest::get(d.url("/metrics")).await.unwrap();
    let text = metrics.text().await.unwrap();
    let goaways: f64 = text
        .lines()
        .filter(|l| l.starts_with("pushd_provider_reconnects_total") && l.contains("\"goaway\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(goaways > 0.0, "{text}");
}

/// The requests the fake of `device`'s platform received for its token.
fn provider_calls(fakes: &FakeProviders, device: &Value) -> u32 {
    let token = device["token"].as_str().unwrap();
    match device["platform"].as_str() {
        Some("ios") => fakes.apns.calls(token),
        _ => fakes.fcm.calls(token),
    }
}
