//! The HTTP contract, black-box: the real binary over HTTP, no
//! provider credentials (so every failure reachable without a provider).

mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use support::{API_KEY, Daemon, SDK_KEY};

fn daemon() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    (dir, d)
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn health_and_prometheus_need_no_key_and_every_series_is_listed_from_the_start() {
    let (_dir, d) = daemon();
    let health: Value = reqwest::get(d.url("/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health, json!({"status": "ok"}));
    let text = reqwest::get(d.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in pushd::telemetry::SERIES {
        assert!(text.contains(series), "{series} missing at start:\n{text}");
    }
    assert!(
        text.contains("pushd_delivery_status_total{status=\"bounced\"} 0"),
        "{text}"
    );
    d.customer("c1", json!({"first_name": "Ada"}), &[]).await;
    d.message("m", "camp", "Hi").await;
    d.send("m", &["c1"]).await;
    let text = reqwest::get(d.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("pushd_deliveries_created_total 1"), "{text}");
    // Timings are histograms (buckets add up across nodes), not summaries.
    assert!(
        text.contains("# TYPE pushd_journal_sync_seconds histogram")
            && text.contains("pushd_journal_sync_seconds_bucket{le=\"0.001\"}")
            && !text.contains("quantile="),
        "{text}"
    );
}

#[tokio::test]
async fn keys_are_required_and_the_sdk_key_only_reports() {
    let (_dir, d) = daemon();
    let (s, v) = d.call_as("wrong", "GET", "/v1/customers/c1", None).await;
    assert_eq!((s, code(&v)), (401, "unauthorized"));
    let resp = d.client.get(d.url("/v1/deliveries")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let (s, _) = d
        .call_as(SDK_KEY, "PUT", "/v1/customers/c1", Some(json!({})))
        .await;
    assert_eq!(s, 401);
    d.customer("c1", json!({}), &[]).await;
    let event = json!({"name": "purchase", "timestamp": 1_764_100_200});
    let (s, v) = d
        .call_as(
            SDK_KEY,
            "POST",
            "/v1/customers/c1/events",
            Some(event.clone()),
        )
        .await;
    assert_eq!((s, code(&v)), (401, "unauthorized"), "no identity proof");
    let (name, proof) = support::customer_auth("c1");
    let (s, v) = d
        .call_with(
            SDK_KEY,
            &[(name, &proof)],
            "POST",
            "/v1/customers/c1/events",
            Some(event),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let report = json!({"delivery_id": "nope", "event": "opened", "device_id": "t"});
    let (s, v) = d
        .call_as(SDK_KEY, "POST", "/push/events", Some(report))
        .await;
    assert_eq!((s, code(&v)), (404, "not_found"));
}

#[tokio::test]
async fn customers_and_devices() {
    let (_dir, d) = daemon();
    let (s, v) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    d.customer(
        "c1",
        json!({"first_name": "Ada", "plan": "pro"}),
        &[("tok-a", "ios"), ("tok-b", "android")],
    )
    .await;
    let (s, v) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["attributes"]["plan"], "pro");
    assert_eq!(v["unsubscribed"], false);
    assert_eq!(v["devices"].as_array().unwrap().len(), 2);
    assert_eq!(v["devices"][1]["platform"], "android");

    // Replacing keeps devices; deleting a device and the customer.
    d.ok(
        "PUT",
        "/v1/customers/c1",
        json!({"attributes": {"first_name": "Bo"}, "unsubscribed": true}),
    )
    .await;
    let (_, v) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!(v["attributes"], json!({"first_name": "Bo"}));
    assert_eq!(v["devices"].as_array().unwrap().len(), 2);
    let (s, _) = d
        .call("DELETE", "/v1/customers/c1/devices/tok-a", None)
        .await;
    assert_eq!(s, 204);
    let (s, v) = d
        .call("DELETE", "/v1/customers/c1/devices/tok-a", None)
        .await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    let (s, _) = d.call("DELETE", "/v1/customers/c1", None).await;
    assert_eq!(s, 204);
    let (s, _) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!(s, 404);
    let device = json!({"device": {"id": "t", "platform": "ios"}});
    let (s, v) = d
        .call("PUT", "/v1/customers/c1/devices", Some(device))
        .await;
    assert_eq!((s, code(&v)), (404, "not_found"));
}

#[tokio::test]
async fn batch_import_is_all_or_nothing_per_customer() {
    let (_dir, d) = daemon();
    d.customer("c2", json!({"plan": "old"}), &[("old-tok", "ios")])
        .await;
    let body = json!({"customers": [
        {"id": "c1", "attributes": {"first_name": "Ada"},
         "devices": [{"id": "t1", "platform": "ios", "environment": "sandbox"},
                     {"id": "t2", "platform": "android", "last_used": 1764100000}]},
        {"id": "c2", "attributes": {"plan": "new"}, "unsubscribed": true,
         "devices": [{"id": "new-tok", "platform": "android"}]},
    ]});
    let (s, v) = d.call("POST", "/v1/batch", Some(body)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["imported"].as_u64(), v["refused"].as_u64()),
        (Some(2), Some(0))
    );
    let results = v["results"].as_array().unwrap();
    let ids: Vec<_> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["c1", "c2"]);
    assert!(results.iter().all(|r| r["status"] == "imported"), "{v}");

    let (_, c1) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!(c1["attributes"]["first_name"], "Ada");
    assert_eq!(c1["devices"][0]["environment"], "sandbox");
    assert_eq!(c1["devices"][1]["last_used"], 1764100000);
    // An import replaces the customer with exactly the devices given.
    let (_, c2) = d.call("GET", "/v1/customers/c2", None).await;
    assert_eq!(
        (
            c2["attributes"]["plan"].as_str(),
            c2["unsubscribed"].as_bool()
        ),
        (Some("new"), Some(true))
    );
    let tokens: Vec<_> = c2["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].clone())
        .collect();
    assert_eq!(tokens, [json!("new-tok")]);

    // A malformed item refuses the whole call, naming it; nothing goes in.
    let bad_device = json!({"customers": [
        {"id": "c3", "devices": [{"id": "ok", "platform": "ios"}]},
        {"id": "c4", "devices": [{"id": "ok", "platform": "ios"},
                                 {"id": "bad", "platform": "android", "environment": "sandbox"}]},
    ]});
    let (s, v) = d.call("POST", "/v1/batch", Some(bad_device)).await;
    assert_eq!((s, code(&v)), (400, "invalid_field"), "{v}");
    let why = v["error"]["message"].as_str().unwrap();
    assert!(why.contains("customers[1].devices[1].environment"), "{why}");
    for bad in [
        json!({"customers": []}),
        json!({"customers": vec![json!({"id": "x"}); 1001]}),
        json!({"customers": [{"id": "x"}, {"id": ""}]}),
    ] {
        let (s, v) = d.call("POST", "/v1/batch", Some(bad)).await;
        assert_eq!((s, code(&v)), (400, "invalid_field"), "{v}");
    }
    for id in ["c3", "c4", "x"] {
        let (s, _) = d.call("GET", &format!("/v1/customers/{id}"), None).await;
        assert_eq!(s, 404, "{id}");
    }
}

#[tokio::test]
async fn bad_input_gets_a_precise_error_and_changes_nothing() {
    let (_dir, d) = daemon();
    d.customer("c1", json!({"first_name": "Ada"}), &[("tok", "ios")])
        .await;
    let raw = |body: &'static str| {
        d.client
            .put(d.url("/v1/customers/c1"))
            .bearer_auth(support::API_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = raw("{\"attributes\": ").await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(code(&v), "invalid_json");
    assert!(v["error"]["message"].as_str().unwrap().len() > 5);

    // serde alone would read `[]` as a body of defaults (no attributes).
    let resp = raw("[]").await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(code(&v), "invalid_field");
    assert_eq!(
        message_of(&v),
        "the body must be a JSON object, not an array"
    );

    let (s, v) = d
        .call("PUT", "/v1/customers/c1", Some(json!({"attributes": "x"})))
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));
    let (s, v) = d
        .call(
            "PUT",
            "/v1/customers/c1",
            Some(json!({"unsubscribed": "yes"})),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));
    let bad_platform = json!({"device": {"id": "t2", "platform": "windows"}});
    let (s, v) = d
        .call("PUT", "/v1/customers/c1/devices", Some(bad_platform))
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));
    let long = "x".repeat(257);
    let (s, v) = d
        .call("PUT", &format!("/v1/customers/{long}"), Some(json!({})))
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));
    let empty_token = json!({"device": {"id": "", "platform": "ios"}});
    let (s, v) = d
        .call("PUT", "/v1/customers/c1/devices", Some(empty_token))
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));
    let big = json!({"attributes": {"blob": "y".repeat(1 << 20)}});
    let (s, v) = d.call("PUT", "/v1/customers/c1", Some(big)).await;
    assert_eq!((s, code(&v)), (413, "body_too_large"));

    let (_, v) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!(
        v["attributes"],
        json!({"first_name": "Ada"}),
        "nothing changed"
    );
    assert_eq!(v["devices"].as_array().unwrap().len(), 1);

    let (s, v) = d.call("GET", "/v1/nothing-here", None).await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    let (s, v) = d.call("POST", "/v1/customers/c1", Some(json!({}))).await;
    assert_eq!((s, code(&v)), (405, "method_not_allowed"));
    let lower = d
        .client
        .get(d.url("/v1/customers/c1"))
        .header("authorization", format!("bearer {}", support::API_KEY));
    assert_eq!(
        lower.send().await.unwrap().status(),
        200,
        "the scheme is case-insensitive"
    );
}

