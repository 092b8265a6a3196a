//! The migration endpoints against the real daemon with fake providers:
//! Customer.io's Track API under `/api/v1/` (HTTP Basic `site_id:key`) and
//! Segment's/RudderStack's tracking API under `/ingest/v1/` (HTTP Basic
//! with a write key). What a team checks when it points its clients at
//! pushd: bad credentials are 401 and change nothing, a batch past 500 KB
//! is 413, gzipped batches are read, a retried event is applied once, a
//! push report without a delivery id is matched heuristically and marked
//! so, and one that matches nothing is counted, not an error. The official
//! client libraries drive the same endpoints in tests/compat/ (node).

mod support;

use std::io::Write;

use base64::Engine as _;
use pushd::sim::FaultMix;
use serde_json::{Value, json};
use support::{API_KEY, Daemon, SDK_KEY, fakes, ios_token};

const SITE_ID: &str = "site-0042";
const WRITE_KEY: &str = "write-key-segment-1";

/// `Authorization: Basic user:password`.
fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

async fn start(dir: &std::path::Path) -> (Daemon, pushd::sim::FakeProviders) {
    let fakes = fakes(dir, FaultMix::default()).await;
    let mut env = fakes.env();
    env.extend([
        ("PUSHD_COMPAT_CUSTOMERIO_SITE_ID", SITE_ID.to_string()),
        (
            "PUSHD_COMPAT_INGEST_WRITE_KEYS",
            format!("write-key-other-0,{WRITE_KEY}"),
        ),
        ("PUSHD_IDENTITY_VERIFICATION", "off".to_string()),
    ]);
    let d = Daemon::start(&dir.join("data"), &env);
    (d, fakes)
}

/// A request with this `Authorization` and a body; answers status and JSON.
async fn call(
    d: &Daemon,
    authorization: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = d
        .client
        .request(method, d.url(path))
        .header("authorization", authorization);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(json!(text)))
}

/// Posts raw `body` bytes to the ingestion `path` with the write key.
async fn ingest_raw(d: &Daemon, path: &str, body: Vec<u8>, gzip: bool) -> (u16, Value) {
    let mut req = d
        .client
        .post(d.url(path))
        .header("authorization", basic(WRITE_KEY, ""))
        .header("content-type", "application/json");
    if gzip {
        req = req.header("content-encoding", "gzip");
    }
    let resp = req.body(body).send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(json!(text)))
}

