//! The HTTP ingress of the API, on actix-web: routing, shared state, and the
//! small helpers every handler uses. Handlers translate requests into engine
//! messages and store reads; they hold no status logic.

mod auth;
pub mod backpressure;
mod backup;
mod batch;
mod body;
pub mod compat;
mod connections;
mod customers;
pub mod dashboard;
mod deadline;
mod deliveries;
mod error;
mod events;
pub mod forward;
pub mod intake;
mod keyed;
mod messages;
mod openapi;
mod preview;
mod push_options;
mod range;
mod reach;
mod relayed;
mod send;
pub mod server;
mod split;
mod webhooks;

use std::sync::Arc;

use actix_web::dev::{HttpServiceFactory, Service};
use actix_web::http::Method;
use actix_web::http::header::ContentType;
use actix_web::{HttpRequest, HttpResponse, ResponseError, Route, web};
use futures_util::future::Either;
use metrics_exporter_prometheus::PrometheusHandle;
use pushd_actors::ports::Clock;
use serde_json::json;

pub use auth::{CUSTOMER_AUTH, Caller, KeyCheck, Keys};
pub use body::extractors;
pub use connections::{ConnectionLimit, Connections};
pub use error::{ApiError, contract_body};
pub use reach::Catalog;
pub use send::IDEMPOTENT_REPLAYED;

use crate::partition::Partitions;
use crate::providers::Providers;
use crate::template::LiquidRenderer;
use crate::webhooks::Webhooks;

/// What every handler shares.
pub struct AppState {
    /// The partitions this node runs (the one partition of a single node):
    /// their registries are the engine's front door, their stores what the
    /// delivery log and the counters read.
    pub partitions: Arc<Partitions>,
    /// Where message templates are kept.
    pub catalog: Catalog,
    /// Template checks at message upload.
    pub renderer: Arc<LiquidRenderer>,
    /// The engine's provider clients: a preview builds its pushes' requests
    /// with them.
    pub providers: Arc<Providers>,
    /// The engine's clock: the time of a report or event sent without one.
    pub clock: Arc<dyn Clock>,
    /// The delivery events (`/v1/events`): a single node's event log, or
    /// the cluster's events stream.
    pub feed: Arc<dyn crate::events::Source>,
    /// The webhooks (`/v1/webhooks`): a single node's, or the cluster's.
    pub webhooks: Arc<Webhooks>,
    /// What `GET /v1/backup` archives: the node's state, or the cluster's.
    pub backup: Arc<dyn crate::backup::Backups>,
    /// Where each partition is served: here, or on another node.
    pub topology: crate::topology::Topology,
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Whether writes are acknowledged now (`/readyz`).
    pub readiness: Arc<crate::readiness::Readiness>,
    /// How long a request body may take to arrive whole.
    pub body_timeout: std::time::Duration,
    /// What a write is checked against before it changes anything.
    pub writes: Arc<backpressure::WriteGate>,
}

/// Longest id, in bytes (IDs are strings of 1–256 bytes).
pub const MAX_ID_BYTES: usize = 256;

/// Most items in one page of a list (delivery log, messages); a larger
/// `limit` is served as this many, and paging goes on from the cursor.
pub const MAX_PAGE: usize = 1000;

/// The id rule: 1 to [`MAX_ID_BYTES`] bytes of UTF-8 without control
/// characters (C0, DEL, C1), naming the id (`what`) in the error. Body ids
/// come through here as they are; path ids through [`check_path_ids`],
/// which decodes them first.
pub fn check_id<'a>(id: &'a str, what: &str) -> Result<&'a str, ApiError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(ApiError::invalid_field(format!(
            "{what} must be 1 to {MAX_ID_BYTES} bytes, not {}",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(ApiError::bad_id(what));
    }
    Ok(id)
}

/// The `{name}`d segments of a route's `pattern`: their place among the
/// path's `/`-separated segments, and their name.
fn path_ids(pattern: &str) -> Vec<(usize, String)> {
    pattern
        .split('/')
        .enumerate()
        .filter_map(|(at, segment)| {
            let name = segment.strip_prefix('{')?.strip_suffix('}')?;
            Some((at, name.to_string()))
        })
        .collect()
}

/// Checks the ids of a request path against the id rule, from its raw
/// (still percent-encoded) text: actix-web decodes a path lossily, so
/// `%FF%FE` and `%FE%FF` would both reach a handler as the same id.
fn check_path_ids(ids: &[(usize, String)], raw_path: &str) -> Result<(), ApiError> {
    for (at, raw) in raw_path.split('/').enumerate() {
        let Some((_, name)) = ids.iter().find(|(i, _)| *i == at) else {
            continue;
        };
        let id = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| ApiError::bad_id(name))?;
        check_id(&id, name)?;
    }
    Ok(())
}

/// The earliest time a report or event may carry: 2000-01-01T00:00:00Z.
pub const EARLIEST_TIMESTAMP: i64 = 946_684_800;

/// How far past the daemon's clock a report or event may be dated: phones'
/// clocks drift, but not by days.
pub const MAX_AHEAD_SECS: i64 = 24 * 3600;

