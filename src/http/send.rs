//! `POST /v1/send/push`: one delivery per customer, fanned out to their
//! actors (in cluster mode, the customers of partitions other nodes serve
//! go there in one forwarded send per node); with an `Idempotency-Key`
//! header, the key's first answer is replayed for 24 hours instead of
//! sending again (see the engine's [`idempotency`](pushd_actors::idempotency)
//! for how a call cut short is finished by its retry without sending twice).
//! In cluster mode a key's record lives in the partition the key hashes to:
//! the node serving it answers the keyed send ([`super::keyed`]), and hands
//! the other nodes their customers with the delivery ids the record fixes.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use futures_util::{StreamExt, stream};
use pushd_actors::caps::{CapRule, FrequencyCap};
use pushd_actors::idempotency::{Claim, MAX_KEY_BYTES, NotSent, SendAnswer, SendTicket, SentTo};
use pushd_actors::model::MessageSpec;
use pushd_actors::person::SendMessage;
use pushd_actors::quiet::{QuietAction, QuietHours, QuietRule};
use pushd_actors::rules::SendRules;
use pushd_actors::schedule::{IfPast, SendTime};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::{ApiKey, NodeCall};
use super::body::{Fields, JsonBody};
use super::error::{ApiError, naming};
use super::keyed;
use super::split::{Outcome, Refusal, by_owner, send_elsewhere};
use super::{AppState, check_id, endpoint};
use crate::topology::{self, wire::FORWARDED};

/// Most customer ids in one send.
pub const MAX_SEND_IDS: usize = 10_000;
/// Largest `data` of one send, as JSON text: it is copied into every
/// delivery of the call.
pub const MAX_SEND_DATA_BYTES: usize = 16 * 1024;
/// Customers asked at once while fanning a send out. Each one asked is
/// work queued on an actor thread, and another call's customer (a
/// transactional send) waits behind what is queued there: 256 let a few
/// campaign calls queue a thousand customers, and a single send's answer
/// waited ~60 ms for them at p99 (the load bench's `--latency`); 32 keep it
/// to a few ms, while the group commit still gathers every call's
/// customers into few syncs.
const FAN_OUT: usize = 32;
/// The request header naming a send call for retries.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The answer header saying an answer is the key's first one, replayed.
pub use crate::topology::wire::IDEMPOTENT_REPLAYED;

/// `POST /v1/send/push` body. A node hands another the part of a send for
/// that node's customers as this same type, so a field added here travels
/// with it; a field left at its default is left out, so a node of an
/// earlier release reads a send that does not use what it lacks.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SendBody {
    message_id: String,
    customer_ids: Vec<String>,
    #[serde(default)]
    data: Value,
    /// The delivery id of each customer, in order: set only by the node
    /// answering a keyed send, when it hands another node its customers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delivery_ids: Option<Vec<String>>,
    /// When to send (absent: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule: Option<ScheduleBody>,
    /// This send's frequency caps instead of the default ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    frequency_caps: Option<Vec<FrequencyCap>>,
    /// No frequency cap applies to this send.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    bypass_frequency_caps: bool,
    /// This send's quiet hours instead of the default ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quiet_hours: Option<QuietHoursBody>,
    /// No quiet hours apply to this send.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    bypass_quiet_hours: bool,
}

/// `POST /v1/send/push` answer, as this node writes it and reads another
/// node's.
#[derive(Debug, Default, Deserialize, Serialize)]
pub(super) struct SendReply {
    /// The deliveries made, in the call's order.
    pub(super) deliveries: Vec<SentTo>,
    /// The customers without one, and why.
    pub(super) failed: Vec<Failed>,
    /// When no delivery was made: the first customer's error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<Problem>,
}

/// A customer a send made no delivery for.
#[derive(Debug, Deserialize, Serialize)]
pub(super) struct Failed {
    /// The customer.
    pub(super) customer_id: String,
    /// Why.
    pub(super) error: Problem,
}

/// An error's code and message, as the API's error body holds them.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(super) struct Problem {
    /// The error code.
    pub(super) code: String,
    /// The error message.
    pub(super) message: String,
}

/// A send's `quiet_hours`: `HH:MM` to `HH:MM` of the person's local day.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct QuietHoursBody {
    start: String,
    end: String,
    action: QuietAction,
}

