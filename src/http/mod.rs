//! The HTTP ingress of API.md, on actix-web: routing, shared state, and the
//! small helpers every handler uses. Handlers translate requests into engine
//! messages and store reads; they hold no status logic.

mod auth;
mod body;
mod customers;
pub mod dashboard;
mod deliveries;
mod error;
mod messages;
mod push_options;

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use metrics_exporter_prometheus::PrometheusHandle;
use pushd_actors::registry::Registry;
use serde_json::json;

pub use auth::Keys;
pub use body::BodyLimit;
pub use error::{ApiError, contract_body};

use crate::store::SledStore;
use crate::template::LiquidRenderer;

/// What every handler shares.
pub struct AppState {
    /// The engine's front door.
    pub registry: Arc<Registry>,
    /// Reads of the delivery log, messages and counters.
    pub store: Arc<SledStore>,
    /// Template checks at message upload.
    pub renderer: Arc<LiquidRenderer>,
}

/// Longest id, in bytes (API.md: IDs are strings of 1–256 bytes).
pub const MAX_ID_BYTES: usize = 256;

/// Checks an id's length, naming it in the error.
pub fn check_id<'a>(id: &'a str, what: &str) -> Result<&'a str, ApiError> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(ApiError::invalid_field(format!(
            "{what} must be 1 to {MAX_ID_BYTES} bytes"
        )));
    }
    Ok(id)
}

/// Now, Unix seconds.
pub fn now() -> i64 {
    use pushd_actors::ports::{Clock, SystemClock};
    SystemClock.now()
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn prometheus(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}

/// Registers every route of the API.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(prometheus))
        .configure(customers::routes)
        .configure(messages::routes)
        .configure(deliveries::routes);
}
