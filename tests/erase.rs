//! Erasing a person, black-box: `DELETE /v1/customers/{id}?erase=true` on
//! the real daemon with fake providers and a webhook receiver. The customer,
//! its deliveries (every status, reports, a conversion) and its events go
//! from every read, the webhook and, after compaction, the event log's
//! files and the journal's; another customer's deliveries and events stay,
//! with the same cursors; metrics stay; a restart changes none of it, nor
//! does a restore of a backup taken after the erasure.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use pushd::sim::{Answer, Behavior, Fake, Fault, FaultMix, WebhookReceiver};
use serde_json::{Value, json};
use support::{API_KEY, Daemon, SDK_KEY, android_token, fakes, fast_webhook_env, ios_token};

/// The customer erased, and the one kept.
const GONE: &str = "erased-person";
const KEPT: &str = "kept-person";

async fn report(d: &Daemon, delivery: &str, token: &str, event: &str) -> (u16, Value) {
    let body = json!({"delivery_id": delivery, "event": event, "device_id": token});
    d.call_as(SDK_KEY, "POST", "/push/events", Some(body)).await
}

/// The first event of the feed from cursor `after` on, and the cursor
/// after it.
async fn feed_at(d: &Daemon, after: &str) -> Option<(Value, String)> {
    let (page, next) = d.feed_page(after, 1).await;
    page.into_iter().next().map(|event| (event, next))
}

/// Every event of the feed, each with the cursor that read it (one page
/// per event, so every cursor handed out is one of them).
async fn feed(d: &Daemon) -> Vec<(String, Value)> {
    let (mut all, mut after) = (Vec::new(), String::new());
    while let Some((event, next)) = feed_at(d, &after).await {
        all.push((after, event));
        after = next;
    }
    all
}

