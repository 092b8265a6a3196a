//! What the public SDK key can reach. It ships inside every copy of the
//! app, so these tests call as anyone holding it would: an SDK-key call
//! about a customer needs that customer's `Pushd-Customer-Auth` proof
//! (identity verification, required by default), is refused alike whether
//! the customer exists or not, changes nothing when refused, and is never
//! answered with a delivery id.

mod support;

use std::process::Command;

use pushd::sim::{FakeProviders, FaultMix};
use ring::hmac;
use serde_json::{Value, json};
use support::{API_KEY, Daemon, SDK_KEY, fakes, ios_token};

/// The identity secret as `pushd keys` prints it for the test keys.
fn printed_secret(data: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pushd"))
        .arg("keys")
        .env_clear()
        .env("PUSHD_DATA_DIR", data)
        .env("PUSHD_API_KEY", API_KEY)
        .env("PUSHD_SDK_KEY", SDK_KEY)
        .output()
        .expect("pushd keys runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("export PUSHD_IDENTITY_SECRET="))
        .unwrap_or_else(|| panic!("no identity secret in {text}"));
    line.trim_matches('\'').to_string()
}

/// HMAC-SHA256 of `message` under `key`, in lowercase hex: how
/// docs/security.md tells a backend to compute the secret and the proof.
fn hmac_hex(key: &str, message: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes());
    let tag = hmac::sign(&key, message.as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A daemon with customer `c1` (one iPhone) whose `promo` push was sent
/// and delivered; answers the daemon, the delivery id and the fakes.
async fn delivered_promo(
    dir: &std::path::Path,
    env: &[(&str, String)],
) -> (Daemon, String, FakeProviders) {
    let fakes = fakes(dir, FaultMix::default()).await;
    let d = Daemon::start(&dir.join("data"), &[&fakes.env()[..], env].concat());
    d.customer("c1", json!({}), &[(&ios_token(1), "ios")]).await;
    d.message("promo", "spring", "Hi").await;
    let id = d.send("promo", &["c1"]).await.remove(0);
    assert_eq!(d.settled(&id).await["status"], "sent");
    let report = json!({"delivery_id": id, "event": "delivered", "device_id": ios_token(1)});
    let (status, v) = d
        .call_as(SDK_KEY, "POST", "/push/events", Some(report))
        .await;
    assert_eq!(status, 200, "a report needs no proof: {v}");
    (d, id, fakes)
}

/// An SDK-key `purchase` event for `customer`, with `proof` if any.
async fn purchase(d: &Daemon, customer: &str, proof: Option<&str>) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = proof
        .map(|p| ("Pushd-Customer-Auth", p))
        .into_iter()
        .collect();
    let path = format!("/v1/customers/{customer}/events");
    let body = json!({"name": "purchase", "data": {"amount": 42}});
    d.call_with(SDK_KEY, &headers, "POST", &path, Some(body))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_key_events_need_the_customers_own_proof() {
    let dir = tempfile::tempdir().unwrap();
    let (d, id, fakes) = delivered_promo(dir.path(), &[]).await;
    let secret = printed_secret(&d.data_dir);
    assert_eq!(
        secret,
        hmac_hex(API_KEY, "pushd identity verification"),
        "the secret is derived from the API key as documented"
    );

    // Without a proof, with another customer's, or with a forged one: the
    // same 401 whether the customer exists or not.
    let other = hmac_hex(&secret, "c2");
    let forged = hmac_hex(SDK_KEY, "c1");
    let mut answers = Vec::new();
    for customer in ["c1", "nobody"] {
        for proof in [None, Some(other.as_str()), Some(forged.as_str()), Some("")] {
            let (status, v) = purchase(&d, customer, proof).await;
            assert_eq!(status, 401, "{customer} {proof:?}: {v}");
            answers.push(v);
        }
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert!(
        answers[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Pushd-Customer-Auth"),
        "{}",
        answers[0]
    );
    // ... and nothing changed.
    let v = d.delivery_until(&id, |_| true).await;
    assert_eq!(v["status"], "delivered", "{v}");

    // With its own proof the event counts; the app is told it was taken,
    // not which delivery it converted.
    let proof = hmac_hex(&secret, "c1");
    let (status, v) = purchase(&d, "c1", Some(&proof)).await;
    assert_eq!((status, v.clone()), (200, json!({"status": "ok"})), "{v}");
    let v = d.delivery_until(&id, |v| v["status"] == "converted").await;
    assert_eq!(v["status"], "converted");
    // A valid proof for a customer that does not exist: the backend
    // vouched for it, so the answer may say so.
    let (status, v) = purchase(&d, "nobody", Some(&hmac_hex(&secret, "nobody"))).await;
    assert_eq!(status, 404, "{v}");
    // The API key (the backend) needs no proof and is told the delivery.
    let (status, v) = d
        .call(
            "POST",
            "/v1/customers/c1/events",
            Some(json!({"name": "purchase"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(v.get("converted_delivery_id").is_some(), "{v}");

    // The directory keeps requiring it across restarts.
    assert_eq!(d.terminate(), Some(0));
    let d = Daemon::start(&dir.path().join("data"), &fakes.env());
    assert_eq!(purchase(&d, "c1", None).await.0, 401);
    assert_eq!(purchase(&d, "c1", Some(&proof)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_carries_a_proof_must_carry_its_customers() {
    let dir = tempfile::tempdir().unwrap();
    let (d, id, _fakes) = delivered_promo(dir.path(), &[]).await;
    let secret = printed_secret(&d.data_dir);
    let report = json!({"delivery_id": id, "event": "opened", "device_id": ios_token(1)});
    let wrong = hmac_hex(&secret, "c2");
    let (status, v) = d
        .call_with(
            SDK_KEY,
            &[("Pushd-Customer-Auth", &wrong)],
            "POST",
            "/push/events",
            Some(report.clone()),
        )
        .await;
    assert_eq!(status, 401, "{v}");
    let v = d.delivery_until(&id, |_| true).await;
    assert_eq!(v["status"], "delivered", "refused, nothing changed: {v}");
    let right = hmac_hex(&secret, "c1");
    let (status, v) = d
        .call_with(
            SDK_KEY,
            &[("Pushd-Customer-Auth", &right)],
            "POST",
            "/push/events",
            Some(report),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let v = d.delivery_until(&id, |v| v["status"] == "opened").await;
    assert_eq!(v["status"], "opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_verification_off_an_sdk_event_is_still_told_no_delivery_id() {
    let dir = tempfile::tempdir().unwrap();
    let off = [("PUSHD_IDENTITY_VERIFICATION", "off".to_string())];
    let (d, id, _fakes) = delivered_promo(dir.path(), &off).await;
    let (status, v) = purchase(&d, "c1", None).await;
    assert_eq!((status, v.clone()), (200, json!({"status": "ok"})), "{v}");
    let v = d.delivery_until(&id, |v| v["status"] == "converted").await;
    assert_eq!(v["status"], "converted");
}

#[test]
fn a_bad_identity_verification_value_stops_the_start_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pushd"))
        .arg("serve")
        .env_clear()
        .env("PUSHD_DATA_DIR", dir.path().join("data"))
        .env("PUSHD_LISTEN", "127.0.0.1:0")
        .env("PUSHD_IDENTITY_VERIFICATION", "maybe")
        .output()
        .expect("pushd runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PUSHD_IDENTITY_VERIFICATION") || err.contains("identity-verification"),
        "{err}"
    );
    assert!(err.contains("required") && err.contains("off"), "{err}");
    assert!(!dir.path().join("data").exists(), "nothing created");
}
