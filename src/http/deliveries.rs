//! Sending, device reports, and the delivery log.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use futures_util::{StreamExt, stream};
use pushd_actors::model::Delivery;
use pushd_actors::person::{DeviceReport, RetryDelivery, SendMessage};
use pushd_actors::ports::Store;
use pushd_actors::status::{MessageStatus, Report};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{ApiKey, SdkKey};
use super::body::JsonBody;
use super::error::ApiError;
use super::{AppState, check_id, now};
use crate::store::DeliveryFilter;

/// Most customer ids in one send.
pub const MAX_SEND_IDS: usize = 10_000;
/// Most deliveries in one page of the log.
const MAX_PAGE: usize = 1000;
/// Customers asked at once while fanning a send out.
const FAN_OUT: usize = 256;

/// `POST /v1/send/push` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    message_id: String,
    customer_ids: Vec<String>,
    #[serde(default)]
    data: Value,
}

/// `POST /push/events` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    delivery_id: String,
    event: Report,
    device_id: String,
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
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn send_push(
    _: ApiKey,
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<SendBody>,
) -> Result<HttpResponse, ApiError> {
    check_id(&body.message_id, "message_id")?;
    if body.customer_ids.is_empty() || body.customer_ids.len() > MAX_SEND_IDS {
        return Err(ApiError::invalid_field(format!(
            "customer_ids must hold 1 to {MAX_SEND_IDS} ids, not {}",
            body.customer_ids.len()
        )));
    }
    for id in &body.customer_ids {
        check_id(id, "customer id")?;
    }
    if !body.data.is_null() && !body.data.is_object() {
        return Err(ApiError::invalid_field("data must be an object"));
    }
    let message = state
        .store
        .message(&body.message_id)?
        .ok_or_else(|| ApiError::not_found("message"))?;
    let message = Arc::new(message);
    let sends = body.customer_ids.into_iter().map(|customer_id| {
        let msg = SendMessage {
            message: message.clone(),
            data: body.data.clone(),
        };
        let state = state.clone();
        async move {
            let result = state.registry.request(&customer_id, msg).await;
            (customer_id, result)
        }
    });
    let results: Vec<_> = stream::iter(sends).buffered(FAN_OUT).collect().await;
    // Every delivery made durable is listed, and every customer whose
    // delivery was not, with why: the client retries only those.
    let mut deliveries = Vec::with_capacity(results.len());
    let mut failed = Vec::new();
    let mut first_error = None;
    for (customer_id, result) in results {
        match result {
            Ok(delivery_id) => {
                deliveries.push(json!({"customer_id": customer_id, "delivery_id": delivery_id}))
            }
            Err(e) => {
                let e = ApiError::from(e);
                failed.push(json!({"customer_id": customer_id,
                    "error": {"code": e.code, "message": e.message}}));
                first_error.get_or_insert(e);
            }
        }
    }
    metrics::counter!("pushd_deliveries_created_total").increment(deliveries.len() as u64);
    let body = json!({"deliveries": deliveries, "failed": failed});
    match first_error {
        Some(e) if deliveries.is_empty() => {
            let mut body = body;
            body["error"] = json!({"code": e.code, "message": e.message});
            Ok(HttpResponse::build(e.status).json(body))
        }
        _ => Ok(HttpResponse::Accepted().json(body)),
    }
}

async fn push_event(
    _: SdkKey,
    state: web::Data<AppState>,
    JsonBody(body): JsonBody<ReportBody>,
) -> Result<HttpResponse, ApiError> {
    check_id(&body.delivery_id, "delivery_id")?;
    check_id(&body.device_id, "device_id")?;
    let customer = state
        .store
        .delivery_customer(&body.delivery_id)?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    let report = DeviceReport {
        delivery_id: body.delivery_id,
        token: body.device_id,
        report: body.event,
        at: body.timestamp.unwrap_or_else(now),
    };
    let event = report.report.as_str();
    state.registry.request(&customer, report).await?;
    metrics::counter!("pushd_reports_total", "event" => event).increment(1);
    Ok(HttpResponse::Ok().json(json!({"status": "ok"})))
}

/// The API's view of a delivery; `detail` adds the per-device rows.
pub fn delivery_json(d: &Delivery, detail: bool) -> Value {
    let reason = d.state.failure_reason();
    let mut v = json!({
        "delivery_id": d.id,
        "customer_id": d.customer_id,
        "message_id": d.message_id,
        "campaign_id": d.campaign_id,
        "channel": "push",
        "status": d.status(),
        "failure_reason": reason.map(|r| r.code()),
        "failure_message": reason.map(|r| r.message()),
        "created_at": d.created_at,
        "attempted_at": d.attempted_at,
        "converted_at": d.state.converted_at,
        "devices_attempted": d.state.devices.iter().filter(|s| s.targeted()).count(),
    });
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

/// The stored delivery, or 404.
fn stored_delivery(state: &AppState, id: &str) -> Result<Delivery, ApiError> {
    state
        .store
        .delivery(id)?
        .ok_or_else(|| ApiError::not_found("delivery"))
}

async fn get_delivery(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = check_id(&id, "delivery id")?;
    let d = stored_delivery(&state, id)?;
    Ok(HttpResponse::Ok().json(delivery_json(&d, true)))
}

async fn list_deliveries(
    _: ApiKey,
    state: web::Data<AppState>,
    query: Result<web::Query<ListQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let q = query
        .map_err(|e| ApiError::invalid_field(format!("bad query: {e}")))?
        .into_inner();
    if q.channel.as_deref().is_some_and(|c| c != "push") {
        return Err(ApiError::invalid_field("channel must be push"));
    }
    let status = match q.status.as_deref() {
        Some(s) => Some(
            MessageStatus::parse(s)
                .ok_or_else(|| ApiError::invalid_field(format!("unknown status {s:?}")))?,
        ),
        None => None,
    };
    // A larger page is served as the largest one; paging goes on from its cursor.
    let limit = q.limit.unwrap_or(100).min(MAX_PAGE);
    if limit == 0 {
        return Err(ApiError::invalid_field("limit must be at least 1"));
    }
    let filter = DeliveryFilter {
        status,
        message_id: q.message_id,
        campaign_id: q.campaign_id,
        customer_id: q.customer_id,
    };
    let (page, next) = state
        .store
        .list_deliveries(&filter, limit, q.cursor.as_deref())?;
    let deliveries: Vec<Value> = page.iter().map(|d| delivery_json(d, false)).collect();
    Ok(HttpResponse::Ok().json(json!({"deliveries": deliveries, "next_cursor": next})))
}

async fn retry_delivery(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = check_id(&id, "delivery id")?;
    let d = stored_delivery(&state, id)?;
    let message = state
        .store
        .message(&d.message_id)?
        .ok_or_else(|| ApiError::not_found("message"))?;
    let retry = RetryDelivery {
        delivery_id: id.to_string(),
        message: Arc::new(message),
    };
    state.registry.request(&d.customer_id, retry).await?;
    Ok(HttpResponse::Accepted().json(json!({"delivery_id": id})))
}

/// Registers the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/send/push", web::post().to(send_push))
        .route("/push/events", web::post().to(push_event))
        .route("/v1/deliveries", web::get().to(list_deliveries))
        .route("/v1/deliveries/{id}", web::get().to(get_delivery))
        .route("/v1/deliveries/{id}/retry", web::post().to(retry_delivery));
}
