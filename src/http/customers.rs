//! Customers, their devices, and their events (conversion goals). The
//! engine calls each handler makes ([`tell`], [`record_event`]) are shared
//! with the migration endpoints (`super::compat`).

use actix::dev::ToEnvelope;
use actix::{Actor, Handler, Message};
use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use pushd_actors::engine::{Ack, EngineError};
use pushd_actors::model::{Attributes, Device, Environment, Platform, default_app};
use pushd_actors::person::{
    CustomerEvent, DeleteCustomer, DeleteDevice, EraseCustomer, GetCustomer, PersonActor,
    PutCustomer, PutDevice,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::auth::{ApiKey, Caller, ForCustomer};
use super::body::{Fields, JsonBody, Params, QueryOf};
use super::error::{ApiError, naming};
use super::{AppState, check_id, endpoint, event_time};

/// `PUT /v1/customers/{customer_id}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerBody {
    #[serde(default)]
    attributes: Map<String, Value>,
    #[serde(default)]
    unsubscribed: bool,
}

/// `DELETE /v1/customers/{customer_id}` query. Unknown parameters are refused, so a
/// misspelt `erase` never deletes without erasing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    erase: Option<String>,
}

impl DeleteQuery {
    /// Whether the call erases the customer.
    fn erases(&self) -> Result<bool, ApiError> {
        super::query_flag(self.erase.as_deref(), "erase")
    }
}

/// `PUT /v1/customers/{customer_id}/devices` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceBody {
    device: DeviceFields,
}

/// A device as the API takes it (`PUT .../devices` and `POST /v1/batch`);
/// a batch forwarded to another node carries it as it came.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeviceFields {
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
    /// Whether the user allowed notifications (the app knows).
    opted_in: Option<bool>,
}

impl DeviceFields {
    /// A device of the app `default` as another API names it: its token,
    /// platform, last use and attributes.
    pub(super) fn of(
        id: String,
        platform: Platform,
        last_used: Option<i64>,
        attributes: Map<String, Value>,
    ) -> Self {
        DeviceFields {
            id,
            platform,
            app: default_app(),
            environment: None,
            last_used,
            attributes,
            opted_in: None,
        }
    }

    /// The device, checked; `field` names it in errors (`device`,
    /// `customers[3].devices[0]`); `now` is its `last_used` if none is given.
    pub(super) fn checked(self, field: &str, now: i64) -> Result<Device, ApiError> {
        check_id(&self.id, &format!("{field}.id"))?;
        check_id(&self.app, &format!("{field}.app"))?;
        if self.platform == Platform::Android && self.environment == Some(Environment::Sandbox) {
            return Err(ApiError::invalid_field(format!(
                "{field}.environment: sandbox is an APNs environment; an android device has none"
            )));
        }
        Ok(Device {
            id: self.id,
            platform: self.platform,
            app: self.app,
            environment: self.environment.unwrap_or_default(),
            last_used: self.last_used.unwrap_or(now),
            attributes: Attributes::new(&self.attributes),
            suppressed: false,
            opted_in: self.opted_in,
        })
    }
}

/// `POST /v1/customers/{customer_id}/events` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    name: String,
    /// Checked to be an object; goals match on the name alone.
    #[serde(default)]
    data: Value,
    timestamp: Option<i64>,
}

async fn put_customer(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
    web::Json(Fields(body)): JsonBody<CustomerBody>,
) -> Result<HttpResponse, ApiError> {
    let id = id.as_str();
    let msg = PutCustomer {
        attributes: body.attributes,
        unsubscribed: body.unsubscribed,
    };
    tell(&state, id, msg).await?;
    Ok(HttpResponse::Ok().json(json!({"customer_id": id})))
}

async fn get_customer(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.as_str();
    let ids = [("customer", id)];
    let registry = state.customer_partition(id)?.registry.clone();
    let found = registry.ask(id, GetCustomer).await.and_then(|r| r);
    match found.map_err(naming(&ids))? {
        Some(c) => Ok(HttpResponse::Ok().json(c)),
        None => Err(ApiError::not_found("customer", id)),
    }
}

