//! What the harness asks of a daemon: customers with two devices each, a
//! push template, and sends in batches.

use std::ops::Range;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};
use reqwest::Method;
use serde_json::{Value, json};

use crate::daemon::{API_KEY, Api, Res, android_token, ios_token};

/// Customers per `POST /v1/batch`.
const IMPORT_BATCH: usize = 1000;
/// Import calls in flight.
const IMPORTS_IN_FLIGHT: usize = 4;
/// Customer ids per `POST /v1/send/push`.
pub const SEND_BATCH: usize = 500;
/// Send calls in flight.
pub const SENDS_IN_FLIGHT: usize = 4;

/// One `POST /v1/send/push`: when it started, when the 202 came, and the
/// delivery ids with their customer numbers.
pub struct Batch {
    /// When the call started.
    pub started: Instant,
    /// How long the call took.
    pub took: Duration,
    /// `(delivery id, customer number)`.
    pub deliveries: Vec<(String, usize)>,
}

/// The id of customer number `i`.
pub fn customer_id(i: usize) -> String {
    format!("c{i}")
}

/// Registers customers `range` (one iOS and one Android device each) with
/// bulk imports of 1,000, several in flight, starting no import after
/// `deadline`; answers how many were registered (always a prefix of `range`).
pub async fn register(api: &Api, range: Range<usize>, deadline: Instant) -> Res<usize> {
    let chunks: Vec<Range<usize>> = range
        .clone()
        .step_by(IMPORT_BATCH)
        .map(|s| s..(s + IMPORT_BATCH).min(range.end))
        .collect();
    stream::iter(chunks)
        .take_while(|_| std::future::ready(Instant::now() < deadline))
        .map(|chunk| import(api, chunk))
        .buffered(IMPORTS_IN_FLIGHT)
        .try_fold(0, |n, k| std::future::ready(Ok(n + k)))
        .await
}

/// Attempts at a call whose items a moving partition refused (a cluster
/// node answers `partition_unavailable` while a partition changes owner).
const MOVING_ATTEMPTS: usize = 50;
/// Pause before asking again for such items.
const MOVING_PAUSE: Duration = Duration::from_millis(100);

/// Whether an item's error says its partition is moving: ask again.
fn moving(error: &Value) -> bool {
    error["code"] == "partition_unavailable"
}

/// One bulk import of customers `chunk`; answers how many it imported.
/// Items refused while their partition moves are imported again.
async fn import(api: &Api, chunk: Range<usize>) -> Res<usize> {
    let mut customers: Vec<Value> = chunk
        .clone()
        .map(|i| {
            let devices =
                [(ios_token(i), "ios"), (android_token(i), "android")].map(|(token, platform)| {
                    json!({"id": token, "platform": platform, "last_used": 1_764_100_000,
                        "attributes": {"app_version": "2.1.0"}})
                });
            json!({"id": customer_id(i), "devices": devices,
                "attributes": {"first_name": format!("N{i}"), "plan": "pro"}})
        })
        .collect();
    for _ in 0..MOVING_ATTEMPTS {
        let body = json!({"customers": customers});
        let v = api.ok(Method::POST, "/v1/batch", Some(&body)).await?;
        let results = v["results"].as_array().ok_or("no results in the answer")?;
        let mut again = Vec::new();
        for (customer, result) in customers.into_iter().zip(results) {
            match result["status"].as_str() {
                Some("imported") => {}
                _ if moving(&result["error"]) => again.push(customer),
                _ => return Err(format!("import refused: {result}").into()),
            }
        }
        if again.is_empty() {
            return Ok(chunk.len());
        }
        customers = again;
        tokio::time::sleep(MOVING_PAUSE).await;
    }
    Err(format!(
        "import of {} customers: partitions kept moving",
        chunk.len()
    )
    .into())
}

/// Creates the push template `id` (Liquid over the customer's attributes).
pub async fn message(api: &Api, id: &str) -> Res<()> {
    message_in(api, id, "campaign").await
}

/// [`message`], its device sends in `lane`.
pub async fn message_in(api: &Api, id: &str, lane: &str) -> Res<()> {
    let body = json!({"name": id, "campaign_id": format!("load-{id}"),
        "title": "Hi {{customer.first_name}}", "body": "Your {{customer.plan}} plan is ready",
        "deep_link": "myapp://home", "audience": "all_devices", "lane": lane});
    api.ok(Method::PUT, &format!("/v1/messages/{id}"), Some(&body))
        .await?;
    Ok(())
}

/// Sends `message` to customers `range` in batches, several in flight;
/// every batch must be acknowledged with 202.
pub async fn send(api: &Api, message: &str, range: Range<usize>) -> Res<Vec<Batch>> {
    send_scheduled(api, message, range, None).await
}

/// [`send`], each send with `schedule` when given.
pub async fn send_scheduled(
    api: &Api,
    message: &str,
    range: Range<usize>,
    schedule: Option<&Value>,
) -> Res<Vec<Batch>> {
    let chunks: Vec<Range<usize>> = range
        .clone()
        .step_by(SEND_BATCH)
        .map(|s| s..(s + SEND_BATCH).min(range.end))
        .collect();
    stream::iter(chunks)
        .map(|chunk| send_batch(api, message, chunk, schedule))
        .buffer_unordered(SENDS_IN_FLIGHT)
        .try_collect()
        .await
}

/// One send call; customers whose partition was moving are sent again.
async fn send_batch(
    api: &Api,
    message: &str,
    chunk: Range<usize>,
    schedule: Option<&Value>,
) -> Res<Batch> {
    let mut ids: Vec<String> = chunk.clone().map(customer_id).collect();
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(chunk.len());
    for _ in 0..MOVING_ATTEMPTS {
        let mut body = json!({"message_id": message, "customer_ids": ids});
        if let Some(schedule) = schedule {
            body["schedule"] = schedule.clone();
        }
        let (status, v) = api
            .call(API_KEY, Method::POST, "/v1/send/push", Some(&body))
            .await?;
        let made = v["deliveries"].as_array().map_or(&[][..], Vec::as_slice);
        deliveries.extend(made.iter().map(entry).collect::<Res<Vec<_>>>()?);
        let failed = v["failed"].as_array().map_or(&[][..], Vec::as_slice);
        if failed.iter().any(|f| !moving(&f["error"])) || (made.is_empty() && failed.is_empty()) {
            return Err(format!("send refused: {status} {v}").into());
        }
        ids = failed
            .iter()
            .filter_map(|f| f["customer_id"].as_str().map(str::to_owned))
            .collect();
        if ids.is_empty() {
            break;
        }
        tokio::time::sleep(MOVING_PAUSE).await;
    }
    if deliveries.len() != chunk.len() {
        return Err(format!("{} deliveries for {} ids", deliveries.len(), chunk.len()).into());
    }
    Ok(Batch {
        started,
        took: started.elapsed(),
        deliveries,
    })
}

/// A 202 entry: its delivery id and customer number.
fn entry(e: &Value) -> Res<(String, usize)> {
    let id = e["delivery_id"]
        .as_str()
        .ok_or("a delivery without an id")?;
    let customer = e["customer_id"]
        .as_str()
        .and_then(|c| c.strip_prefix('c')?.parse().ok())
        .ok_or("a delivery without a customer")?;
    Ok((id.to_owned(), customer))
}
