//! Date ranges over the real binary: the metrics, failure reasons and time
//! series of a message and a campaign for `?from=&to=`, and the delivery
//! log's range, `total` and `platforms`, with deliveries created on both
//! sides of a boundary (the creation second of the second send's
//! deliveries, on the daemon's clock).

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pushd::sim::FaultMix;
use serde_json::{Value, json};
use support::{Daemon, SDK_KEY, android_token, fakes, ios_token};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

/// `GET path`, which must answer 200.
async fn get(d: &Daemon, path: &str) -> Value {
    let (status, v) = d.call("GET", path, None).await;
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

/// Waits until the system clock (the daemon's) is past second `t`.
async fn clock_past(t: i64) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let until = Duration::from_secs((t + 1) as u64);
    if let Some(wait) = until.checked_sub(now) {
        tokio::time::sleep(wait).await;
    }
}

/// Sends `message` to `customers`, waits until each delivery settled and
/// answers the settled deliveries.
async fn send_settled(d: &Daemon, message: &str, customers: &[&str]) -> Vec<Value> {
    let mut out = Vec::new();
    for id in d.send(message, customers).await {
        out.push(d.settled(&id).await);
    }
    out
}

/// Reports `event` from the delivery's first device.
async fn report(d: &Daemon, delivery: &Value, event: &str) {
    let body = json!({"delivery_id": delivery["delivery_id"], "event": event,
        "device_id": delivery["devices"][0]["token"]});
    let (s, v) = d.call_as(SDK_KEY, "POST", "/push/events", Some(body)).await;
    assert_eq!(s, 200, "{v}");
}

/// The ids of a log page, in order.
fn ids(page: &Value) -> Vec<&str> {
    let rows = page["deliveries"].as_array().unwrap();
    rows.iter()
        .map(|d| d["delivery_id"].as_str().unwrap())
        .collect()
}

