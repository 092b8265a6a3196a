//! Idempotent sends, paced messages and opt-in-aware metrics through the
//! real binary and the fake providers over HTTP/2: the fakes record every
//! push they accept, and the tests check what they received.

mod support;

use std::time::{Duration, Instant};

use pushd::sim::{Fake, FakeProviders, FaultMix};
use serde_json::{Value, json};
use support::{API_KEY, Daemon, SDK_KEY, android_token, fakes, ios_token};

fn start(data: &std::path::Path, fakes: &FakeProviders) -> Daemon {
    Daemon::start(data, &fakes.env())
}

/// What `POST /v1/send/push` answered.
struct Answer {
    status: u16,
    replayed: bool,
    body: Value,
}

/// Posts `body` (raw JSON text) to the send endpoint, with `key` as its
/// `Idempotency-Key`.
async fn post_send(d: &Daemon, key: Option<&str>, body: &str) -> Answer {
    let mut req = d
        .client
        .post(d.url("/v1/send/push"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let body = resp.json().await.unwrap();
    Answer {
        status,
        replayed,
        body,
    }
}

fn delivery_ids(answer: &Answer) -> Vec<String> {
    let deliveries = answer.body["deliveries"].as_array().unwrap();
    (deliveries.iter())
        .map(|d| d["delivery_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every delivery of `message` in the log.
async fn logged(d: &Daemon, message: &str) -> Vec<Value> {
    let path = format!("/v1/deliveries?message_id={message}&limit=1000");
    let (status, v) = d.call("GET", &path, None).await;
    assert_eq!(status, 200, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

/// Makes every journal record written so far durable: an acknowledged
/// change waits for its record and, the journal being ordered, for every
/// one before it (device outcomes are journaled without waiting, so a
/// crash could otherwise lose one and resend its push).
async fn barrier(d: &Daemon) {
    d.ok("PUT", "/v1/customers/barrier", json!({"attributes": {}}))
        .await;
}

/// Polls until `done` holds (bounded: 20 s).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "not reached: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_send_is_answered_again_after_a_sigkill_and_never_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = start(&data, &fakes);
    d.customer(
        "c1",
        json!({"first_name": "Ada"}),
        &[(&ios_token(1), "ios")],
    )
    .await;
    d.customer(
        "c2",
        json!({"first_name": "Bo"}),
        &[(&android_token(2), "android")],
    )
    .await;
    d.message("order", "orders", "Hi {{customer.first_name}}")
        .await;
    let body =
        r#"{"message_id": "order", "customer_ids": ["c1", "c2"], "data": {"n": 17, "m": 1}}"#;
    let first = post_send(&d, Some("order-17"), body).await;
    assert_eq!(
        (first.status, first.replayed),
        (202, false),
        "{}",
        first.body
    );
    let ids = delivery_ids(&first);
    for id in &ids {
        assert_eq!(d.settled(id).await["status"], "sent");
    }
    barrier(&d).await;
    d.kill();

    let d = start(&data, &fakes);
    // The same call, its JSON written otherwise: the first answer, replayed.
    let again = r#"{"data":{"m":1,"n":17},"customer_ids":["c1","c2"],"message_id":"order"}"#;
    let replay = post_send(&d, Some("order-17"), again).await;
    assert_eq!((replay.status, replay.replayed), (202, true));
    assert_eq!(replay.body, first.body);
    // The key with another body changes nothing.
    let other = r#"{"message_id": "order", "customer_ids": ["c1"]}"#;
    let conflict = post_send(&d, Some("order-17"), other).await;
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    assert_eq!(conflict.body["error"]["code"], "idempotency_conflict");
    assert_eq!(logged(&d, "order").await.len(), 2);
    // Each phone got its push once, from the first call.
    for (fake, token, id) in [
        (&fakes.apns as &dyn Fake, ios_token(1), &ids[0]),
        (&fakes.fcm as &dyn Fake, android_token(2), &ids[1]),
    ] {
        let pushes = fake.pushes(&token);
        assert_eq!(pushes.len(), 1, "{token}: {pushes:?}");
        assert_eq!(pushes[0].delivery_id.as_deref(), Some(id.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_calls_with_one_key_at_once_send_once_and_answer_alike() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = start(&dir.path().join("data"), &fakes);
    for i in 1..=3 {
        d.customer(&format!("c{i}"), json!({}), &[(&ios_token(i), "ios")])
            .await;
    }
    d.message("news", "news", "News").await;
    let body = r#"{"message_id": "news", "customer_ids": ["c1", "c2", "c3"]}"#;
    let (a, b) = tokio::join!(
        post_send(&d, Some("news-1"), body),
        post_send(&d, Some("news-1"), body)
    );
    assert_eq!((a.status, b.status), (202, 202));
    assert_eq!(a.body, b.body, "one answer for both");
    assert!(a.replayed != b.replayed, "one of them is the replay");
    for id in delivery_ids(&a) {
        d.settled(&id).await;
    }
    assert_eq!(logged(&d, "news").await.len(), 3);
    for i in 1..=3 {
        assert_eq!(fakes.apns.pushes(&ios_token(i)).len(), 1);
    }
    // Without a key every call sends.
    let plain = post_send(&d, None, body).await;
    assert_eq!((plain.status, plain.replayed), (202, false));
    assert_eq!(logged(&d, "news").await.len(), 6);
    // A key must be visible ASCII of 1 to 256 bytes.
    let long = "k".repeat(257);
    for key in [long.as_str(), "with space"] {
        let bad = post_send(&d, Some(key), body).await;
        assert_eq!(bad.status, 400, "{key}: {}", bad.body);
        assert_eq!(bad.body["error"]["code"], "invalid_field");
        assert!(
            bad.body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Idempotency-Key"),
            "{}",
            bad.body
        );
    }
    // Delivery ids are pushd's to make, not a client's to choose.
    let chosen = r#"{"message_id": "news", "customer_ids": ["c1"], "delivery_ids": ["x"]}"#;
    for key in [None, Some("chosen-ids")] {
        let bad = post_send(&d, key, chosen).await;
        assert_eq!(bad.status, 400, "{}", bad.body);
        assert_eq!(bad.body["error"]["code"], "invalid_field");
    }
    assert_eq!(
        logged(&d, "news").await.len(),
        6,
        "a refused call sends nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_message_sends_a_turn_at_a_time_and_the_rest_wait_through_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = start(&data, &fakes);
    let tokens: Vec<String> = (1..=3).map(ios_token).collect();
    for (i, token) in tokens.iter().enumerate() {
        d.customer(&format!("c{i}"), json!({}), &[(token, "ios")])
            .await;
    }
    let (status, v) = d
        .call(
            "PUT",
            "/v1/messages/drip",
            Some(json!({"title": "Hi", "body": "b", "rate_per_minute": 0})),
        )
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_field"))
    );
    assert_eq!(
        v["error"]["message"],
        "rate_per_minute must be 1 to 1000000 device sends a minute, not 0; leave it out to \
         send unpaced"
    );
    // One device send a minute, across both calls.
    d.ok(
        "PUT",
        "/v1/messages/drip",
        json!({"title": "Hi", "body": "b", "rate_per_minute": 1}),
    )
    .await;
    let mut ids = d.send("drip", &["c0", "c1"]).await;
    ids.extend(d.send("drip", &["c2"]).await);
    until("one push", || fakes.apns.accepted() == 1).await;
    let waiting = check_turns(&d, &fakes, &ids).await;
    assert_eq!(waiting.len(), 2);
    let (_, v) = d
        .call(
            "GET",
            "/v1/deliveries?message_id=drip&status=attempted",
            None,
        )
        .await;
    assert_eq!(v["deliveries"].as_array().unwrap().len(), 2, "{v}");
    barrier(&d).await;
    d.kill();

    // After the restart the waiting sends resume, paced afresh: one at
    // once, the other a minute later.
    let d = start(&data, &fakes);
    until("a second push", || fakes.apns.accepted() == 2).await;
    let still = check_turns(&d, &fakes, &waiting).await;
    assert_eq!(still.len(), 1, "the third waits for its turn");
    assert_eq!(fakes.apns.accepted(), 2);
    for token in &tokens {
        assert!(fakes.apns.pushes(token).len() <= 1, "{token} sent twice");
    }
}

/// A transactional message's push goes out while a campaign holds every
/// provider stream it may take; a later campaign send waits its turn. The
/// lane is part of the message, and a lane pushd does not know is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_push_goes_out_while_a_campaign_fills_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    // 4 streams to APNs, one of them kept for transactional sends.
    let mut env = fakes.env();
    env.extend([
        ("PUSHD_PROVIDER_CONNECTIONS", "1".to_string()),
        ("PUSHD_PROVIDER_STREAMS", "4".to_string()),
        ("PUSHD_TRANSACTIONAL_SHARE", "0.25".to_string()),
    ]);
    let d = Daemon::start(&dir.path().join("data"), &env);
    let (status, v) = d
        .call(
            "PUT",
            "/v1/messages/reset",
            Some(json!({"title": "Reset", "body": "b", "lane": "urgent"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("lane"),
        "{v}"
    );
    let (status, _) = d.call("GET", "/v1/messages/reset", None).await;
    assert_eq!(status, 404, "a refused message is not stored");
    d.ok(
        "PUT",
        "/v1/messages/reset",
        json!({"title": "Reset", "body": "b", "lane": "transactional"}),
    )
    .await;
    d.ok(
        "PUT",
        "/v1/messages/news",
        json!({"title": "News", "body": "b"}),
    )
    .await;
    let (_, v) = d.call("GET", "/v1/messages/news", None).await;
    assert_eq!(v["lane"], "campaign", "the default lane: {v}");
    let (_, v) = d.call("GET", "/v1/messages/reset", None).await;
    assert_eq!(v["lane"], "transactional", "{v}");
    let (_, v) = d.call("GET", "/v1/messages", None).await;
    let lanes: Vec<(&str, &str)> = (v["messages"].as_array().unwrap().iter())
        .map(|m| {
            (
                m["message_id"].as_str().unwrap(),
                m["lane"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        lanes,
        [("news", "campaign"), ("reset", "transactional")],
        "{v}"
    );

    // The campaign: 3 pushes the provider never answers fill the 3
    // streams campaigns may take; the fourth waits.
    let campaign: Vec<String> = (0..4).map(|n| format!("c{n}")).collect();
    for (n, customer) in campaign.iter().enumerate() {
        let token = ios_token(n);
        fakes.apns.script(
            &token,
            pushd::sim::Behavior::Delay(Duration::from_secs(3600)),
        );
        d.customer(customer, json!({}), &[(&token, "ios")]).await;
    }
    let names: Vec<&str> = campaign.iter().map(String::as_str).collect();
    let news = d.send("news", &names).await;
    until("3 campaign pushes at the provider", || {
        fakes.apns.requests() == 3
    })
    .await;

    d.customer("ada", json!({}), &[(&ios_token(9), "ios")])
        .await;
    let reset = d.send("reset", &["ada"]).await;
    assert_eq!(d.settled(&reset[0]).await["status"], "sent");
    assert_eq!(fakes.apns.pushes(&ios_token(9)).len(), 1);
    assert_eq!(
        fakes.apns.requests(),
        4,
        "the fourth campaign push still waits"
    );
    for id in &news {
        let (_, v) = d.call("GET", &format!("/v1/deliveries/{id}"), None).await;
        assert_eq!(v["status"], "attempted", "{v}");
    }
    let called: u32 = (0..4).map(|n| fakes.apns.calls(&ios_token(n))).sum();
    assert_eq!(called, 3, "one campaign push waits for a stream");
}

/// Checks that the deliveries whose device the fake APNs received a push
/// for end `sent` and the others wait `attempted`, untried (their turn is
/// a minute away); answers the waiting ones.
async fn check_turns(d: &Daemon, fakes: &FakeProviders, ids: &[String]) -> Vec<String> {
    let mut waiting = Vec::new();
    for id in ids {
        let (_, v) = d.call("GET", &format!("/v1/deliveries/{id}"), None).await;
        let token = v["devices"][0]["token"].as_str().unwrap();
        if fakes.apns.pushes(token).is_empty() {
            assert_eq!(
                (v["status"].as_str(), v["devices"][0]["status"].as_str()),
                (Some("attempted"), Some("attempted")),
                "{v}"
            );
            assert_eq!(v["devices"][0]["attempts"], 0, "{v}");
            waiting.push(id.clone());
        } else {
            assert_eq!(d.settled(id).await["status"], "sent");
        }
    }
    waiting
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_in_devices_get_their_own_delivered_rate() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = start(&dir.path().join("data"), &fakes);
    // Three iOS users: allowed notifications, refused, did not say; one
    // Android user who allowed them.
    let devices = [
        ("c1", ios_token(1), "ios", Some(true)),
        ("c2", ios_token(2), "ios", Some(false)),
        ("c3", ios_token(3), "ios", None),
        ("c4", android_token(4), "android", Some(true)),
    ];
    for (customer, token, platform, opted_in) in &devices {
        d.ok(
            "PUT",
            &format!("/v1/customers/{customer}"),
            json!({"attributes": {}}),
        )
        .await;
        let mut device = json!({"id": token, "platform": platform});
        if let Some(opted_in) = opted_in {
            device["opted_in"] = json!(opted_in);
        }
        d.ok(
            "PUT",
            &format!("/v1/customers/{customer}/devices"),
            json!({"device": device}),
        )
        .await;
    }
    let (status, v) = d
        .call(
            "PUT",
            "/v1/customers/c1/devices",
            Some(json!({"device": {"id": ios_token(1), "platform": "ios", "opted_in": "yes"}})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("device.opted_in"),
        "{v}"
    );
    let (_, c1) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!(c1["devices"][0]["opted_in"], true);

    d.message("promo", "spring", "Hi").await;
    let ids = d.send("promo", &["c1", "c2", "c3", "c4"]).await;
    for (id, (_, token, _, opted_in)) in ids.iter().zip(&devices) {
        let v = d.settled(id).await;
        assert_eq!(v["devices"][0]["opted_in"], json!(opted_in), "{v}");
        let fake: &dyn Fake = if token.starts_with("fcm") {
            &fakes.fcm
        } else {
            &fakes.apns
        };
        assert_eq!(fake.pushes(token).len(), 1, "{token} got its push");
    }
    // iOS reports delivered only where the user allowed notifications.
    for (id, token) in [(&ids[0], ios_token(1)), (&ids[3], android_token(4))] {
        let report = json!({"delivery_id": id, "event": "delivered", "device_id": token});
        let (status, v) = d
            .call_as(SDK_KEY, "POST", "/push/events", Some(report))
            .await;
        assert_eq!(status, 200, "{v}");
    }
    // The opt-in a delivery counts under is the one it was sent with.
    d.ok(
        "PUT",
        "/v1/customers/c2/devices",
        json!({"device": {"id": ios_token(2), "platform": "ios", "opted_in": true}}),
    )
    .await;
    let (_, m) = d.call("GET", "/v1/messages/promo/metrics", None).await;
    let ios = &m["by_platform"]["ios"];
    assert_eq!(
        (ios["sent"].as_i64(), ios["delivered"].as_i64()),
        (Some(3), Some(1)),
        "{m}"
    );
    assert_eq!(
        (
            ios["opted_in_sent"].as_i64(),
            ios["opted_in_delivered"].as_i64()
        ),
        (Some(1), Some(1)),
        "{m}"
    );
    assert_eq!(ios["rates"]["delivered"], 0.3333);
    assert_eq!(ios["rates"]["delivered_of_opted_in"], 1.0);
    let android = &m["by_platform"]["android"];
    assert_eq!(android["opted_in_sent"], 1);
    assert_eq!(android["rates"]["delivered_of_opted_in"], 1.0);
    // People: c1 and c4 were sent to on an opted-in device, both delivered.
    assert_eq!(
        (m["opted_in_sent"].as_i64(), m["sent"].as_i64()),
        (Some(2), Some(4))
    );
    assert_eq!(m["rates"]["delivered_of_opted_in"], 1.0);
}