#[tokio::test]
async fn messages_validate_their_templates() {
    let (_dir, d) = daemon();
    d.message("welcome", "onboarding", "Hi {{customer.first_name}}")
        .await;
    let (s, v) = d.call("GET", "/v1/messages/welcome", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["campaign_id"], "onboarding");
    assert_eq!(v["audience"], "all_devices");
    let bad = json!({"title": "Hi {{ customer.first_name", "body": "b"});
    let (s, v) = d.call("PUT", "/v1/messages/broken", Some(bad)).await;
    assert_eq!((s, code(&v)), (400, "invalid_template"));
    let (s, _) = d.call("GET", "/v1/messages/broken", None).await;
    assert_eq!(s, 404, "a refused message is not stored");
    let bad_audience = json!({"title": "t", "body": "b", "audience": "everyone"});
    let (s, v) = d.call("PUT", "/v1/messages/m2", Some(bad_audience)).await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));
    let typo = json!({"title": "t", "body": "b",
        "conversion": {"event": "purchase", "window_seconds": 60, "windows": 2}});
    let (s, v) = d.call("PUT", "/v1/messages/m3", Some(typo)).await;
    assert_eq!((s, code(&v)), (400, "invalid_field"), "{v}");
    assert!(message_of(&v).contains("unknown field `windows`"), "{v}");
    let (s, v) = d.call("GET", "/v1/messages/nope/metrics", None).await;
    assert_eq!((s, code(&v)), (404, "not_found"));
}

