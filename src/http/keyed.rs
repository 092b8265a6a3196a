//! Cluster mode: a keyed send (`Idempotency-Key`) belongs to the partition
//! its key hashes to (as a customer id would). That partition's owner keeps
//! the key's record in the partition's journal, so the record moves with
//! the partition. A node that does not serve the key's partition hands the
//! whole send to the node that does ([`hand_off`]), which splits it across
//! the nodes as any send, and passes its answer back: a retry through any
//! node reaches the same record and replays the same answer.

use actix_web::HttpResponse;
use actix_web::ResponseError;
use actix_web::http::{Method, StatusCode};
use bytes::Bytes;
use pushd_actors::engine::PartitionTag;

use super::send::IDEMPOTENCY_KEY;
use super::{ApiError, AppState, Caller};
use crate::topology::wire::{Answer, IDEMPOTENT_REPLAYED};
use crate::topology::{Call, Peers, Try};

/// How many forward timeouts a handed-off send may take on the key's
/// owner: it waits up to one for its customers' moving partitions, and up
/// to one for the other nodes' shares of the send.
const OWNER_WAIT_TIMEOUTS: u32 = 3;

/// Sends `body` (a send's body, keyed with `key`) through the node that
/// serves the key's partition `tag`, and answers its answer; `None` once
/// this node serves the partition itself (answer the send here). While the
/// partition moves, the send is handed to whoever holds its lease then,
/// for at most `forward_timeout_ms`, then answered 503
/// `partition_unavailable`. Handing the same keyed send again is safe: the
/// owner holds the key while a call with it is under way, and a retry
/// finishes or replays it.
pub async fn hand_off(
    state: &AppState,
    peers: &dyn Peers,
    tag: PartitionTag,
    key: &str,
    body: Bytes,
) -> Option<HttpResponse> {
    let timeout = peers.forward_timeout() * OWNER_WAIT_TIMEOUTS;
    let handed = state
        .topology
        .on_owner(&state.partitions, tag, |address, _| {
            let body = body.clone();
            async move {
                let call = Call {
                    timeout,
                    address: &address,
                    method: &Method::POST,
                    path_and_query: "/v1/send/push",
                    caller: Some(Caller::Backend),
                    headers: &[(IDEMPOTENCY_KEY, key)],
                    body,
                };
                match peers.call(call).await {
                    Ok(a) if !owner_moved(&a) => Try::Answered(a),
                    Ok(_) => Try::Moving(format!("node {address} does not serve it now")),
                    Err(e) => Try::Moving(e.to_string()),
                }
            }
        });
    match handed.await {
        Ok(answer) => answer.map(respond),
        Err(e) => Some(ApiError::from(e).error_response()),
    }
}

/// Whether the node asked no longer serves the key's partition: a 503
/// that is not a send's answer (which lists its `deliveries`).
fn owner_moved(answer: &Answer) -> bool {
    if answer.status != StatusCode::SERVICE_UNAVAILABLE {
        return false;
    }
    let body: Option<serde_json::Value> = serde_json::from_slice(&answer.body).ok();
    body.is_none_or(|b| b.get("deliveries").is_none())
}

/// The owner's answer, as this node's.
fn respond(answer: Answer) -> HttpResponse {
    let mut res = HttpResponse::build(answer.status);
    if let Some(ct) = answer.content_type {
        res.content_type(ct);
    }
    if answer.replayed {
        res.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    res.body(answer.body)
}
