//! Cluster mode: a keyed send (`Idempotency-Key`) belongs to the partition
//! its key hashes to (as a customer id would). That partition's owner keeps
//! the key's record in the partition's journal, so the record moves with
//! the partition. A node that does not serve the key's partition hands the
//! whole send to the node that does ([`hand_off`]), which splits it across
//! the nodes as any send, and passes its answer back: a retry through any
//! node reaches the same record and replays the same answer.

use std::time::Instant;

use actix_web::HttpResponse;
use actix_web::ResponseError;
use actix_web::http::{Method, StatusCode};
use bytes::Bytes;
use pushd_actors::engine::PartitionTag;

use super::forward::{RETRY_PAUSE, unavailable};
use super::send::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use super::{AppState, Caller};
use crate::cluster::Link;
use crate::cluster::peers::Answer;

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
    link: &Link,
    tag: PartitionTag,
    key: &str,
    body: Bytes,
) -> Option<HttpResponse> {
    let deadline = Instant::now() + link.forward_timeout;
    let mut why = String::from("no node serves it now");
    for attempt in 0u32.. {
        if state.partitions.get(tag).is_some() {
            return None;
        }
        let owner = match link.node.owner_address(tag).filter(|_| attempt == 0) {
            Some(address) => Some(address),
            None => link.node.current_owner_address(tag).await,
        };
        if let Some(address) = owner {
            metrics::counter!("pushd_cluster_forwarded_total").increment(1);
            let answer = link
                .peers
                .call(
                    link.forward_timeout * OWNER_WAIT_TIMEOUTS,
                    &address,
                    &Method::POST,
                    "/v1/send/push",
                    Some(Caller::Backend),
                    &[(IDEMPOTENCY_KEY, key)],
                    body.clone(),
                )
                .await;
            match answer {
                Ok(a) if !owner_moved(&a) => return Some(respond(a)),
                Ok(_) => why = format!("node {address} does not serve it now"),
                Err(e) => {
                    tracing::debug!(error = %e, "handing a keyed send off failed");
                    why = e.to_string();
                }
            }
        }
        let pause = RETRY_PAUSE * (attempt + 1).min(5);
        if Instant::now() + pause >= deadline {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    metrics::counter!("pushd_cluster_forward_timeouts_total").increment(1);
    let why = format!("{why}; waited {} ms", link.forward_timeout.as_millis());
    Some(unavailable(tag, &why).error_response())
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
