//! One Segment/RudderStack event (Segment's spec, which RudderStack and
//! Customer.io Data Pipelines share) onto pushd's own operations:
//!
//! - `identify` → the customer's attributes (`traits`, merged) and a device
//!   from `context.device.token` + `context.os.name` + `context.app`;
//! - `track` of the mobile spec's `Push Notification Received` / `Tapped`
//!   / `Bounced`, or Data Pipelines' `Report Delivery Event` → a device
//!   report (or the bounced token removed), by the delivery id in the
//!   properties, else heuristically: the customer's newest delivery (of the
//!   event's campaign, if it names one) within [`HEURISTIC_WINDOW_SECS`];
//! - any other `track` → a customer event (conversion goals apply);
//! - `page`, `screen`, `group`, `alias` → ignored, counted.
//!
//! What cannot be mapped is an [`Outcome::Unmapped`] with its reason:
//! counted and answered 200, never an error a client would retry for ever.

use pushd_actors::model::{Delivery, Platform};
use pushd_actors::person::{MergeCustomer, PutDevice};
use pushd_actors::ports::Store;
use pushd_actors::status::Report;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::memory::{Compat, HeuristicReport};
use crate::http::customers::{DeviceFields, delete_token, record_event, tell};
use crate::http::deliveries::report_device;
use crate::http::error::ApiError;
use crate::http::{AppState, MAX_ID_BYTES};
use crate::store::DeliveryFilter;

/// How far before a delivery-id-less push report its delivery may have
/// been made to be matched by customer (and campaign).
pub const HEURISTIC_WINDOW_SECS: i64 = 72 * 3600;
/// How far after the report a delivery may be dated (clock drift).
const CLOCK_SLACK_SECS: i64 = 300;
/// The customer's newest deliveries looked at for a heuristic match.
const CANDIDATES: usize = 20;

/// Where the delivery id of a push event may be, in order.
const DELIVERY_ID_KEYS: [&str; 3] = ["pushd_delivery_id", "CIO-Delivery-ID", "deliveryId"];

/// What became of one event.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied.
    Applied,
    /// A type pushd takes and ignores (`page`, `screen`, `group`, `alias`).
    Ignored,
    /// Not mappable, for this reason (a metric label).
    Unmapped(&'static str),
}

/// A push report the event asks for.
enum PushReport {
    /// Delivered, opened or converted.
    Report(Report),
    /// The token bounced.
    Bounced,
}

/// Applies `event` of `kind` (`track`, `identify`, ...). Only a failure
/// of pushd itself (5xx: the journal, the store) is an error, which the
/// client retries; a refused event is [`Outcome::Unmapped`].
pub async fn apply(
    state: &AppState,
    compat: &Compat,
    kind: &str,
    event: &Map<String, Value>,
) -> Result<Outcome, ApiError> {
    let outcome = match kind {
        "identify" => identify(state, event).await,
        "track" => track(state, compat, event).await,
        "page" | "screen" | "group" | "alias" => Ok(Outcome::Ignored),
        _ => Ok(Outcome::Unmapped("unknown_type")),
    };
    match outcome {
        Err(e) if e.status.is_server_error() => Err(e),
        Err(e) if e.code == "not_found" => Ok(Outcome::Unmapped(not_found_reason(&e))),
        Err(e) => {
            tracing::debug!(error = %e, kind, "ingested event refused");
            Ok(Outcome::Unmapped("rejected"))
        }
        Ok(outcome) => Ok(outcome),
    }
}

/// The reason of a 404: which kind of thing was not found.
fn not_found_reason(e: &ApiError) -> &'static str {
    match e.message.split(' ').next() {
        Some("delivery") => "unknown_delivery",
        Some("customer") => "unknown_customer",
        _ => "not_found",
    }
}

/// The string at `key` of `object`, if one.
fn text<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key)?.as_str().filter(|s| !s.is_empty())
}