/// A send's `schedule`: an instant (`at`), or a local time in each
/// person's zone.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ScheduleBody {
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    local_time: Option<String>,
    #[serde(default)]
    fallback_timezone: Option<String>,
    #[serde(default)]
    if_past: Option<IfPast>,
}

/// When a send's deliveries go out, and the caps and quiet hours they keep,
/// in the engine's terms.
struct When {
    time: Option<SendTime>,
    rules: SendRules,
}

/// Most frequency caps one send names.
const MAX_CAPS: usize = 10;
/// The longest frequency cap window: a year.
const MAX_CAP_SECONDS: i64 = 366 * 86_400;

impl When {
    /// The `schedule` and caps of `body`, checked.
    fn of(body: &SendBody) -> Result<When, ApiError> {
        let caps = body.frequency_caps.as_deref().unwrap_or_default();
        if caps.len() > MAX_CAPS {
            return Err(ApiError::invalid_field(format!(
                "frequency_caps must hold at most {MAX_CAPS} caps, not {}",
                caps.len()
            )));
        }
        for (i, cap) in caps.iter().enumerate() {
            if cap.max == 0 || !(1..=MAX_CAP_SECONDS).contains(&cap.per_seconds) {
                return Err(ApiError::invalid_field(format!(
                    "frequency_caps[{i}] must have max at least 1 and per_seconds from 1 to \
                     {MAX_CAP_SECONDS}, not max {} per_seconds {}",
                    cap.max, cap.per_seconds
                )));
            }
        }
        let quiet_hours = (body.quiet_hours.as_ref())
            .map(|q| QuietHours::parse(&q.start, &q.end, q.action))
            .transpose()
            .map_err(ApiError::invalid_field)?;
        Ok(When {
            time: body.schedule.as_ref().map(ScheduleBody::time).transpose()?,
            rules: SendRules {
                caps: CapRule {
                    frequency_caps: body.frequency_caps.clone(),
                    bypass: body.bypass_frequency_caps,
                },
                quiet: QuietRule {
                    quiet_hours,
                    bypass: body.bypass_quiet_hours,
                },
            },
        })
    }
}

impl ScheduleBody {
    /// The time it names, or why it names none.
    fn time(&self) -> Result<SendTime, ApiError> {
        let time = match (&self.at, &self.local_time) {
            (Some(at), None) if self.fallback_timezone.is_none() && self.if_past.is_none() => {
                SendTime::at(at)
            }
            (None, Some(local)) => {
                let fallback = self.fallback_timezone.as_deref().unwrap_or("UTC");
                SendTime::local(local, fallback, self.if_past.unwrap_or(IfPast::SendNow))
            }
            _ => Err(
                "schedule must hold either at, or local_time (with fallback_timezone and \
                 if_past)"
                    .to_owned(),
            ),
        };
        time.map_err(ApiError::invalid_field)
    }
}

impl SendBody {
    /// A digest of what the call asks for: the same message, customers (in
    /// order) and data give the same digest, however the JSON was written
    /// (key order, spacing; absent data is empty data).
    fn fingerprint(&self) -> String {
        let data = match &self.data {
            Value::Null => json!({}),
            data => data.clone(),
        };
        // serde_json's maps are sorted: this text is canonical.
        let mut parts = vec![json!(self.message_id), json!(self.customer_ids), data];
        // A body without the fields sends gained later digests as before.
        let when = json!([
            self.schedule,
            self.frequency_caps,
            self.bypass_frequency_caps,
            self.quiet_hours,
            self.bypass_quiet_hours
        ]);
        if when != json!([null, null, false, null, false]) {
            parts.push(when);
        }
        let canonical = Value::Array(parts).to_string();
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// This send to `customer_ids` only, under the delivery ids `delivery_ids`
    /// if given (one per customer): the part another node serves.
    pub(super) fn part(
        &self,
        customer_ids: Vec<String>,
        delivery_ids: Option<Vec<String>>,
    ) -> SendBody {
        SendBody {
            customer_ids,
            delivery_ids,
            ..self.clone()
        }
    }

    /// The body as JSON, for another node.
    pub(super) fn to_bytes(&self) -> bytes::Bytes {
        serde_json::to_vec(self).expect("encodes").into()
    }
}

/// The delivery ids a keyed call's ticket fixes for `customers`: with
/// partitions, each id carries its customer's partition.
fn keyed_delivery_ids(state: &AppState, ticket: &SendTicket, customers: &[String]) -> Vec<String> {
    let partitioning = state.partitions.partitioning();
    let id = |(n, customer): (usize, &String)| match partitioning.count() {
        1 => ticket.delivery_id(n),
        _ => ticket.partitioned_delivery_id(n, partitioning.of_customer(customer)),
    };
    customers.iter().enumerate().map(id).collect()
}

/// The `Idempotency-Key` header, if given: 1 to 256 bytes of visible ASCII.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().ok().filter(|k| {
        (1..=MAX_KEY_BYTES).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic())
    });
    match key {
        Some(key) => Ok(Some(key.to_owned())),
        None => Err(ApiError::invalid_field(format!(
            "{IDEMPOTENCY_KEY} must be 1 to {MAX_KEY_BYTES} visible ASCII characters (a UUID \
             is a good key), not {} bytes",
            value.len()
        ))),
    }
}

