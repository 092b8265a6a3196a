//! Customers, their devices, and their events (conversion goals).

use actix_web::{HttpResponse, web};
use pushd_actors::model::{Device, Environment, Platform, default_app};
use pushd_actors::person::{
    CustomerEvent, DeleteCustomer, DeleteDevice, GetCustomer, PutCustomer, PutDevice,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::{ApiKey, SdkKey};
use super::body::JsonBody;
use super::error::ApiError;
use super::{AppState, check_id, now};

/// `PUT /v1/customers/{id}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerBody {
    #[serde(default)]
    attributes: Map<String, Value>,
    #[serde(default)]
    unsubscribed: bool,
}

/// `PUT /v1/customers/{id}/devices` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceBody {
    device: DeviceFields,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFields {
    id: String,
    platform: Platform,
    #[serde(default = "default_app")]
    app: String,
    /// APNs production or sandbox; iOS only.
    environment: Option<Environment>,
    #[serde(default)]
    last_used: Option<i64>,
    #[serde(default)]
    attributes: Map<String, Value>,
}

/// `POST /v1/customers/{id}/events` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    name: String,
    /// Accepted per the contract; goals match on the name alone.
    #[serde(default, rename = "data")]
    _data: Value,
    timestamp: Option<i64>,
}

async fn put_customer(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
    JsonBody(body): JsonBody<CustomerBody>,
) -> Result<HttpResponse, ApiError> {
    let id = check_id(&id, "customer id")?;
    let msg = PutCustomer {
        attributes: body.attributes,
        unsubscribed: body.unsubscribed,
    };
    state.registry.request(id, msg).await?;
    Ok(HttpResponse::Ok().json(json!({"customer_id": id})))
}

async fn get_customer(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = check_id(&id, "customer id")?;
    match state.registry.ask(id, GetCustomer).await?? {
        Some(c) => Ok(HttpResponse::Ok().json(c)),
        None => Err(ApiError::not_found("customer")),
    }
}

async fn delete_customer(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = check_id(&id, "customer id")?;
    state.registry.request(id, DeleteCustomer).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn put_device(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
    JsonBody(body): JsonBody<DeviceBody>,
) -> Result<HttpResponse, ApiError> {
    let id = check_id(&id, "customer id")?;
    let d = body.device;
    check_id(&d.id, "device id")?;
    check_id(&d.app, "device.app")?;
    if d.platform == Platform::Android && d.environment == Some(Environment::Sandbox) {
        return Err(ApiError::invalid_field(
            "device.environment: sandbox is an APNs environment; an android device has none",
        ));
    }
    let device = Device {
        id: d.id,
        platform: d.platform,
        app: d.app,
        environment: d.environment.unwrap_or_default(),
        last_used: d.last_used.unwrap_or_else(now),
        attributes: d.attributes,
        suppressed: false,
    };
    state.registry.request(id, PutDevice(device)).await?;
    Ok(HttpResponse::Ok().json(json!({"customer_id": id})))
}

async fn delete_device(
    _: ApiKey,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, token) = path.into_inner();
    let id = check_id(&id, "customer id")?;
    let token = check_id(&token, "device id")?;
    state
        .registry
        .request(id, DeleteDevice(token.to_string()))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn customer_event(
    _: SdkKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
    JsonBody(body): JsonBody<EventBody>,
) -> Result<HttpResponse, ApiError> {
    let id = check_id(&id, "customer id")?;
    let name = check_id(&body.name, "event name")?.to_string();
    let msg = CustomerEvent {
        name,
        at: body.timestamp.unwrap_or_else(now),
    };
    let converted = state.registry.request(id, msg).await?;
    Ok(HttpResponse::Ok().json(json!({"converted_delivery_id": converted})))
}

/// Registers the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/customers/{id}")
            .route(web::put().to(put_customer))
            .route(web::get().to(get_customer))
            .route(web::delete().to(delete_customer)),
    )
    .route("/v1/customers/{id}/devices", web::put().to(put_device))
    .route(
        "/v1/customers/{id}/devices/{token}",
        web::delete().to(delete_device),
    )
    .route("/v1/customers/{id}/events", web::post().to(customer_event));
}
