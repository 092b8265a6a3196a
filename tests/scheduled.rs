//! Scheduled sends over HTTP, black-box: `schedule` on `POST /v1/send/push`,
//! the `scheduled` and `canceled` statuses in the log, metrics and filter,
//! `DELETE /v1/deliveries/{id}`, and a held delivery surviving SIGKILL.
//! The engine's own tests (actors/tests/scheduling.rs) drive release times
//! on a manual clock; these hold deliveries a day ahead of the system clock.

mod support;

use serde_json::{Value, json};
use support::Daemon;

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

/// The current time as the daemon sees it (the system clock), Unix seconds.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An RFC 3339 instant `secs` from now, written with a -05:00 offset.
fn rfc3339_in(secs: i64) -> (i64, String) {
    let at = now() + secs;
    let text = jiff::Timestamp::from_second(at)
        .unwrap()
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(-5)))
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    (at, text)
}

async fn send(d: &Daemon, customers: &[&str], schedule: Value) -> (u16, Value) {
    let body = json!({"message_id": "m", "customer_ids": customers, "schedule": schedule});
    d.call("POST", "/v1/send/push", Some(body)).await
}

async fn setup(d: &Daemon) {
    d.message("m", "camp", "Hello").await;
    d.customer(
        "c1",
        json!({"timezone": "Asia/Kathmandu"}),
        &[("tok-1", "android")],
    )
    .await;
}

#[tokio::test]
async fn a_scheduled_delivery_is_listed_counted_and_canceled_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    setup(&d).await;
    let (at, text) = rfc3339_in(86_400);
    let (status, sent) = send(&d, &["c1"], json!({"at": text})).await;
    assert_eq!(status, 202, "{sent}");
    let id = sent["deliveries"][0]["delivery_id"]
        .as_str()
        .unwrap()
        .to_string();

    let (_, detail) = d.call("GET", &format!("/v1/deliveries/{id}"), None).await;
    assert_eq!(detail["status"], "scheduled");
    assert_eq!(detail["scheduled_for"], at);
    assert_eq!(detail["timezone"], Value::Null);
    assert_eq!(detail["late_seconds"], Value::Null);
    assert_eq!(detail["devices"], json!([]));
    let (_, log) = d.call("GET", "/v1/deliveries?status=scheduled", None).await;
    assert_eq!(log["deliveries"][0]["delivery_id"], id.as_str());
    let m = d.metrics_until("m", |m| m["scheduled"] == 1).await;
    assert_eq!(
        (m["sends"].clone(), m["attempted"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(m["next_release_at"], at, "the message's next release");

    let path = format!("/v1/deliveries/{id}");
    let (status, canceled) = d.call("DELETE", &path, None).await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["status"], "canceled");
    let (status, again) = d.call("DELETE", &path, None).await;
    assert_eq!((status, code(&again)), (409, "not_cancelable"), "{again}");
    let (_, detail) = d.call("GET", &path, None).await;
    assert_eq!(detail["status"], "canceled");
    assert_eq!(detail["failure_reason"], "canceled");
    let m = d.metrics_until("m", |m| m["canceled"] == 1).await;
    assert_eq!(m["scheduled"], 0);
    assert_eq!(m["next_release_at"], Value::Null, "none held any more");
    let (_, log) = d.call("GET", "/v1/deliveries?status=canceled", None).await;
    assert_eq!(log["deliveries"][0]["delivery_id"], id.as_str());
}

#[tokio::test]
async fn a_local_time_reads_the_customers_zone_and_a_passed_one_is_skipped_or_sent() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    setup(&d).await;
    let ahead = json!({"local_time": "2099-06-01T09:00", "fallback_timezone": "UTC"});
    let (status, sent) = send(&d, &["c1"], ahead).await;
    assert_eq!(status, 202, "{sent}");
    let id = sent["deliveries"][0]["delivery_id"].as_str().unwrap();
    let (_, detail) = d.call("GET", &format!("/v1/deliveries/{id}"), None).await;
    assert_eq!(detail["status"], "scheduled");
    assert_eq!(detail["timezone"], "Asia/Kathmandu");
    assert_eq!(detail["timezone_source"], "customer");
    // 09:00 at +05:45 is 03:15Z.
    let due: jiff::Timestamp = "2099-06-01T03:15:00Z".parse().unwrap();
    assert_eq!(detail["scheduled_for"], due.as_second());

    let passed =
        json!({"local_time": "2020-01-01T09:00", "fallback_timezone": "UTC", "if_past": "skip"});
    let (_, sent) = send(&d, &["c1"], passed).await;
    let id = sent["deliveries"][0]["delivery_id"].as_str().unwrap();
    let (_, detail) = d.call("GET", &format!("/v1/deliveries/{id}"), None).await;
    assert_eq!(detail["status"], "undeliverable");
    assert_eq!(detail["failure_reason"], "local_time_passed");

    // Without credentials an Android push fails: it was sent at once.
    let passed = json!({"local_time": "2020-01-01T09:00", "fallback_timezone": "UTC"});
    let (_, sent) = send(&d, &["c1"], passed).await;
    let id = sent["deliveries"][0]["delivery_id"].as_str().unwrap();
    let detail = d.settled(id).await;
    assert_eq!(
        detail["failure_reason"], "credentials_not_found",
        "{detail}"
    );
    assert!(detail["late_seconds"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn a_bad_schedule_is_a_clear_error_and_makes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    setup(&d).await;
    let (_, at) = rfc3339_in(3_600);
    for (schedule, says) in [
        (json!({}), "either at, or local_time"),
        (
            json!({"at": at, "local_time": "2030-01-01T09:00"}),
            "either at",
        ),
        (json!({"at": "2030-01-01T09:00:00"}), "RFC 3339"),
        (json!({"local_time": "2030-01-01 9am"}), "YYYY-MM-DDTHH:MM"),
        (
            json!({"local_time": "2030-01-01T09:00", "fallback_timezone": "Mars/Base"}),
            "IANA",
        ),
        (json!({"at": at, "if_past": "skip"}), "either at"),
    ] {
        let (status, v) = send(&d, &["c1"], schedule.clone()).await;
        assert_eq!(
            (status, code(&v)),
            (400, "invalid_field"),
            "{schedule}: {v}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{schedule}: {message}");
    }
    let (status, v) = send(&d, &["c1"], json!({"when": "now"})).await;
    assert_eq!(status, 400, "{v}");
    let (_, log) = d.call("GET", "/v1/deliveries", None).await;
    assert_eq!(log["deliveries"], json!([]));
}

#[tokio::test]
async fn a_held_delivery_survives_sigkill_and_still_cancels() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    setup(&d).await;
    let (at, text) = rfc3339_in(86_400);
    let (_, sent) = send(&d, &["c1"], json!({"at": text})).await;
    let id = sent["deliveries"][0]["delivery_id"]
        .as_str()
        .unwrap()
        .to_string();
    d.kill();

    let d = Daemon::start(dir.path(), &[]);
    let path = format!("/v1/deliveries/{id}");
    let (_, detail) = d.call("GET", &path, None).await;
    assert_eq!(detail["status"], "scheduled");
    assert_eq!(detail["scheduled_for"], at);
    let (status, v) = d.call("DELETE", &path, None).await;
    assert_eq!(status, 200, "{v}");
}