/// Checks the body; answers the message it sends.
async fn check(state: &AppState, body: &SendBody) -> Result<MessageSpec, ApiError> {
    let message_id = check_id(&body.message_id, "message_id")?;
    if body.customer_ids.is_empty() || body.customer_ids.len() > MAX_SEND_IDS {
        return Err(ApiError::invalid_field(format!(
            "customer_ids must hold 1 to {MAX_SEND_IDS} ids, not {}",
            body.customer_ids.len()
        )));
    }
    for (i, id) in body.customer_ids.iter().enumerate() {
        check_id(id, &format!("customer_ids[{i}]"))?;
    }
    check_data(&body.data)?;
    state
        .catalog
        .get(message_id)
        .await?
        .ok_or_else(|| ApiError::not_found("message", message_id))
}

/// Checks a send's `data`: an object (or absent) of at most
/// [`MAX_SEND_DATA_BYTES`] of JSON.
pub(super) fn check_data(data: &Value) -> Result<(), ApiError> {
    if !data.is_null() && !data.is_object() {
        return Err(ApiError::invalid_field("data must be an object"));
    }
    let data_bytes = serde_json::to_vec(data).map_or(0, |text| text.len());
    if data_bytes > MAX_SEND_DATA_BYTES {
        return Err(ApiError::invalid_field(format!(
            "data must be at most {MAX_SEND_DATA_BYTES} bytes of JSON (it is copied into every \
             delivery), not {data_bytes}; send large data by reference"
        )));
    }
    Ok(())
}

async fn send_push(
    _: ApiKey,
    req: HttpRequest,
    state: web::Data<AppState>,
    web::Json(Fields(mut body)): JsonBody<SendBody>,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?;
    let node_call = req.extensions().get::<NodeCall>().is_some();
    let given_ids = body.delivery_ids.take();
    if let Some(ids) = &given_ids {
        if !node_call || key.is_some() {
            return Err(ApiError::invalid_field(
                "delivery_ids is not a field of a send: pushd makes the delivery ids",
            ));
        }
        if ids.len() != body.customer_ids.len() {
            return Err(ApiError::invalid_field(
                "delivery_ids must name one delivery per customer",
            ));
        }
    }
    let message = Arc::new(check(&state, &body).await?);
    let when = When::of(&body)?;
    let Some(key) = key else {
        let ids = given_ids.as_deref();
        let (answer, first_error) = fan_out(&state, &req, &message, body, &when, ids).await;
        return Ok(respond(&answer, first_error, false));
    };
    // The engine of the key's partition keeps the key's record: the one
    // partition of a single node, or the node serving it in a cluster.
    let tag = state.partitions.partitioning().of_customer(&key);
    if state.partitions.get(tag).is_none() {
        // A send handed here by another node finds the partition gone: it
        // moved, and the node handing it off asks the new owner.
        let peers = state.topology.peers().filter(|_| !node_call);
        let Some(peers) = peers else {
            return Err(topology::Error::PartitionUnavailable {
                partition: tag.0,
                why: "this node no longer serves it".into(),
            }
            .into());
        };
        if let Some(answer) = keyed::hand_off(&state, peers, tag, &key, body.to_bytes()).await {
            return Ok(answer);
        }
    }
    let registry = state.customer_partition(&key)?.registry.clone();
    let claimed = registry
        .idempotent_sends()
        .claim(&key, &body.fingerprint())
        .await;
    match claimed? {
        Claim::Replay(answer) => {
            metrics::counter!("pushd_idempotent_replays_total").increment(1);
            Ok(respond(&answer, None, true))
        }
        Claim::Send(ticket) => {
            let ids = keyed_delivery_ids(&state, &ticket, &body.customer_ids);
            let (answer, first_error) =
                fan_out(&state, &req, &message, body, &when, Some(&ids)).await;
            ticket.record(&answer).await?;
            Ok(respond(&answer, first_error, false))
        }
    }
}