#[tokio::test]
async fn every_failure_reason_reachable_without_a_provider() {
    let (_dir, d) = daemon();
    d.message("welcome", "onboarding", "Hi {{customer.first_name}}")
        .await;
    d.customer("ios", json!({"first_name": "Ada"}), &[("tok-ios", "ios")])
        .await;
    d.customer(
        "android",
        json!({"first_name": "Al"}),
        &[("tok-and", "android")],
    )
    .await;
    d.customer("nameless", json!({}), &[("tok-n", "ios")]).await;
    d.customer("deviceless", json!({"first_name": "Di"}), &[])
        .await;
    d.ok(
        "PUT",
        "/v1/customers/unsub",
        json!({"attributes": {"first_name": "U"}, "unsubscribed": true}),
    )
    .await;
    let ids = d
        .send(
            "welcome",
            &["ios", "android", "ghost", "unsub", "nameless", "deviceless"],
        )
        .await;
    let expect = [
        ("failed", Some("credentials_not_found")),
        ("failed", Some("credentials_not_found")),
        ("failed", Some("customer_not_found")),
        ("failed", Some("customer_unsubscribed")),
        ("failed", Some("liquid_variable_missing")),
        ("undeliverable", Some("no_devices")),
    ];
    // The delivery log's reasons and words, by reason: what the metrics'
    // failure_reasons must count.
    let mut logged: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for (id, (status, reason)) in ids.iter().zip(expect) {
        let v = d.settled(id).await;
        assert_eq!(v["status"], status, "{v}");
        assert_eq!(v["failure_reason"].as_str(), reason, "{v}");
        let words = v["failure_message"].as_str().unwrap();
        assert!(!words.is_empty());
        let entry = logged.entry(reason.unwrap().to_owned()).or_default();
        entry.0 += 1;
        entry.1 = words.to_owned();
    }
    let v = d.settled(&ids[0]).await;
    assert_eq!(v["devices"][0]["status"], "failed");
    assert_eq!(
        v["devices"][0]["attempts"], 1,
        "credentials are not retried"
    );
    assert_eq!(v["devices_attempted"], 1);

    let m: Value = d
        .ok("GET", "/v1/messages/welcome/metrics", Value::Null)
        .await;
    assert_eq!(m["sends"], 6);
    assert_eq!(m["failed"], 5);
    assert_eq!(m["undeliverable"], 1);
    assert_eq!(m["sent"], 0);
    // A pre-send failure picks no device: by_platform counts only the two
    // devices that reached the provider stage.
    assert_eq!(m["by_platform"]["ios"]["sends"], 1);
    assert_eq!(m["by_platform"]["android"]["failed"], 1);
    let reasons = m["failure_reasons"].as_array().unwrap();
    let counted: Vec<(&str, i64)> = reasons
        .iter()
        .map(|r| (r["reason"].as_str().unwrap(), r["count"].as_i64().unwrap()))
        .collect();
    let mut largest_first: Vec<(&str, i64)> =
        logged.iter().map(|(r, (n, _))| (r.as_str(), *n)).collect();
    largest_first.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    assert_eq!(counted, largest_first);
    for r in reasons {
        let (count, words) = &logged[r["reason"].as_str().unwrap()];
        let share = r["share"].as_f64().unwrap();
        assert!((share - *count as f64 / 6.0).abs() < 1e-4, "{r}");
        let fix = r["fix"].as_str().unwrap();
        assert!(words.ends_with(fix), "{fix:?} is the log's words {words:?}");
    }
    let c: Value = d
        .ok("GET", "/v1/campaigns/onboarding/metrics", Value::Null)
        .await;
    assert_eq!(c["sends"], 6);
    assert_eq!(c["failure_reasons"], m["failure_reasons"]);
}

#[tokio::test]
async fn send_limits_and_unknown_message() {
    let (_dir, d) = daemon();
    d.message("m", "c", "t").await;
    let ids: Vec<String> = (0..10_001).map(|i| format!("c{i}")).collect();
    let (s, v) = d
        .call(
            "POST",
            "/v1/send/push",
            Some(json!({"message_id": "m", "customer_ids": ids})),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));
    let (s, v) = d
        .call(
            "POST",
            "/v1/send/push",
            Some(json!({"message_id": "m", "customer_ids": []})),
        )
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));
    let (s, v) = d
        .call(
            "POST",
            "/v1/send/push",
            Some(json!({"message_id": "zz", "customer_ids": ["a"]})),
        )
        .await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    let (s, v) = d
        .call("POST", "/v1/send/push", Some(json!({"message_id": "m"})))
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));
    let (_, list) = d.call("GET", "/v1/deliveries", None).await;
    assert_eq!(
        list["deliveries"].as_array().unwrap().len(),
        0,
        "nothing was sent"
    );
}

