//! `POST /v1/batch`: bulk import. Up to [`MAX_BATCH`] customers, each with
//! its attributes, subscription and devices, in one call, so a team can load
//! an existing user base. The whole body is checked first: a malformed item
//! is a 400 naming it, and nothing is imported. Then each item is all or
//! nothing (one journal record through the customer's actor: the customer
//! replaced with exactly these devices), and the answer has one result per
//! item, in order: an item the engine could not take (its actor unavailable,
//! the journal failing) does not hold up the others. In cluster mode the
//! items of customers other nodes serve go there, one forwarded import per
//! node.

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use pushd_actors::model::Device;
use pushd_actors::person::{ImportCustomer, MAX_DEVICES};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::auth::ApiKey;
use super::body::{Fields, JsonBody};
use super::customers::DeviceFields;
use super::error::{ApiError, naming};
use super::split::by_owner;
use super::{AppState, check_id, endpoint};
use crate::topology::BULK_TIMEOUT;
use crate::topology::wire::FORWARDED;

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

/// One customer to import; a node forwards the items of customers another
/// node serves as they came.
#[derive(Clone, Deserialize, Serialize)]
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
    req: HttpRequest,
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
    // Customers of partitions other nodes serve go there, as they came;
    // every item is checked first, wherever it goes.
    let forwarded = req.headers().contains_key(FORWARDED);
    let (here, elsewhere) = by_owner(&state, forwarded, body.customers, |i| i.id.as_str());
    let refused_elsewhere = (elsewhere.values().flatten())
        .filter_map(|(n, item)| checked(item.clone(), *n, now).err().map(|e| (*n, e)))
        .min_by_key(|(n, _)| *n);
    let mut imports = Vec::with_capacity(here.len());
    for (n, item) in here {
        match checked(item, n, now) {
            Ok(import) => imports.push((n, import)),
            // The first refusal in the request's order, wherever it goes.
            Err(e) => {
                return Err(match refused_elsewhere {
                    Some((m, first)) if m < n => first,
                    _ => e,
                });
            }
        }
    }
    if let Some((_, e)) = refused_elsewhere {
        return Err(e);
    }
    let local = imports.into_iter().map(|(n, (id, import))| {
        let state = state.clone();
        async move {
            let ids = [("customer", id.as_str())];
            let done = match state.customer_partition(&id) {
                Ok(p) => p.registry.request(&id, import).await.map_err(naming(&ids)),
                Err(e) => Err(e),
            };
            (
                n,
                result(&id, done.map_err(|e| (e.code.to_owned(), e.message))),
            )
        }
    });
    let remote = elsewhere
        .into_iter()
        .map(|(address, items)| import_elsewhere(&state, address, items));
    let (mut results, others): (Vec<Placed>, Vec<Vec<Placed>>) = futures_util::join!(
        stream::iter(local).buffered(FAN_OUT).collect(),
        futures_util::future::join_all(remote)
    );
    results.extend(others.into_iter().flatten());
    results.sort_by_key(|(n, _)| *n);
    let results: Vec<Value> = results.into_iter().map(|(_, r)| r).collect();
    let imported = results.iter().filter(|r| r["status"] == "imported").count();
    metrics::counter!("pushd_customers_imported_total").increment(imported as u64);
    Ok(HttpResponse::Ok().json(json!({
        "imported": imported,
        "refused": count - imported,
        "results": results,
    })))
}

/// An item's result and its place in the request.
type Placed = (usize, Value);

/// One item's result: imported, or refused with `(code, message)`.
fn result(id: &str, done: Result<(), (String, String)>) -> Value {
    match done {
        Ok(()) => json!({"id": id, "status": "imported"}),
        Err((code, message)) => json!({"id": id, "status": "refused",
            "error": {"code": code, "message": message}}),
    }
}

/// Cluster mode: the items of customers the node at `address` serves, in
/// one forwarded import (the API's own items, as they came); their
/// results, by their place in the request.
async fn import_elsewhere(
    state: &AppState,
    address: String,
    items: Vec<(usize, ImportItem)>,
) -> Vec<Placed> {
    let customers: Vec<&ImportItem> = items.iter().map(|(_, item)| item).collect();
    let body = Bytes::from(json!({"customers": customers}).to_string());
    let answer = match state.topology.peers() {
        Some(peers) => peers
            .forward_part(BULK_TIMEOUT, &address, "/v1/batch", body)
            .await
            .map_err(|e| e.to_string()),
        None => Err("not in a cluster".to_owned()),
    };
    let answered: Vec<Value> = match &answer {
        Ok(a) => serde_json::from_slice::<Value>(&a.body)
            .ok()
            .and_then(|v| v["results"].as_array().cloned())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(k, (n, ImportItem { id, .. }))| {
            let r = answered.get(k).cloned().unwrap_or_else(|| {
                let why = match &answer {
                    Err(e) => e.clone(),
                    Ok(a) => format!("node {address} answered {}", a.status),
                };
                result(&id, Err(("unavailable".to_owned(), why)))
            });
            (n, r)
        })
        .collect()
}

/// Registers the route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/batch", [(Method::POST, web::to(import))]));
}
