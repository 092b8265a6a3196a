//! `POST /v1/messages/{id}/preview` through the real binary, with the fake
//! providers behind it: the devices a send would choose (and why it skips
//! the others), the pushes as they would go on the wire, the failure a
//! send would record, and that a preview writes, counts and sends nothing.

mod support;

use pushd::sim::{Behavior, Fake, FakeProviders, Fault, FaultMix};
use serde_json::{Value, json};
use support::{Daemon, android_token, fakes, ios_token};

async fn setup() -> (tempfile::TempDir, FakeProviders, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = Daemon::start(&dir.path().join("data"), &fakes.env());
    (dir, fakes, d)
}

/// Registers a device of `app` used at `last_used`.
async fn device(
    d: &Daemon,
    customer: &str,
    token: &str,
    platform: &str,
    app: &str,
    last_used: i64,
) {
    let device = json!({"id": token, "platform": platform, "app": app, "last_used": last_used});
    d.ok(
        "PUT",
        &format!("/v1/customers/{customer}/devices"),
        json!({ "device": device }),
    )
    .await;
}

/// The preview of `message` for `customer` with `data`: status and body.
async fn preview(d: &Daemon, message: &str, customer: &str, data: Value) -> (u16, Value) {
    let body = json!({"customer_id": customer, "data": data});
    d.call(
        "POST",
        &format!("/v1/messages/{message}/preview"),
        Some(body),
    )
    .await
}

/// A preview that must answer 200.
async fn previewed(d: &Daemon, message: &str, customer: &str, data: Value) -> Value {
    let (status, v) = preview(d, message, customer, data).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Each device's token with its skip reason (null: chosen).
fn choices(v: &Value) -> Vec<(String, Value)> {
    let devices = v["devices"].as_array().unwrap();
    devices
        .iter()
        .map(|d| {
            assert_eq!(d["chosen"], d["skipped_reason"].is_null(), "{d}");
            (
                d["token"].as_str().unwrap().to_owned(),
                d["skipped_reason"].clone(),
            )
        })
        .collect()
}

/// The previewed push to `token`.
fn push<'a>(v: &'a Value, token: &str) -> &'a Value {
    let pushes = v["pushes"].as_array().unwrap();
    pushes.iter().find(|p| p["token"] == token).unwrap()
}

