//! Cluster mode: device reports for another node's partition go to it in
//! batches instead of one forwarded request
//! each. The node a report reaches checks everything it can alone (the
//! key, the body, the time) and relays the checked report, with the caller
//! it authenticated and the app's identity proof; the owner checks the
//! proof against the delivery's customer and records the report, and its
//! answer (200, or the error the report would have met there) is the
//! client's.

use actix_web::http::StatusCode;
use actix_web::http::header::RETRY_AFTER;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use futures_util::future::join_all;
use pushd_actors::status::Report;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::{NodeCall, proof_given};
use super::deliveries::report_device;
use super::error::RETRY_AFTER_SECS;
use super::{ApiError, AppState, Caller, endpoint};
use crate::topology::Try;
use crate::topology::wire::{Answers, Batch, RELAYED_REPORTS, Refused, caller_name, parse_caller};

/// A device report checked by the node it reached, for the partition's
/// owner to record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RelayedReport {
    /// The delivery reported on.
    pub delivery_id: String,
    /// The device (token) it names.
    pub device_id: String,
    /// What happened.
    pub event: Report,
    /// When, Unix seconds.
    pub at: i64,
    /// Whom the receiving node authenticated (`backend`, `app`).
    pub caller: String,
    /// The app's `Pushd-Customer-Auth`, if it sent one.
    pub proof: Option<String>,
}

/// The owner's answer to one relayed report.
#[derive(Debug, Serialize, Deserialize)]
struct Recorded {
    /// The status the report's call is answered with.
    status: u16,
    /// The error's code and message, unless 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// Relays the report on `delivery_id` (made by `report`) to the node
/// serving the delivery's partition, when that is another node: its
/// answer, or `None` to record it here.
pub(super) async fn elsewhere(
    state: &AppState,
    delivery_id: &str,
    report: impl FnOnce() -> RelayedReport,
) -> Result<Option<HttpResponse>, ApiError> {
    let Some(peers) = state.topology.peers() else {
        return Ok(None);
    };
    let partitioning = state.partitions.partitioning();
    let Some(tag) = partitioning.of_delivery(delivery_id) else {
        return Ok(None);
    };
    if state.partitions.get(tag).is_some() {
        return Ok(None);
    }
    let item = serde_json::value::to_raw_value(&report()).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        )
    })?;
    let answered = state
        .topology
        .on_owner(&state.partitions, tag, |address, left| {
            let item = item.clone();
            async move {
                let call = peers.relay(&address, item);
                let recorded = match tokio::time::timeout(left, call).await {
                    Ok(Ok(answer)) => serde_json::from_str::<Recorded>(answer.get())
                        .map_err(|e| format!("node {address} answered garbled: {e}")),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("node {address} did not answer in time")),
                };
                match recorded {
                    Ok(r) if r.status == StatusCode::SERVICE_UNAVAILABLE.as_u16() => {
                        Try::Moving(format!("node {address} does not serve it now"))
                    }
                    Ok(r) => Try::Answered(r),
                    Err(why) => Try::Moving(why),
                }
            }
        })
        .await?;
    Ok(answered.map(response))
}

/// The client's answer to a report the owner answered `recorded`.
fn response(recorded: Recorded) -> HttpResponse {
    let status = StatusCode::from_u16(recorded.status).unwrap_or(StatusCode::BAD_GATEWAY);
    match recorded.error {
        None => super::status_ok(),
        Some(error) => {
            let mut res = HttpResponse::build(status);
            if status == StatusCode::SERVICE_UNAVAILABLE {
                res.insert_header((RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
            }
            res.json(json!({ "error": error }))
        }
    }
}

/// `POST /v1/cluster/reports`: another node's batch of reports for this
/// node's partitions; only a node may send it (signed with the cluster
/// secret). Answers each report's outcome, in order.
async fn record_relayed(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    if req.extensions().get::<NodeCall>().is_none() {
        return Err(Refused::Missing.into());
    }
    let batch: Batch<RelayedReport> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_field(format!("a batch of relayed reports: {e}")))?;
    let recorded = batch.items.into_iter().map(|r| record(&req, &state, r));
    let answers = join_all(recorded).await;
    Ok(HttpResponse::Ok().json(Answers { answers }))
}

/// Records one relayed report as `/push/events` would have here.
async fn record(req: &HttpRequest, state: &AppState, report: RelayedReport) -> Recorded {
    let outcome = match parse_caller(&report.caller).flatten() {
        Some(caller) => {
            let proof = report.proof.as_deref().map(str::as_bytes);
            let device = |d: &pushd_actors::model::Delivery| {
                if let Some(proof) = proof {
                    proof_given(req, caller, &d.customer_id, proof)?;
                }
                Ok(report.device_id.clone())
            };
            report_device(state, &report.delivery_id, report.event, report.at, device).await
        }
        None => Err(ApiError::from(Refused::Malformed)),
    };
    match outcome {
        Ok(_) => Recorded {
            status: 200,
            error: None,
        },
        Err(e) => {
            let e = state.unfenced(e);
            Recorded {
                status: e.status.as_u16(),
                error: Some(json!({"code": e.code, "message": e.message})),
            }
        }
    }
}

/// The name a relayed report gives its caller.
pub(super) fn relayed_caller(caller: Caller) -> String {
    caller_name(Some(caller)).to_string()
}

/// Registers the node-to-node route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint(
        RELAYED_REPORTS,
        [(actix_web::http::Method::POST, web::to(record_relayed))],
    ));
}
