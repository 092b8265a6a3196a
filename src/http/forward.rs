//! Cluster mode: a request about one customer or one delivery goes to the
//! node serving its partition. This middleware finds the partition from the
//! path (`/v1/customers/{id}/...`, `/v1/deliveries/{id}[/retry]`, and
//! Customer.io's `/api/v1/customers/{id}/...`) or from the body: a
//! message preview's `customer_id` (`/v1/messages/{id}/preview`). (Device
//! reports are checked where they arrive and relayed in batches:
//! [`super::relayed`].) When
//! another node serves it, the request is forwarded there as it came and
//! its answer passed back. While the partition moves (its owner gone, paused or handing it
//! back), the call is tried again on whoever holds its lease then, or
//! answered here once this node serves it, for at most `[cluster]
//! forward_timeout_ms`; then it is answered 503 `partition_unavailable`.
//! Everything else is answered here. A send with many customers is split
//! by the send handler itself.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, ResponseError, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::auth::{NodeCall, caller_of};
use super::error::ErrorCode;
use super::{ApiError, AppState, CUSTOMER_AUTH, Caller};
use crate::topology::wire::{
    FORWARDED, NODE_CALLER, NODE_SIGNATURE, Refused, SCOPE, SignedCall, parse_caller,
};
use crate::topology::{Call, Peers, Try};

/// Forwards a request for another node's partition; passes the rest on.
pub async fn to_owner(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let Some(peers) = state.topology.peers() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let headers = req.headers();
    if [FORWARDED, SCOPE, NODE_SIGNATURE]
        .iter()
        .any(|h| headers.contains_key(*h))
    {
        return match node_call(&mut req, peers, state.max_body).await? {
            Ok(caller) => {
                req.extensions_mut().insert(NodeCall(caller));
                Ok(fenced_as_unavailable(next.call(req).await?))
            }
            Err(refused) => {
                metrics::counter!("pushd_cluster_node_calls_refused_total").increment(1);
                tracing::warn!(path = req.path(), reason = %refused, "node-to-node call refused");
                Ok(req.into_response(ApiError::from(refused).error_response()))
            }
        };
    }
    let mut body = Bytes::new();
    let partitioning = state.partitions.partitioning();
    let tag = match route_key(req.path()) {
        Some(Key::Customer(id)) => Some(partitioning.of_customer(&id)),
        Some(Key::Delivery(id)) => partitioning.of_delivery(&id),
        Some(Key::PreviewBody) => {
            body = read_body(&mut req, state.max_body).await?;
            let asked: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
            let id = asked.as_ref().and_then(|a| a["customer_id"].as_str());
            let tag = id.map(|id| partitioning.of_customer(id));
            req.set_payload(bytes_payload(body.clone()));
            tag
        }
        None => None,
    };
    let Some(tag) = tag.filter(|t| state.partitions.get(*t).is_none()) else {
        return Ok(fenced_as_unavailable(next.call(req).await?));
    };
    if body.is_empty() {
        body = read_body(&mut req, state.max_body).await?;
    }
    // A body past the limit is refused here (413), as the owner would:
    // only its start was read, which the owner could not check as signed.
    if body.len() > state.max_body {
        req.set_payload(bytes_payload(body));
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.path(), |p| p.as_str())
        .to_string();
    // The owner is told whom this node authenticated, not the client's key.
    let caller = caller_of(req.request());
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
    let method = req.method().clone();
    let asked = state
        .topology
        .on_owner(&state.partitions, tag, |address, left| {
            let (method, path, headers, body) = (&method, &path, &headers, body.clone());
            async move {
                let answer = peers
                    .call(Call {
                        timeout: left,
                        address: &address,
                        method,
                        path_and_query: path,
                        caller,
                        headers,
                        body,
                    })
                    .await;
                match answer {
                    // 503: the owner no longer serves it (moving); try again.
                    Ok(a) if a.status == StatusCode::SERVICE_UNAVAILABLE => {
                        Try::Moving(format!("node {address} does not serve it now"))
                    }
                    Ok(a) => Try::Answered(a),
                    Err(e) => Try::Moving(e.to_string()),
                }
            }
        })
        .await;
    match asked {
        Ok(Some(a)) => {
            let mut res = HttpResponse::build(a.status);
            if let Some(ct) = a.content_type {
                res.content_type(ct);
            }
            Ok(req.into_response(res.body(a.body)))
        }
        Ok(None) => {
            req.set_payload(bytes_payload(body));
            Ok(fenced_as_unavailable(next.call(req).await?))
        }
        Err(e) => Ok(req.into_response(ApiError::from(e).error_response())),
    }
}

/// Checks a node-to-node call's signature (its body read and put back):
/// the caller the forwarding node authenticated, or why it is refused.
async fn node_call(
    req: &mut ServiceRequest,
    peers: &dyn Peers,
    max_body: usize,
) -> Result<Result<Option<Caller>, Refused>, actix_web::Error> {
    let body = read_body(req, max_body).await?;
    req.set_payload(bytes_payload(body.clone()));
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let (signature, caller_name) = (header(NODE_SIGNATURE), header(NODE_CALLER));
    let Some(caller_name) = caller_name else {
        return Ok(Err(Refused::Missing));
    };
    let call = SignedCall {
        method: req.method().as_str(),
        path_and_query: req
            .uri()
            .path_and_query()
            .map_or(req.path(), |p| p.as_str()),
        body: &body,
        address: peers.advertised(),
        caller: caller_name,
    };
    if let Err(refused) = peers.verify(signature, &call) {
        return Ok(Err(refused));
    }
    Ok(parse_caller(caller_name).ok_or(Refused::Malformed))
}

/// A cluster node's answer, with a journal failure (500 `journal_error`:
/// the partition was fenced off or NATS did not answer) made the 503 a
/// client retries.
fn fenced_as_unavailable(
    res: ServiceResponse<impl MessageBody + 'static>,
) -> ServiceResponse<BoxBody> {
    let journal =
        res.response().extensions().get::<ErrorCode>() == Some(&ErrorCode("journal_error"));
    if !journal {
        return res.map_into_boxed_body();
    }
    let (req, _) = res.into_parts();
    ServiceResponse::new(req, ApiError::journal_in_cluster().error_response())
}

/// What a path names.
enum Key {
    Customer(String),
    Delivery(String),
    /// A message's preview: the customer id is in the body.
    PreviewBody,
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
        ["v1", "messages", id, "preview"] if !id.is_empty() => Some(Key::PreviewBody),
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
        // Reports are checked where they arrive, then relayed (relayed.rs).
        for report in ["/push/events", "/api/v1/push/events"] {
            assert!(route_key(report).is_none(), "{report}");
        }
        assert!(route_key("/ingest/v1/batch").is_none());
        assert!(matches!(
            route_key("/v1/messages/m1/preview"),
            Some(Key::PreviewBody)
        ));
        assert!(route_key("/v1/messages/m1").is_none());
    }
}