/// The ids of `deliveries`, newest first (the log's order).
fn newest_first(deliveries: &[&Value]) -> Vec<String> {
    let mut ids: Vec<String> = deliveries
        .iter()
        .map(|d| d["delivery_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort_by(|a, b| b.cmp(a));
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_narrow_metrics_series_and_the_log_to_the_deliveries_created_in_them() {
    let dir = tempfile::tempdir().unwrap();
    let fakes = fakes(dir.path(), FaultMix::default()).await;
    let d = Daemon::start(&dir.path().join("data"), &fakes.env());
    let (ios, android) = (ios_token(1), android_token(2));
    let (ios2, android2) = (ios_token(3), android_token(4));
    d.customer("early-ios", json!({}), &[(&ios, "ios")]).await;
    d.customer("early-android", json!({}), &[(&android, "android")])
        .await;
    d.customer("nobody", json!({}), &[]).await;
    d.customer(
        "late-both",
        json!({}),
        &[(&ios2, "ios"), (&android2, "android")],
    )
    .await;
    d.message("welcome", "spring", "Hi").await;
    d.message("other", "spring", "Hey").await;

    // Before the boundary: two people reached, one without devices.
    let early = send_settled(&d, "welcome", &["early-ios", "early-android", "nobody"]).await;
    report(&d, &early[0], "delivered").await;
    report(&d, &early[0], "opened").await;
    report(&d, &early[1], "delivered").await;
    let early_at = early.iter().map(|x| x["created_at"].as_i64().unwrap());
    clock_past(early_at.max().unwrap()).await;
    // After it: one person on both platforms, one without devices again,
    // and the campaign's other message.
    let late = send_settled(&d, "welcome", &["late-both", "nobody"]).await;
    let other = send_settled(&d, "other", &["early-ios"]).await;
    report(&d, &late[0], "delivered").await;
    let boundary = late[0]["created_at"].as_i64().unwrap();
    assert!(
        early
            .iter()
            .all(|x| x["created_at"].as_i64() < Some(boundary))
    );
    let everything = (early.len() + late.len() + other.len()) as u64;

    // Metrics: each side counts its own deliveries, and a range holding
    // every delivery answers what the counters do.
    let all = get(&d, "/v1/messages/welcome/metrics").await;
    assert_eq!(
        (all["sends"].as_i64(), all["delivered"].as_i64()),
        (Some(5), Some(3))
    );
    let before = get(&d, &format!("/v1/messages/welcome/metrics?to={boundary}")).await;
    let after = get(&d, &format!("/v1/messages/welcome/metrics?from={boundary}")).await;
    assert_eq!(before["sends"], 3, "{before}");
    assert_eq!(
        (before["delivered"].as_i64(), before["opened"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(before["by_platform"]["ios"]["sends"], 1);
    assert_eq!(before["by_platform"]["android"]["delivered"], 1);
    assert_eq!(before["rates"]["opened"], 0.5, "opened of the 2 sent");
    assert_eq!(after["sends"], 2, "{after}");
    assert_eq!(
        (after["delivered"].as_i64(), after["opened"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(after["by_platform"]["ios"]["sends"], 1);
    assert_eq!(after["by_platform"]["android"]["sends"], 1);
    for (side, n) in [(&before, 1), (&after, 1)] {
        assert_eq!(
            side["failure_reasons"],
            json!([{"reason": "no_devices", "count": n, "share": 1.0,
                "fix": side["failure_reasons"][0]["fix"]}]),
            "{side}"
        );
    }
    let wide = format!("from=0&to={}", boundary + 3600);
    let covered = get(&d, &format!("/v1/messages/welcome/metrics?{wide}")).await;
    assert_eq!(
        covered, all,
        "a range holding every delivery agrees with the counters"
    );
    let campaign = get(&d, "/v1/campaigns/spring/metrics").await;
    assert_eq!(campaign["sends"], 6);
    let campaign_covered = get(&d, &format!("/v1/campaigns/spring/metrics?{wide}")).await;
    assert_eq!(campaign_covered, campaign);
    let campaign_after = get(&d, &format!("/v1/campaigns/spring/metrics?from={boundary}")).await;
    assert_eq!(campaign_after["sends"], 3, "welcome's two and other's one");
    // An RFC 3339 end is the same second.
    let rfc3339 = time::OffsetDateTime::from_unix_timestamp(boundary)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let after_rfc = get(&d, &format!("/v1/messages/welcome/metrics?from={rfc3339}")).await;
    assert_eq!(after_rfc, after);
    let empty = get(&d, "/v1/messages/welcome/metrics?from=0&to=1000").await;
    assert_eq!(
        (empty["sends"].as_i64(), empty["failure_reasons"].clone()),
        (Some(0), json!([]))
    );

    // Time series: the same split.
    let series = |q: &str| format!("/v1/messages/welcome/timeseries{q}");
    let total = |v: &Value, k: &str| -> i64 {
        v["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[k].as_i64().unwrap())
            .sum()
    };
    let all_points = get(&d, &series("")).await;
    let early_points = get(&d, &series(&format!("?to={boundary}"))).await;
    let late_points = get(&d, &series(&format!("?from={boundary}"))).await;
    assert_eq!(
        (
            total(&early_points, "delivered"),
            total(&early_points, "opened")
        ),
        (2, 1)
    );
    assert_eq!(
        (
            total(&late_points, "delivered"),
            total(&late_points, "opened")
        ),
        (1, 0)
    );
    assert_eq!(get(&d, &series(&format!("?{wide}"))).await, all_points);
    let campaign_series = get(&d, "/v1/campaigns/spring/timeseries").await;
    let campaign_series_covered = get(&d, &format!("/v1/campaigns/spring/timeseries?{wide}")).await;
    assert_eq!(campaign_series_covered, campaign_series);

    // The log: the range, its total, and each row's platforms.
    let log = get(&d, "/v1/deliveries").await;
    assert!(log.get("total").is_none(), "counted unasked: {log}");
    let log = get(&d, "/v1/deliveries?total=true").await;
    assert_eq!(log["total"], everything);
    let late_log = get(&d, &format!("/v1/deliveries?from={boundary}&total=true")).await;
    let late_rows: Vec<&Value> = late.iter().chain(&other).collect();
    assert_eq!(ids(&late_log), newest_first(&late_rows));
    assert_eq!(late_log["total"], late_rows.len());
    let early_log = get(
        &d,
        &format!("/v1/deliveries?to={boundary}&message_id=welcome&total=true"),
    )
    .await;
    assert_eq!(
        ids(&early_log),
        newest_first(&early.iter().collect::<Vec<_>>())
    );
    assert_eq!(early_log["total"], 3);
    let failed_late = format!("/v1/deliveries?from={boundary}&status=undeliverable&total=true");
    let failed_late = get(&d, &failed_late).await;
    assert_eq!(
        ids(&failed_late),
        [late[1]["delivery_id"].as_str().unwrap()]
    );
    assert_eq!(failed_late["total"], 1);
    // Paging keeps the total, and the pages hold the range's deliveries.
    let first = get(
        &d,
        &format!("/v1/deliveries?from={boundary}&limit=2&total=true"),
    )
    .await;
    assert_eq!(first["total"], 3);
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = get(
        &d,
        &format!("/v1/deliveries?from={boundary}&limit=2&cursor={cursor}&total=true"),
    )
    .await;
    assert_eq!(
        (second["total"].as_u64(), second["next_cursor"].clone()),
        (Some(3), Value::Null)
    );
    let paged: Vec<&str> = ids(&first).into_iter().chain(ids(&second)).collect();
    assert_eq!(paged, newest_first(&late_rows));
    let filtered = get(&d, "/v1/deliveries?customer_id=nobody&limit=1&total=true").await;
    assert_eq!(
        (filtered["total"].as_u64(), ids(&filtered).len()),
        (Some(2), 1)
    );

    let platforms = |id: &Value| {
        let row = log["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["delivery_id"] == *id);
        row.unwrap()["platforms"].clone()
    };
    assert_eq!(platforms(&early[0]["delivery_id"]), json!(["ios"]));
    assert_eq!(platforms(&early[1]["delivery_id"]), json!(["android"]));
    assert_eq!(platforms(&early[2]["delivery_id"]), json!([]));
    assert_eq!(
        platforms(&late[0]["delivery_id"]),
        json!(["ios", "android"])
    );
}

#[tokio::test]
async fn a_malformed_or_empty_range_is_refused_naming_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    d.message("welcome", "spring", "Hi").await;
    let reads = [
        "/v1/messages/welcome/metrics",
        "/v1/messages/welcome/timeseries",
        "/v1/campaigns/spring/metrics",
        "/v1/campaigns/spring/timeseries",
        "/v1/deliveries",
    ];
    for path in reads {
        for (query, named) in [
            ("from=yesterday", "from must be"),
            ("to=2026-12-05", "to must be"),
            ("from=1.5", "from must be"),
            ("to=", "to must be"),
            ("from=200&to=200", "from must be before to"),
            ("from=2026-12-05T10:00:00Z&to=100", "from must be before to"),
        ] {
            let (s, v) = d.call("GET", &format!("{path}?{query}"), None).await;
            assert_eq!((s, code(&v)), (400, "invalid_field"), "{path}?{query}: {v}");
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.starts_with(named), "{path}?{query}: {message}");
        }
        let fine = format!("{path}?from=100&to=2026-12-05T10:00:00%2B01:00");
        let (s, v) = d.call("GET", &fine, None).await;
        assert_eq!(s, 200, "{fine}: {v}");
    }
    let (s, v) = d.call("GET", "/v1/deliveries?total=yes", None).await;
    assert_eq!((s, code(&v)), (400, "invalid_field"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("total must be"),
        "{v}"
    );
}
