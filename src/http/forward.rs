//! Cluster mode: a request about one customer or one delivery goes to the
//! node serving its partition. This middleware finds the partition from the
//! path (`/v1/customers/{id}/...`, `/v1/deliveries/{id}[/retry]`, and
//! Customer.io's `/api/v1/customers/{id}/...`) or, for a device report
//! (`/push/events`, `/api/v1/push/events`), from the body's `delivery_id`; when another node serves
//! it, the request is forwarded there as it came and its answer passed
//! back. Everything else (and a partition no node serves right now) is
//! answered here. A send with many customers is split by the send handler
//! itself.

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, ResponseError, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use pushd_actors::engine::PartitionTag;

use super::{ApiError, AppState, CUSTOMER_AUTH};
use crate::cluster::peers::{FORWARDED, SCOPE};

/// Forwards a request for another node's partition; passes the rest on.
pub async fn to_owner(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let Some((state, link)) = state.and_then(|s| s.cluster.clone().map(|l| (s, l))) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if req.headers().contains_key(FORWARDED) || req.headers().contains_key(SCOPE) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let mut body = Bytes::new();
    let partitioning = state.partitions.partitioning();
    let tag = match route_key(req.path()) {
        Some(Key::Customer(id)) => Some(partitioning.of_customer(&id)),
        Some(Key::Delivery(id)) => partitioning.of_delivery(&id),
        Some(Key::ReportBody) => {
            body = read_body(&mut req, state.max_body).await?;
            let report: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
            let id = report.as_ref().and_then(|r| r["delivery_id"].as_str());
            let tag = id.and_then(|id| partitioning.of_delivery(id));
            req.set_payload(bytes_payload(body.clone()));
            tag
        }
        None => None,
    };
    let Some(tag) = tag.filter(|t| state.partitions.get(*t).is_none()) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let mut owner = link.node.owner_address(tag);
    if owner.is_none() {
        owner = link.node.current_owner_address(tag).await;
    }
    if owner.is_none() {
        // No other node holds it: answered here (503 while it moves).
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    if body.is_empty() {
        body = read_body(&mut req, state.max_body).await?;
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.path(), |p| p.as_str())
        .to_string();
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // An app's identity proof goes along: the owner checks it.
    let proof = req
        .headers()
        .get(CUSTOMER_AUTH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut headers = vec![(FORWARDED, "1")];
    if let Some(proof) = &proof {
        headers.push((CUSTOMER_AUTH, proof));
    }
    // A partition moving is asked again of its new owner, a few times.
    let mut response = unavailable(tag, "no node serves it now").error_response();
    for attempt in 0..3 {
        let Some(address) = owner.take() else { break };
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(150 * attempt)).await;
        }
        let answer = link
            .peers
            .call(
                &address,
                req.method(),
                &path,
                authorization.as_deref(),
                &headers,
                body.clone(),
            )
            .await;
        metrics::counter!("pushd_cluster_forwarded_total").increment(1);
        let moving = match &answer {
            Ok(a) => a.status == StatusCode::SERVICE_UNAVAILABLE,
            Err(e) => {
                tracing::debug!(error = %e, "forwarding failed");
                true
            }
        };
        response = match answer {
            Ok(a) => {
                let mut res = HttpResponse::build(a.status);
                if let Some(ct) = a.content_type {
                    res.content_type(ct);
                }
                res.body(a.body)
            }
            Err(e) => unavailable(tag, &e.to_string()).error_response(),
        };
        if !moving {
            break;
        }
        owner = link.node.current_owner_address(tag).await;
    }
    Ok(req.into_response(response))
}

/// 503 for a partition whose node did not answer.
pub fn unavailable(tag: PartitionTag, why: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "partition_unavailable",
        format!(
            "partition {} could not be reached ({why}); retry in a moment",
            tag.0
        ),
    )
}

/// What a path names.
enum Key {
    Customer(String),
    Delivery(String),
    /// A device report: the delivery id is in the body.
    ReportBody,
}

/// The customer or delivery a path is about, percent-decoded.
fn route_key(path: &str) -> Option<Key> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|d| d.into_owned())
    };
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["v1", "customers", id, ..] if !id.is_empty() => Some(Key::Customer(decode(id)?)),
        ["api", "v1", "customers", id, ..] if !id.is_empty() => Some(Key::Customer(decode(id)?)),
        ["v1", "deliveries", id] | ["v1", "deliveries", id, "retry"] if !id.is_empty() => {
            Some(Key::Delivery(decode(id)?))
        }
        ["push", "events"] | ["api", "v1", "push", "events"] => Some(Key::ReportBody),
        _ => None,
    }
}

/// Reads the whole body (up to `limit` bytes; a longer one is the
/// handler's to refuse, so only its start is kept).
async fn read_body(req: &mut ServiceRequest, limit: usize) -> Result<Bytes, actix_web::Error> {
    let mut payload = req.take_payload();
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        body.extend_from_slice(&chunk?);
        if body.len() > limit {
            break;
        }
    }
    Ok(body.freeze())
}

/// A payload of `bytes`, to put a read body back.
fn bytes_payload(bytes: Bytes) -> actix_web::dev::Payload {
    actix_web::dev::Payload::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(path: &str) -> Option<String> {
        match route_key(path)? {
            Key::Customer(id) => Some(id),
            _ => None,
        }
    }

    #[test]
    fn customer_io_paths_route_like_pushds_own() {
        assert_eq!(
            customer("/v1/customers/c%201/devices").as_deref(),
            Some("c 1")
        );
        assert_eq!(customer("/api/v1/customers/c1").as_deref(), Some("c1"));
        assert_eq!(
            customer("/api/v1/customers/c1/events").as_deref(),
            Some("c1")
        );
        assert_eq!(customer("/api/customers/c1"), None);
        for report in ["/push/events", "/api/v1/push/events"] {
            assert!(
                matches!(route_key(report), Some(Key::ReportBody)),
                "{report}"
            );
        }
        assert!(route_key("/ingest/v1/batch").is_none());
    }
}