/// Deletes the customer (its deliveries stay), or with `erase=true` erases
/// it: the customer and every delivery of it, with their events.
async fn delete_customer(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
    web::Query(Params(query)): QueryOf<DeleteQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = id.as_str();
    let erase = query.erases()?;
    match erase {
        true => tell(&state, id, EraseCustomer).await?,
        false => tell(&state, id, DeleteCustomer).await?,
    }
    if erase {
        metrics::counter!("pushd_customers_erased_total").increment(1);
    }
    Ok(HttpResponse::NoContent().finish())
}

async fn put_device(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
    web::Json(Fields(body)): JsonBody<DeviceBody>,
) -> Result<HttpResponse, ApiError> {
    let id = id.as_str();
    let device = body.device.checked("device", state.clock.now())?;
    tell(&state, id, PutDevice(device)).await?;
    Ok(HttpResponse::Ok().json(json!({"customer_id": id})))
}

async fn delete_device(
    _: ApiKey,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, token) = path.into_inner();
    delete_token(&state, &id, &token).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn customer_event(
    ForCustomer(caller): ForCustomer,
    state: web::Data<AppState>,
    id: web::Path<String>,
    web::Json(Fields(body)): JsonBody<EventBody>,
) -> Result<HttpResponse, ApiError> {
    let id = id.as_str();
    let converted = record_event(&state, id, &body.name, &body.data, body.timestamp).await?;
    // The app is answered that the event was taken, nothing more: which
    // delivery converted is the backend's business.
    match caller {
        Caller::Backend => Ok(HttpResponse::Ok().json(json!({"converted_delivery_id": converted}))),
        Caller::App => Ok(super::status_ok()),
    }
}

/// Sends `msg` to customer `id`'s actor and waits until its change is
/// durable; an engine `NotFound` names the customer.
pub(super) async fn tell<M, T>(state: &AppState, id: &str, msg: M) -> Result<T, ApiError>
where
    M: Message<Result = Result<Ack<T>, EngineError>> + Clone + Send + 'static,
    T: Send + 'static,
    PersonActor: Handler<M>,
    <PersonActor as Actor>::Context: ToEnvelope<PersonActor, M>,
{
    let ids = [("customer", id)];
    let registry = &state.customer_partition(id)?.registry;
    registry.request(id, msg).await.map_err(naming(&ids))
}

/// Removes device `token` from customer `id`.
pub(super) async fn delete_token(state: &AppState, id: &str, token: &str) -> Result<(), ApiError> {
    let ids = [("customer", id), ("device", token)];
    let registry = &state.customer_partition(id)?.registry;
    let msg = DeleteDevice(token.to_string());
    registry.request(id, msg).await.map_err(naming(&ids))
}

/// Records event `name` (with `data`, which must be an object if given) of
/// customer `id`, who must exist, at `timestamp` or now; answers the
/// delivery it converted, if any.
pub(super) async fn record_event(
    state: &AppState,
    id: &str,
    name: &str,
    data: &Value,
    timestamp: Option<i64>,
) -> Result<Option<String>, ApiError> {
    let name = check_id(name, "name")?.to_string();
    if !data.is_null() && !data.is_object() {
        return Err(ApiError::invalid_field("data must be an object"));
    }
    let msg = CustomerEvent {
        name,
        at: event_time(timestamp, &*state.clock, "timestamp")?,
    };
    let ids = [("customer", id)];
    let registry = &state.customer_partition(id)?.registry;
    registry
        .request_existing(id, msg)
        .await
        .map_err(naming(&ids))
}

/// Registers the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint(
        "/v1/customers/{customer_id}",
        [
            (Method::PUT, web::to(put_customer)),
            (Method::GET, web::to(get_customer)),
            (Method::DELETE, web::to(delete_customer)),
        ],
    ))
    .service(endpoint(
        "/v1/customers/{customer_id}/devices",
        [(Method::PUT, web::to(put_device))],
    ))
    .service(endpoint(
        "/v1/customers/{customer_id}/devices/{token}",
        [(Method::DELETE, web::to(delete_device))],
    ))
    .service(endpoint(
        "/v1/customers/{customer_id}/events",
        [(Method::POST, web::to(customer_event))],
    ));
}