/// One round of a send: each of `customers` (with its place in the request)
/// asked of its actor here or, through the serving node, elsewhere (as
/// `send`, the call's body without its customers); a keyed call's
/// customers under the delivery ids `ids` (by place).
async fn send_once(
    state: &web::Data<AppState>,
    forwarded: bool,
    message: &Arc<MessageSpec>,
    send: &SendBody,
    when: &When,
    customers: Vec<(usize, String)>,
    ids: Option<&[String]>,
) -> Vec<(usize, String, Outcome)> {
    let (here, elsewhere) = by_owner(state, forwarded, customers, |(_, id)| id.as_str());
    let sends = here.into_iter().map(|(_, (n, customer_id))| {
        let msg = SendMessage {
            message: message.clone(),
            data: send.data.clone(),
            delivery_id: ids.map(|ids| ids[n].clone()),
            time: when.time.clone(),
            rules: when.rules.clone(),
        };
        let state = state.clone();
        async move {
            let ids = [("customer", customer_id.as_str())];
            let result = match state.customer_partition(&customer_id) {
                Ok(p) => p
                    .registry
                    .request(&customer_id, msg)
                    .await
                    .map_err(naming(&ids)),
                Err(e) => Err(e),
            };
            let result = result.map_err(|e| Refusal::from(state.unfenced(e)));
            (n, customer_id, result)
        }
    });
    let elsewhere = elsewhere
        .into_iter()
        .map(|(address, group)| (address, group.into_iter().map(|(_, c)| c).collect()))
        .collect();
    let (mut results, others): (Vec<_>, _) = futures_util::join!(
        stream::iter(sends).buffered(FAN_OUT).collect(),
        send_elsewhere(state, send, elsewhere, ids)
    );
    // Each node counts the deliveries it made.
    let made_here = results.iter().filter(|(_, _, r)| r.is_ok()).count();
    metrics::counter!("pushd_deliveries_created_total").increment(made_here as u64);
    results.extend(others);
    results
}

/// Asks every customer's actor for a delivery (under the given ids for a
/// keyed call; through the serving node for another node's customers) and
/// answers which were made durable and which were not, in the order asked,
/// with the first error.
async fn fan_out(
    state: &web::Data<AppState>,
    req: &HttpRequest,
    message: &Arc<MessageSpec>,
    mut body: SendBody,
    when: &When,
    ids: Option<&[String]>,
) -> (SendAnswer, Option<Refusal>) {
    let forwarded = req.headers().contains_key(FORWARDED);
    // Customers whose partition is moving (nothing was done for them) are
    // tried again, split afresh, until the forward timeout: they reach the
    // partition's new owner as it takes over.
    let deadline = (state.topology.peers())
        .filter(|_| !forwarded)
        .map(|peers| Instant::now() + peers.forward_timeout());
    let customers = std::mem::take(&mut body.customer_ids);
    let mut pending: Vec<(usize, String)> = customers.into_iter().enumerate().collect();
    let mut results = Vec::with_capacity(pending.len());
    for attempt in 1u32.. {
        let round = send_once(state, forwarded, message, &body, when, pending, ids).await;
        let pause = topology::RETRY_PAUSE * attempt.min(5);
        let again = deadline.is_some_and(|d| Instant::now() + pause < d);
        let (retry, settled): (Vec<_>, Vec<_>) = round
            .into_iter()
            .partition(|(_, _, r)| again && r.as_ref().is_err_and(|e| e.moving));
        results.extend(settled);
        if retry.is_empty() {
            break;
        }
        tokio::time::sleep(pause).await;
        pending = retry.into_iter().map(|(n, id, _)| (n, id)).collect();
    }
    results.sort_by_key(|(n, _, _)| *n);
    // Every delivery made durable is listed, and every customer whose
    // delivery was not, with why: the client retries only those.
    let mut answer = SendAnswer::default();
    let mut first_error = None;
    for (_, customer_id, result) in results {
        match result {
            Ok(delivery_id) => answer.deliveries.push(SentTo {
                customer_id,
                delivery_id,
            }),
            Err(e) => {
                answer.failed.push(NotSent {
                    customer_id,
                    code: e.code.clone(),
                    message: e.message.clone(),
                });
                first_error.get_or_insert(e);
            }
        }
    }
    (answer, first_error)
}

