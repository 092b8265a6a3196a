//! Crash safety: SIGKILL the daemon at random moments under concurrent
//! sends and reports, restart it on the same data dir, and check that
//! nothing acknowledged was lost and the counters equal a recount.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pushd::sim::FaultMix;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::{Daemon, SDK_KEY, android_token, fakes, ios_token, recount};

const CUSTOMERS: usize = 120;
const KILLS: usize = 3;

/// What the daemon acknowledged: deliveries (202) and reports (200).
#[derive(Default)]
struct Acked {
    deliveries: Vec<(String, usize)>,
    reports: Vec<(String, String)>,
}

/// Sends and reports concurrently until the daemon dies or `stop` fires.
async fn load(d: Arc<Daemon>, acked: Arc<Mutex<Acked>>, seed: u64) {
    let client = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    loop {
        let first = rng.gen_range(0..CUSTOMERS - 8);
        let ids: Vec<String> = (first..first + 8).map(|i| format!("c{i}")).collect();
        let resp = client
            .post(d.url("/v1/send/push"))
            .bearer_auth(support::API_KEY)
            .json(&json!({"message_id": "promo", "customer_ids": ids}))
            .send()
            .await;
        let Ok(resp) = resp else { return };
        if resp.status() != 202 {
            return;
        }
        let Ok(body) = resp.json::<Value>().await else {
            return;
        };
        let created: Vec<(String, usize)> = body["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(k, v)| (v["delivery_id"].as_str().unwrap().to_string(), first + k))
            .collect();
        acked.lock().unwrap().deliveries.extend(created.clone());
        for (delivery, i) in created.into_iter().take(3) {
            let report = json!({"delivery_id": delivery, "event": "delivered",
                "device_id": android_token(i), "timestamp": 1_764_100_100});
            let resp = client
                .post(d.url("/push/events"))
                .bearer_auth(SDK_KEY)
                .json(&report)
                .send()
                .await;
            match resp {
                Ok(r) if r.status() == 200 => acked
                    .lock()
                    .unwrap()
                    .reports
                    .push((delivery, android_token(i))),
                Ok(r) => panic!("report refused: {}", r.status()),
                Err(_) => return,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seed = support::seed("crash test");
    let mix = FaultMix {
        latency: Duration::from_millis(20),
        seed,
        ..FaultMix::default()
    };
    let fakes = fakes(dir.path(), mix).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let d = Daemon::start(&data, &fakes.env());
    for i in 0..CUSTOMERS {
        let devices = [(ios_token(i), "ios"), (android_token(i), "android")];
        let devices: Vec<(&str, &str)> = devices.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        d.customer(
            &format!("c{i}"),
            json!({"first_name": format!("N{i}")}),
            &devices,
        )
        .await;
    }
    d.message("promo", "spring", "Hi {{customer.first_name}}")
        .await;

    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut daemon = d;
    for round in 0..KILLS {
        let d = Arc::new(daemon);
        let workers: Vec<_> = (0..4)
            .map(|w| {
                tokio::spawn(load(
                    d.clone(),
                    acked.clone(),
                    seed ^ (round * 4 + w) as u64,
                ))
            })
            .collect();
        let moment = Duration::from_millis(rng.gen_range(150..600));
        tokio::time::sleep(moment).await;
        println!("round {round}: SIGKILL after {moment:?}");
        // By pid: the Daemon is shared with the load tasks.
        support::signal(d.pid(), "-KILL");
        for w in workers {
            w.await.unwrap();
        }
        drop(d);
        daemon = Daemon::start(&data, &fakes.env());
    }
    let d = daemon;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.deliveries.len() >= 8,
        "load ran: {}",
        acked.deliveries.len()
    );

    let mut details = Vec::new();
    for (id, _) in &acked.deliveries {
        let v = d.settled(id).await;
        assert!(
            matches!(
                v["status"].as_str(),
                Some("sent" | "delivered" | "failed" | "bounced")
            ),
            "{v}"
        );
        details.push(v);
    }
    for (delivery, token) in &acked.reports {
        let (_, v) = d
            .call("GET", &format!("/v1/deliveries/{delivery}"), None)
            .await;
        let device = v["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["token"] == token.as_str())
            .unwrap();
        assert!(
            !device["delivered_at"].is_null(),
            "acknowledged report lost: {v}"
        );
    }
    // Every delivery in the log (acknowledged or not) counts; the counters
    // must equal a recount of them all.
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = d
            .call(
                "GET",
                &format!("/v1/deliveries?message_id=promo&limit=500{cursor}"),
                None,
            )
            .await;
        for s in page["deliveries"].as_array().unwrap() {
            let id = s["delivery_id"].as_str().unwrap();
            all.push(d.settled(id).await);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert!(all.len() >= acked.deliveries.len());
    let (_, metrics) = d.call("GET", "/v1/messages/promo/metrics", None).await;
    for (key, n) in recount(&all) {
        assert_eq!(metrics[key], n, "{key}: {metrics}");
    }
    let duplicates: u64 = all
        .iter()
        .flat_map(|v| v["devices"].as_array().unwrap().clone())
        .map(|x| x["duplicates"].as_u64().unwrap_or(0))
        .sum();
    println!(
        "crash test: {} deliveries acknowledged, {} reports acknowledged, {} in the log, {} resent after restarts",
        acked.deliveries.len(),
        acked.reports.len(),
        all.len(),
        duplicates
    );
}

const SCHEDULED: usize = 10_000;

/// 10,000 scheduled deliveries pending when the daemon is SIGKILLed: after
/// the restart each goes out exactly once (one push per device at the fake
/// provider, no duplicate), none before its time, and the late ones say
/// how late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_deliveries_pending_at_a_sigkill_each_go_out_once_not_before_their_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = Daemon::start(&data, &fakes.env());
    d.ok(
        "PUT",
        "/v1/messages/later",
        json!({"name": "Later", "title": "Hi", "body": "b"}),
    )
    .await;
    let ids: Vec<String> = (0..SCHEDULED).map(|i| format!("s{i}")).collect();
    for chunk in ids.chunks(1000) {
        let customers: Vec<Value> = (chunk.iter())
            .map(|id| {
                let n: usize = id[1..].parse().unwrap();
                json!({"id": id, "devices": [{"id": android_token(n), "platform": "android"}]})
            })
            .collect();
        let v = d
            .ok("POST", "/v1/batch", json!({"customers": customers}))
            .await;
        assert_eq!(v["imported"], chunk.len(), "{v}");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let due = now + 15;
    let at = jiff::Timestamp::from_second(due).unwrap().to_string();
    let body = json!({"message_id": "later", "customer_ids": ids, "schedule": {"at": at}});
    let sent = d.ok("POST", "/v1/send/push", body).await;
    assert_eq!(sent["deliveries"].as_array().unwrap().len(), SCHEDULED);
    assert_eq!(fakes.requests(), 0, "nothing goes out before its time");
    d.kill();

    let d = Daemon::start(&data, &fakes.env());
    let m = d
        .metrics_until("later", |m| m["scheduled"] == 0 && m["attempted"] == 0)
        .await;
    assert_eq!(
        (m["sends"].as_u64(), m["sent"].as_u64()),
        (Some(10_000), Some(10_000)),
        "{m}"
    );
    assert_eq!(fakes.requests(), SCHEDULED, "one push each");
    let mut cursor: Option<String> = None;
    let mut seen = 0;
    loop {
        let mut path = "/v1/deliveries?message_id=later&limit=1000".to_string();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (_, page) = d.call("GET", &path, None).await;
        for delivery in page["deliveries"].as_array().unwrap() {
            assert_eq!(delivery["scheduled_for"], due, "{delivery}");
            let attempted = delivery["attempted_at"].as_i64().unwrap();
            assert!(attempted >= due, "sent before its time: {delivery}");
            let late = delivery["late_seconds"].as_i64().unwrap();
            assert!(late >= 0 && attempted - due <= late + 1, "{delivery}");
            seen += 1;
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, SCHEDULED);
}
