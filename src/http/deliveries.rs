//! Device reports, and the delivery log.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use pushd_actors::model::{Delivery, Platform};
use pushd_actors::person::{CancelDelivery, DeviceReport, RetryDelivery};
use pushd_actors::ports::Store;
use pushd_actors::status::{MessageStatus, Report};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{ApiKey, SdkKey, customer_auth_text, proof_if_given};
use super::body::{Fields, JsonBody, Params, QueryOf, float_seconds};
use super::compat::Compat;
use super::error::{ApiError, naming};
use super::reach::{Partial, Scope, local_share, newest_page};
use super::relayed::{RelayedReport, relayed_caller};
use super::{AppState, Catalog, check_id, endpoint, event_time, page_limit, range};
use crate::partition::Partition;
use crate::store::DeliveryFilter;

/// `POST /push/events` body (also Customer.io's, at `/api/v1/push/events`):
/// its SDKs may send the time as a float.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    delivery_id: String,
    event: Report,
    device_id: String,
    #[serde(default, deserialize_with = "float_seconds")]
    timestamp: Option<i64>,
}

/// `GET /v1/deliveries` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    channel: Option<String>,
    status: Option<String>,
    message_id: Option<String>,
    campaign_id: Option<String>,
    customer_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    partial: Option<String>,
    total: Option<String>,
}

async fn push_event(
    SdkKey(caller): SdkKey,
    req: HttpRequest,
    state: web::Data<AppState>,
    web::Json(Fields(body)): JsonBody<ReportBody>,
) -> Result<HttpResponse, ApiError> {
    let delivery_id = check_id(&body.delivery_id, "delivery_id")?;
    let device_id = check_id(&body.device_id, "device_id")?;
    let at = event_time(body.timestamp, &*state.clock, "timestamp")?;
    let relayed = || RelayedReport {
        delivery_id: delivery_id.to_string(),
        device_id: device_id.to_string(),
        event: body.event,
        at,
        caller: relayed_caller(caller),
        proof: customer_auth_text(&req),
    };
    if let Some(answer) = super::relayed::elsewhere(&state, delivery_id, relayed).await? {
        return Ok(answer);
    }
    // A report names its delivery and device; a proof, when the app sends
    // one, must be that delivery's customer's.
    let device = |d: &Delivery| -> Result<String, ApiError> {
        proof_if_given(&req, caller, &d.customer_id)?;
        Ok(device_id.to_string())
    };
    report_device(&state, delivery_id, body.event, at, device).await?;
    Ok(super::status_ok())
}

/// Reports `report` at `at` for one device of delivery `delivery_id`:
/// the one `device` picks from the stored delivery (or refuses it with).
/// Answers the delivery's customer id; 404 for an unknown delivery.
pub(super) async fn report_device(
    state: &AppState,
    delivery_id: &str,
    report: Report,
    at: i64,
    device: impl FnOnce(&Delivery) -> Result<String, ApiError>,
) -> Result<String, ApiError> {
    let partition = state.delivery_partition(delivery_id)?;
    let seen = partition
        .store
        .delivery_as_of(delivery_id)?
        .ok_or_else(|| ApiError::not_found("delivery", delivery_id))?;
    let token = device(&seen.value)?;
    let customer = seen.value.customer_id.clone();
    let report = DeviceReport {
        delivery_id: delivery_id.to_string(),
        token,
        report,
        at,
        seen: Some(Box::new(seen)),
    };
    let event = report.report.as_str();
    let token = report.token.clone();
    let ids = [("delivery", delivery_id), ("device", token.as_str())];
    let asked = partition.registry.request(&customer, report).await;
    asked.map_err(naming(&ids))?;
    metrics::counter!("pushd_reports_total", "event" => event).increment(1);
    Ok(customer)
}

/// The names of messages, read from the catalog once per message per
/// request (a page of the log names the same few messages many times).
struct MessageNames<'a> {
    catalog: &'a Catalog,
    names: HashMap<String, Option<String>>,
}

impl<'a> MessageNames<'a> {
    fn new(catalog: &'a Catalog) -> Self {
        MessageNames {
            catalog,
            names: HashMap::new(),
        }
    }

    /// The name of message `id`, if it exists.
    async fn of(&mut self, id: &str) -> Result<Option<String>, ApiError> {
        if let Some(name) = self.names.get(id) {
            return Ok(name.clone());
        }
        let name = self.catalog.get(id).await?.map(|m| m.name);
        self.names.insert(id.to_string(), name.clone());
        Ok(name)
    }
}

