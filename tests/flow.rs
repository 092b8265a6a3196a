//! Full flows through the real binary and the fake providers over HTTP/2:
//! sends to iOS and Android, device reports, bounces, retries, conversion
//! goals, the delivery log under concurrent inserts, and metrics that equal
//! a recount.

mod support;

use std::collections::HashSet;

use pushd::sim::{Behavior, Fake, Fault, FaultMix};
use serde_json::{Value, json};
use support::{Daemon, SDK_KEY, android_token, fakes, ios_token, recount};

async fn setup() -> (tempfile::TempDir, pushd::sim::FakeProviders, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = Daemon::start(&dir.path().join("data"), &fakes.env());
    d.message("welcome", "onboarding", "Hi {{customer.first_name}}")
        .await;
    (dir, fakes, d)
}

async fn two_device_customer(d: &Daemon, i: usize) -> String {
    let (ios, android) = (ios_token(i), android_token(i));
    let id = format!("c{i}");
    d.customer(
        &id,
        json!({"first_name": format!("N{i}")}),
        &[(&ios, "ios"), (&android, "android")],
    )
    .await;
    id
}

async fn report(d: &Daemon, delivery: &str, token: &str, event: &str, at: i64) {
    let body =
        json!({"delivery_id": delivery, "event": event, "device_id": token, "timestamp": at});
    let (s, v) = d.call_as(SDK_KEY, "POST", "/push/events", Some(body)).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ios_and_android_send_then_reports_move_the_status() {
    let (_dir, fakes, d) = setup().await;
    let id = two_device_customer(&d, 1).await;
    let delivery = d.send("welcome", &[&id]).await.remove(0);
    let v = d.settled(&delivery).await;
    assert_eq!(v["status"], "sent", "{v}");
    assert_eq!(v["devices_attempted"], 2);
    for device in v["devices"].as_array().unwrap() {
        assert_eq!(device["status"], "sent");
        assert_eq!(device["attempts"], 1);
        assert!(
            device["provider_id"]
                .as_str()
                .is_some_and(|p| !p.is_empty()),
            "{device}"
        );
        assert!(device["sent_at"].is_i64());
    }

    // What the providers received: rendered content and the CIO keys.
    let apns = fakes.apns.pushes(&ios_token(1));
    assert_eq!(apns.len(), 1);
    assert_eq!(apns[0].payload["aps"]["alert"]["title"], "Hi N1");
    assert_eq!(apns[0].payload["CIO-Delivery-ID"], delivery.as_str());
    assert_eq!(apns[0].payload["CIO-Delivery-Token"], ios_token(1));
    assert!(!apns[0].headers.contains_key("apns-collapse-id"));
    let fcm = fakes.fcm.pushes(&android_token(1));
    assert_eq!(fcm.len(), 1);
    assert_eq!(
        fcm[0].payload["message"]["data"]["CIO-Delivery-ID"],
        delivery.as_str()
    );
    assert_eq!(fcm[0].payload["message"]["notification"]["title"], "Hi N1");

    // Late reports: delivered from Android, then opened on iOS before its
    // delivered (out of order), then a duplicate.
    let sent_at = v["devices"][0]["sent_at"].as_i64().unwrap();
    report(
        &d,
        &delivery,
        &android_token(1),
        "delivered",
        sent_at + 3600,
    )
    .await;
    let v = d.settled(&delivery).await;
    assert_eq!(v["status"], "delivered");
    report(&d, &delivery, &ios_token(1), "opened", sent_at + 7200).await;
    report(&d, &delivery, &ios_token(1), "delivered", sent_at + 7100).await;
    report(&d, &delivery, &ios_token(1), "opened", sent_at + 7200).await;
    let v = d.settled(&delivery).await;
    assert_eq!(v["status"], "opened");
    let ios = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["platform"] == "ios")
        .unwrap();
    assert_eq!(ios["delivered_at"], sent_at + 7100);
    assert_eq!(ios["opened_at"], sent_at + 7200);

    let m: Value = d
        .ok("GET", "/v1/messages/welcome/metrics", Value::Null)
        .await;
    assert_eq!(
        (m["sends"].as_i64(), m["sent"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (m["delivered"].as_i64(), m["opened"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(m["recipients"], 1);
    assert_eq!(m["rates"]["opened"], 1.0);
    assert_eq!(m["by_platform"]["ios"]["opened"], 1);
    assert_eq!(m["by_platform"]["android"]["delivered"], 1);
    assert_eq!(m["by_platform"]["android"]["opened"], 0);
    let series: Value = d
        .ok("GET", "/v1/messages/welcome/timeseries", Value::Null)
        .await;
    let points = series["points"].as_array().unwrap();
    let delivered: i64 = points
        .iter()
        .map(|p| p["delivered"].as_i64().unwrap())
        .sum();
    assert_eq!(delivered, 1, "{series}");
    let campaign: Value = d
        .ok("GET", "/v1/campaigns/onboarding/timeseries", Value::Null)
        .await;
    assert_eq!(
        campaign, series,
        "one message: the campaign's series is the message's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounces_suppress_and_transient_errors_retry() {
    let (_dir, fakes, d) = setup().await;
    let gone = two_device_customer(&d, 1).await;
    fakes
        .apns
        .script(&ios_token(1), Behavior::Fail(Fault::Unregistered));
    fakes
        .fcm
        .script(&android_token(1), Behavior::Fail(Fault::BadDeviceToken));
    let flaky = two_device_customer(&d, 2).await;
    let busy = Fault::TooManyRequests {
        retry_after_secs: 0,
    };
    fakes
        .apns
        .script(&ios_token(2), Behavior::FailTimes { n: 3, fault: busy });
    fakes.fcm.script(
        &android_token(2),
        Behavior::FailTimes {
            n: 2,
            fault: Fault::Unavailable,
        },
    );
    let ids = d.send("welcome", &[&gone, &flaky]).await;

    let bounced = d.settled(&ids[0]).await;
    assert_eq!(bounced["status"], "bounced", "{bounced}");
    assert_eq!(bounced["devices"][0]["last_error"], "410 Unregistered");
    let flaky_v = d.settled(&ids[1]).await;
    assert_eq!(flaky_v["status"], "sent", "{flaky_v}");
    let attempts: Vec<i64> = flaky_v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["attempts"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, vec![4, 3]);

    // The bounced tokens are suppressed: the next send skips them.
    let (_, c) = d.call("GET", &format!("/v1/customers/{gone}"), None).await;
    assert!(
        c["devices"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["suppressed"] == true),
        "{c}"
    );
    let next = d.send("welcome", &[&gone]).await.remove(0);
    let v = d.settled(&next).await;
    assert_eq!(v["status"], "undeliverable");
    assert_eq!(v["failure_reason"], "devices_suppressed");
    assert_eq!(
        fakes.apns.pushes(&ios_token(1)).len(),
        0,
        "bounced pushes are not accepted"
    );
    let m: Value = d
        .ok("GET", "/v1/messages/welcome/metrics", Value::Null)
        .await;
    assert_eq!(
        (
            m["sends"].as_i64(),
            m["bounced"].as_i64(),
            m["suppressed"].as_i64()
        ),
        (Some(3), Some(1), Some(1))
    );
    assert_eq!(m["recipients"], 1);
    assert_eq!(m["by_platform"]["ios"]["suppressed"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversion_goal_attribution() {
    let (_dir, _fakes, d) = setup().await;
    let id = two_device_customer(&d, 1).await;
    let older = d.send("welcome", &[&id]).await.remove(0);
    let older_v = d.settled(&older).await;
    let nearer = d.send("welcome", &[&id]).await.remove(0);
    let nearer_v = d.settled(&nearer).await;
    assert!(nearer_v["created_at"].as_i64() >= older_v["created_at"].as_i64());
    let at = nearer_v["created_at"].as_i64().unwrap() + 60;
    let event =
        |name: &str, at: i64| json!({"name": name, "data": {"amount": 42}, "timestamp": at});

    let (s, v) = d
        .call(
            "POST",
            &format!("/v1/customers/{id}/events"),
            Some(event("signup", at)),
        )
        .await;
    assert_eq!(
        (s, &v["converted_delivery_id"]),
        (200, &Value::Null),
        "another goal"
    );
    let (_, v) = d
        .call(
            "POST",
            &format!("/v1/customers/{id}/events"),
            Some(event("purchase", at)),
        )
        .await;
    assert_eq!(
        v["converted_delivery_id"],
        nearer.as_str(),
        "the nearer delivery converts"
    );
    let (_, v) = d
        .call(
            "POST",
            &format!("/v1/customers/{id}/events"),
            Some(event("purchase", at + 5)),
        )
        .await;
    assert_eq!(v["converted_delivery_id"], Value::Null, "no double count");
    assert_eq!(d.settled(&older).await["status"], "sent");
    let conv = d.settled(&nearer).await;
    assert_eq!(conv["status"], "converted");
    assert_eq!(conv["converted_at"], at);

    // Outside the window: nothing converts. (A day-long window cannot be
    // overrun by an event dated now; this message's window is a minute.)
    let brief = json!({"title": "Hi", "body": "Quick", "campaign_id": "onboarding",
        "conversion": {"event": "purchase", "window_seconds": 60}});
    d.ok("PUT", "/v1/messages/brief", brief).await;
    let other = two_device_customer(&d, 2).await;
    let late = d.send("brief", &[&other]).await.remove(0);
    let late_v = d.settled(&late).await;
    let too_late = late_v["devices"][0]["sent_at"].as_i64().unwrap() + 61;
    let (_, v) = d
        .call(
            "POST",
            &format!("/v1/customers/{other}/events"),
            Some(event("purchase", too_late)),
        )
        .await;
    assert_eq!(v["converted_delivery_id"], Value::Null);

    // The app's own converted report converts too, once.
    report(&d, &late, &android_token(2), "converted", too_late).await;
    report(&d, &late, &android_token(2), "converted", too_late).await;
    let m: Value = d
        .ok("GET", "/v1/campaigns/onboarding/metrics", Value::Null)
        .await;
    assert_eq!(m["converted"], 2);
    let (s, _) = d
        .call(
            "POST",
            "/v1/customers/nobody/events",
            Some(event("purchase", at)),
        )
        .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_pages_correctly_while_deliveries_arrive() {
    let (_dir, _fakes, d) = setup().await;
    for i in 0..30 {
        d.customer(&format!("p{i}"), json!({"first_name": "P"}), &[])
            .await;
    }
    let ids: Vec<String> = (0..30).map(|i| format!("p{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let before: HashSet<String> = d.send("welcome", &refs).await.into_iter().collect();

    // Page through with limit 7 while another task keeps sending.
    let d = std::sync::Arc::new(d);
    let writer = {
        let d = d.clone();
        let refs: Vec<String> = ids.clone();
        tokio::spawn(async move {
            for chunk in refs.chunks(5) {
                let c: Vec<&str> = chunk.iter().map(String::as_str).collect();
                d.send("welcome", &c).await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (s, page) = d
            .call(
                "GET",
                &format!("/v1/deliveries?campaign_id=onboarding&limit=7{cursor}"),
                None,
            )
            .await;
        assert_eq!(s, 200);
        for x in page["deliveries"].as_array().unwrap() {
            seen.push(x["delivery_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    writer.await.unwrap();
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates across pages");
    assert!(
        before.is_subset(&unique),
        "every delivery older than the first page is listed"
    );
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_equal_a_recount_after_a_random_workload() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let seed = support::seed("workload");
    let mix = FaultMix {
        unregistered: 0.1,
        transient: 0.1,
        seed,
        ..FaultMix::default()
    };
    let fakes = fakes(dir.path(), mix).await;
    let d = Daemon::start(&dir.path().join("data"), &fakes.env());
    d.message("welcome", "spring", "Hi {{customer.first_name}}")
        .await;
    d.message("other", "spring", "Yo {{customer.nickname}}")
        .await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut customers = Vec::new();
    for i in 0..40 {
        let tokens = [(ios_token(i), "ios"), (android_token(i), "android")];
        let n = rng.gen_range(0..=2);
        let devices: Vec<(&str, &str)> =
            tokens[..n].iter().map(|(t, p)| (t.as_str(), *p)).collect();
        let attrs = if rng.gen_bool(0.8) {
            json!({"first_name": "X"})
        } else {
            json!({})
        };
        d.customer(&format!("r{i}"), attrs, &devices).await;
        customers.push((format!("r{i}"), tokens));
    }
    let mut deliveries = Vec::new();
    for _ in 0..6 {
        let message = if rng.gen_bool(0.7) {
            "welcome"
        } else {
            "other"
        };
        let batch: Vec<&str> = customers
            .iter()
            .filter(|_| rng.gen_bool(0.5))
            .map(|(c, _)| c.as_str())
            .collect();
        if batch.is_empty() {
            continue;
        }
        for (k, id) in d.send(message, &batch).await.into_iter().enumerate() {
            deliveries.push((id, batch[k].to_string()));
        }
    }
    for (id, customer) in &deliveries {
        d.settled(id).await;
        let i: usize = customer[1..].parse().unwrap();
        for token in [ios_token(i), android_token(i)] {
            if rng.gen_bool(0.4) {
                let event = ["delivered", "opened", "converted"][rng.gen_range(0..3)];
                let body = json!({"delivery_id": id, "event": event, "device_id": token});
                d.call_as(SDK_KEY, "POST", "/push/events", Some(body)).await;
            }
        }
    }
    let mut details = Vec::new();
    for (id, _) in &deliveries {
        details.push(d.settled(id).await);
    }
    let m: Value = d
        .ok("GET", "/v1/campaigns/spring/metrics", Value::Null)
        .await;
    for (k, n) in recount(&details) {
        assert_eq!(m[k], n, "{k}: {m}");
    }
    assert_eq!(
        m["recipients"],
        m["sends"].as_i64().unwrap()
            - m["suppressed"].as_i64().unwrap()
            - m["bounced"].as_i64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collapse_id_reaches_both_providers() {
    let (_dir, fakes, d) = setup().await;
    let id = two_device_customer(&d, 1).await;
    let body = json!({"title": "Order {{customer.first_name}}", "body": "shipped",
        "collapse_id": "order-17"});
    d.ok("PUT", "/v1/messages/order", body).await;
    let delivery = d.send("order", &[&id]).await.remove(0);
    assert_eq!(d.settled(&delivery).await["status"], "sent");
    let apns = fakes.apns.pushes(&ios_token(1));
    assert_eq!(apns[0].headers["apns-collapse-id"], "order-17");
    let fcm = fakes.fcm.pushes(&android_token(1));
    assert_eq!(
        fcm[0].payload["message"]["android"]["collapse_key"],
        "order-17"
    );
    let too_long = json!({"title": "t", "body": "b", "collapse_id": "x".repeat(65)});
    let (s, v) = d.call("PUT", "/v1/messages/bad", Some(too_long)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_field"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_after_waits_only_up_to_the_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let mut env = fakes.env();
    env.push(("PUSHD_RETRY_AFTER_MAX_SECS", "0".into()));
    let d = Daemon::start(&dir.path().join("data"), &env);
    d.message("welcome", "onboarding", "Hi {{customer.first_name}}")
        .await;
    let id = two_device_customer(&d, 1).await;
    // An hour's Retry-After: honoured as it is, the send would wait an hour.
    let busy = Fault::TooManyRequests {
        retry_after_secs: 3600,
    };
    fakes
        .apns
        .script(&ios_token(1), Behavior::FailTimes { n: 1, fault: busy });
    fakes
        .fcm
        .script(&android_token(1), Behavior::FailTimes { n: 1, fault: busy });
    let delivery = d.send("welcome", &[&id]).await.remove(0);
    let v = d.settled(&delivery).await;
    assert_eq!(v["status"], "sent", "{v}");
    for device in v["devices"].as_array().unwrap() {
        assert_eq!(device["attempts"], 2, "{device}");
    }
}