/// The answer's body: `202` when some delivery was made, else the first
/// error's status with its error beside the lists.
fn respond(answer: &SendAnswer, first_error: Option<Refusal>, replayed: bool) -> HttpResponse {
    let failed = (answer.failed.iter())
        .map(|f| Failed {
            customer_id: f.customer_id.clone(),
            error: Problem {
                code: f.code.clone(),
                message: f.message.clone(),
            },
        })
        .collect();
    let mut reply = SendReply {
        deliveries: answer.deliveries.clone(),
        failed,
        error: None,
    };
    let mut status = StatusCode::ACCEPTED;
    if let Some(e) = first_error.filter(|_| answer.deliveries.is_empty()) {
        reply.error = Some(Problem {
            code: e.code,
            message: e.message,
        });
        status = e.status;
    }
    let mut response = HttpResponse::build(status);
    if replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    response.json(reply)
}

/// Registers the route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint(
        "/v1/send/push",
        [(Method::POST, web::to(send_push))],
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What another node receives of a send: every field as the client gave
    /// it, with that node's customers (and their delivery ids, for a keyed
    /// send) in place of the call's.
    #[test]
    fn a_part_of_a_send_carries_every_field_but_the_customers() {
        let given = json!({
            "message_id": "m1",
            "customer_ids": ["c1", "c2", "c3"],
            "data": {"code": 42},
            "schedule": {"at": null, "local_time": "09:00",
                "fallback_timezone": "Europe/Paris", "if_past": "skip"},
            "frequency_caps": [{"max": 2, "per_seconds": 3600}],
            "bypass_frequency_caps": true,
            "quiet_hours": {"start": "22:00", "end": "07:00", "action": "hold"},
            "bypass_quiet_hours": true,
        });
        let body: SendBody = serde_json::from_value(given.clone()).unwrap();
        let part = body.part(vec!["c2".into()], Some(vec!["d2".into()]));
        let sent: Value = serde_json::from_slice(&part.to_bytes()).unwrap();
        let mut expected = given;
        expected["customer_ids"] = json!(["c2"]);
        expected["delivery_ids"] = json!(["d2"]);
        assert_eq!(sent, expected);
    }

    /// A send that leaves a field at its default does not name it, so a
    /// node of an earlier release (which refuses unknown fields) takes it.
    #[test]
    fn a_part_of_a_plain_send_names_only_the_first_releases_fields() {
        let body: SendBody =
            serde_json::from_value(json!({"message_id": "m1", "customer_ids": ["c1"]})).unwrap();
        let part = body.part(vec!["c1".into()], None);
        let sent: Value = serde_json::from_slice(&part.to_bytes()).unwrap();
        assert_eq!(
            sent,
            json!({"message_id": "m1", "customer_ids": ["c1"], "data": null})
        );
    }

    /// The answer a node writes is the one another node reads back.
    #[test]
    fn a_send_answer_reads_back_as_written() {
        let answer = SendAnswer {
            deliveries: vec![SentTo {
                customer_id: "c1".into(),
                delivery_id: "d1".into(),
            }],
            failed: vec![NotSent {
                customer_id: "c2".into(),
                code: "not_found".into(),
                message: "customer c2 not found".into(),
            }],
        };
        let written = respond(&answer, None, false);
        assert_eq!(written.status(), StatusCode::ACCEPTED);
        let body = actix_web::body::to_bytes(written.into_body());
        let body = futures_util::FutureExt::now_or_never(body)
            .unwrap()
            .unwrap();
        let read: SendReply = serde_json::from_slice(&body).unwrap();
        assert_eq!(read.deliveries, answer.deliveries);
        assert_eq!(read.failed.len(), 1);
        assert_eq!(read.failed[0].customer_id, "c2");
        assert_eq!(read.failed[0].error.code, "not_found");
        assert_eq!(read.failed[0].error.message, "customer c2 not found");
        assert!(read.error.is_none());
    }
}