#[tokio::test]
async fn reports_retry_and_the_delivery_log() {
    let (_dir, d) = daemon();
    d.message("welcome", "onboarding", "Hi {{customer.first_name}}")
        .await;
    d.customer("c1", json!({}), &[("tok-1", "ios")]).await;
    d.customer("c2", json!({"first_name": "B"}), &[]).await;
    let ids = d.send("welcome", &["c1", "c2"]).await;
    let failed = d.settled(&ids[0]).await;
    assert_eq!(failed["failure_reason"], "liquid_variable_missing");

    // Reports must name a device the delivery targeted.
    let report = json!({"delivery_id": ids[1], "event": "delivered", "device_id": "tok-1"});
    let (s, v) = d
        .call_as(SDK_KEY, "POST", "/push/events", Some(report))
        .await;
    assert_eq!((s, code(&v)), (404, "not_found"));
    let bad_event = json!({"delivery_id": ids[0], "event": "clicked", "device_id": "tok-1"});
    let (s, v) = d
        .call_as(SDK_KEY, "POST", "/push/events", Some(bad_event))
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));

    // Only failed deliveries retry; after fixing the attribute the retry
    // renders and reaches the provider stage (credentials_not_found here).
    let (s, v) = d
        .call("POST", &format!("/v1/deliveries/{}/retry", ids[1]), None)
        .await;
    assert_eq!((s, code(&v)), (409, "not_retryable"));
    d.ok(
        "PUT",
        "/v1/customers/c1",
        json!({"attributes": {"first_name": "A"}}),
    )
    .await;
    let (s, _) = d
        .call("POST", &format!("/v1/deliveries/{}/retry", ids[0]), None)
        .await;
    assert_eq!(s, 202);
    let v = d
        .delivery_until(&ids[0], |v| v["failure_reason"] == "credentials_not_found")
        .await;
    assert_eq!(v["devices"][0]["token"], "tok-1");
    let (s, _) = d.call("POST", "/v1/deliveries/nope/retry", None).await;
    assert_eq!(s, 404);

    // The log: newest first, filters, paging, bad filters.
    let (_, all) = d.call("GET", "/v1/deliveries?channel=push", None).await;
    let listed: Vec<&str> = all["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["delivery_id"].as_str().unwrap())
        .collect();
    let mut newest_first: Vec<&str> = ids.iter().map(String::as_str).collect();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed, newest_first);
    let (_, u) = d
        .call("GET", "/v1/deliveries?status=undeliverable", None)
        .await;
    assert_eq!(u["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(u["deliveries"][0]["customer_id"], "c2");
    let (_, c) = d
        .call(
            "GET",
            "/v1/deliveries?customer_id=c1&message_id=welcome&campaign_id=onboarding",
            None,
        )
        .await;
    assert_eq!(c["deliveries"].as_array().unwrap().len(), 1);
    let (_, p1) = d.call("GET", "/v1/deliveries?limit=1", None).await;
    let cursor = p1["next_cursor"].as_str().unwrap().to_string();
    let (_, p2) = d
        .call(
            "GET",
            &format!("/v1/deliveries?limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(p2["deliveries"][0]["delivery_id"], newest_first[1]);
    assert_eq!(p2["next_cursor"], Value::Null);
    let (s, big) = d.call("GET", "/v1/deliveries?limit=5000", None).await;
    assert_eq!(
        (s, big["deliveries"].as_array().unwrap().len()),
        (200, 2),
        "capped, not refused"
    );
    let (s, v) = d.call("GET", "/v1/deliveries?limit=0", None).await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));
    let (s, v) = d.call("GET", "/v1/deliveries?status=lost", None).await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));
    let (s, v) = d.call("GET", "/v1/deliveries?cursor=%%%", None).await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));
    let (s, v) = d.call("GET", "/v1/deliveries/nope", None).await;
    assert_eq!((s, code(&v)), (404, "not_found"));
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero_and_state_survives() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    d.customer("c1", json!({"first_name": "Ada"}), &[]).await;
    d.message("m", "c", "Hi {{customer.first_name}}").await;
    let ids = d.send("m", &["c1"]).await;
    assert_eq!(d.terminate(), Some(0));
    let d = Daemon::start(dir.path(), &[]);
    let (s, v) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["attributes"]["first_name"], "Ada");
    let v = d.settled(&ids[0]).await;
    assert_eq!(v["status"], "undeliverable");
}

#[tokio::test]
async fn keys_are_generated_once_printed_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::launch(dir.path(), &[]);
    let key = |name: &str| {
        let line = d
            .banner
            .iter()
            .find(|l| l.starts_with(&format!("generated {name}: ")));
        line.expect("key printed")
            .split_whitespace()
            .nth(2)
            .unwrap()
            .to_string()
    };
    let (api, sdk) = (key("api_key"), key("sdk_key"));
    assert_ne!(api, sdk);
    assert!(api.len() >= 32);
    let (s, _) = d
        .call_as(&api, "PUT", "/v1/customers/c1", Some(json!({})))
        .await;
    assert_eq!(s, 200);
    let (s, _) = d
        .call_as(&sdk, "PUT", "/v1/customers/c1", Some(json!({})))
        .await;
    assert_eq!(s, 401, "the SDK key is not an API key");
    assert_eq!(d.terminate(), Some(0));

    let again = Daemon::launch(dir.path(), &[("PUSHD_SDK_KEY", " ".to_string())]);
    assert!(
        again.banner.iter().all(|l| !l.starts_with("generated")),
        "kept: {:?}",
        again.banner
    );
    let (s, _) = again.call_as(&api, "GET", "/v1/customers/c1", None).await;
    assert_eq!(s, 200, "the kept key still works");
    let (s, _) = again.call_as("", "GET", "/v1/customers/c1", None).await;
    assert_eq!(s, 401, "a blank key never authenticates");
}

