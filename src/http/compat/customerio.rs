//! Customer.io's Track API v1 under `/api/v1/`, as customerio-node and
//! Customer.io's SDKs call it: the key comes as HTTP Basic `site_id:key`
//! (`super::super::auth`), each call maps onto pushd's own operation and
//! rules (the API key for customers and devices; an event needs a customer
//! that exists), answering Customer.io's `200 {}` or pushd's error body.
//! Device reports (`/api/v1/push/events`) are pushd's own handler
//! (`super::super::deliveries`).

use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use pushd_actors::model::Platform;
use pushd_actors::person::{DeleteCustomer, MergeCustomer, PutDevice};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::auth::{ApiKey, ForCustomer};
use crate::http::body::{Fields, JsonBody, float_seconds};
use crate::http::customers::{DeviceFields, delete_token, record_event, tell};
use crate::http::error::ApiError;
use crate::http::{AppState, endpoint};

/// `PUT /api/v1/customers/{id}/devices` body.
#[derive(Deserialize)]
struct DeviceBody {
    device: CioDevice,
}

/// A device as Customer.io names it.
#[derive(Deserialize)]
struct CioDevice {
    id: String,
    platform: Platform,
    #[serde(default, deserialize_with = "float_seconds")]
    last_used: Option<i64>,
    #[serde(default)]
    attributes: Map<String, Value>,
}

/// `POST /api/v1/customers/{id}/events` body.
#[derive(Deserialize)]
struct EventBody {
    name: String,
    #[serde(default)]
    data: Value,
    #[serde(default, deserialize_with = "float_seconds")]
    timestamp: Option<i64>,
}

/// Customer.io's answer to a call it took.
fn taken() -> HttpResponse {
    HttpResponse::Ok().json(json!({}))
}

/// Takes `key` out of `attributes` as true or false, if there.
fn flag(attributes: &mut Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match attributes.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(other) => Err(ApiError::invalid_field(format!(
            "{key} must be true or false, not {other}"
        ))),
    }
}

/// `PUT /api/v1/customers/{id}`: the body's keys are attributes, merged
/// into the customer's; `unsubscribed` sets the subscription; with
/// `_update: true` a customer that does not exist is not created.
async fn identify(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
    web::Json(Fields(mut attributes)): JsonBody<Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    let unsubscribed = flag(&mut attributes, "unsubscribed")?;
    let update_only = flag(&mut attributes, "_update")?.unwrap_or(false);
    let msg = MergeCustomer {
        attributes,
        unsubscribed,
        create: !update_only,
    };
    tell(&state, &id, msg).await?;
    Ok(taken())
}

/// `DELETE /api/v1/customers/{id}`: deleting one that is not there is
/// done already, as Customer.io answers it.
async fn destroy(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    match tell(&state, &id, DeleteCustomer).await {
        Ok(()) => Ok(taken()),
        Err(e) if e.code == "not_found" => Ok(taken()),
        Err(e) => Err(e),
    }
}

/// `PUT /api/v1/customers/{id}/devices`.
async fn add_device(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
    web::Json(Fields(body)): JsonBody<DeviceBody>,
) -> Result<HttpResponse, ApiError> {
    let d = body.device;
    let fields = DeviceFields::of(d.id, d.platform, d.last_used, d.attributes);
    let device = fields.checked("device", state.clock.now())?;
    tell(&state, &id, PutDevice(device)).await?;
    Ok(taken())
}

/// `DELETE /api/v1/customers/{id}/devices/{token}`.
async fn delete_device(
    _: ApiKey,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, token) = path.into_inner();
    delete_token(&state, &id, &token).await?;
    Ok(taken())
}

/// `POST /api/v1/customers/{id}/events`: a customer event, checked against
/// conversion goals (the SDK key may send it, as for pushd's own path).
async fn track(
    _: ForCustomer,
    state: web::Data<AppState>,
    id: web::Path<String>,
    web::Json(Fields(body)): JsonBody<EventBody>,
) -> Result<HttpResponse, ApiError> {
    record_event(&state, &id, &body.name, &body.data, body.timestamp).await?;
    Ok(taken())
}

/// `POST /api/v1/customers/{id}/unsubscribe`: the customer, who must
/// exist, is unsubscribed; a body, if any, is not read.
async fn unsubscribe(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let msg = MergeCustomer {
        attributes: Map::new(),
        unsubscribed: Some(true),
        create: false,
    };
    match tell(&state, &id, msg).await? {
        true => Ok(taken()),
        false => Err(ApiError::not_found("customer", &id)),
    }
}

/// Registers the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint(
        "/api/v1/customers/{customer_id}",
        [
            (Method::PUT, web::to(identify)),
            (Method::DELETE, web::to(destroy)),
        ],
    ))
    .service(endpoint(
        "/api/v1/customers/{customer_id}/devices",
        [(Method::PUT, web::to(add_device))],
    ))
    .service(endpoint(
        "/api/v1/customers/{customer_id}/devices/{token}",
        [(Method::DELETE, web::to(delete_device))],
    ))
    .service(endpoint(
        "/api/v1/customers/{customer_id}/events",
        [(Method::POST, web::to(track))],
    ))
    .service(endpoint(
        "/api/v1/customers/{customer_id}/unsubscribe",
        [(Method::POST, web::to(unsubscribe))],
    ));
}