/// The object at `path` of `object` (`["context", "device"]`), if one.
fn nested<'a>(object: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Map<String, Value>> {
    path.iter()
        .try_fold(object, |at, key| at.get(*key)?.as_object())
}

/// Whose partition an event changes: the delivery a push report names, or
/// else the customer (its user); `None` for an anonymous event, which
/// changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A push report naming its delivery.
    Delivery(&'a str),
    /// Anything about a customer: attributes, devices, events, a report
    /// matched by customer.
    Customer(&'a str),
}

/// What `event` is about, for routing it to the node serving it (a
/// delivery's partition is its customer's, so a customer's events all go
/// to one node, in order).
pub fn subject(event: &Map<String, Value>) -> Option<Subject<'_>> {
    let delivery = (event.get("type").and_then(Value::as_str) == Some("track"))
        .then(|| event.get("properties").and_then(Value::as_object))
        .flatten()
        .and_then(reported_delivery);
    match delivery {
        Some(id) => Some(Subject::Delivery(id)),
        None => user(event).map(Subject::Customer),
    }
}

/// The delivery a push report's `properties` name, under any of
/// [`DELIVERY_ID_KEYS`].
fn reported_delivery(properties: &Map<String, Value>) -> Option<&str> {
    DELIVERY_ID_KEYS.iter().find_map(|k| text(properties, k))
}

/// The event's user, if it names one that can be a customer id.
fn user(event: &Map<String, Value>) -> Option<&str> {
    text(event, "userId").filter(|id| id.len() <= MAX_ID_BYTES)
}

/// The event's time: `timestamp`, else `originalTimestamp` (ISO 8601), as
/// Unix seconds; `None` when it has neither. `Err` when it is unreadable.
fn time_of(event: &Map<String, Value>) -> Result<Option<i64>, ()> {
    let Some(given) = text(event, "timestamp").or_else(|| text(event, "originalTimestamp")) else {
        return Ok(None);
    };
    let at = OffsetDateTime::parse(given, &Rfc3339).map_err(|_| ())?;
    Ok(Some(at.unix_timestamp()))
}

/// `identify`: attributes and, if the context names one, a device.
async fn identify(state: &AppState, event: &Map<String, Value>) -> Result<Outcome, ApiError> {
    let Some(id) = user(event) else {
        return Ok(Outcome::Unmapped("anonymous"));
    };
    let Ok(at) = time_of(event) else {
        return Ok(Outcome::Unmapped("invalid_timestamp"));
    };
    let traits = event.get("traits").and_then(Value::as_object);
    let msg = MergeCustomer {
        attributes: traits.cloned().unwrap_or_default(),
        unsubscribed: None,
        create: true,
    };
    tell(state, id, msg).await?;
    let device = nested(event, &["context", "device"]);
    let Some(token) = device.and_then(|d| text(d, "token")) else {
        return Ok(Outcome::Applied);
    };
    let os = nested(event, &["context", "os"]).and_then(|os| text(os, "name"));
    let Some(platform) = os.and_then(platform) else {
        return Ok(Outcome::Unmapped("unknown_platform"));
    };
    let fields = DeviceFields::of(token.to_owned(), platform, at, app_attributes(event));
    let device = fields.checked("context.device", state.clock.now())?;
    tell(state, id, PutDevice(device)).await?;
    Ok(Outcome::Applied)
}

/// A platform as Segment's `context.os.name` says it (`iOS`, `Android`).
fn platform(name: &str) -> Option<Platform> {
    match name.to_ascii_lowercase().as_str() {
        "ios" | "ipados" => Some(Platform::Ios),
        "android" => Some(Platform::Android),
        _ => None,
    }
}

/// `context.app` as device attributes: `app_name`, `app_version`,
/// `app_build`, `app_namespace`.
fn app_attributes(event: &Map<String, Value>) -> Map<String, Value> {
    let mut attributes = Map::new();
    if let Some(app) = nested(event, &["context", "app"]) {
        for key in ["name", "version", "build", "namespace"] {
            if let Some(value) = app.get(key).filter(|v| v.is_string() || v.is_number()) {
                attributes.insert(format!("app_{key}"), value.clone());
            }
        }
    }
    attributes
}