/// Every delivery of the log with `query`, following the cursors.
async fn log(d: &Daemon, query: &str) -> Vec<Value> {
    let (mut all, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let page = match &cursor {
            Some(c) => format!("/v1/deliveries?limit=2&{query}&cursor={c}"),
            None => format!("/v1/deliveries?limit=2&{query}"),
        };
        let (status, v) = d.call("GET", &page, None).await;
        assert_eq!(status, 200, "{v}");
        all.extend(v["deliveries"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return all,
        }
    }
}

/// What must hold of both customers once one is erased.
struct Expected {
    erased: Vec<String>,
    kept: Vec<String>,
    /// The kept customer's events, each with its cursor.
    kept_events: Vec<(String, Value)>,
    /// Message, campaign and time series answers.
    metrics: Vec<Value>,
}

async fn metrics(d: &Daemon) -> Vec<Value> {
    let mut all = Vec::new();
    for path in [
        "/v1/messages/welcome/metrics",
        "/v1/messages/welcome/timeseries",
        "/v1/messages/broken/metrics",
        "/v1/campaigns/onboarding/metrics",
        "/v1/campaigns/onboarding/timeseries",
    ] {
        all.push(d.ok("GET", path, Value::Null).await);
    }
    all
}

impl Expected {
    async fn check(&self, d: &Daemon, when: &str) {
        let (status, v) = d.call("GET", &format!("/v1/customers/{GONE}"), None).await;
        assert_eq!(status, 404, "{when}: {v}");
        for id in &self.erased {
            let (status, v) = d.call("GET", &format!("/v1/deliveries/{id}"), None).await;
            assert_eq!(status, 404, "{when}: {v}");
            // A report naming it is answered as for an unknown delivery.
            let (status, v) = report(d, id, &ios_token(1), "opened").await;
            assert_eq!((status, &v["error"]["code"]), (404, &json!("not_found")));
        }
        for id in &self.kept {
            let (status, v) = d.call("GET", &format!("/v1/deliveries/{id}"), None).await;
            assert_eq!(status, 200, "{when}: {v}");
        }
        assert!(
            log(d, &format!("customer_id={GONE}")).await.is_empty(),
            "{when}"
        );
        let listed: Vec<Value> = log(d, "").await;
        assert!(
            listed.iter().all(|v| v["customer_id"] == KEPT),
            "{when}: {listed:?}"
        );
        assert_eq!(listed.len(), self.kept.len(), "{when}");
        // The feed: none of the erased customer's events, every one of the
        // kept customer's, each read from the same cursor as before.
        let events: Vec<Value> = feed(d).await.into_iter().map(|(_, e)| e).collect();
        let kept: Vec<Value> = self.kept_events.iter().map(|(_, e)| e.clone()).collect();
        assert_eq!(events, kept, "{when}");
        for (cursor, event) in &self.kept_events {
            let read = feed_at(d, cursor).await.map(|(e, _)| e);
            assert_eq!(read.as_ref(), Some(event), "{when}: cursor {cursor:?}");
        }
        assert_eq!(metrics(d).await, self.metrics, "{when}: metrics stay");
    }
}

/// Whether any file under `dir` holds one of `needles`.
fn files_hold(dir: &Path, needles: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(format!("{} holds {needle}", path.display()));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_person_leaves_every_read_the_feed_and_the_log_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let (receiver, mut posts) = WebhookReceiver::recording().await.unwrap();
    // The receiver refuses every post: every event stays in the webhook's
    // retries until the restart.
    receiver.answer_otherwise(Answer::Status(500));
    let d = Daemon::start(&data, &fast_webhook_env(&fakes));
    let hook = json!({"url": receiver.url(), "secret": "whsec_erase"});
    d.ok("PUT", "/v1/webhooks/all", hook).await;
    d.message("welcome", "onboarding", "Hi {{customer.first_name}}")
        .await;
    let broken = json!({"name": "broken", "campaign_id": "onboarding",
        "title": "Hi {{customer.nickname}}", "body": "b"});
    d.ok("PUT", "/v1/messages/broken", broken).await;
    let (gone_ios, gone_android) = (ios_token(1), android_token(1));
    d.customer(
        GONE,
        json!({"first_name": "Ada"}),
        &[(&gone_ios, "ios"), (&gone_android, "android")],
    )
    .await;
    d.customer(KEPT, json!({"first_name": "Bo"}), &[(&ios_token(2), "ios")])
        .await;

    // The erased customer's deliveries: converted after reports, failed
    // before sending, bounced; the kept one's between them.
    let converted = d.send("welcome", &[GONE]).await.remove(0);
    d.settled(&converted).await;
    let kept_sent = d.send("welcome", &[KEPT]).await.remove(0);
    d.settled(&kept_sent).await;
    for event in ["delivered", "opened"] {
        assert_eq!(report(&d, &converted, &gone_ios, event).await.0, 200);
    }
    assert_eq!(
        report(&d, &kept_sent, &ios_token(2), "delivered").await.0,
        200
    );
    let purchase = Some(json!({"name": "purchase"}));
    let (status, v) = d
        .call("POST", &format!("/v1/customers/{GONE}/events"), purchase)
        .await;
    assert_eq!(
        (status, &v["converted_delivery_id"]),
        (200, &json!(converted))
    );
    let failed = d.send("broken", &[GONE]).await.remove(0);
    assert_eq!(d.settled(&failed).await["status"], "failed");
    fakes
        .apns
        .script(&gone_ios, Behavior::Fail(Fault::Unregistered));
    fakes
        .fcm
        .script(&gone_android, Behavior::Fail(Fault::Unregistered));
    let bounced = d.send("welcome", &[GONE]).await.remove(0);
    assert_eq!(d.settled(&bounced).await["status"], "bounced");
    let kept_failed = d.send("broken", &[KEPT]).await.remove(0);
    assert_eq!(d.settled(&kept_failed).await["status"], "failed");

    let before = feed(&d).await;
    let kept_events: Vec<(String, Value)> = (before.iter())
        .filter(|(_, e)| e["customer_id"] == KEPT)
        .cloned()
        .collect();
    let statuses = |who: &str| {
        let mut seen: Vec<&str> = (before.iter())
            .filter(|(_, e)| e["customer_id"] == who)
            .map(|(_, e)| e["event"].as_str().unwrap())
            .collect();
        seen.sort();
        seen
    };
    assert_eq!(
        statuses(GONE),
        [
            "bounced",
            "converted",
            "delivered",
            "failed",
            "opened",
            "sent"
        ]
    );
    assert_eq!(statuses(KEPT), ["delivered", "failed", "sent"]);
    let expected = Expected {
        erased: vec![converted.clone(), failed.clone(), bounced.clone()],
        kept: vec![kept_sent.clone(), kept_failed.clone()],
        kept_events,
        metrics: metrics(&d).await,
    };

    // Bad input changes nothing.
    for query in ["erase=maybe", "erase=", "erase=true&force=1", "erasee=true"] {
        let path = format!("/v1/customers/{GONE}?{query}");
        let (status, v) = d.call("DELETE", &path, None).await;
        assert_eq!(
            (status, &v["error"]["code"]),
            (400, &json!("invalid_field"))
        );
    }
    let (status, _) = d.call("GET", &format!("/v1/customers/{GONE}"), None).await;
    assert_eq!(status, 200, "still there");
    let (status, _) = d
        .call("DELETE", "/v1/customers/nobody?erase=true", None)
        .await;
    assert_eq!(status, 404);

    let (status, v) = d
        .call("DELETE", &format!("/v1/customers/{GONE}?erase=true"), None)
        .await;
    assert_eq!(status, 204, "{v}");
    expected.check(&d, "erased").await;
    let (status, _) = d
        .call("DELETE", &format!("/v1/customers/{GONE}?erase=true"), None)
        .await;
    assert_eq!(status, 404, "erased already");
    // A backup taken now, perhaps before compaction: restored at the end.
    let archive = dir.path().join("after-erasure.pushd");
    let mut resp = d
        .client
        .get(d.url("/v1/backup"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        bytes.extend_from_slice(&chunk);
    }
    std::fs::write(&archive, bytes).unwrap();

    // Restarted: the same, and the webhook, which retried every event until
    // now, posts the kept customer's and none of the erased one's.
    assert_eq!(d.terminate(), Some(0));
    while posts.try_recv().is_ok() {}
    receiver.answer_otherwise(Answer::Status(200));
    let d = Daemon::start(&data, &fast_webhook_env(&fakes));
    expected.check(&d, "restarted").await;
    let mut posted = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while posted.len() < expected.kept_events.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let post = tokio::time::timeout(left, posts.recv())
            .await
            .expect("the kept customer's events are posted")
            .unwrap();
        let v = post.json();
        assert_eq!(v["customer_id"], KEPT, "posted after the erasure: {v}");
        posted.insert(v["event_id"].as_str().unwrap().to_string(), v);
    }

    // Compaction and the checkpoints leave nothing of the person in the
    // event log's files or the journal's.
    let needles: Vec<String> = [GONE, &gone_ios, &gone_android]
        .into_iter()
        .map(str::to_string)
        .chain(expected.erased.iter().cloned())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut found = files_hold(&data.join("events"), &needles);
        found.extend(files_hold(&data.join("journal"), &needles));
        if found.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still on disk: {found:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!data.join("events/erasures.json").exists());

    // The id is unknown now: a send to it is customer_not_found.
    let again = d.send("welcome", &[GONE]).await.remove(0);
    let v = d.settled(&again).await;
    assert_eq!(
        (&v["status"], &v["failure_reason"]),
        (&json!("failed"), &json!("customer_not_found"))
    );
    assert_eq!(d.terminate(), Some(0));

    // The backup taken after the erasure restores none of the person: not
    // in the store, not in the feed (the same cursors read the kept
    // customer's events), and not in the event log's files once the
    // restored daemon has compacted what the backup's segments still held.
    let restored = dir.path().join("restored");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushd"))
        .arg("restore")
        .arg(&archive)
        .arg("--data-dir")
        .arg(&restored)
        .env_clear()
        .env("RUST_LOG", "warn")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = Daemon::start(&restored, &fast_webhook_env(&fakes));
    let (status, v) = d.call("GET", &format!("/v1/customers/{GONE}"), None).await;
    assert_eq!(status, 404, "restored: {v}");
    for id in &expected.erased {
        let (status, v) = d.call("GET", &format!("/v1/deliveries/{id}"), None).await;
        assert_eq!(status, 404, "restored: {v}");
    }
    let events: Vec<Value> = feed(&d).await.into_iter().map(|(_, e)| e).collect();
    let kept: Vec<Value> = expected
        .kept_events
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(events, kept, "restored");
    for (cursor, event) in &expected.kept_events {
        let read = feed_at(&d, cursor).await.map(|(e, _)| e);
        assert_eq!(read.as_ref(), Some(event), "restored: cursor {cursor:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = files_hold(&restored.join("events"), &needles);
        if found.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restored, still on disk: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!restored.join("events/erasures.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_erase_a_delete_keeps_the_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = Daemon::start(&dir.path().join("data"), &fast_webhook_env(&fakes));
    d.message("welcome", "onboarding", "Hi").await;
    d.customer("c1", json!({}), &[(&ios_token(1), "ios")]).await;
    let sent = d.send("welcome", &["c1"]).await.remove(0);
    d.settled(&sent).await;
    for query in ["", "?erase=false"] {
        let (status, _) = d
            .call("DELETE", &format!("/v1/customers/c1{query}"), None)
            .await;
        assert_eq!(status, if query.is_empty() { 204 } else { 404 });
    }
    let (status, v) = d.call("GET", &format!("/v1/deliveries/{sent}"), None).await;
    assert_eq!((status, &v["customer_id"]), (200, &json!("c1")));
    assert_eq!(log(&d, "customer_id=c1").await.len(), 1);
}
