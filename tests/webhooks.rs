//! Webhooks and the event feed, black-box: the real daemon against fake
//! providers and a webhook receiver on loopback. Signatures, every event
//! kind, retries after 500s and time-outs, dedup by `event_id`, a dead
//! receiver that slows nothing else, nothing lost across a SIGKILL, a
//! feed that pages correctly while events are written; and what makes
//! webhooks safe to expose: answers read to 64 KiB, redirects never
//! followed, private targets refused (at `PUT` and on connecting), URL
//! passwords never shown.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use pushd::sim::{Answer, Behavior, Fake, Fault, FaultMix, Post, WebhookReceiver};
use ring::hmac;
use serde_json::{Value, json};
use support::{Daemon, SDK_KEY, android_token, fakes, fast_webhook_env, ios_token};
use tokio::sync::mpsc::UnboundedReceiver;

const SECRET: &str = "whsec_test_secret";

async fn webhook(d: &Daemon, id: &str, url: &str, events: Option<&[&str]>) -> Value {
    let mut body = json!({"url": url, "secret": SECRET});
    if let Some(events) = events {
        body["events"] = json!(events);
    }
    d.ok("PUT", &format!("/v1/webhooks/{id}"), body).await
}

/// The next post, or a failure after a generous bound.
async fn next(posts: &mut UnboundedReceiver<Post>) -> Post {
    tokio::time::timeout(Duration::from_secs(20), posts.recv())
        .await
        .expect("a webhook post within 20 s")
        .expect("the receiver runs")
}

/// Checks `Pushd-Signature: t=<secs>,v1=<hex HMAC-SHA256("<t>.<body>")>`
/// with the secret, as a receiver does.
fn assert_signed(post: &Post) {
    let header = post.signature.as_deref().expect("a Pushd-Signature header");
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature shape: {header}"));
    let t: i64 = t.parse().expect("t is Unix seconds");
    assert!(t > 1_700_000_000, "t is now-ish: {t}");
    let tag: Vec<u8> = (0..v1.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&v1[i..i + 2], 16).expect("hex"))
        .collect();
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&post.body);
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    hmac::verify(&key, &signed, &tag).expect("the signature verifies with the secret");
}

/// Every line of the feed from `after` on, following the next cursor.
async fn feed(d: &Daemon, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let (lines, next) = feed_page(d, &after, limit).await;
        if lines.is_empty() {
            return all;
        }
        all.extend(lines);
        after = next;
    }
}