/// `track`: a push report, or a customer event.
async fn track(
    state: &AppState,
    compat: &Compat,
    event: &Map<String, Value>,
) -> Result<Outcome, ApiError> {
    let Some(name) = text(event, "event") else {
        return Ok(Outcome::Unmapped("no_event_name"));
    };
    let Ok(at) = time_of(event) else {
        return Ok(Outcome::Unmapped("invalid_timestamp"));
    };
    let empty = Map::new();
    let properties = event
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let asked = match name {
        "Push Notification Received" => PushReport::Report(Report::Delivered),
        "Push Notification Tapped" => PushReport::Report(Report::Opened),
        "Push Notification Bounced" => PushReport::Bounced,
        "Report Delivery Event" => match text(properties, "metric") {
            Some("delivered") => PushReport::Report(Report::Delivered),
            Some("opened" | "clicked") => PushReport::Report(Report::Opened),
            Some("converted") => PushReport::Report(Report::Converted),
            Some("bounced") => PushReport::Bounced,
            _ => return Ok(Outcome::Unmapped("unknown_metric")),
        },
        _ => {
            let Some(id) = user(event) else {
                return Ok(Outcome::Unmapped("anonymous"));
            };
            let data = Value::Object(properties.clone());
            record_event(state, id, name, &data, at).await?;
            return Ok(Outcome::Applied);
        }
    };
    let at = at.unwrap_or_else(|| state.clock.now());
    let token = token_hint(event, properties);
    let delivery_id = reported_delivery(properties);
    match (asked, delivery_id) {
        (PushReport::Bounced, _) => bounced(state, event, token, delivery_id).await,
        (PushReport::Report(report), Some(id)) => {
            report_device(state, id, report, at, |d| pick_device(d, token)).await?;
            metrics::counter!("pushd_ingest_reports_total", "match" => "exact").increment(1);
            Ok(Outcome::Applied)
        }
        (PushReport::Report(report), None) => {
            let Some(customer) = user(event) else {
                return Ok(Outcome::Unmapped("anonymous"));
            };
            let campaign = campaign(properties);
            let Some(found) = likely_delivery(state, customer, campaign, at).await? else {
                return Ok(Outcome::Unmapped("no_matching_delivery"));
            };
            let device = pick_device(&found, token)?;
            let chosen = device.clone();
            report_device(state, &found.id, report, at, |_| Ok(chosen)).await?;
            let matched_on = match campaign {
                Some(_) => "customer+campaign",
                None => "customer",
            };
            tracing::info!(
                delivery_id = %found.id, customer_id = customer, event = report.as_str(),
                matched_on, "push report without a delivery id matched heuristically"
            );
            compat.note_heuristic(
                &found.id,
                HeuristicReport {
                    event: report.as_str(),
                    device_id: device,
                    matched_on,
                    timestamp: at,
                },
            );
            metrics::counter!("pushd_ingest_reports_total", "match" => "heuristic").increment(1);
            Ok(Outcome::Applied)
        }
    }
}

/// The device token the event names: the push's `CIO-Delivery-Token`, Data
/// Pipelines' `recipient`, or the context's device token.
fn token_hint<'a>(
    event: &'a Map<String, Value>,
    properties: &'a Map<String, Value>,
) -> Option<&'a str> {
    text(properties, "CIO-Delivery-Token")
        .or_else(|| text(properties, "recipient"))
        .or_else(|| nested(event, &["context", "device"]).and_then(|d| text(d, "token")))
}

/// The campaign the event names: `properties.campaign.id` or `.name` (the
/// mobile spec's campaign object), or `properties.campaign_id`.
fn campaign(properties: &Map<String, Value>) -> Option<&str> {
    nested(properties, &["campaign"])
        .and_then(|c| text(c, "id").or_else(|| text(c, "name")))
        .or_else(|| text(properties, "campaign_id"))
}

