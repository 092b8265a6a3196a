//! Upgrades keep every record: data directories written by older builds
//! are kept under `tests/fixtures/upgrade/<build>/`, each beside what that
//! build served from it (`served.json`). This binary opens them, serves
//! every record as the old one did, sends from them, takes reports on
//! their deliveries, and restarts on them.
//!
//! - `pushd-0.1/`: commit 0955f58, before records had versions (no segment
//!   headers, snapshot format 3).
//! - `segment-format-2/`: the first build with versioned records (segment
//!   headers of format 2 holding version-1 journal records, snapshot
//!   format 4), before journal records gained a version 2.
//! - `segment-format-4/`: the last build before scheduled sends.
//! - `snapshot-format-6/`: commit 2b96ac7, the last whose held deliveries
//!   had every index key (snapshot format 6); one delivery held, one
//!   canceled.
//! - `snapshot-format-7/`: commit b8436f0, the last before messages had a
//!   lane (journal segments of format 5, snapshot format 7); made like
//!   `snapshot-format-6/`.
//! - `snapshot-format-8/`: commit ea7cecc, the last whose `sent`,
//!   `delivered` and `opened` deliveries had a status key each, and with a
//!   customer index (snapshot format 8); made like `snapshot-format-6/`.
//!
//! Each has `stopped/` (stopped with SIGTERM: everything in the snapshot)
//! and `killed/` (SIGKILLed right after its last acknowledged change, so
//! the newest records are only in the journal and are replayed). They are
//! made by the ignored test `make_fixtures` with the old binary (see
//! tests/fixtures/README.md).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pushd::sim::{Behavior, Fake, Fault, FaultMix, WebhookReceiver};
use serde_json::{Value, json};
use support::{Daemon, android_token, fakes, ios_token};

/// Where the fixtures live.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade")
}

/// The keys a daemon generated into its `keys.toml`.
struct Keys {
    api: String,
    sdk: String,
}

fn keys_of(data: &Path) -> Keys {
    let text = std::fs::read_to_string(data.join("keys.toml")).expect("keys.toml");
    let table: toml::Table = text.parse().expect("keys.toml parses");
    let key = |k: &str| table[k].as_str().expect("a key").to_string();
    Keys {
        api: key("api_key"),
        sdk: key("sdk_key"),
    }
}

/// What a daemon served: path → status and body.
type Served = BTreeMap<String, Value>;

/// A GET with the API key, answered as `{"status", "body"}` (an NDJSON
/// body, the event feed's, as its text and the next cursor).
async fn get(d: &Daemon, keys: &Keys, path: &str) -> Value {
    let resp = d
        .client
        .get(d.url(path))
        .bearer_auth(&keys.api)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let cursor = resp
        .headers()
        .get("pushd-next-cursor")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    let body = match cursor {
        Some(c) => json!({"ndjson": text, "next": c}),
        None => serde_json::from_str(&text).unwrap_or(Value::String(text)),
    };
    json!({"status": status, "body": body})
}

/// The paths whose answers must survive an upgrade, for a directory
/// holding `deliveries`.
fn paths(deliveries: &[String]) -> Vec<String> {
    let mut paths: Vec<String> = [
        "/v1/customers/c1",
        "/v1/customers/c2",
        "/v1/customers/c3",
        "/v1/customers/c4",
        "/v1/customers/c5",
        "/v1/messages",
        "/v1/messages/welcome",
        "/v1/messages/promo",
        "/v1/messages/welcome/metrics",
        "/v1/messages/welcome/timeseries",
        "/v1/campaigns",
        "/v1/campaigns/onboarding/metrics",
        "/v1/deliveries?limit=100",
        "/v1/deliveries?status=converted",
        "/v1/deliveries?status=sent&total=true",
        "/v1/deliveries?status=delivered&total=true",
        "/v1/deliveries?status=opened&total=true",
        "/v1/deliveries?customer_id=c1",
        "/v1/deliveries?status=scheduled&total=true",
        "/v1/deliveries?status=canceled&total=true",
        "/v1/deliveries?message_id=welcome&total=true",
        "/v1/deliveries?campaign_id=onboarding&total=true",
        "/v1/deliveries?customer_id=c2&total=true",
        "/v1/deliveries?customer_id=c1&status=scheduled&total=true",
        "/v1/webhooks",
        "/v1/events?limit=1000",
    ]
    .map(String::from)
    .to_vec();
    paths.extend(deliveries.iter().map(|id| format!("/v1/deliveries/{id}")));
    paths
}