/// `payload` with its delivery id set to `id`.
fn with_delivery_id(mut payload: Value, id: &str) -> Value {
    let data = match payload.get_mut("message") {
        Some(fcm) => &mut fcm["data"],
        None => &mut payload,
    };
    assert_eq!(data["CIO-Delivery-ID"], "00000000000000000000000000");
    data["CIO-Delivery-ID"] = json!(id);
    payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_chooses_devices_and_builds_the_pushes_a_send_does() {
    let (_dir, fakes, d) = setup().await;
    d.customer("c1", json!({"first_name": "Ada"}), &[]).await;
    let (ios, android, shop) = (ios_token(1), android_token(2), ios_token(3));
    device(&d, "c1", &ios, "ios", "default", 1_764_100_001).await;
    device(&d, "c1", &android, "android", "default", 1_764_100_002).await;
    device(&d, "c1", &shop, "ios", "shop", 1_764_100_003).await;
    let message = |audience: &str| {
        json!({"title": "Hi {{customer.first_name}}", "body": "Your order {{event.order}}",
            "deep_link": "myapp://orders", "audience": audience, "collapse_id": "orders",
            "push": {"badge": 2, "data": {"screen": "orders/{{event.order}}"}}})
    };
    d.ok("PUT", "/v1/messages/all", message("all_devices"))
        .await;
    d.ok("PUT", "/v1/messages/last", message("last_device"))
        .await;
    let data = json!({"order": "A-42"});

    let all = previewed(&d, "all", "c1", data.clone()).await;
    assert_eq!(
        (&all["would_send"], &all["status"]),
        (&json!(true), &json!("attempted"))
    );
    assert!(all["failure"].is_null(), "{all}");
    let expected = vec![
        (ios.clone(), Value::Null),
        (android.clone(), Value::Null),
        (shop.clone(), json!("other_app")),
    ];
    assert_eq!(choices(&all), expected);
    assert_eq!(all["content"]["title"], "Hi Ada");
    assert_eq!(all["content"]["body"], "Your order A-42", "data renders");
    assert_eq!(all["pushes"].as_array().unwrap().len(), 2, "{all}");
    let apns = push(&all, &ios);
    assert_eq!(apns["payload"]["aps"]["alert"]["title"], "Hi Ada");
    assert_eq!(apns["payload"]["screen"], "orders/A-42");
    assert!(
        apns["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/3/device/{ios}"))
    );
    assert!(apns["headers"].get("authorization").is_none(), "{apns}");
    let fcm = push(&all, &android);
    assert_eq!(fcm["payload"]["message"]["token"], android.as_str());
    assert_eq!(
        fcm["payload"]["message"]["notification"]["body"],
        "Your order A-42"
    );

    let last = previewed(&d, "last", "c1", data.clone()).await;
    let expected = vec![
        (ios.clone(), json!("not_last_used")),
        (android.clone(), Value::Null),
        (shop.clone(), json!("other_app")),
    ];
    assert_eq!(choices(&last), expected);
    assert_eq!(last["pushes"].as_array().unwrap().len(), 1, "{last}");

    // A send puts on the wire exactly what the preview showed, but for the
    // delivery's id (and APNs's expiration, a time).
    let sent = d
        .ok(
            "POST",
            "/v1/send/push",
            json!({"message_id": "all", "customer_ids": ["c1"], "data": data}),
        )
        .await;
    let id = sent["deliveries"][0]["delivery_id"].as_str().unwrap();
    assert_eq!(d.settled(id).await["status"], "sent");
    let got = fakes.apns.pushes(&ios).remove(0);
    assert_eq!(got.payload, with_delivery_id(apns["payload"].clone(), id));
    for (name, value) in apns["headers"].as_object().unwrap() {
        if name != "apns-expiration" {
            assert_eq!(
                got.headers.get(name),
                value.as_str().map(String::from).as_ref(),
                "{name}"
            );
        }
    }
    let got = fakes.fcm.pushes(&android).remove(0);
    assert_eq!(got.payload, with_delivery_id(fcm["payload"].clone(), id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suppressed_token_is_skipped_and_all_suppressed_is_the_sends_failure() {
    let (_dir, fakes, d) = setup().await;
    d.customer("c1", json!({}), &[]).await;
    let (gone, live) = (ios_token(1), android_token(2));
    device(&d, "c1", &gone, "ios", "default", 1_764_100_009).await;
    device(&d, "c1", &live, "android", "default", 1_764_100_001).await;
    d.ok("PUT", "/v1/messages/m", json!({"title": "t", "body": "b"}))
        .await;
    d.ok(
        "PUT",
        "/v1/messages/last",
        json!({"title": "t", "body": "b", "audience": "last_device"}),
    )
    .await;
    fakes
        .apns
        .script(&gone, Behavior::Fail(Fault::Unregistered));
    let id = &d.send("m", &["c1"]).await[0];
    d.settled(id).await;

    let v = previewed(&d, "m", "c1", Value::Null).await;
    let expected = vec![
        (gone.clone(), json!("suppressed")),
        (live.clone(), Value::Null),
    ];
    assert_eq!(choices(&v), expected);
    assert_eq!(v["pushes"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["would_send"], true);
    // The last used device is suppressed: the one used before it is chosen.
    let v = previewed(&d, "last", "c1", Value::Null).await;
    assert_eq!(choices(&v), expected);

    d.call("DELETE", &format!("/v1/customers/c1/devices/{live}"), None)
        .await;
    let v = previewed(&d, "m", "c1", Value::Null).await;
    assert_eq!(
        (&v["would_send"], &v["status"]),
        (&json!(false), &json!("undeliverable"))
    );
    assert_eq!(v["failure"]["reason"], "devices_suppressed");
    assert_eq!(v["pushes"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_would_fail_answers_the_reason_it_would_record() {
    let (_dir, _fakes, d) = setup().await;
    d.ok(
        "PUT",
        "/v1/messages/m",
        json!({"title": "Hi {{customer.first_name}}", "body": "b"}),
    )
    .await;
    d.ok(
        "PUT",
        "/v1/messages/shop",
        json!({"title": "t", "body": "b", "app": "shop"}),
    )
    .await;
    // Past APNs's 4,096 bytes.
    d.ok(
        "PUT",
        "/v1/messages/big",
        json!({"title": "t", "body": "x".repeat(5000)}),
    )
    .await;
    d.customer(
        "ada",
        json!({"first_name": "Ada"}),
        &[(&ios_token(1), "ios")],
    )
    .await;
    d.customer("bob", json!({}), &[(&ios_token(2), "ios")])
        .await;
    d.customer("eve", json!({"first_name": "Eve"}), &[]).await;
    d.ok(
        "PUT",
        "/v1/customers/uma",
        json!({"attributes": {"first_name": "Uma"}, "unsubscribed": true}),
    )
    .await;
    device(
        &d,
        "ada",
        &android_token(1),
        "android",
        "shop",
        1_764_100_000,
    )
    .await;

    let cases = [
        ("m", "nobody", "customer_not_found", "failed"),
        ("m", "uma", "customer_unsubscribed", "failed"),
        ("m", "bob", "liquid_variable_missing", "failed"),
        ("m", "eve", "no_devices", "undeliverable"),
        ("shop", "ada", "credentials_not_found", "failed"),
        ("big", "ada", "payload_too_large", "failed"),
    ];
    for (message, customer, reason, status) in cases {
        let v = previewed(&d, message, customer, Value::Null).await;
        assert_eq!(v["would_send"], false, "{customer}: {v}");
        assert_eq!(v["status"], status, "{customer}: {v}");
        assert_eq!(v["failure"]["reason"], reason, "{customer}: {v}");
        assert!(v["failure"]["message"].is_string(), "{v}");
    }
    let v = previewed(&d, "m", "bob", Value::Null).await;
    let detail = v["failure"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("first_name"),
        "names the variable: {detail}"
    );
    let v = previewed(&d, "shop", "ada", Value::Null).await;
    let refused = push(&v, &android_token(1));
    assert_eq!(refused["failure"]["reason"], "credentials_not_found", "{v}");
    assert!(refused["payload"].is_null(), "{v}");

    // The same send records the same reasons.
    for (message, customer, reason, _) in cases {
        let (_, sent) = d
            .call(
                "POST",
                "/v1/send/push",
                Some(json!({"message_id": message, "customer_ids": [customer]})),
            )
            .await;
        let id = sent["deliveries"][0]["delivery_id"].as_str().unwrap();
        assert_eq!(d.settled(id).await["failure_reason"], reason, "{customer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_writes_counts_and_sends_nothing() {
    let (_dir, fakes, d) = setup().await;
    d.customer(
        "c1",
        json!({}),
        &[(&ios_token(1), "ios"), (&android_token(1), "android")],
    )
    .await;
    d.message("m", "camp", "Hello").await;
    for customer in ["c1", "nobody"] {
        previewed(&d, "m", customer, json!({"k": "v"})).await;
    }

    let (_, log) = d.call("GET", "/v1/deliveries?message_id=m", None).await;
    assert_eq!(log["deliveries"], json!([]), "{log}");
    let (_, metrics) = d.call("GET", "/v1/messages/m/metrics", None).await;
    assert_eq!(metrics["sends"], 0, "{metrics}");
    let (events, _) = d.feed_page("", 100).await;
    assert_eq!(events, Vec::<Value>::new());
    assert_eq!((fakes.apns.requests(), fakes.fcm.requests()), (0, 0));
    let text = d.metrics_text().await;
    let counters = [
        "pushd_deliveries_created_total",
        "pushd_delivery_status_total",
        "pushd_provider_requests_total",
    ];
    let moved: Vec<&str> = (text.lines())
        .filter(|l| counters.iter().any(|c| l.starts_with(c)))
        .filter(|l| !l.ends_with(" 0"))
        .collect();
    assert_eq!(moved, Vec::<&str>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_previews_are_refused_with_the_apis_errors() {
    let (_dir, _fakes, d) = setup().await;
    d.message("m", "camp", "Hello").await;
    let (status, v) = preview(&d, "missing", "c1", Value::Null).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let cases = [
        json!({}),
        json!({"customer_id": ""}),
        json!({"customer_id": "c1", "data": [1]}),
        json!({"customer_id": "c1", "colour": "red"}),
    ];
    for body in cases {
        let (status, v) = d
            .call("POST", "/v1/messages/m/preview", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    let (status, _) = d
        .call_as(
            "wrong-key-0123456789",
            "POST",
            "/v1/messages/m/preview",
            Some(json!({"customer_id": "c1"})),
        )
        .await;
    assert_eq!(status, 401);
}
