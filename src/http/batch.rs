//! `POST /v1/batch`: bulk import. Up to [`MAX_BATCH`] customers, each with
//! its attributes, subscription and devices, in one call, so a team can load
//! an existing user base. The whole body is checked first: a malformed item
//! is a 400 naming it, and nothing is imported. Then each item is all or
//! nothing (one journal record through the customer's actor: the customer
//! replaced with exactly these devices), and the answer has one result per
//! item, in order: an item the engine could not take (its actor unavailable,
//! the journal failing) does not hold up the others.

use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use futures_util::{StreamExt, stream};
use pushd_actors::model::Device;
use pushd_actors::person::{ImportCustomer, MAX_DEVICES};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::ApiKey;
use super::body::{Fields, JsonBody};
use super::customers::DeviceFields;
use super::error::{ApiError, naming};
use super::{AppState, check_id, endpoint};

/// Most customers per call.
pub const MAX_BATCH: usize = 1000;
/// Customers imported at once.
const FAN_OUT: usize = 256;

/// `POST /v1/batch` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    customers: Vec<ImportItem>,
}

/// One customer to import.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportItem {
    id: String,
    #[serde(default)]
    attributes: Map<String, Value>,
    #[serde(default)]
    unsubscribed: bool,
    #[serde(default)]
    devices: Vec<DeviceFields>,
}

/// Item `at`, checked: its customer id and its import.
fn checked(item: ImportItem, at: usize, now: i64) -> Result<(String, ImportCustomer), ApiError> {
    let field = format!("customers[{at}]");
    check_id(&item.id, &format!("{field}.id"))?;
    if item.devices.len() > MAX_DEVICES {
        return Err(ApiError::invalid_field(format!(
            "{field}.devices holds {} devices; at most {MAX_DEVICES} are kept",
            item.devices.len()
        )));
    }
    let devices: Vec<Device> = item
        .devices
        .into_iter()
        .enumerate()
        .map(|(i, d)| d.checked(&format!("{field}.devices[{i}]"), now))
        .collect::<Result<_, _>>()?;
    let import = ImportCustomer {
        attributes: item.attributes,
        unsubscribed: item.unsubscribed,
        devices,
    };
    Ok((item.id, import))
}

async fn import(
    _: ApiKey,
    state: web::Data<AppState>,
    web::Json(Fields(body)): JsonBody<BatchBody>,
) -> Result<HttpResponse, ApiError> {
    let count = body.customers.len();
    if !(1..=MAX_BATCH).contains(&count) {
        return Err(ApiError::invalid_field(format!(
            "customers must hold 1 to {MAX_BATCH} customers, not {count}"
        )));
    }
    let now = state.clock.now();
    let imports: Vec<(String, ImportCustomer)> = body
        .customers
        .into_iter()
        .enumerate()
        .map(|(at, item)| checked(item, at, now))
        .collect::<Result<_, _>>()?;
    let items = imports.into_iter().map(|(id, import)| {
        let state = state.clone();
        async move {
            let ids = [("customer", id.as_str())];
            let done = state
                .registry
                .request(&id, import)
                .await
                .map_err(naming(&ids));
            match done {
                Ok(()) => json!({"id": id, "status": "imported"}),
                Err(e) => json!({"id": id, "status": "refused",
                    "error": {"code": e.code, "message": e.message}}),
            }
        }
    });
    let results: Vec<Value> = stream::iter(items).buffered(FAN_OUT).collect().await;
    let imported = results.iter().filter(|r| r["status"] == "imported").count();
    metrics::counter!("pushd_customers_imported_total").increment(imported as u64);
    Ok(HttpResponse::Ok().json(json!({
        "imported": imported,
        "refused": count - imported,
        "results": results,
    })))
}

/// Registers the route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/batch", [(Method::POST, web::to(import))]));
}