async fn capture(d: &Daemon, keys: &Keys, deliveries: &[String]) -> Served {
    let mut served = Served::new();
    for path in paths(deliveries) {
        served.insert(path.clone(), stable(get(d, keys, &path).await));
    }
    served
}

/// A webhook retry window (100 years) no fixture's events outlive.
const NEVER_AGES: u64 = 100 * 365 * 24 * 3600;

/// What moves with the wall clock on its own: a webhook's retry statistics
/// (its worker keeps trying a dead receiver).
const MOVING: [&str; 5] = [
    "failed_attempts",
    "last_error",
    "last_error_at",
    "oldest_undelivered_seconds",
    "in_flight",
];
/// What a crash may move back: a webhook's progress is saved now and then,
/// and its events are posted again after a crash (at least once).
const PROGRESS: [&str; 4] = ["cursor", "delivered", "queue_depth", "last_success_at"];

/// Leaves out of an answer what moves with the wall clock on its own.
fn stable(answer: Value) -> Value {
    without(answer, &MOVING)
}

/// Leaves `fields` out of every webhook's statistics in an answer.
fn without(mut answer: Value, fields: &[&str]) -> Value {
    let hooks = answer.get_mut("body").and_then(|b| b.get_mut("webhooks"));
    if let Some(hooks) = hooks.and_then(Value::as_array_mut) {
        for hook in hooks {
            let Some(stats) = hook.get_mut("stats").and_then(Value::as_object_mut) else {
                continue;
            };
            for field in fields {
                stats.remove(*field);
            }
        }
    }
    answer
}