/// The failure message: the delivery's own words first (the missing
/// variable, ...), then what the reason means and how to fix it.
pub(super) fn failure_message(d: &Delivery) -> Option<String> {
    let reason = d.state.failure_reason()?;
    Some(match &d.failure_detail {
        Some(detail) => format!("{detail}. {}", reason.message()),
        None => reason.message().to_string(),
    })
}

/// The API's view of a delivery, with its message's `name`; `detail` adds
/// the per-device rows.
fn delivery_json(d: &Delivery, message_name: Option<String>, detail: bool) -> Value {
    let reason = d.state.failure_reason();
    let mut v = json!({
        "delivery_id": d.id,
        "customer_id": d.customer_id,
        "message_id": d.message_id,
        "name": message_name,
        "campaign_id": d.campaign_id,
        "channel": "push",
        "status": d.status(),
        "failure_reason": reason.map(|r| r.code()),
        "failure_message": failure_message(d),
        "created_at": d.created_at,
        "attempted_at": d.attempted_at,
        "converted_at": d.state.converted_at,
        "devices_attempted": d.state.devices.iter().filter(|s| s.targeted()).count(),
        "platforms": platforms(d),
    });
    if let Some(schedule) = &d.schedule {
        v["scheduled_for"] = json!(schedule.due());
        v["timezone"] = json!(schedule.timezone);
        v["timezone_source"] = json!(schedule.timezone_source.map(|s| s.as_str()));
        v["late_seconds"] = json!(schedule.late_seconds());
        v["held_for"] = json!(schedule.held_for.as_str());
    }
    if detail {
        let devices: Vec<Value> = d
            .sends
            .iter()
            .zip(&d.state.devices)
            .map(|(send, s)| {
                json!({
                    "token": send.token,
                    "platform": send.platform,
                    "app": send.app,
                    "environment": send.environment,
                    "status": s.status,
                    "failure_reason": s.failure.map(|r| r.code()),
                    "attempts": send.attempts,
                    "last_error": send.last_error,
                    "provider_id": send.provider_id,
                    "duplicates": send.duplicates,
                    "opted_in": send.opted_in,
                    "sent_at": s.sent_at,
                    "delivered_at": s.delivered_at,
                    "opened_at": s.opened_at,
                })
            })
            .collect();
        v["devices"] = Value::Array(devices);
        v["content"] = json!(d.content);
    }
    v
}

/// The platforms of the devices the delivery was for, each once: iOS
/// first, then Android.
fn platforms(d: &Delivery) -> Vec<Platform> {
    [Platform::Ios, Platform::Android]
        .into_iter()
        .filter(|p| d.sends.iter().any(|s| s.platform == *p))
        .collect()
}

/// The stored delivery and its partition, or 404.
fn stored_delivery(state: &AppState, id: &str) -> Result<(Delivery, Arc<Partition>), ApiError> {
    let partition = state.delivery_partition(id)?;
    let d = partition
        .store
        .delivery(id)?
        .ok_or_else(|| ApiError::not_found("delivery", id))?;
    Ok((d, partition))
}

async fn get_delivery(
    _: ApiKey,
    state: web::Data<AppState>,
    compat: web::Data<Compat>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.as_str();
    let (d, _) = stored_delivery(&state, id)?;
    let name = MessageNames::new(&state.catalog).of(&d.message_id).await?;
    let mut body = delivery_json(&d, name, true);
    body["heuristic_reports"] = json!(compat.heuristic_reports(id));
    Ok(HttpResponse::Ok().json(body))
}

