//! Apps, APNs environments and push options through the real binary and
//! the fake providers over HTTP/2: each fake checks the headers and payload
//! it receives (topic, project, endpoint, push type, priority, expiration,
//! options), and the tests read what it recorded.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use pushd::sim::{Behavior, Fake, FakeProviders, Fault, FaultMix, ReceivedPush};
use pushd_actors::model::Environment;
use serde_json::{Value, json};
use support::{Daemon, android_token, fakes, ios_token};

/// A daemon whose app `default` uses `main` (from the environment) and
/// whose pushd.toml adds `extra` (TOML text).
fn daemon(dir: &tempfile::TempDir, main: &FakeProviders, extra: &str) -> Daemon {
    let config = dir.path().join("pushd.toml");
    std::fs::write(&config, extra).unwrap();
    let mut env = main.env();
    env.push(("PUSHD_CONFIG", config.display().to_string()));
    Daemon::start(&dir.path().join("data"), &env)
}

async fn setup() -> (tempfile::TempDir, FakeProviders, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let main = fakes(dir.path(), FaultMix::default()).await;
    let d = daemon(&dir, &main, "");
    d.customer("c1", json!({"first_name": "Ada"}), &[]).await;
    (dir, main, d)
}

/// Registers a device with every field given.
async fn device(d: &Daemon, customer: &str, device: Value) {
    d.ok(
        "PUT",
        &format!("/v1/customers/{customer}/devices"),
        json!({ "device": device }),
    )
    .await;
}

async fn message(d: &Daemon, id: &str, body: Value) {
    d.ok("PUT", &format!("/v1/messages/{id}"), body).await;
}

/// Sends `message` to `customer` with `data`; answers the settled delivery.
async fn send(d: &Daemon, message: &str, customer: &str, data: Value) -> Value {
    let v = d
        .ok(
            "POST",
            "/v1/send/push",
            json!({"message_id": message, "customer_ids": [customer], "data": data}),
        )
        .await;
    let id = v["deliveries"][0]["delivery_id"]
        .as_str()
        .unwrap()
        .to_owned();
    d.settled(&id).await
}

/// The delivery's device row for `token`.
fn row<'a>(delivery: &'a Value, token: &str) -> &'a Value {
    let devices = delivery["devices"].as_array().unwrap();
    devices.iter().find(|r| r["token"] == token).unwrap()
}