/// Every field `old` has, `new` has with the same value (a newer release
/// may add fields).
fn assert_within(old: &Value, new: &Value, at: &str) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (k, v) in o {
                let Some(nv) = n.get(k) else {
                    panic!("{at}.{k}: gone (was {v})")
                };
                assert_within(v, nv, &format!("{at}.{k}"));
            }
        }
        (Value::Array(o), Value::Array(n)) => {
            assert_eq!(o.len(), n.len(), "{at}: length");
            for (i, (a, b)) in o.iter().zip(n).enumerate() {
                assert_within(a, b, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(old, new, "{at}"),
    }
}

fn assert_served(old: &Served, new: &Served) {
    for (path, answer) in old {
        assert_within(answer, &new[path], path);
    }
}

/// Copies a fixture's data directory to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The fixture as made: the old release's answers and its deliveries.
struct Fixture {
    served: Served,
    deliveries: Vec<String>,
    /// The keyed send call and its answer.
    keyed: Value,
}

fn read_fixture(name: &str) -> Fixture {
    let text = std::fs::read_to_string(fixtures().join(name).join("served.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    Fixture {
        served: serde_json::from_value(v["served"].clone()).unwrap(),
        deliveries: serde_json::from_value(v["deliveries"].clone()).unwrap(),
        keyed: v["keyed"].clone(),
    }
}

/// The keyed send of the fixtures.
fn keyed_body() -> Value {
    json!({"message_id": "welcome", "customer_ids": ["c1", "c2", "c3", "c4", "c5", "ghost"],
        "data": {"plan": "gold"}})
}

async fn keyed_send(d: &Daemon, keys: &Keys) -> (u16, bool, Value) {
    let resp = d
        .client
        .post(d.url("/v1/send/push"))
        .bearer_auth(&keys.api)
        .header("Idempotency-Key", "fixture-k1")
        .json(&keyed_body())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let replayed = resp
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (status, replayed, resp.json().await.unwrap())
}

/// Whether the fixture's keyed send is still within the idempotency
/// window, judged by when the fixture was made (its webhooks' creation,
/// seconds from the keyed call); `None` within ten minutes of the window's
/// end, where either answer may come.
fn key_remembered(fixture: &Fixture) -> Option<bool> {
    let made = fixture.served["/v1/webhooks"]["body"]["webhooks"][0]["created_at"]
        .as_i64()
        .expect("the fixture's webhooks");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let age = now - made;
    let window = pushd_actors::idempotency::WINDOW_MS / 1000;
    match age {
        a if a < window - 600 => Some(true),
        a if a > window + 600 => Some(false),
        _ => None,
    }
}

/// Opens fixture `build/name` and checks it serves every record as the old
/// build did. `made_requiring_identity`: the build required identity
/// proofs on a new directory, so the directory keeps requiring them by
/// default; before that, an old directory takes unproven events.
async fn open_and_check(build: &str, name: &str, made_requiring_identity: bool) {
    let name = &format!("{build}/{name}");
    let fixture = read_fixture(name);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_dir(&fixtures().join(name).join("data"), &data);
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let keys = keys_of(&data);
    // The fixture's records are dated when it was made: under the default
    // windows (a webhook retries an event for a day, events are kept 30
    // days, deliveries 180) they would go, and what the directory serves
    // would change with the calendar.
    let mut env = fakes.env();
    env.push(("PUSHD_WEBHOOK_MAX_AGE_SECS", NEVER_AGES.to_string()));
    env.push(("PUSHD_EVENT_RETENTION_DAYS", "36500".into()));
    env.push(("PUSHD_DELIVERY_RETENTION_DAYS", "0".into()));
    let d = Daemon::launch(&data, &env);
    let mut served = fixture.served.clone();
    if name.ends_with("killed") {
        for answer in served.values_mut() {
            *answer = without(answer.take(), &PROGRESS);
        }
    }
    assert_served(&served, &capture(&d, &keys, &fixture.deliveries).await);
    assert_failure_reasons_count_the_log(&d, &keys).await;
    // Messages from before lanes are campaign messages.
    let welcome = get(&d, &keys, "/v1/messages/welcome").await;
    assert_eq!(welcome["body"]["lane"], "campaign", "{welcome}");

    // The keyed send is replayed as the old release answered it while its
    // key is remembered (a day from the call, which the fixture's making
    // dates); past that the same call is a new send, as for any key.
    let (status, replayed, answer) = keyed_send(&d, &keys).await;
    assert_eq!(status, 202, "{answer}");
    match key_remembered(&fixture) {
        Some(true) => {
            assert!(replayed, "{answer}");
            assert_eq!(answer, fixture.keyed);
        }
        Some(false) => {
            assert!(!replayed, "{answer}");
            assert_ne!(answer, fixture.keyed);
            // Its new deliveries settle before the directory is compared
            // across the restart below.
            for sent in answer["deliveries"].as_array().unwrap() {
                settled(&d, &keys, sent["delivery_id"].as_str().unwrap()).await;
            }
        }
        None => {}
    }

    // A report on an old delivery moves it on; a new send goes out.
    let c2_welcome = delivery_of(&fixture.keyed, "c2");
    let report = json!({"delivery_id": c2_welcome, "event": "opened", "device_id": ios_token(2)});
    let (status, v) = d
        .call_as(&keys.sdk, "POST", "/push/events", Some(report))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_identity(&d, &keys, made_requiring_identity).await;
    let (status, v) = d
        .call_as(
            &keys.api,
            "POST",
            "/v1/send/push",
            Some(json!({"message_id": "welcome", "customer_ids": ["c1"], "data": {"plan": "new"}})),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    let new = v["deliveries"][0]["delivery_id"]
        .as_str()
        .unwrap()
        .to_string();
    let sent = settled(&d, &keys, &new).await;
    assert_eq!(sent["status"], "sent", "{sent}");
    cancel_held(&d, &keys).await;

    // A restart serves the same, the new changes included.
    let mut all = fixture.deliveries.clone();
    all.push(new);
    let before = capture(&d, &keys, &all).await;
    assert_eq!(
        before[&format!("/v1/deliveries/{c2_welcome}")]["body"]["status"],
        "opened"
    );
    // The log lists it under its new status only.
    for status in ["sent", "delivered", "opened"] {
        let page = &before[&format!("/v1/deliveries?status={status}&total=true")]["body"];
        let rows = page["deliveries"].as_array().unwrap();
        let listed = rows.iter().any(|r| r["delivery_id"] == c2_welcome);
        assert_eq!(listed, status == "opened", "{status}: {page}");
        assert!(rows.iter().all(|r| r["status"] == status), "{page}");
        assert_eq!(page["total"], rows.len(), "{page}");
    }
    assert_eq!(d.terminate(), Some(0));
    let d = Daemon::launch(&data, &env);
    assert_served(&before, &capture(&d, &keys, &all).await);
    assert_identity(&d, &keys, made_requiring_identity).await;
    drop(d);
}

/// Cancels every held delivery the directory has, and checks the log
/// finds each canceled: under its status, its message and its customer,
/// and no longer held.
async fn cancel_held(d: &Daemon, keys: &Keys) {
    let held = get(d, keys, "/v1/deliveries?status=scheduled").await;
    for h in held["body"]["deliveries"].as_array().unwrap() {
        let id = h["delivery_id"].as_str().unwrap();
        let path = format!("/v1/deliveries/{id}");
        let (status, v) = d.call_as(&keys.api, "DELETE", &path, None).await;
        assert_eq!(status, 200, "{v}");
        let (message, customer) = (&h["message_id"], &h["customer_id"]);
        for query in [
            "status=canceled".to_string(),
            format!("message_id={}&status=canceled", message.as_str().unwrap()),
            format!("customer_id={}", customer.as_str().unwrap()),
        ] {
            let listed = get(d, keys, &format!("/v1/deliveries?{query}")).await;
            let found = listed["body"]["deliveries"].as_array().unwrap();
            let found = found.iter().find(|f| f["delivery_id"] == id);
            assert_eq!(
                found.map(|f| &f["status"]),
                Some(&json!("canceled")),
                "{query}: {listed}"
            );
        }
    }
    let left = get(d, keys, "/v1/deliveries?status=scheduled&total=true").await;
    assert_eq!(left["body"]["total"], 0, "{left}");
}

/// The metrics' `failure_reasons`, which the old release did not count,
/// count the reasons of the directory's failed and undeliverable
/// deliveries, and add up to `failed + undeliverable`.
async fn assert_failure_reasons_count_the_log(d: &Daemon, keys: &Keys) {
    let log = get(d, keys, "/v1/deliveries?limit=100").await;
    let mut logged: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for delivery in log["body"]["deliveries"].as_array().unwrap() {
        if delivery["status"] == "failed" || delivery["status"] == "undeliverable" {
            let reason = delivery["failure_reason"].as_str().unwrap().to_owned();
            let message = delivery["message_id"].as_str().unwrap().to_owned();
            *logged
                .entry(message)
                .or_default()
                .entry(reason)
                .or_default() += 1;
        }
    }
    assert!(!logged.is_empty(), "the fixture has failures: {log}");
    for (path, message) in [
        ("/v1/messages/welcome/metrics", "welcome"),
        ("/v1/campaigns/onboarding/metrics", "welcome"),
        ("/v1/messages/promo/metrics", "promo"),
    ] {
        let m = &get(d, keys, path).await["body"];
        let counted: BTreeMap<String, i64> = m["failure_reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["reason"].as_str().unwrap().to_owned(),
                    r["count"].as_i64().unwrap(),
                )
            })
            .collect();
        let expected = logged.get(message).cloned().unwrap_or_default();
        assert_eq!(counted, expected, "{path}");
        let failures = m["failed"].as_i64().unwrap() + m["undeliverable"].as_i64().unwrap();
        assert_eq!(counted.values().sum::<i64>(), failures, "{path}");
    }
}

/// An SDK-key event without `Pushd-Customer-Auth`: taken (and answered
/// without a delivery id) where the directory's apps send no proof yet,
/// refused where it was made requiring proofs, and then taken with one.
async fn assert_identity(d: &Daemon, keys: &Keys, required: bool) {
    let event = json!({"name": "app_opened"});
    let path = "/v1/customers/c1/events";
    let (status, v) = d
        .call_as(&keys.sdk, "POST", path, Some(event.clone()))
        .await;
    if !required {
        assert_eq!((status, v.clone()), (200, json!({"status": "ok"})), "{v}");
        return;
    }
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    let secret = pushd::keys::identity_secret(&keys.api);
    let proof = pushd::keys::identity_proof(&secret, "c1");
    let (status, v) = d
        .call_with(
            &keys.sdk,
            &[("Pushd-Customer-Auth", &proof)],
            "POST",
            path,
            Some(event),
        )
        .await;
    assert_eq!((status, v.clone()), (200, json!({"status": "ok"})), "{v}");
}

/// The delivery a send answer made for `customer`.
fn delivery_of(answer: &Value, customer: &str) -> String {
    let found = answer["deliveries"].as_array().unwrap().iter();
    let mut found = found.filter(|d| d["customer_id"] == customer);
    found.next().expect("a delivery")["delivery_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Polls until the delivery leaves `attempted` (bounded: 20 s).
async fn settled(d: &Daemon, keys: &Keys, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = get(d, keys, &format!("/v1/deliveries/{id}")).await;
        if v["body"]["status"] != "attempted" {
            return v["body"].clone();
        }
        assert!(Instant::now() < deadline, "delivery {id} stuck: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_0_1_directory_opens_with_every_record() {
    open_and_check("pushd-0.1", "stopped", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_0_1_directory_replays_its_journal() {
    open_and_check("pushd-0.1", "killed", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_segment_format_2_directory_opens_with_every_record() {
    open_and_check("segment-format-2", "stopped", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_segment_format_2_directory_replays_its_journal() {
    open_and_check("segment-format-2", "killed", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_segment_format_4_directory_opens_with_every_record() {
    open_and_check("segment-format-4", "stopped", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_segment_format_4_directory_replays_its_journal() {
    open_and_check("segment-format-4", "killed", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_snapshot_format_6_directory_opens_with_every_record() {
    open_and_check("snapshot-format-6", "stopped", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_snapshot_format_6_directory_replays_its_journal() {
    open_and_check("snapshot-format-6", "killed", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_snapshot_format_7_directory_opens_with_every_record() {
    open_and_check("snapshot-format-7", "stopped", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_snapshot_format_7_directory_replays_its_journal() {
    open_and_check("snapshot-format-7", "killed", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_snapshot_format_8_directory_opens_with_every_record() {
    open_and_check("snapshot-format-8", "stopped", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_snapshot_format_8_directory_replays_its_journal() {
    open_and_check("snapshot-format-8", "killed", true).await;
}

/// Makes the fixtures of one build with its binary:
/// `PUSHD_OLD_BIN=/path/to/old/pushd PUSHD_FIXTURE=<build> cargo test --test upgrade -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "makes the fixtures with an older build's binary"]
async fn make_fixtures() {
    let bin = PathBuf::from(std::env::var("PUSHD_OLD_BIN").expect("PUSHD_OLD_BIN"));
    let build = std::env::var("PUSHD_FIXTURE").expect("PUSHD_FIXTURE");
    for (name, kill) in [("stopped", false), ("killed", true)] {
        let out = fixtures().join(&build).join(name);
        let _ = std::fs::remove_dir_all(&out);
        let dir = tempfile::tempdir().unwrap();
        let data = out.join("data");
        let fakes = fakes(dir.path(), FaultMix::default()).await;
        fakes
            .apns
            .script(&ios_token(5), Behavior::Fail(Fault::Unregistered));
        let receiver = WebhookReceiver::start().await.unwrap();
        // The apps of the fixtures send no identity proof, as before
        // releases had it (a build that has it requires it on a new
        // directory; one that has not ignores the setting).
        let mut env = fakes.env();
        env.push(("PUSHD_IDENTITY_VERIFICATION", "off".into()));
        let d = Daemon::launch_bin(&bin, &data, &env);
        let keys = keys_of(&data);
        let fixture = populate(&d, &keys, &receiver).await;
        let mut served = capture(&d, &keys, &fixture.deliveries).await;
        match kill {
            true => {
                // One last acknowledged change, then SIGKILL before a
                // checkpoint (every 2 s) takes it into the snapshot: it is
                // only in the journal.
                let path = "/v1/customers/c5";
                let body = json!({"attributes": {"first_name": "Ed", "last": true}});
                let (status, v) = d.call_as(&keys.api, "PUT", path, Some(body)).await;
                assert_eq!(status, 200, "{v}");
                served.insert(path.into(), get(&d, &keys, path).await);
                d.kill();
            }
            false => assert_eq!(d.terminate(), Some(0)),
        }
        let file =
            json!({"served": served, "deliveries": fixture.deliveries, "keyed": fixture.keyed});
        std::fs::write(
            out.join("served.json"),
            serde_json::to_string_pretty(&file).unwrap(),
        )
        .unwrap();
    }
}

/// Customers, devices, messages, webhooks (one with events queued for a
/// receiver that is gone), a keyed send reaching every status, reports
/// and a conversion, a deleted customer.
async fn populate(d: &Daemon, keys: &Keys, receiver: &WebhookReceiver) -> Fixture {
    let call = |method: &'static str, path: String, body: Value| async move {
        let (status, v) = d.call_as(&keys.api, method, &path, Some(body)).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    };
    for (id, attrs) in [
        ("c1", json!({"first_name": "Ada", "plan": "pro"})),
        ("c2", json!({"first_name": "Bo", "tags": ["a", 1]})),
        ("c3", json!({"first_name": "Cy"})),
        ("c4", json!({"first_name": "Di"})),
        ("c5", json!({"first_name": "Ed"})),
    ] {
        call(
            "PUT",
            format!("/v1/customers/{id}"),
            json!({"attributes": attrs}),
        )
        .await;
    }
    let device = |token: String, platform: &str, extra: Value| {
        let mut d = json!({"id": token, "platform": platform, "last_used": 1_764_100_000});
        d.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"device": d})
    };
    for (customer, body) in [
        ("c1", device(ios_token(1), "ios", json!({"opted_in": true}))),
        (
            "c1",
            device(
                android_token(1),
                "android",
                json!({"attributes": {"app_version": "2.1"}}),
            ),
        ),
        (
            "c2",
            device(ios_token(2), "ios", json!({"opted_in": false})),
        ),
        ("c3", device(android_token(3), "android", json!({}))),
        ("c5", device(ios_token(5), "ios", json!({}))),
    ] {
        call("PUT", format!("/v1/customers/{customer}/devices"), body).await;
    }
    call(
        "PUT",
        "/v1/customers/c3".into(),
        json!({"attributes": {"first_name": "Cy"}, "unsubscribed": true}),
    )
    .await;
    call(
        "PUT",
        "/v1/messages/welcome".into(),
        json!({"name": "Welcome", "campaign_id": "onboarding",
            "title": "Hi {{customer.first_name}}", "body": "Your {{event.plan}} plan",
            "deep_link": "myapp://home", "collapse_id": "welcome",
            "conversion": {"event": "purchase", "window_seconds": 86400},
            "push": {"sound": "default", "badge": 2, "data": {"who": "{{customer.id}}"}}}),
    )
    .await;
    call(
        "PUT",
        "/v1/messages/promo".into(),
        json!({"name": "Promo", "title": "Sale", "body": "Now", "audience": "last_device",
            "rate_per_minute": 6000,
            "push": {"priority": "normal", "ttl_seconds": 3600, "interruption_level": "passive"}}),
    )
    .await;
    for (id, url) in [
        ("live", receiver.url()),
        ("gone", "http://127.0.0.1:9/hook".to_string()),
    ] {
        call(
            "PUT",
            format!("/v1/webhooks/{id}"),
            json!({"url": url, "secret": "fixture-secret"}),
        )
        .await;
    }
    let (status, _, keyed) = keyed_send(d, keys).await;
    assert_eq!(status, 202, "{keyed}");
    let mut deliveries: Vec<String> = keyed["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["delivery_id"].as_str().unwrap().to_string())
        .collect();
    for id in &deliveries {
        settled(d, keys, id).await;
    }
    let report = |customer: &str, token: String, event: &str| json!({"delivery_id": delivery_of(&keyed, customer), "event": event, "device_id": token});
    for body in [
        report("c1", ios_token(1), "delivered"),
        report("c1", ios_token(1), "opened"),
        report("c2", ios_token(2), "delivered"),
    ] {
        let (status, v) = d
            .call_as(&keys.sdk, "POST", "/push/events", Some(body.clone()))
            .await;
        let id = body["delivery_id"].as_str().unwrap();
        let now = get(d, keys, &format!("/v1/deliveries/{id}")).await;
        assert_eq!(status, 200, "{v} {now}");
    }
    let (status, v) = d
        .call_as(
            &keys.sdk,
            "POST",
            "/v1/customers/c1/events",
            Some(json!({"name": "purchase"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let promo = call(
        "POST",
        "/v1/send/push".into(),
        json!({"message_id": "promo", "customer_ids": ["c1", "c2"]}),
    )
    .await;
    for d2 in promo["deliveries"].as_array().unwrap() {
        let id = d2["delivery_id"].as_str().unwrap().to_string();
        settled(d, keys, &id).await;
        deliveries.push(id);
    }
    // Held deliveries, in a build with scheduled sends (an older one
    // refuses the field): c1's and c2's held for a time far ahead, c2's
    // then canceled.
    let later = json!({"message_id": "welcome", "customer_ids": ["c1", "c2"],
        "data": {"plan": "later"}, "schedule": {"at": "2099-01-01T09:00:00Z"}});
    let (status, held) = d
        .call_as(&keys.api, "POST", "/v1/send/push", Some(later))
        .await;
    if status == 202 {
        let path = format!("/v1/deliveries/{}", delivery_of(&held, "c2"));
        let (status, v) = d.call_as(&keys.api, "DELETE", &path, None).await;
        assert_eq!(status, 200, "{v}");
        deliveries.extend(["c1", "c2"].map(|c| delivery_of(&held, c)));
    }
    let (status, _) = d
        .call_as(&keys.api, "DELETE", "/v1/customers/c4", None)
        .await;
    assert_eq!(status, 204);
    // The live receiver has every event before the answers are taken.
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(d, keys, "/v1/webhooks/live").await["body"]["stats"]["queue_depth"] != 0 {
        assert!(Instant::now() < deadline, "webhook live never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Fixture {
        served: Served::new(),
        deliveries,
        keyed,
    }
}