fn message_of(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn errors_name_the_id_the_field_and_the_parameter() {
    let (_dir, d) = daemon();
    d.message("welcome", "onboarding", "Hi {{customer.first_name}}")
        .await;
    d.customer("c1", json!({}), &[("tok-1", "ios")]).await;

    let send = json!({"message_id": "welcom", "customer_ids": ["c1"]});
    let (s, v) = d.call("POST", "/v1/send/push", Some(send)).await;
    assert_eq!((s, message_of(&v)), (404, "message \"welcom\" not found"));
    let (s, v) = d.call("GET", "/v1/customers/ghost", None).await;
    assert_eq!((s, message_of(&v)), (404, "customer \"ghost\" not found"));
    let (s, v) = d
        .call("DELETE", "/v1/customers/c1/devices/tok-x", None)
        .await;
    assert_eq!((s, message_of(&v)), (404, "device \"tok-x\" not found"));
    let (s, v) = d.call("GET", "/v1/deliveries/01NOPE", None).await;
    assert_eq!((s, message_of(&v)), (404, "delivery \"01NOPE\" not found"));

    // JSON type errors name the field.
    let (s, v) = d
        .call("PUT", "/v1/customers/c1", Some(json!({"attributes": "x"})))
        .await;
    assert_eq!(s, 400);
    assert!(
        message_of(&v).starts_with("attributes must be an object"),
        "{v}"
    );
    let bad = json!({"device": {"id": "t", "platform": "windows"}});
    let (s, v) = d.call("PUT", "/v1/customers/c1/devices", Some(bad)).await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));
    assert!(message_of(&v).contains("device.platform"), "{v}");
    assert!(message_of(&v).contains("`ios`"), "{v}");
    let ids = json!({"message_id": "welcome", "customer_ids": ["c1", 7]});
    let (s, v) = d.call("POST", "/v1/send/push", Some(ids)).await;
    assert_eq!(s, 400);
    assert!(
        message_of(&v).starts_with("customer_ids[1] must be a string"),
        "{v}"
    );

    // Query errors name the parameter and the valid values.
    let (s, v) = d.call("GET", "/v1/deliveries?limit=lots", None).await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));
    assert!(
        message_of(&v).contains("limit must be a whole number from 1 to 1000"),
        "{v}"
    );
    let (s, v) = d.call("GET", "/v1/deliveries?status=lost", None).await;
    assert_eq!(s, 400);
    assert!(
        message_of(&v).contains("status must be one of scheduled, attempted, sent, delivered"),
        "{v}"
    );
    let long = "m".repeat(257);
    for filter in ["message_id", "campaign_id", "customer_id"] {
        let (s, v) = d
            .call("GET", &format!("/v1/deliveries?{filter}={long}"), None)
            .await;
        assert_eq!(s, 400, "{filter}: {v}");
        assert!(message_of(&v).starts_with(filter), "{v}");
    }
    let (s, v) = d.call("GET", "/v1/deliveries?colour=red", None).await;
    assert_eq!(s, 400);
    assert!(message_of(&v).contains("colour"), "{v}");

    // An event's data must be an object; nothing changes.
    let event = json!({"name": "purchase", "data": [1, 2]});
    let (s, v) = d.call("POST", "/v1/customers/c1/events", Some(event)).await;
    assert_eq!((s, message_of(&v)), (400, "data must be an object"));

    // A template that does not parse says which field and where.
    let bad = json!({"title": "ok", "body": "Hi {{ customer.first_name"});
    let (s, v) = d.call("PUT", "/v1/messages/broken", Some(bad)).await;
    assert_eq!((s, code(&v)), (400, "invalid_template"));
    assert!(
        message_of(&v).starts_with("body is not a valid Liquid template: at line 1, column"),
        "{v}"
    );
    assert!(message_of(&v).contains("not closed with }}"), "{v}");

    // A missing variable is named in the delivery's failure_message.
    let ids = d.send("welcome", &["c1"]).await;
    let v = d.settled(&ids[0]).await;
    assert_eq!(v["failure_reason"], "liquid_variable_missing");
    assert!(
        v["failure_message"]
            .as_str()
            .unwrap()
            .starts_with("title: the variable customer.first_name is missing."),
        "{v}"
    );
}