/// The one push `fake` accepted for `token`.
fn only(fake: &impl Fake, token: &str) -> ReceivedPush {
    let mut pushes = fake.pushes(token);
    assert_eq!(pushes.len(), 1, "pushes to {token}: {pushes:?}");
    pushes.remove(0)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_app_reaches_only_its_devices_with_its_own_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let main = fakes(dir.path(), FaultMix::default()).await;
    let shop = FakeProviders::start_app(dir.path(), "shop", FaultMix::default())
        .await
        .unwrap();
    // The kiosk app has an FCM project (the main one) and no APNs key.
    let kiosk = format!(
        "[apps.kiosk.fcm]\nendpoint = \"{}\"\nservice_account_file = \"{}\"\n",
        main.fcm.endpoint(),
        main.fcm_config.service_account_file.clone().unwrap()
    );
    let d = daemon(&dir, &main, &format!("{}{kiosk}", shop.app_toml("shop")));
    d.customer("c1", json!({"first_name": "Ada"}), &[]).await;
    for (n, app) in [(1, None), (2, Some("shop")), (3, Some("kiosk"))] {
        for (token, platform) in [(ios_token(n), "ios"), (android_token(n), "android")] {
            let mut fields = json!({"id": token, "platform": platform, "last_used": n});
            if let Some(app) = app {
                fields["app"] = json!(app);
            }
            device(&d, "c1", fields).await;
        }
    }
    let body = |app: &str| json!({"title": "Hi {{customer.first_name}}", "body": "b", "app": app});
    message(&d, "main-news", json!({"title": "Hi", "body": "b"})).await;
    message(&d, "shop-news", body("shop")).await;
    message(&d, "kiosk-news", body("kiosk")).await;

    let v = send(&d, "main-news", "c1", Value::Null).await;
    assert_eq!(
        (v["status"].as_str(), v["devices_attempted"].as_i64()),
        (Some("sent"), Some(2))
    );
    assert_eq!(row(&v, &ios_token(1))["app"], "default");
    assert_eq!(
        only(&main.apns, &ios_token(1)).headers["apns-topic"],
        "io.pushd.demo"
    );
    only(&main.fcm, &android_token(1));

    let v = send(&d, "shop-news", "c1", Value::Null).await;
    assert_eq!(
        (v["status"].as_str(), v["devices_attempted"].as_i64()),
        (Some("sent"), Some(2))
    );
    assert_eq!(row(&v, &android_token(2))["app"], "shop");
    let ios = only(&shop.apns, &ios_token(2));
    assert_eq!(ios.headers["apns-topic"], "io.pushd.shop");
    assert_eq!(ios.payload["aps"]["alert"]["title"], "Hi Ada");
    // The shop's fake FCM serves only the project pushd-shop.
    only(&shop.fcm, &android_token(2));
    assert_eq!(
        main.requests(),
        2,
        "the main fakes saw only the main app's pushes"
    );

    let v = send(&d, "kiosk-news", "c1", Value::Null).await;
    assert_eq!(v["status"], "sent", "{v}");
    let ios = row(&v, &ios_token(3));
    assert_eq!(
        (ios["status"].as_str(), ios["failure_reason"].as_str()),
        (Some("failed"), Some("credentials_not_found"))
    );
    assert_eq!(ios["last_error"], "app \"kiosk\": no APNs key configured");
    assert_eq!(row(&v, &android_token(3))["status"], "sent");
    only(&main.fcm, &android_token(3));
    assert_eq!(shop.requests() + main.apns.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_devices_go_to_the_sandbox_endpoint() {
    let (_dir, fakes, d) = setup().await;
    let (dev, store) = (ios_token(5), ios_token(6));
    fakes.apns.issue_sandbox_token(&dev);
    device(
        &d,
        "c1",
        json!({"id": dev, "platform": "ios", "environment": "sandbox"}),
    )
    .await;
    device(
        &d,
        "c1",
        json!({"id": store, "platform": "ios", "environment": "production"}),
    )
    .await;
    message(&d, "m", json!({"title": "t", "body": "b"})).await;

    let v = send(&d, "m", "c1", Value::Null).await;

    assert_eq!(v["status"], "sent", "{v}");
    assert_eq!(row(&v, &dev)["environment"], "sandbox");
    assert_eq!(row(&v, &store)["environment"], "production");
    assert_eq!(only(&fakes.apns, &dev).environment, Environment::Sandbox);
    assert_eq!(
        only(&fakes.apns, &store).environment,
        Environment::Production
    );
    let (_, customer) = d.call("GET", "/v1/customers/c1", None).await;
    let devices = customer["devices"].as_array().unwrap();
    assert!(
        devices.iter().all(|x| x["suppressed"] == false),
        "{customer}"
    );
    assert_eq!(devices[0]["environment"], "sandbox");

    // Android has no sandbox; the refused device is not registered.
    let bad = json!({"device": {"id": "a", "platform": "android", "environment": "sandbox"}});
    let (s, e) = d.call("PUT", "/v1/customers/c1/devices", Some(bad)).await;
    assert_eq!(s, 400);
    assert_eq!(e["error"]["code"], "invalid_field");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("device.environment"),
        "{e}"
    );
    let (_, after) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!(after["devices"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_option_reaches_both_providers() {
    let (_dir, fakes, d) = setup().await;
    let (ios, android) = (ios_token(1), android_token(1));
    d.customer(
        "c1",
        json!({"first_name": "Ada"}),
        &[(&ios, "ios"), (&android, "android")],
    )
    .await;
    let push = json!({"priority": "normal", "ttl_seconds": 3600, "sound": "ping.caf",
        "badge": 2, "category": "ORDER", "thread_id": "orders",
        "interruption_level": "time-sensitive", "relevance_score": 0.8,
        "image_url": "https://cdn.example.com/box.png", "android_channel_id": "orders",
        "data": {"screen": "orders/{{event.order}}", "who": "{{customer.first_name}}"}});
    message(
        &d,
        "shipped",
        json!({"title": "Shipped", "body": "b", "collapse_id": "order",
        "push": push}),
    )
    .await;
    let (_, stored) = d.call("GET", "/v1/messages/shipped", None).await;
    assert_eq!(stored["push"]["interruption_level"], "time-sensitive");
    assert_eq!(stored["app"], "default");

    let before = unix_now();
    let v = send(&d, "shipped", "c1", json!({"order": "A-17"})).await;
    let after = unix_now();

    assert_eq!(v["status"], "sent", "{v}");
    let got = only(&fakes.apns, &ios);
    let h = &got.headers;
    assert_eq!(
        (h["apns-push-type"].as_str(), h["apns-priority"].as_str()),
        ("alert", "5")
    );
    assert_eq!(h["apns-collapse-id"], "order");
    let expiration: u64 = h["apns-expiration"].parse().unwrap();
    assert!(
        (before + 3600..=after + 3600).contains(&expiration),
        "{expiration}"
    );
    let aps = &got.payload["aps"];
    assert_eq!(aps["alert"]["title"], "Shipped");
    assert_eq!(
        (aps["sound"].as_str(), aps["badge"].as_i64()),
        (Some("ping.caf"), Some(2))
    );
    assert_eq!(
        (aps["category"].as_str(), aps["thread-id"].as_str()),
        (Some("ORDER"), Some("orders"))
    );
    assert_eq!(aps["interruption-level"], "time-sensitive");
    assert_eq!(
        (
            aps["relevance-score"].as_f64(),
            aps["mutable-content"].as_i64()
        ),
        (Some(0.8), Some(1))
    );
    assert_eq!(got.payload["image_url"], "https://cdn.example.com/box.png");
    assert_eq!(
        (got.payload["screen"].as_str(), got.payload["who"].as_str()),
        (Some("orders/A-17"), Some("Ada"))
    );

    let message = &only(&fakes.fcm, &android).payload["message"];
    assert_eq!(
        message["notification"]["image"],
        "https://cdn.example.com/box.png"
    );
    let a = &message["android"];
    assert_eq!(
        (a["priority"].as_str(), a["ttl"].as_str()),
        (Some("NORMAL"), Some("3600s"))
    );
    assert_eq!(a["collapse_key"], "order");
    assert_eq!(
        a["notification"],
        json!({"channel_id": "orders", "sound": "ping.caf", "notification_count": 2})
    );
    assert_eq!(
        (
            message["data"]["screen"].as_str(),
            message["data"]["who"].as_str()
        ),
        (Some("orders/A-17"), Some("Ada"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_push_is_silent_on_both_platforms() {
    let (_dir, fakes, d) = setup().await;
    let (ios, android) = (ios_token(1), android_token(1));
    d.customer(
        "c1",
        json!({"first_name": "Ada"}),
        &[(&ios, "ios"), (&android, "android")],
    )
    .await;
    message(
        &d,
        "sync",
        json!({"push": {"kind": "background", "ttl_seconds": 0,
        "data": {"sync": "inbox-{{customer.id}}"}}}),
    )
    .await;

    let v = send(&d, "sync", "c1", Value::Null).await;

    assert_eq!(v["status"], "sent", "{v}");
    let got = only(&fakes.apns, &ios);
    assert_eq!(
        (
            got.headers["apns-push-type"].as_str(),
            got.headers["apns-priority"].as_str()
        ),
        ("background", "5")
    );
    assert_eq!(got.headers["apns-expiration"], "0");
    assert_eq!(got.payload["aps"], json!({"content-available": 1}));
    assert_eq!(got.payload["sync"], "inbox-c1");
    let message = &only(&fakes.fcm, &android).payload["message"];
    assert!(
        message.get("notification").is_none(),
        "data-only: {message}"
    );
    assert_eq!(message["android"]["priority"], "NORMAL");
    assert_eq!(message["data"]["sync"], "inbox-c1");
    assert_eq!(message["data"]["CIO-Delivery-Token"], android.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_push_options_are_refused_naming_the_field() {
    let (_dir, _fakes, d) = setup().await;
    let good = json!({"title": "t", "body": "b", "push": {"badge": 1}});
    message(&d, "m", good).await;
    let (_, before) = d.call("GET", "/v1/messages/m", None).await;
    let alert = |push: Value| json!({"title": "t", "body": "b", "push": push});
    let cases = [
        (alert(json!({"kind": "loud"})), "push.kind"),
        (alert(json!({"priority": "urgent"})), "push.priority"),
        (alert(json!({"ttl_seconds": 2_419_201})), "push.ttl_seconds"),
        (alert(json!({"ttl_seconds": -5})), "push.ttl_seconds"),
        (alert(json!({"badge": -1})), "push.badge"),
        (
            alert(json!({"interruption_level": "urgent"})),
            "push.interruption_level",
        ),
        (alert(json!({"relevance_score": 2})), "push.relevance_score"),
        (
            alert(json!({"image_url": "ftp://x.example/a.png"})),
            "push.image_url",
        ),
        (
            alert(json!({"android_channel_id": ""})),
            "push.android_channel_id",
        ),
        (alert(json!({"data": {"n": 5}})), "push.data.n"),
        (alert(json!({"data": {"aps": "x"}})), "push.data.aps"),
        (alert(json!({"volume": 11})), "push.volume"),
        (json!({"title": "t", "body": "b", "app": ""}), "app"),
        (json!({"body": "b"}), "title"),
        (
            json!({"title": "t", "push": {"kind": "background"}}),
            "title",
        ),
        (
            json!({"push": {"kind": "background", "priority": "high"}}),
            "push.priority",
        ),
        (
            json!({"push": {"kind": "background", "sound": "default"}}),
            "push.sound",
        ),
    ];
    for (body, field) in cases {
        let (s, e) = d.call("PUT", "/v1/messages/m", Some(body.clone())).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (400, Some("invalid_field")),
            "{body}: {e}"
        );
        let words = e["error"]["message"].as_str().unwrap();
        assert!(words.starts_with(field), "{body}: {words}");
    }
    let (s, e) = d
        .call(
            "PUT",
            "/v1/messages/m",
            Some(alert(json!({"data": {"k": "{{ x"}}))),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (400, Some("invalid_template")),
        "{e}"
    );
    let (_, after) = d.call("GET", "/v1/messages/m", None).await;
    assert_eq!(after, before, "a refused message changes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_large_push_fails_and_leaves_the_tokens_alone() {
    let (_dir, fakes, d) = setup().await;
    let (ios, android) = (ios_token(1), android_token(1));
    let bio = "x".repeat(5000);
    d.customer(
        "c1",
        json!({"bio": bio}),
        &[(&ios, "ios"), (&android, "android")],
    )
    .await;
    message(
        &d,
        "long",
        json!({"title": "t", "body": "{{customer.bio}}"}),
    )
    .await;
    message(&d, "short", json!({"title": "t", "body": "b"})).await;

    let v = send(&d, "long", "c1", Value::Null).await;

    assert_eq!(
        (v["status"].as_str(), v["failure_reason"].as_str()),
        (Some("failed"), Some("payload_too_large")),
        "{v}"
    );
    for token in [&ios, &android] {
        assert_eq!(row(&v, token)["failure_reason"], "payload_too_large");
    }
    assert!(
        row(&v, &ios)["last_error"]
            .as_str()
            .unwrap()
            .contains("APNs accepts at most 4096")
    );
    assert_eq!(fakes.requests(), 0, "nothing was sent");
    let v = send(&d, "short", "c1", Value::Null).await;
    assert_eq!(
        (v["status"].as_str(), v["devices_attempted"].as_i64()),
        (Some("sent"), Some(2)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fcm_refusal_of_the_message_does_not_bounce_the_token() {
    let (_dir, fakes, d) = setup().await;
    let android = android_token(1);
    d.customer("c1", json!({}), &[(&android, "android")]).await;
    message(&d, "m", json!({"title": "t", "body": "b"})).await;
    let once = Behavior::FailTimes {
        n: 1,
        fault: Fault::MessageTooBig,
    };
    fakes.fcm.script(&android, once);

    let v = send(&d, "m", "c1", Value::Null).await;

    assert_eq!(
        (v["status"].as_str(), v["failure_reason"].as_str()),
        (Some("failed"), Some("provider_rejected")),
        "{v}"
    );
    let words = row(&v, &android)["last_error"].as_str().unwrap().to_owned();
    assert_eq!(words, "400 INVALID_ARGUMENT: Android message is too big");
    // Not suppressed: the next send reaches the same token.
    let v = send(&d, "m", "c1", Value::Null).await;
    assert_eq!(v["status"], "sent", "{v}");
    assert_eq!(fakes.fcm.pushes(&android).len(), 1);
}