async fn list_deliveries(
    _: ApiKey,
    state: web::Data<AppState>,
    scope: Scope,
    req: HttpRequest,
    web::Query(Params(q)): QueryOf<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    if q.channel.as_deref().is_some_and(|c| c != "push") {
        return Err(ApiError::invalid_field(format!(
            "channel must be push, not {:?}",
            q.channel.unwrap_or_default()
        )));
    }
    let status = match q.status.as_deref() {
        Some(s) => Some(MessageStatus::parse(s).ok_or_else(|| {
            let all: Vec<&str> = MessageStatus::ALL.iter().map(|m| m.as_str()).collect();
            ApiError::invalid_field(format!(
                "status must be one of {}, not {s:?}",
                all.join(", ")
            ))
        })?),
        None => None,
    };
    let limit = page_limit(q.limit.as_deref())?;
    let partial = Partial::parse(q.partial.as_deref())?;
    for (name, id) in [
        ("message_id", &q.message_id),
        ("campaign_id", &q.campaign_id),
        ("customer_id", &q.customer_id),
    ] {
        if let Some(id) = id {
            check_id(id, name)?;
        }
    }
    let filter = DeliveryFilter {
        status,
        message_id: q.message_id,
        campaign_id: q.campaign_id,
        customer_id: q.customer_id,
        created: range::parse(q.from.as_deref(), q.to.as_deref())?,
    };
    // Counting reads every match (or its index entries): only when asked,
    // so paging through a big log stays cheap.
    let counted = super::query_flag(q.total.as_deref(), "total")?;
    let mut total = match counted {
        true => Some(state.local_delivery_count(filter.clone()).await?),
        false => None,
    };
    let (page, next, here) = state.local_deliveries(filter, limit, q.cursor).await?;
    let mut names = MessageNames::new(&state.catalog);
    let mut deliveries = Vec::with_capacity(page.len());
    for d in &page {
        deliveries.push(delivery_json(d, names.of(&d.message_id).await?, false));
    }
    let mut more = next.is_some();
    if scope.local {
        let mut body = json!({"deliveries": deliveries, "next_cursor": next});
        if counted {
            body["total"] = json!(total);
        }
        return Ok(local_share(&here).json(body));
    }
    let mut shares = vec![here];
    if state.topology.peers().is_some() {
        let path = req.uri().path_and_query().map_or("", |p| p.as_str());
        let theirs = state.peer_deliveries(path, partial).await?;
        deliveries.extend(theirs.items);
        more |= theirs.more;
        total = total.zip(theirs.total).map(|(a, b)| a + b);
        shares.extend(theirs.shares);
    }
    let missing = state.missing(shares, partial)?;
    let (deliveries, next) = newest_page(deliveries, limit, more, |d| {
        d["delivery_id"].as_str().unwrap_or_default()
    });
    let mut body = json!({"deliveries": deliveries, "next_cursor": next});
    if counted {
        // `null` where a node of an earlier release counted none.
        body["total"] = json!(total);
    }
    partial.mark(&mut body, &missing);
    Ok(HttpResponse::Ok().json(body))
}

async fn retry_delivery(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.as_str();
    let (d, partition) = stored_delivery(&state, id)?;
    let message = state
        .catalog
        .get(&d.message_id)
        .await?
        .ok_or_else(|| ApiError::not_found("message", &d.message_id))?;
    let retry = RetryDelivery {
        delivery_id: id.to_string(),
        message: Arc::new(message),
    };
    let ids = [("delivery", id), ("customer", d.customer_id.as_str())];
    let asked = partition.registry.request(&d.customer_id, retry).await;
    asked.map_err(naming(&ids))?;
    Ok(HttpResponse::Accepted().json(json!({"delivery_id": id})))
}

/// `DELETE /v1/deliveries/{id}`: cancels a scheduled delivery (409 for
/// any other status).
async fn cancel_delivery(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.as_str();
    let (d, partition) = stored_delivery(&state, id)?;
    let cancel = CancelDelivery {
        delivery_id: id.to_string(),
    };
    let ids = [("delivery", id), ("customer", d.customer_id.as_str())];
    let asked = partition.registry.request(&d.customer_id, cancel).await;
    asked.map_err(naming(&ids))?;
    Ok(HttpResponse::Ok().json(json!({"delivery_id": id, "status": "canceled"})))
}

/// Registers the routes: device reports at pushd's path and at
/// Customer.io's Track API path (customerio-node's `trackPush`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint(
        "/push/events",
        [(Method::POST, web::to(push_event))],
    ))
    .service(endpoint(
        "/api/v1/push/events",
        [(Method::POST, web::to(push_event))],
    ))
    .service(endpoint(
        "/v1/deliveries",
        [(Method::GET, web::to(list_deliveries))],
    ))
    .service(endpoint(
        "/v1/deliveries/{delivery_id}",
        [
            (Method::GET, web::to(get_delivery)),
            (Method::DELETE, web::to(cancel_delivery)),
        ],
    ))
    .service(endpoint(
        "/v1/deliveries/{delivery_id}/retry",
        [(Method::POST, web::to(retry_delivery))],
    ));
}