/// The time of a device report or customer event: `given` (Unix seconds),
/// or now when it has none. A time before 2000 or more than a day ahead is
/// refused, naming `field`: it is a unit mistake (milliseconds) or a broken
/// clock, and it would skew conversion windows and time series.
pub fn event_time(given: Option<i64>, clock: &dyn Clock, field: &str) -> Result<i64, ApiError> {
    let now = clock.now();
    let Some(at) = given else { return Ok(now) };
    let latest = now.saturating_add(MAX_AHEAD_SECS);
    if (EARLIEST_TIMESTAMP..=latest).contains(&at) {
        return Ok(at);
    }
    Err(ApiError::invalid_field(format!(
        "{field} must be Unix seconds from {EARLIEST_TIMESTAMP} (2000-01-01) to {latest} (24 hours \
         from now), not {at}"
    )))
}

/// The page size asked for by a `limit` parameter (default 100).
pub fn page_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = limit else { return Ok(100) };
    match raw.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n.min(MAX_PAGE)),
        _ => Err(ApiError::invalid_field(format!(
            "limit must be a whole number from 1 to {MAX_PAGE} (larger ones are served as \
             {MAX_PAGE}), not {raw:?}"
        ))),
    }
}

/// A yes/no query parameter `name` (absent: no); 400 unless `true` or
/// `false`.
pub fn query_flag(value: Option<&str>, name: &str) -> Result<bool, ApiError> {
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::invalid_field(format!(
            "{name} must be true or false, not {other:?}"
        ))),
    }
}

/// A resource answering `routes`, and any other method with 405
/// `method_not_allowed` and an `Allow` header listing the ones it takes.
/// Every id in the path (each `{name}` of `path`) is checked against the
/// id rule ([`check_id`]) before anything else runs: a refused id is a 400
/// `invalid_field` naming it.
pub fn endpoint(
    path: &str,
    routes: impl IntoIterator<Item = (Method, Route)>,
) -> impl HttpServiceFactory {
    endpoint_with(path, routes, |resource| resource)
}

/// [`endpoint`], its resource first given what `setup` adds (its own
/// app data, say). `path` is the whole path: no route sits in a scope, so
/// the paths registered are the paths served.
pub fn endpoint_with(
    path: &str,
    routes: impl IntoIterator<Item = (Method, Route)>,
    setup: impl FnOnce(actix_web::Resource) -> actix_web::Resource,
) -> impl HttpServiceFactory {
    let mut resource = setup(web::resource(path));
    let mut allow = Vec::new();
    for (method, route) in routes {
        allow.push(method.to_string());
        resource = resource.route(route.method(method));
    }
    #[cfg(test)]
    served::record(path, &allow);
    let allow = allow.join(", ");
    let ids: Arc<[(usize, String)]> = path_ids(path).into();
    resource
        .default_service(web::to(move |req: HttpRequest| {
            let res = ApiError::method_not_allowed(&req, &allow);
            async move { res }
        }))
        .wrap_fn(
            move |req, service| match check_path_ids(&ids, req.uri().path()) {
                Ok(()) => Either::Left(service.call(req)),
                Err(e) => {
                    let res = req.into_response(e.error_response());
                    Either::Right(std::future::ready(Ok(res)))
                }
            },
        )
}

/// `{"status": "ok"}`; a cluster node adds what it serves and sees.
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match state.topology.peers() {
        Some(peers) => HttpResponse::Ok().json(json!({"status": "ok", "cluster": peers.status()})),
        None => status_ok(),
    }
}

/// `200 {"ready": true, "reasons": []}` while writes are acknowledged,
/// else `503` with `"ready": false` and each reason.
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let reasons = state.readiness.reasons();
    let body = json!({"ready": reasons.is_empty(), "reasons": reasons});
    match reasons.is_empty() {
        true => HttpResponse::Ok().json(body),
        false => HttpResponse::ServiceUnavailable().json(body),
    }
}

/// `200 {"status":"ok"}` from a static body: nothing to build per request.
fn status_ok() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(r#"{"status":"ok"}"#)
}

async fn prometheus(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}

/// Registers every route of the API.
///
/// Paths are tried in order, and one with a `{parameter}` is a regex
/// match: the hot paths (device reports, sends, health) come first.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(deliveries::routes)
        .configure(send::routes)
        .service(endpoint("/healthz", [(Method::GET, web::to(healthz))]))
        .service(endpoint("/readyz", [(Method::GET, web::to(readyz))]))
        .service(endpoint("/metrics", [(Method::GET, web::to(prometheus))]))
        .configure(openapi::routes)
        .configure(customers::routes)
        .configure(batch::routes)
        .configure(messages::routes)
        .configure(preview::routes)
        .configure(relayed::routes)
        .configure(events::routes)
        .configure(webhooks::routes)
        .configure(backup::routes)
        .configure(compat::routes)
        .configure(dashboard::routes);
}

/// The routes [`endpoint`] registered, for the test that holds
/// docs/openapi.yaml to them.
#[cfg(test)]
pub(crate) mod served {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    static ROUTES: Mutex<BTreeMap<String, BTreeSet<String>>> = Mutex::new(BTreeMap::new());

    pub(super) fn record(path: &str, methods: &[String]) {
        let mut routes = ROUTES.lock().unwrap();
        let entry = routes.entry(path.to_owned()).or_default();
        entry.extend(methods.iter().cloned());
    }

    /// Each path registered so far, with its methods.
    pub(crate) fn routes() -> BTreeMap<String, BTreeSet<String>> {
        ROUTES.lock().unwrap().clone()
    }
}