/// The device of `d` a report is for: `hint` if it is one of its devices,
/// else its first device sent to.
fn pick_device(d: &Delivery, hint: Option<&str>) -> Result<String, ApiError> {
    if let Some(token) = hint.filter(|t| d.device_index(t).is_some()) {
        return Ok(token.to_owned());
    }
    let sent = d
        .sends
        .iter()
        .zip(&d.state.devices)
        .find(|(_, s)| s.targeted());
    match sent {
        Some((send, _)) => Ok(send.token.clone()),
        None => Err(ApiError::invalid_field(format!(
            "delivery {:?} was sent to no device",
            d.id
        ))),
    }
}

/// The customer's newest delivery (of `campaign`, if given) made within
/// [`HEURISTIC_WINDOW_SECS`] before `at`, sent to some device.
async fn likely_delivery(
    state: &AppState,
    customer: &str,
    campaign: Option<&str>,
    at: i64,
) -> Result<Option<Delivery>, ApiError> {
    let filter = DeliveryFilter {
        status: None,
        message_id: None,
        campaign_id: campaign.map(str::to_owned),
        customer_id: Some(customer.to_owned()),
        created: Default::default(),
    };
    let (newest, _, _) = state.local_deliveries(filter, CANDIDATES, None).await?;
    let window = at - HEURISTIC_WINDOW_SECS..=at + CLOCK_SLACK_SECS;
    Ok(newest
        .into_iter()
        .find(|d| window.contains(&d.created_at) && d.state.devices.iter().any(|s| s.targeted())))
}

/// A bounced token: removed from its customer's devices (the delivery's
/// customer, else the event's user).
async fn bounced(
    state: &AppState,
    event: &Map<String, Value>,
    token: Option<&str>,
    delivery_id: Option<&str>,
) -> Result<Outcome, ApiError> {
    let Some(token) = token else {
        return Ok(Outcome::Unmapped("no_token"));
    };
    let customer = match delivery_id {
        Some(id) => {
            let partition = state.delivery_partition(id)?;
            let found = partition.store.delivery(id)?;
            found.map(|d| d.customer_id)
        }
        None => None,
    };
    let Some(customer) = customer.as_deref().or_else(|| user(event)) else {
        return Ok(Outcome::Unmapped("anonymous"));
    };
    delete_token(state, customer, token).await?;
    Ok(Outcome::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn times_are_iso_8601_with_the_original_as_fallback() {
        let e = object(json!({"timestamp": "2026-01-02T03:04:05.678Z"}));
        assert_eq!(time_of(&e), Ok(Some(1_767_323_045)));
        let e = object(json!({"originalTimestamp": "2026-01-02T04:04:05+01:00"}));
        assert_eq!(time_of(&e), Ok(Some(1_767_323_045)));
        assert_eq!(time_of(&object(json!({}))), Ok(None));
        assert_eq!(time_of(&object(json!({"timestamp": "yesterday"}))), Err(()));
    }

    #[test]
    fn the_campaign_and_the_token_come_from_where_each_client_puts_them() {
        let p = object(json!({"campaign": {"name": "spring", "source": "pushd"}}));
        assert_eq!(campaign(&p), Some("spring"));
        let p = object(json!({"campaign": {"id": "c1", "name": "spring"}}));
        assert_eq!(campaign(&p), Some("c1"));
        assert_eq!(campaign(&object(json!({"campaign_id": "c2"}))), Some("c2"));
        let e = object(json!({"context": {"device": {"token": "t-ctx"}}}));
        assert_eq!(token_hint(&e, &object(json!({}))), Some("t-ctx"));
        let p = object(json!({"recipient": "t-rcpt"}));
        assert_eq!(token_hint(&e, &p), Some("t-rcpt"));
    }
}