/// One page of the feed: its events and the next cursor.
async fn feed_page(d: &Daemon, after: &str, limit: usize) -> (Vec<Value>, String) {
    let resp = d
        .client
        .get(d.url(&format!("/v1/events?after={after}&limit={limit}")))
        .bearer_auth(support::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let next = resp.headers()["pushd-next-cursor"]
        .to_str()
        .unwrap()
        .to_string();
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is an event"))
        .collect();
    assert!(lines.len() <= limit, "a page holds at most limit events");
    (lines, next)
}

/// Polls webhook `id` until `done` holds (bounded: 20 s).
async fn webhook_until(d: &Daemon, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, v) = d.call("GET", &format!("/v1/webhooks/{id}"), None).await;
        assert_eq!(status, 200, "{v}");
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "webhook {id} stuck: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of a Prometheus series with exactly these labels.
async fn metric(d: &Daemon, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = d.metrics_text().await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_kind_is_posted_signed_and_in_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    fakes
        .apns
        .script(&ios_token(3), Behavior::Fail(Fault::Unregistered));
    let (receiver, mut posts) = WebhookReceiver::recording().await.unwrap();
    let d = Daemon::start(&dir.path().join("data"), &fast_webhook_env(&fakes));
    let created = webhook(&d, "all", &receiver.url(), None).await;
    assert_eq!(created["url"], receiver.url().as_str());
    assert_eq!(
        created["events"],
        json!([
            "sent",
            "delivered",
            "opened",
            "converted",
            "failed",
            "undeliverable",
            "bounced"
        ])
    );
    assert!(
        created.get("secret").is_none(),
        "the secret is never answered"
    );

    d.customer("c1", json!({}), &[(&ios_token(1), "ios")]).await;
    d.customer("c2", json!({}), &[]).await;
    d.customer("c3", json!({}), &[(&ios_token(3), "ios")]).await;
    d.message("promo", "spring", "Hi").await;
    let ids = d.send("promo", &["c1", "c2", "c3", "ghost"]).await;
    let (sent, undeliverable, bounced, failed) = (&ids[0], &ids[1], &ids[2], &ids[3]);
    d.settled(sent).await;
    for event in ["delivered", "opened"] {
        let (status, v) = d
            .call_as(
                SDK_KEY,
                "POST",
                "/push/events",
                Some(json!({"delivery_id": sent, "event": event, "device_id": ios_token(1)})),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = d
        .call(
            "POST",
            "/v1/customers/c1/events",
            Some(json!({"name": "purchase"})),
        )
        .await;
    assert_eq!((status, &v["converted_delivery_id"]), (200, &json!(sent)));

    let expected: BTreeSet<(String, &str)> = [
        (sent, "sent"),
        (sent, "delivered"),
        (sent, "opened"),
        (sent, "converted"),
        (undeliverable, "undeliverable"),
        (bounced, "bounced"),
        (failed, "failed"),
    ]
    .into_iter()
    .map(|(d, e)| (d.clone(), e))
    .collect();
    let mut seen: HashMap<(String, String), Value> = HashMap::new();
    while seen.len() < expected.len() {
        let post = next(&mut posts).await;
        assert_signed(&post);
        let v = post.json();
        let key = (
            v["delivery_id"].as_str().unwrap().to_string(),
            v["event"].as_str().unwrap().to_string(),
        );
        assert!(
            expected.contains(&(key.0.clone(), key.1.as_str())),
            "unexpected event {v}"
        );
        seen.insert(key, v);
    }
    let event = |delivery: &str, e: &str| seen[&(delivery.to_string(), e.to_string())].clone();
    let s = event(sent, "sent");
    assert_eq!(s["customer_id"], "c1");
    assert_eq!(s["message_id"], "promo");
    assert_eq!(s["campaign_id"], "spring");
    assert_eq!(s["platform"], "ios");
    assert_eq!(s["device_id"], ios_token(1).as_str());
    assert!(s["timestamp"].as_i64().unwrap() > 1_700_000_000);
    assert!(s.get("failure_reason").is_none());
    assert_eq!(event(sent, "opened")["device_id"], ios_token(1).as_str());
    assert_eq!(
        event(bounced, "bounced")["device_id"],
        ios_token(3).as_str()
    );
    let u = event(undeliverable, "undeliverable");
    assert_eq!(u["failure_reason"], "no_devices");
    assert!(u.get("device_id").is_none());
    assert_eq!(
        event(failed, "failed")["failure_reason"],
        "customer_not_found"
    );
    assert_eq!(event(failed, "failed")["customer_id"], "ghost");
    let ids: BTreeSet<&str> = seen
        .values()
        .map(|v| v["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), expected.len(), "every event has its own id");

    // The feed answers the same events, oldest first.
    let lines = feed(&d, 3).await;
    let fed: BTreeSet<&str> = lines
        .iter()
        .map(|v| v["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(fed, ids);
    let order: Vec<&str> = lines
        .iter()
        .filter(|v| v["delivery_id"] == sent.as_str())
        .map(|v| v["event"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["sent", "delivered", "opened", "converted"]);
    let delivered = seen.values().filter(|v| v["event"] == "delivered").count();
    assert_eq!(delivered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_posts_are_retried_with_the_same_event_until_a_2xx() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let (receiver, mut posts) = WebhookReceiver::recording().await.unwrap();
    receiver.answer_next([
        Answer::Status(500),
        Answer::Status(503),
        Answer::Silence,
        Answer::Status(204),
    ]);
    let d = Daemon::start(&dir.path().join("data"), &fast_webhook_env(&fakes));
    webhook(&d, "h", &receiver.url(), Some(&["sent"])).await;
    d.customer("c1", json!({}), &[(&android_token(1), "android")])
        .await;
    d.message("promo", "spring", "Hi").await;
    let delivery = d.send("promo", &["c1"]).await.remove(0);

    let mut tries = Vec::new();
    for _ in 0..4 {
        let post = next(&mut posts).await;
        assert_signed(&post);
        tries.push(post);
    }
    let ids: BTreeSet<String> = tries
        .iter()
        .map(|p| p.json()["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "a retry posts the same event; the receiver dedups by event_id"
    );
    assert!(tries.iter().all(|p| p.body == tries[0].body));
    assert_eq!(tries[0].json()["delivery_id"], delivery.as_str());

    let v = webhook_until(&d, "h", |v| v["stats"]["delivered"] == 1).await;
    let stats = &v["stats"];
    assert_eq!(stats["failed_attempts"], 3, "{v}");
    assert_eq!(stats["dropped"], 0);
    assert_eq!(stats["queue_depth"], 0);
    assert!(
        stats["last_error"].as_str().unwrap().contains("no answer"),
        "the time-out was the last failure: {v}"
    );
    assert!(v.get("secret").is_none());
    for (outcome, n) in [("http_error", 2.0), ("timeout", 1.0), ("success", 1.0)] {
        let labels = [("webhook", "h"), ("outcome", outcome)];
        assert_eq!(
            metric(&d, "pushd_webhook_attempts_total", &labels).await,
            n,
            "{outcome}"
        );
    }
    assert!(posts.try_recv().is_err(), "nothing more after the 2xx");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_failing_past_its_retry_window_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let receiver = WebhookReceiver::start().await.unwrap();
    receiver.answer_otherwise(Answer::Status(500));
    let mut env = fast_webhook_env(&fakes);
    env.push(("PUSHD_WEBHOOK_MAX_AGE_SECS", "1".to_string()));
    let d = Daemon::start(&dir.path().join("data"), &env);
    webhook(&d, "h", &receiver.url(), Some(&["undeliverable"])).await;
    d.customer("c1", json!({}), &[]).await;
    d.message("promo", "spring", "Hi").await;
    d.send("promo", &["c1"]).await;
    let v = webhook_until(&d, "h", |v| {
        v["stats"]["dropped"] == 1 && v["stats"]["queue_depth"] == 0
    })
    .await;
    assert_eq!(v["stats"]["delivered"], 0);
    assert!(v["stats"]["failed_attempts"].as_u64().unwrap() >= 1);
    assert_eq!(v["stats"]["last_error"], "HTTP 500");
    assert_eq!(
        metric(&d, "pushd_webhook_dropped_total", &[("webhook", "h")]).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_holds_a_bounded_window_and_slows_no_other_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let dead = WebhookReceiver::start().await.unwrap();
    dead.answer_otherwise(Answer::Silence);
    let (healthy, mut posts) = WebhookReceiver::recording().await.unwrap();
    let mut env = fast_webhook_env(&fakes);
    env.extend([
        ("PUSHD_WEBHOOK_TIMEOUT_MS", "60000".to_string()),
        ("PUSHD_WEBHOOK_IN_FLIGHT", "3".to_string()),
    ]);
    let d = Daemon::start(&dir.path().join("data"), &env);
    webhook(&d, "dead", &dead.url(), None).await;
    webhook(&d, "healthy", &healthy.url(), None).await;
    let customers: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    for (i, c) in customers.iter().enumerate() {
        d.customer(c, json!({}), &[(&android_token(i), "android")])
            .await;
    }
    d.message("promo", "spring", "Hi").await;
    let refs: Vec<&str> = customers.iter().map(String::as_str).collect();
    let deliveries: BTreeSet<String> = d.send("promo", &refs).await.into_iter().collect();
    let mut got = BTreeSet::new();
    while got.len() < deliveries.len() {
        let post = next(&mut posts).await;
        assert!(post.taken());
        got.insert(post.json()["delivery_id"].as_str().unwrap().to_string());
    }
    assert_eq!(got, deliveries, "the healthy webhook got every event");
    let v = webhook_until(&d, "dead", |v| v["stats"]["queue_depth"] == 20).await;
    assert_eq!(v["stats"]["in_flight"], 3, "{v}");
    assert!(dead.posts() <= 3, "no more posts than the in-flight bound");
    webhook_until(&d, "healthy", |v| v["stats"]["queue_depth"] == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_events_survive_a_sigkill_and_arrive_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let (receiver, mut posts) = WebhookReceiver::recording().await.unwrap();
    receiver.answer_next(std::iter::repeat_n(Answer::Status(200), 10));
    receiver.answer_otherwise(Answer::Status(503));
    let env = fast_webhook_env(&fakes);
    let d = Daemon::start(&data, &env);
    webhook(&d, "h", &receiver.url(), Some(&["sent"])).await;
    let customers: Vec<String> = (0..30).map(|i| format!("c{i}")).collect();
    for (i, c) in customers.iter().enumerate() {
        d.customer(c, json!({}), &[(&ios_token(i), "ios")]).await;
    }
    d.message("promo", "spring", "Hi").await;
    let refs: Vec<&str> = customers.iter().map(String::as_str).collect();
    let deliveries = d.send("promo", &refs).await;
    for id in &deliveries {
        d.settled(id).await;
    }
    // Every event is recorded; some were posted, the rest wait.
    let recorded: BTreeSet<String> = loop {
        let lines = feed(&d, 100).await;
        if lines.len() == deliveries.len() {
            break lines
                .iter()
                .map(|v| v["event_id"].as_str().unwrap().to_string())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut got = BTreeSet::new();
    while got.len() < 10 {
        let post = next(&mut posts).await;
        if post.taken() {
            got.insert(post.json()["event_id"].as_str().unwrap().to_string());
        }
    }
    // Kill once the progress of the ten posted events is saved.
    webhook_until(&d, "h", |v| {
        v["stats"]["delivered"] == 10 && v["stats"]["failed_attempts"].as_u64() > Some(0)
    })
    .await;
    let saved = |d: &Daemon| {
        let text = std::fs::read_to_string(d.data_dir.join("webhooks.json")).unwrap_or_default();
        let file: Value = serde_json::from_str(&text).unwrap_or_default();
        file["webhooks"]["h"]["progress"]["cursor"].as_u64()
    };
    webhook_until(&d, "h", |v| {
        v["stats"]["cursor"].as_str().and_then(|c| c.parse().ok()) == saved(&d)
    })
    .await;
    d.kill();

    receiver.answer_otherwise(Answer::Status(200));
    let d = Daemon::start(&data, &env);
    let (status, v) = d.call("GET", "/v1/webhooks/h", None).await;
    assert_eq!(status, 200, "the webhook outlives the crash: {v}");
    while got.len() < recorded.len() {
        let post = next(&mut posts).await;
        assert_signed(&post);
        let id = post.json()["event_id"].as_str().unwrap().to_string();
        assert!(
            recorded.contains(&id),
            "only recorded events are posted: {id}"
        );
        if post.taken() {
            got.insert(id);
        }
    }
    assert_eq!(got, recorded, "no event lost across the SIGKILL");
    let lines = feed(&d, 100).await;
    assert_eq!(
        lines.len(),
        deliveries.len(),
        "the restart recorded no event twice"
    );
    webhook_until(&d, "h", |v| v["stats"]["queue_depth"] == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_a_crash_kept_from_the_log_is_in_the_feed_once_the_api_answers() {
    if !support::strace_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = Daemon::start(&data, &fakes.env());
    d.customer("c0", json!({}), &[(&ios_token(0), "ios")]).await;
    d.message("promo", "spring", "Hi").await;
    // A first delivery's event starts the log's segment file.
    let first = d.send("promo", &["c0"]).await.remove(0);
    assert_eq!(d.settled(&first).await["status"], "sent");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while feed(&d, 100).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no event in the feed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let segment = std::fs::read_dir(data.join("events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "events"))
        .expect("the event log's segment");
    // The writes to it are held, whichever thread makes them (the
    // journal's writer, or the log's own): the next delivery's `sent` is
    // durable in the journal, its event is not in the log when the daemon
    // is killed.
    let (strace, traced) = support::Strace::attach_watching(
        d.pid(),
        &[
            "-P",
            segment.to_str().unwrap(),
            "-e",
            "trace=pwrite64",
            "-e",
            "inject=pwrite64:delay_enter=30000000",
        ],
    );
    let id = d.send("promo", &["c0"]).await.remove(0);
    assert_eq!(d.settled(&id).await["status"], "sent");
    let _traced = support::entered(traced, "pwrite64(").await;
    // Killed while held (a SIGKILL skips the held call), then reaped once
    // strace lets go of it.
    support::signal(d.pid(), "-KILL");
    drop(strace);
    d.kill();

    let d = Daemon::start(&data, &fakes.env());
    let events = feed(&d, 100).await;
    assert!(
        events
            .iter()
            .any(|e| e["delivery_id"] == id.as_str() && e["event"] == "sent"),
        "the replay recorded the event before the API answered: {events:?}"
    );
    assert_eq!(events.len(), 2, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_pages_every_event_once_while_events_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = std::sync::Arc::new(Daemon::start(&dir.path().join("data"), &fakes.env()));
    let customers: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
    for (i, c) in customers.iter().enumerate() {
        d.customer(c, json!({}), &[(&android_token(i), "android")])
            .await;
    }
    d.message("promo", "spring", "Hi").await;
    let writer = {
        let d = d.clone();
        let customers = customers.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for batch in customers.chunks(5) {
                let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
                ids.extend(d.send("promo", &refs).await);
            }
            ids
        })
    };
    // Page while the sends go on, until every delivery's `sent` is read.
    let mut read: Vec<Value> = Vec::new();
    let mut after = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while read.len() < customers.len() {
        assert!(
            Instant::now() < deadline,
            "feed stuck at {} events",
            read.len()
        );
        let (lines, next) = feed_page(&d, &after, 7).await;
        if !lines.is_empty() {
            assert!(next.parse::<u64>().unwrap() > after.parse::<u64>().unwrap_or(0));
        }
        read.extend(lines);
        after = next;
    }
    let sent: BTreeSet<String> = writer.await.unwrap().into_iter().collect();
    let ids: Vec<&str> = read
        .iter()
        .map(|v| v["event_id"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no event twice");
    let delivered: BTreeSet<String> = read
        .iter()
        .map(|v| v["delivery_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(delivered, sent, "every delivery's event, none missing");
    let again: Vec<Value> = feed(&d, 1000).await;
    assert_eq!(
        again, read,
        "a fresh read answers the same events in the same order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_managed_checked_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = Daemon::start(&data, &[]);
    let url = "https://hooks.example.com/pushd";
    for (body, words) in [
        (json!({"url": "ftp://x/y", "secret": "s"}), "url must be"),
        (json!({"url": "not a url", "secret": "s"}), "url must be"),
        (json!({"url": url, "secret": ""}), "secret must be"),
        (json!({"url": url}), "secret"),
        (
            json!({"url": url, "secret": "s", "events": []}),
            "at least one",
        ),
        (
            json!({"url": url, "secret": "s", "events": ["attempted"]}),
            "events[0]",
        ),
        (
            json!({"url": url, "secret": "s", "events": ["sent", "nope"]}),
            "events[1]",
        ),
        (json!({"url": url, "secret": "s", "retries": 3}), "retries"),
    ] {
        let (status, v) = d.call("PUT", "/v1/webhooks/w1", Some(body.clone())).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["code"], "invalid_field", "{v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{body}: {message}");
    }
    let (status, v) = d.call("GET", "/v1/webhooks/w1", None).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (404, &json!("not_found")),
        "bad input changed nothing"
    );
    let (status, _) = d
        .call_as(
            "wrong",
            "PUT",
            "/v1/webhooks/w1",
            Some(json!({"url": url, "secret": "s"})),
        )
        .await;
    assert_eq!(status, 401);

    let first = webhook(&d, "w1", url, Some(&["bounced", "sent"])).await;
    assert_eq!(first["events"], json!(["sent", "bounced"]));
    assert_eq!(first["stats"]["delivered"], 0);
    let text = d
        .client
        .get(d.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in pushd::telemetry::WEBHOOK_SERIES {
        let listed = text
            .lines()
            .any(|l| l.starts_with(series) && l.contains("webhook=\"w1\"") && l.ends_with(" 0"));
        assert!(listed, "{series} of w1 at zero from its creation:\n{text}");
    }
    let replaced = webhook(&d, "w1", "http://127.0.0.1:9/other", Some(&["failed"])).await;
    assert_eq!(replaced["created_at"], first["created_at"]);
    assert_eq!(replaced["url"], "http://127.0.0.1:9/other");
    webhook(&d, "w2", url, None).await;
    let (_, list) = d.call("GET", "/v1/webhooks", None).await;
    let ids: Vec<&str> = list["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["w1", "w2"]);

    assert_eq!(d.terminate(), Some(0));
    let d = Daemon::start(&data, &[]);
    let (status, v) = d.call("GET", "/v1/webhooks/w1", None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["events"], json!(["failed"]));
    assert_eq!(v["url"], "http://127.0.0.1:9/other");
    let (status, _) = d.call("DELETE", "/v1/webhooks/w1", None).await;
    assert_eq!(status, 204);
    let (status, v) = d.call("DELETE", "/v1/webhooks/w1", None).await;
    assert_eq!((status, &v["error"]["code"]), (404, &json!("not_found")));
    let (status, v) = d.call("GET", "/v1/events?after=12x", None).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("invalid_field"))
    );
    let (status, v) = d.call("GET", "/v1/events?after=999999", None).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json!("invalid_field")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_event_and_records_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mix = FaultMix {
        latency: Duration::from_millis(20),
        ..FaultMix::default()
    };
    let fakes = fakes(dir.path(), mix).await;
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut d = Daemon::start(&data, &fakes.env());
    for i in 0..60 {
        d.customer(
            &format!("c{i}"),
            json!({}),
            &[(&android_token(i), "android")],
        )
        .await;
    }
    d.message("promo", "spring", "Hi").await;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    for _ in 0..2 {
        let shared = std::sync::Arc::new(d);
        let load = {
            let (d, acked) = (shared.clone(), acked.clone());
            let first = rand::Rng::gen_range(&mut rng, 0..54);
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for round in 0.. {
                    let ids: Vec<String> = (0..6)
                        .map(|k| format!("c{}", (first + round + k) % 60))
                        .collect();
                    let resp = client
                        .post(d.url("/v1/send/push"))
                        .bearer_auth(support::API_KEY)
                        .json(&json!({"message_id": "promo", "customer_ids": ids}))
                        .send()
                        .await;
                    let Ok(resp) = resp else { return };
                    let Ok(body) = resp.json::<Value>().await else {
                        return;
                    };
                    let Some(list) = body["deliveries"].as_array() else {
                        return;
                    };
                    let mut acked = acked.lock().unwrap();
                    acked.extend(
                        list.iter()
                            .map(|v| v["delivery_id"].as_str().unwrap().to_string()),
                    );
                }
            })
        };
        let moment = Duration::from_millis(rand::Rng::gen_range(&mut rng, 100..400));
        tokio::time::sleep(moment).await;
        support::signal(shared.pid(), "-KILL");
        load.await.unwrap();
        drop(shared);
        d = Daemon::start(&data, &fakes.env());
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 6, "load ran");
    for id in &acked {
        d.settled(id).await;
    }
    // Events of deliveries whose sends resumed after the restart may still
    // be on their way: read until every acknowledged one is there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let lines = feed(&d, 1000).await;
        let sent: BTreeSet<&str> = lines
            .iter()
            .filter_map(|v| v["delivery_id"].as_str())
            .collect();
        if acked.iter().all(|id| sent.contains(id.as_str())) {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "events missing after the restarts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ids: BTreeSet<&str> = lines
        .iter()
        .map(|v| v["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), lines.len(), "no event recorded twice");
    let mut by_delivery: HashMap<&str, Vec<&str>> = HashMap::new();
    for v in &lines {
        by_delivery
            .entry(v["delivery_id"].as_str().unwrap())
            .or_default()
            .push(v["event"].as_str().unwrap());
    }
    for (delivery, events) in &by_delivery {
        assert_eq!(events, &["sent"], "{delivery}");
    }
    println!(
        "{} deliveries acknowledged, {} with events",
        acked.len(),
        by_delivery.len()
    );
}

/// The resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_is_cut_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let (receiver, mut posts) = WebhookReceiver::recording().await.unwrap();
    receiver.answer_otherwise(Answer::Endless(200));
    let mut env = fast_webhook_env(&fakes);
    // Time enough to read gigabytes, were the answer read whole.
    env.push(("PUSHD_WEBHOOK_TIMEOUT_MS", "10000".to_string()));
    let d = Daemon::start(&dir.path().join("data"), &env);
    webhook(&d, "h", &receiver.url(), Some(&["sent"])).await;
    d.customer("c1", json!({}), &[(&android_token(1), "android")])
        .await;
    d.message("promo", "spring", "Hi").await;
    let before = rss_kib(d.pid());
    d.send("promo", &["c1"]).await;
    assert!(next(&mut posts).await.taken());

    let mut most = before;
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        most = most.max(rss_kib(d.pid()));
        let (_, v) = d.call("GET", "/v1/webhooks/h", None).await;
        if v["stats"]["delivered"] == 1 {
            break v;
        }
        assert!(Instant::now() < deadline, "the post never finished: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        v["stats"]["failed_attempts"], 0,
        "a 200 with a long body is taken: {v}"
    );
    assert_eq!(receiver.posts(), 1, "posted once");
    let grown = most.saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "RSS grew {grown} KiB while the receiver streamed an endless answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failed_post_and_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let (elsewhere, _) = WebhookReceiver::recording().await.unwrap();
    let (receiver, mut posts) = WebhookReceiver::recording().await.unwrap();
    receiver.answer_next([
        Answer::Redirect(307, elsewhere.addr()),
        Answer::Redirect(308, elsewhere.addr()),
    ]);
    let d = Daemon::start(&dir.path().join("data"), &fast_webhook_env(&fakes));
    webhook(&d, "h", &receiver.url(), Some(&["sent"])).await;
    d.customer("c1", json!({}), &[(&android_token(1), "android")])
        .await;
    d.message("promo", "spring", "Hi").await;
    d.send("promo", &["c1"]).await;

    let answers: Vec<Answer> = [next(&mut posts).await, next(&mut posts).await]
        .iter()
        .map(|p| p.answer)
        .collect();
    assert!(matches!(
        answers[..],
        [Answer::Redirect(307, _), Answer::Redirect(308, _)]
    ));
    let v = webhook_until(&d, "h", |v| v["stats"]["delivered"] == 1).await;
    assert_eq!(v["stats"]["failed_attempts"], 2, "{v}");
    assert_eq!(v["stats"]["last_error"], "308 redirect not followed", "{v}");
    assert!(
        next(&mut posts).await.taken(),
        "retried like a 5xx, then taken"
    );
    assert_eq!(elsewhere.posts(), 0, "the redirect target got no post");
    let labels = [("webhook", "h"), ("outcome", "http_error")];
    assert_eq!(
        metric(&d, "pushd_webhook_attempts_total", &labels).await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused_in_every_spelling_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let refuse = [("PUSHD_WEBHOOK_ALLOW_PRIVATE_TARGETS", "false".to_string())];
    let d = Daemon::start(&data, &refuse);
    for (url, address) in [
        ("http://127.0.0.1:8080/hook", "127.0.0.1, a loopback"),
        ("http://2130706433/", "127.0.0.1, a loopback"),
        ("http://0177.0.0.1/", "127.0.0.1, a loopback"),
        ("http://0x7f.0.0.1/", "127.0.0.1, a loopback"),
        ("http://127.1/", "127.0.0.1, a loopback"),
        ("http://[::1]/", "::1, a loopback"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1, a loopback"),
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254, a link-local",
        ),
        ("http://[fe80::1]/", "fe80::1, a link-local"),
        ("http://10.0.0.1/", "10.0.0.1, a private"),
        ("http://172.16.5.4/", "172.16.5.4, a private"),
        ("http://192.168.0.1/", "192.168.0.1, a private"),
        ("http://[fd12::1]/", "fd12::1, a private"),
        ("http://100.64.0.1/", "100.64.0.1, a CGNAT"),
        ("http://224.0.0.251/", "224.0.0.251, a multicast"),
        ("http://[ff02::1]/", "ff02::1, a multicast"),
        ("http://0.0.0.0/", "0.0.0.0, an unspecified"),
        ("http://[::]/", "::, an unspecified"),
        ("http://255.255.255.255/", "255.255.255.255, a broadcast"),
        ("http://localhost:8080/", "a loopback"),
    ] {
        let body = json!({"url": url, "secret": SECRET});
        let (status, v) = d.call("PUT", "/v1/webhooks/w", Some(body)).await;
        assert_eq!(
            (status, &v["error"]["code"]),
            (400, &json!("invalid_field")),
            "{url}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("url resolves to "), "{url}: {message}");
        assert!(
            message.contains(&format!("{address} address;")),
            "{url}: {message}"
        );
        assert!(
            message.contains("allow_private_targets = true (PUSHD_WEBHOOK_ALLOW_PRIVATE_TARGETS)"),
            "{message}"
        );
    }
    let (status, _) = d.call("GET", "/v1/webhooks/w", None).await;
    assert_eq!(status, 404, "nothing refused was kept");
    assert_eq!(d.terminate(), Some(0));

    // Allowed, loopback webhooks are taken; then, refused again after a
    // restart, they are checked on connecting and never connected to: an
    // open port and a closed one fail alike.
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let receiver = WebhookReceiver::start().await.unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let named = format!("http://localhost:{}/hook", receiver.addr().port());
    let hooks = [
        ("open", receiver.url()),
        ("closed", format!("http://{closed}/hook")),
        ("named", named),
    ];
    let d = Daemon::start(&data, &fast_webhook_env(&fakes));
    for (id, url) in &hooks {
        webhook(&d, id, url, Some(&["sent"])).await;
    }
    assert_eq!(d.terminate(), Some(0));
    let mut env = fast_webhook_env(&fakes);
    env.extend(refuse.iter().cloned());
    let d = Daemon::start(&data, &env);
    d.customer("c1", json!({}), &[(&android_token(1), "android")])
        .await;
    d.message("promo", "spring", "Hi").await;
    d.send("promo", &["c1"]).await;
    let mut errors = HashMap::new();
    for (id, _) in &hooks {
        let v = webhook_until(&d, id, |v| {
            v["stats"]["failed_attempts"].as_u64() >= Some(2)
        })
        .await;
        assert_eq!(v["stats"]["delivered"], 0, "{v}");
        errors.insert(*id, v["stats"]["last_error"].as_str().unwrap().to_string());
    }
    assert!(
        errors["open"].starts_with(
            "url resolves to 127.0.0.1, a loopback address; set [webhooks] allow_private_targets"
        ),
        "{errors:?}"
    );
    assert_eq!(
        errors["open"], errors["closed"],
        "an open port looks like a closed one"
    );
    assert!(
        errors["named"].contains("a loopback address;"),
        "{errors:?}"
    );
    assert_eq!(
        receiver.posts(),
        0,
        "a refused target is never connected to"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_password_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = Daemon::start(&data, &[]);
    let url = "https://user:s3cret@hooks.example.com/pushd?x=1";
    let shown = "https://user:***@hooks.example.com/pushd?x=1";
    let put = webhook(&d, "w", url, None).await;
    let (_, got) = d.call("GET", "/v1/webhooks/w", None).await;
    let (_, list) = d.call("GET", "/v1/webhooks", None).await;
    assert_eq!(put["url"], shown);
    assert_eq!(got["url"], shown);
    assert_eq!(list["webhooks"][0]["url"], shown);
    for v in [&put, &got, &list] {
        assert!(!v.to_string().contains("s3cret"), "{v}");
    }
    let plain = webhook(&d, "p", "https://user@hooks.example.com/pushd", None).await;
    assert_eq!(
        plain["url"], "https://user@hooks.example.com/pushd",
        "no password, as it is"
    );
    assert_eq!(d.terminate(), Some(0));
    let saved = pushd::webhooks::book::load(&pushd::webhooks::book::path(&data)).unwrap();
    assert_eq!(
        saved["w"].definition.url, url,
        "the stored URL keeps its password"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_posts_for_a_checked_target() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let proxy = WebhookReceiver::start().await.unwrap();
    let mut env = fast_webhook_env(&fakes);
    env.extend([
        ("PUSHD_WEBHOOK_ALLOW_PRIVATE_TARGETS", "false".to_string()),
        // HTTPS only: the fake providers are plain http:// and go direct.
        ("HTTPS_PROXY", format!("http://{}", proxy.addr())),
        ("https_proxy", format!("http://{}", proxy.addr())),
    ]);
    let d = Daemon::start(&dir.path().join("data"), &env);
    // TEST-NET-3 (RFC 5737): public as far as the check goes, reaches no one.
    webhook(&d, "h", "https://203.0.113.7/hook", Some(&["sent"])).await;
    d.customer("c1", json!({}), &[(&android_token(1), "android")])
        .await;
    d.message("promo", "spring", "Hi").await;
    d.send("promo", &["c1"]).await;
    let v = webhook_until(&d, "h", |v| {
        v["stats"]["failed_attempts"].as_u64() >= Some(2)
    })
    .await;
    assert_eq!(v["stats"]["delivered"], 0, "{v}");
    assert_eq!(
        proxy.posts(),
        0,
        "a proxy on loopback would bypass the check"
    );
}