async fn ingest(d: &Daemon, batch: Value) -> Value {
    let (status, body) =
        ingest_raw(d, "/ingest/v1/batch", batch.to_string().into_bytes(), false).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn gzipped(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// The value of series `name{labels}` in the metrics text.
fn series(text: &str, name: &str, labels: &str) -> f64 {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customerio_track_api_with_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _fakes) = start(dir.path()).await;
    let cio = basic(SITE_ID, API_KEY);
    let token = ios_token(1);

    // Attributes as top-level keys, merged; `_update` does not create.
    let (s, v) = call(
        &d,
        &cio,
        "PUT",
        "/api/v1/customers/c1",
        Some(json!({"first_name": "Ana", "created_at": 1_764_000_000, "unsubscribed": false})),
    )
    .await;
    assert_eq!((s, v), (200, json!({})));
    let (s, _) = call(
        &d,
        &cio,
        "PUT",
        "/api/v1/customers/c1",
        Some(json!({"plan": "pro"})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(
        &d,
        &cio,
        "PUT",
        "/api/v1/customers/ghost",
        Some(json!({"_update": true, "plan": "x"})),
    )
    .await;
    assert_eq!(s, 200);
    let (_, c) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!(
        c["attributes"],
        json!({"first_name": "Ana", "created_at": 1_764_000_000, "plan": "pro"})
    );
    let (s, _) = d.call("GET", "/v1/customers/ghost", None).await;
    assert_eq!(s, 404, "_update: true created no one");

    let device = json!({"device": {"id": token, "platform": "ios", "last_used": 1_764_000_000.5,
        "attributes": {"app_version": "4.2"}}});
    let (s, _) = call(
        &d,
        &cio,
        "PUT",
        "/api/v1/customers/c1/devices",
        Some(device),
    )
    .await;
    assert_eq!(s, 200);
    let (_, c) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!(c["devices"][0]["id"], token.as_str());
    assert_eq!(c["devices"][0]["last_used"], 1_764_000_000);

    // Bad input is pushd's error body, and changes nothing.
    let bad = json!({"device": {"id": "t2", "platform": "windows"}});
    let (s, v) = call(&d, &cio, "PUT", "/api/v1/customers/c1/devices", Some(bad)).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_field");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("device.platform"),
        "{v}"
    );
    let (s, v) = call(
        &d,
        &cio,
        "PUT",
        "/api/v1/customers/c1",
        Some(json!({"unsubscribed": "yes"})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_field"))
    );

    // Wrong site id, wrong key, the SDK key where the API key is needed: 401.
    for wrong in [
        basic("site-9", API_KEY),
        basic(SITE_ID, "nope-nope-nope-nope"),
        basic(SITE_ID, SDK_KEY),
    ] {
        let (s, v) = call(
            &d,
            &wrong,
            "PUT",
            "/api/v1/customers/c1",
            Some(json!({"plan": "free"})),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{wrong}"
        );
    }
    let (_, c) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!(
        c["attributes"]["plan"], "pro",
        "a refused call changed nothing"
    );

    // A push, reported through /api/v1/push/events with the SDK key and a float time.
    d.message("welcome", "onboarding", "Hi").await;
    let id = d.send("welcome", &["c1"]).await.remove(0);
    d.delivery_until(&id, |v| v["status"] == "sent").await;
    let sdk = basic(SITE_ID, SDK_KEY);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for event in ["delivered", "opened"] {
        let report =
            json!({"delivery_id": id, "event": event, "device_id": token, "timestamp": now});
        let (s, v) = call(&d, &sdk, "POST", "/api/v1/push/events", Some(report)).await;
        assert_eq!(s, 200, "{v}");
    }
    let event = json!({"name": "purchase", "data": {"total": 3}, "timestamp": now});
    let (s, v) = call(&d, &sdk, "POST", "/api/v1/customers/c1/events", Some(event)).await;
    assert_eq!((s, v), (200, json!({})));
    let v = d.delivery_until(&id, |v| v["status"] == "converted").await;
    assert_eq!(v["heuristic_reports"], json!([]));

    let (s, _) = call(&d, &cio, "POST", "/api/v1/customers/c1/unsubscribe", None).await;
    assert_eq!(s, 200);
    let (_, c) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!(c["unsubscribed"], true);
    let (s, _) = call(
        &d,
        &cio,
        "DELETE",
        &format!("/api/v1/customers/c1/devices/{token}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(&d, &cio, "DELETE", "/api/v1/customers/c1", None).await;
    assert_eq!(s, 200);
    let (s, _) = call(&d, &cio, "DELETE", "/api/v1/customers/c1", None).await;
    assert_eq!(s, 200, "deleting one already gone is done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestion_auth_limits_gzip_and_idempotency() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _fakes) = start(dir.path()).await;
    let identify = json!({"batch": [{"type": "identify", "userId": "u1", "messageId": "m-1",
        "traits": {"first_name": "Una"},
        "context": {"device": {"token": "fcm-token-u1"}, "os": {"name": "Android"},
            "app": {"name": "Shop", "version": "1.0"}}}]});

    // No key, a wrong write key, the write key as the password: 401, nothing changed.
    for auth in ["", &basic("write-key-wrong-1", ""), &basic("", WRITE_KEY)] {
        let (s, v) = call(&d, auth, "POST", "/ingest/v1/batch", Some(identify.clone())).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{auth:?}"
        );
    }
    let (s, _) = d.call("GET", "/v1/customers/u1", None).await;
    assert_eq!(s, 404);

    // Gzipped, applied; the same messageId again is skipped.
    let (s, v) = ingest_raw(
        &d,
        "/ingest/v1/batch",
        gzipped(identify.to_string().as_bytes()),
        true,
    )
    .await;
    assert_eq!((s, &v["applied"]), (200, &json!(1)), "{v}");
    let (_, c) = d.call("GET", "/v1/customers/u1", None).await;
    assert_eq!(c["attributes"]["first_name"], "Una");
    assert_eq!(c["devices"][0]["platform"], "android");
    assert_eq!(
        c["devices"][0]["attributes"],
        json!({"app_name": "Shop", "app_version": "1.0"})
    );
    let v = ingest(&d, identify.clone()).await;
    assert_eq!(
        (&v["applied"], &v["duplicates"]),
        (&json!(0), &json!(1)),
        "{v}"
    );

    // One event alone at its own path; page/screen/group/alias taken and ignored.
    let (s, v) = ingest_raw(
        &d,
        "/ingest/v1/identify",
        json!({"userId": "u2", "traits": {"plan": "pro"}})
            .to_string()
            .into_bytes(),
        false,
    )
    .await;
    assert_eq!((s, &v["applied"]), (200, &json!(1)), "{v}");
    let v = ingest(
        &d,
        json!({"batch": [{"type": "page", "userId": "u1", "name": "Home"},
        {"type": "screen", "userId": "u1"}, {"type": "alias", "userId": "u1", "previousId": "a"}]}),
    )
    .await;
    assert_eq!(v["ignored"], 3, "{v}");

    // Malformed batches: 400, nothing applied.
    for bad in [
        json!({"batch": {}}),
        json!({"events": []}),
        json!({"batch": [{"type": "identify", "userId": "u3"}, "x"]}),
    ] {
        let (s, v) = ingest_raw(&d, "/ingest/v1/batch", bad.to_string().into_bytes(), false).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("invalid_field")),
            "{bad}"
        );
    }
    let (s, v) = ingest_raw(&d, "/ingest/v1/batch", b"{not json".to_vec(), false).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_json"))
    );
    let (s, _) = d.call("GET", "/v1/customers/u3", None).await;
    assert_eq!(s, 404, "a refused batch applied nothing");

    // Past 500 KB once decoded: 413, sent plain or gzipped (which compresses it well).
    let big = json!({"batch": [{"type": "track", "userId": "u1", "event": "x",
        "properties": {"pad": "a".repeat(520 * 1024)}}]})
    .to_string()
    .into_bytes();
    let (s, v) = ingest_raw(&d, "/ingest/v1/batch", big.clone(), false).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("body_too_large")),
        "{v}"
    );
    let small = gzipped(&big);
    assert!(small.len() < 10 * 1024);
    let (s, v) = ingest_raw(&d, "/ingest/v1/batch", small, true).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("body_too_large")),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_reports_match_exactly_heuristically_or_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (d, _fakes) = start(dir.path()).await;
    let token = ios_token(7);
    d.customer("u7", json!({}), &[(&token, "ios")]).await;
    d.customer("u8", json!({}), &[(&ios_token(8), "ios")]).await;
    d.message("welcome", "onboarding", "Hi").await;
    let ids = d.send("welcome", &["u7", "u8"]).await;
    for id in &ids {
        d.delivery_until(id, |v| v["status"] == "sent").await;
    }

    // u7: no delivery id, the campaign named: matched heuristically, and marked.
    let received = json!({"type": "track", "userId": "u7", "event": "Push Notification Received",
        "messageId": "r-7", "properties": {"campaign": {"name": "onboarding", "medium": "push"}},
        "context": {"device": {"token": token}}});
    let v = ingest(&d, json!({"batch": [received]})).await;
    assert_eq!(v["applied"], 1, "{v}");
    let v = d
        .delivery_until(&ids[0], |v| v["status"] == "delivered")
        .await;
    assert_eq!(v["heuristic_reports"][0]["event"], "delivered");
    assert_eq!(v["heuristic_reports"][0]["device_id"], token.as_str());
    assert_eq!(v["heuristic_reports"][0]["matched_on"], "customer+campaign");

    // u8: by its delivery id (Data Pipelines' report), not marked.
    let report = json!({"type": "track", "userId": "u8", "event": "Report Delivery Event",
        "properties": {"deliveryId": ids[1], "metric": "opened", "recipient": ios_token(8)}});
    ingest(&d, json!({"batch": [report]})).await;
    let v = d.delivery_until(&ids[1], |v| v["status"] == "opened").await;
    assert_eq!(v["heuristic_reports"], json!([]));

    // Nothing to match: another campaign, an unknown delivery, no user, an
    // unknown customer's event: counted by reason, answered 200.
    let before = d.metrics_text().await;
    let unmatched = json!({"batch": [
        {"type": "track", "userId": "u7", "event": "Push Notification Tapped",
            "properties": {"campaign": {"name": "winter"}}},
        {"type": "track", "userId": "u7", "event": "Push Notification Tapped",
            "properties": {"pushd_delivery_id": "no-such-delivery"}},
        {"type": "track", "anonymousId": "a1", "event": "Push Notification Tapped"},
        {"type": "track", "userId": "nobody", "event": "Order Completed"},
    ]});
    let v = ingest(&d, unmatched).await;
    assert_eq!(
        (&v["applied"], &v["unmapped"]),
        (&json!(0), &json!(4)),
        "{v}"
    );
    let after = d.metrics_text().await;
    for reason in [
        "no_matching_delivery",
        "unknown_delivery",
        "anonymous",
        "unknown_customer",
    ] {
        let label = format!("reason=\"{reason}\"");
        let grew = series(&after, "pushd_ingest_unmapped_total", &label)
            - series(&before, "pushd_ingest_unmapped_total", &label);
        assert_eq!(grew, 1.0, "{reason}");
    }
    assert_eq!(
        series(&after, "pushd_ingest_reports_total", "match=\"heuristic\""),
        1.0
    );
    assert_eq!(
        series(&after, "pushd_ingest_reports_total", "match=\"exact\""),
        1.0
    );
    let v = d.delivery_until(&ids[0], |_| true).await;
    assert_eq!(
        v["status"], "delivered",
        "the unmatched tap reached no delivery"
    );

    // Any other track is a customer event at its timestamp: one dated
    // before the push converts nothing; one now meets the conversion goal.
    let early = json!({"type": "track", "userId": "u8", "event": "purchase",
        "timestamp": "2025-06-01T12:00:00.000Z"});
    let v = ingest(&d, json!({"batch": [early]})).await;
    assert_eq!(v["applied"], 1, "{v}");
    let v = d.delivery_until(&ids[1], |_| true).await;
    assert_eq!(
        v["status"], "opened",
        "an event before the push converts nothing"
    );
    let purchase = json!({"type": "track", "userId": "u8", "event": "purchase"});
    let v = ingest(&d, json!({"batch": [purchase]})).await;
    assert_eq!(v["applied"], 1, "{v}");
    let v = d
        .delivery_until(&ids[1], |v| v["status"] == "converted")
        .await;
    assert!(v["converted_at"].is_number(), "{v}");
}