#[tokio::test]
async fn a_wrong_method_on_a_known_path_is_405_with_allow() {
    let (_dir, d) = daemon();
    let cases = [
        ("GET", "/v1/send/push", "POST"),
        ("DELETE", "/v1/messages/x", "PUT, GET"),
        ("POST", "/v1/deliveries", "GET"),
        ("DELETE", "/v1/deliveries/x/retry", "POST"),
        ("GET", "/v1/customers/c1/devices", "PUT"),
        ("POST", "/v1/customers/c1", "PUT, GET, DELETE"),
        ("GET", "/push/events", "POST"),
        ("PUT", "/v1/messages", "GET"),
        ("DELETE", "/healthz", "GET"),
        ("POST", "/", "GET, HEAD"),
    ];
    for (method, path, allow) in cases {
        let resp = d
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                d.url(path),
            )
            .bearer_auth(support::API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        let header = resp
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(header.as_deref(), Some(allow), "{method} {path}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(code(&v), "method_not_allowed", "{method} {path}");
        assert!(message_of(&v).contains(allow), "{v}");
    }
    let (s, v) = d.call("GET", "/v1/nothing-here", None).await;
    assert_eq!((s, code(&v)), (404, "not_found"));
}

/// Waits until the wall clock shows a later second than `after` (message
/// creation times are whole seconds).
async fn next_second(after: i64) {
    while pushd_actors::ports::Clock::now(&pushd_actors::ports::SystemClock) <= after {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn messages_and_campaigns_list_newest_first_with_their_figures() {
    let (_dir, d) = daemon();
    let (_, empty) = d.call("GET", "/v1/messages", None).await;
    assert_eq!(empty, json!({"messages": [], "next_cursor": null}));
    d.customer("c1", json!({"first_name": "Ada"}), &[]).await;
    d.customer("c2", json!({"first_name": "Bo"}), &[]).await;
    d.message("older", "spring", "Hi {{customer.first_name}}")
        .await;
    let (_, older) = d.call("GET", "/v1/messages/older", None).await;
    next_second(older["created_at"].as_i64().unwrap()).await;
    d.message("newer", "autumn", "Hi {{customer.first_name}}")
        .await;
    d.send("older", &["c1", "c2"]).await;
    d.send("newer", &["c1"]).await;
    // Replacing a message keeps its place.
    d.message("older", "spring", "Hello {{customer.first_name}}")
        .await;

    let (s, list) = d.call("GET", "/v1/messages", None).await;
    assert_eq!(s, 200, "{list}");
    let listed: Vec<&str> = list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["newer", "older"]);
    let older_row = &list["messages"][1];
    assert_eq!(older_row["name"], "older");
    assert_eq!(older_row["campaign_id"], "spring");
    let (_, metrics) = d.call("GET", "/v1/messages/older/metrics", None).await;
    assert_eq!(older_row["metrics"], metrics);
    assert_eq!(older_row["metrics"]["sends"], 2);

    let (_, p1) = d.call("GET", "/v1/messages?limit=1", None).await;
    assert_eq!(p1["messages"][0]["message_id"], "newer");
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = d
        .call(
            "GET",
            &format!("/v1/messages?limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(p2["messages"][0]["message_id"], "older");
    assert_eq!(p2["next_cursor"], Value::Null);
    let (s, v) = d.call("GET", "/v1/messages?cursor=bogus", None).await;
    assert_eq!((s, code(&v)), (400, "invalid_field"));

    let (_, campaigns) = d.call("GET", "/v1/campaigns", None).await;
    assert_eq!(campaigns["campaigns"][0]["campaign_id"], "autumn");
    assert_eq!(campaigns["campaigns"][1]["campaign_id"], "spring");
    assert_eq!(campaigns["campaigns"][1]["message_ids"], json!(["older"]));
    assert_eq!(campaigns["campaigns"][1]["metrics"]["sends"], 2);
}

#[tokio::test]
async fn the_delivery_log_and_detail_carry_the_message_name() {
    let (_dir, d) = daemon();
    d.ok(
        "PUT",
        "/v1/messages/welcome",
        json!({"name": "Welcome push", "title": "Hi", "body": "there"}),
    )
    .await;
    d.customer("c1", json!({}), &[]).await;
    let ids = d.send("welcome", &["c1"]).await;
    let (_, log) = d.call("GET", "/v1/deliveries", None).await;
    assert_eq!(log["deliveries"][0]["message_id"], "welcome");
    assert_eq!(log["deliveries"][0]["name"], "Welcome push");
    let detail = d.settled(&ids[0]).await;
    assert_eq!(detail["name"], "Welcome push");
}

/// The current time as the daemon sees it (the system clock), Unix seconds.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn report_and_event_times_before_2000_or_a_day_ahead_are_refused() {
    let (_dir, d) = daemon();
    d.customer("c1", json!({"first_name": "Ada"}), &[("tok", "ios")])
        .await;
    d.message("m", "camp", "Hi").await;
    let id = d.send("m", &["c1"]).await.remove(0);
    let before = d.settled(&id).await;
    let day_ahead = now() + 24 * 3600;
    let refused = [
        i64::MIN,
        -1,
        0,
        946_684_799,
        1_764_100_000_000,
        day_ahead + 120,
        i64::MAX,
    ];
    for at in refused {
        let report =
            json!({"delivery_id": id, "event": "opened", "device_id": "tok", "timestamp": at});
        let (s, v) = d
            .call_as(SDK_KEY, "POST", "/push/events", Some(report))
            .await;
        assert_eq!((s, code(&v)), (400, "invalid_field"), "report at {at}: {v}");
        assert!(message_of(&v).starts_with("timestamp must be"), "{v}");
        let event = json!({"name": "purchase", "timestamp": at});
        let (s, v) = d.call("POST", "/v1/customers/c1/events", Some(event)).await;
        assert_eq!((s, code(&v)), (400, "invalid_field"), "event at {at}: {v}");
        assert!(message_of(&v).contains("timestamp"), "{v}");
    }
    assert_eq!(d.settled(&id).await, before, "nothing changed");
    // The bounds themselves are accepted: 2000-01-01, and a report dated
    // before its delivery counts at the delivery's creation.
    let report = json!({"delivery_id": id, "event": "delivered", "device_id": "tok",
        "timestamp": 946_684_800});
    let (s, v) = d
        .call_as(SDK_KEY, "POST", "/push/events", Some(report))
        .await;
    assert_eq!(s, 200, "{v}");
    let v = d.settled(&id).await;
    assert_eq!(v["devices"][0]["delivered_at"], v["created_at"], "{v}");
    let ahead = now() + 23 * 3600;
    let report =
        json!({"delivery_id": id, "event": "opened", "device_id": "tok", "timestamp": ahead});
    let (s, v) = d
        .call_as(SDK_KEY, "POST", "/push/events", Some(report))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(d.settled(&id).await["devices"][0]["opened_at"], ahead);
}

#[tokio::test]
async fn device_last_used_takes_any_whole_number() {
    let (_dir, d) = daemon();
    d.customer("c1", json!({"first_name": "Ada"}), &[]).await;
    for (token, last_used) in [("oldest", i64::MIN), ("newest", i64::MAX), ("mid", 0)] {
        let device = json!({"device": {"id": token, "platform": "ios", "last_used": last_used}});
        d.ok("PUT", "/v1/customers/c1/devices", device).await;
    }
    let body = json!({"title": "t", "body": "b", "audience": "last_device"});
    d.ok("PUT", "/v1/messages/last", body).await;
    let id = d.send("last", &["c1"]).await.remove(0);
    let v = d.settled(&id).await;
    let tokens: Vec<&str> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, ["newest"], "{v}");
}

#[tokio::test]
async fn send_data_is_at_most_16_kib() {
    let (_dir, d) = daemon();
    d.customer("c1", json!({"first_name": "Ada"}), &[]).await;
    d.message("m", "camp", "Hi").await;
    // {"k":"…"} is 8 bytes of JSON around the value.
    let send = |len: usize| json!({"message_id": "m", "customer_ids": ["c1"], "data": {"k": "x".repeat(len)}});
    let (s, v) = d
        .call("POST", "/v1/send/push", Some(send(16 * 1024 - 7)))
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_field"), "{v}");
    assert!(
        message_of(&v).starts_with("data must be at most 16384 bytes"),
        "{v}"
    );
    let (_, list) = d.call("GET", "/v1/deliveries", None).await;
    assert_eq!(list["deliveries"], json!([]), "nothing was sent");
    let (s, v) = d
        .call("POST", "/v1/send/push", Some(send(16 * 1024 - 8)))
        .await;
    assert_eq!(s, 202, "{v}");
}

#[tokio::test]
async fn a_customer_keeps_at_most_100_devices() {
    let (_dir, d) = daemon();
    d.customer("c1", json!({}), &[]).await;
    let device = |i: usize| json!({"device": {"id": format!("tok-{i}"), "platform": "android"}});
    for i in 0..100 {
        d.ok("PUT", "/v1/customers/c1/devices", device(i)).await;
    }
    let (s, v) = d
        .call("PUT", "/v1/customers/c1/devices", Some(device(100)))
        .await;
    assert_eq!((s, code(&v)), (400, "invalid_field"), "{v}");
    assert!(message_of(&v).contains("at most 100"), "{v}");
    // Re-registering a kept token is no new device.
    d.ok("PUT", "/v1/customers/c1/devices", device(7)).await;
    let (_, c) = d.call("GET", "/v1/customers/c1", None).await;
    let devices = c["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 100);
    assert!(
        devices.iter().all(|x| x["id"] != "tok-100"),
        "nothing changed"
    );
}

#[tokio::test]
async fn events_for_an_unknown_customer_are_404_and_start_nothing() {
    let (_dir, d) = daemon();
    let event = json!({"name": "purchase", "data": {"amount": 1}});
    let (name, proof) = support::customer_auth("nobody");
    for (key, headers) in [
        (support::API_KEY, vec![]),
        (SDK_KEY, vec![(name, proof.as_str())]),
    ] {
        let (s, v) = d
            .call_with(
                key,
                &headers,
                "POST",
                "/v1/customers/nobody/events",
                Some(event.clone()),
            )
            .await;
        assert_eq!((s, code(&v)), (404, "not_found"), "{v}");
        assert_eq!(message_of(&v), "customer \"nobody\" not found");
    }
    let text = reqwest::get(d.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines().any(|l| l == "pushd_person_actors 0"),
        "no customer actor was started:\n{text}"
    );
    let (_, list) = d
        .call("GET", "/v1/deliveries?customer_id=nobody", None)
        .await;
    assert_eq!(list["deliveries"], json!([]));
}

/// The id rule: every id, in a path or a body, is UTF-8 (after
/// percent-decoding) without control characters; a refused request
/// changes nothing.
#[tokio::test]
async fn ids_are_utf8_without_control_characters_in_paths_and_bodies() {
    let (_dir, d) = daemon();
    d.message("welcome", "onboarding", "Hi").await;
    d.customer("c1", json!({}), &[("tok-1", "ios")]).await;
    let rule = "must be valid UTF-8 without control characters";

    // Invalid UTF-8 (actix-web decoded it lossily, so these three were the
    // same customer), C0, DEL and C1 characters.
    for raw in [
        "%FF%FE", "%FE%FF", "%C0%80", "c%00", "c%0A", "%7F", "c%C2%85",
    ] {
        let path = format!("/v1/customers/{raw}");
        let (s, v) = d.call("PUT", &path, Some(json!({}))).await;
        assert_eq!((s, code(&v)), (400, "invalid_field"), "{raw}: {v}");
        assert_eq!(message_of(&v), format!("customer_id {rule}"), "{raw}");
    }
    // Nothing was created under the lossy decoding's name.
    let (s, _) = d
        .call("GET", "/v1/customers/%EF%BF%BD%EF%BF%BD", None)
        .await;
    assert_eq!(s, 404);

    // Every id a path takes, with the name the API gives it.
    let sdk = [("POST", "/v1/customers/%FF/events", "customer_id")];
    let api = [
        ("GET", "/v1/customers/%FF", "customer_id"),
        ("DELETE", "/v1/customers/%FF", "customer_id"),
        ("PUT", "/v1/customers/%FF/devices", "customer_id"),
        ("DELETE", "/v1/customers/c1/devices/%FF", "token"),
        ("DELETE", "/v1/customers/c1/devices/tok%00", "token"),
        ("PUT", "/v1/messages/%00", "message_id"),
        ("GET", "/v1/messages/%FF/metrics", "message_id"),
        ("GET", "/v1/messages/%FF/timeseries", "message_id"),
        ("GET", "/v1/campaigns/%FF/metrics", "campaign_id"),
        ("GET", "/v1/campaigns/%1B/timeseries", "campaign_id"),
        ("GET", "/v1/deliveries/%FF", "delivery_id"),
        ("POST", "/v1/deliveries/%FF/retry", "delivery_id"),
        ("PUT", "/v1/webhooks/%FF", "webhook_id"),
        ("GET", "/v1/webhooks/%C2%9F", "webhook_id"),
    ];
    let calls = sdk
        .iter()
        .map(|c| (SDK_KEY, c))
        .chain(api.iter().map(|c| (API_KEY, c)));
    for (key, (method, path, name)) in calls {
        let (s, v) = d.call_as(key, method, path, Some(json!({}))).await;
        assert_eq!(
            (s, code(&v)),
            (400, "invalid_field"),
            "{method} {path}: {v}"
        );
        assert_eq!(message_of(&v), format!("{name} {rule}"), "{method} {path}");
    }
    let (_, c1) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!(c1["devices"].as_array().map(Vec::len), Some(1), "{c1}");

    // Valid ids decode exactly: an escaped slash, a non-ASCII letter.
    for (raw, id) in [("a%2Fb", "a/b"), ("%C3%A9t%C3%A9", "été")] {
        let path = format!("/v1/customers/{raw}");
        let v = d.ok("PUT", &path, json!({})).await;
        assert_eq!(v["customer_id"], id);
        let (s, v) = d.call("GET", &path, None).await;
        assert_eq!((s, v["id"].as_str()), (200, Some(id)), "{v}");
    }

    // Ids in bodies.
    let bodies = [
        (
            "POST",
            "/v1/send/push",
            json!({"message_id": "welcome", "customer_ids": ["c1", "c\u{0}"]}),
            "customer_ids[1]",
        ),
        (
            "POST",
            "/v1/send/push",
            json!({"message_id": "wel\u{7f}come", "customer_ids": ["c1"]}),
            "message_id",
        ),
        (
            "PUT",
            "/v1/customers/c1/devices",
            json!({"device": {"id": "tok\n", "platform": "ios"}}),
            "device.id",
        ),
        (
            "POST",
            "/v1/batch",
            json!({"customers": [{"id": "c9"}, {"id": "c\u{85}"}]}),
            "customers[1].id",
        ),
        (
            "POST",
            "/v1/batch",
            json!({"customers": [{"id": "c9", "devices": [{"id": "t\u{1}", "platform": "ios"}]}]}),
            "customers[0].devices[0].id",
        ),
        (
            "PUT",
            "/v1/messages/m2",
            json!({"title": "t", "body": "b", "campaign_id": "c\u{9b}"}),
            "campaign_id",
        ),
        (
            "PUT",
            "/v1/messages/m2",
            json!({"title": "t", "body": "b", "name": "bell\u{7}"}),
            "name",
        ),
    ];
    for (method, path, body, name) in bodies {
        let (s, v) = d.call(method, path, Some(body)).await;
        assert_eq!((s, code(&v)), (400, "invalid_field"), "{path}: {v}");
        assert_eq!(message_of(&v), format!("{name} {rule}"), "{path}");
    }
    let report = json!({"delivery_id": "d\u{0}", "event": "delivered", "device_id": "tok-1"});
    let (s, v) = d
        .call_as(SDK_KEY, "POST", "/push/events", Some(report))
        .await;
    assert_eq!(
        (s, message_of(&v)),
        (400, format!("delivery_id {rule}").as_str())
    );
    for path in ["/v1/customers/c9", "/v1/messages/m2"] {
        let (s, _) = d.call("GET", path, None).await;
        assert_eq!(s, 404, "{path}");
    }
    let (_, c1) = d.call("GET", "/v1/customers/c1", None).await;
    assert_eq!(c1["devices"].as_array().map(Vec::len), Some(1), "{c1}");
}
