//! Segment's and RudderStack's HTTP tracking API under `/ingest/v1/`:
//! `batch`, `track`, `identify`, and `page`/`screen`/`group`/`alias`
//! (taken and ignored). HTTP Basic with a write key as the user
//! ([`super::basic_auth`]); bodies may be gzipped (`Content-Encoding:
//! gzip`, decoded by actix-web) and hold at most [`MAX_BODY`] bytes once
//! decoded, else 413. Each event with a `messageId` is applied once within
//! a day ([`super::memory`]). An event pushd cannot map is counted by
//! reason and answered 200, as Segment does; a body that is not a batch is
//! 400. On a cluster node each event goes to the node serving its
//! customer's partition (or its delivery's, for a push report naming one):
//! a batch is split by node, each part forwarded in one call, and the
//! counts summed ([`by_node`]). A customer's events all reach one node, in
//! order, and that node remembers their `messageId`s.

use std::collections::BTreeMap;
use std::ops::AddAssign;

use actix_web::error::PayloadError;
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::basic_auth::WriteKey;
use super::mapping::{Outcome, Subject, apply, subject};
use super::memory::Compat;
use crate::http::error::ApiError;
use crate::http::{AppState, endpoint_with};
use crate::topology::BULK_TIMEOUT;
use crate::topology::wire::FORWARDED;

/// Largest body, decoded: Segment's limit of a batch, 500 KB.
pub const MAX_BODY: usize = 500 * 1024;

/// One event, as its client sent it (with its `type`).
type Event = Map<String, Value>;

/// The event types a path takes alone, and their paths.
const SINGLE: [(&str, &str); 6] = [
    ("track", "/ingest/v1/track"),
    ("identify", "/ingest/v1/identify"),
    ("page", "/ingest/v1/page"),
    ("screen", "/ingest/v1/screen"),
    ("group", "/ingest/v1/group"),
    ("alias", "/ingest/v1/alias"),
];

/// The body's bytes, or 413 past [`MAX_BODY`], 400 when unreadable (a
/// broken gzip stream, ...).
fn body_bytes(body: Result<web::Bytes, actix_web::Error>) -> Result<web::Bytes, ApiError> {
    body.map_err(|e| match e.as_error::<PayloadError>() {
        Some(PayloadError::Overflow) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a batch may hold at most {MAX_BODY} bytes (500 KB) once decoded; send fewer events per call"),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the body could not be read: {e}"),
        ),
    })
}

/// The body as a JSON object, or 400.
fn object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::invalid_field("the body must be a JSON object")),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("malformed JSON: {e}"),
        )),
    }
}

/// `POST /ingest/v1/batch`: `{"batch": [event, ...]}`, each event with its
/// `type`. Checked whole first: a body that is not such a batch changes
/// nothing.
async fn batch(
    _: WriteKey,
    state: web::Data<AppState>,
    compat: web::Data<Compat>,
    req: HttpRequest,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let mut body = object(&body_bytes(body)?)?;
    let Some(Value::Array(items)) = body.remove("batch") else {
        return Err(ApiError::invalid_field("batch must be an array of events"));
    };
    let mut events = Vec::with_capacity(items.len());
    for (at, item) in items.into_iter().enumerate() {
        match item {
            Value::Object(event) if event.get("type").is_some_and(Value::is_string) => {
                events.push(event)
            }
            _ => {
                return Err(ApiError::invalid_field(format!(
                    "batch[{at}] must be an event: an object with a type"
                )));
            }
        }
    }
    let forwarded = req.headers().contains_key(FORWARDED);
    take(&state, &compat, forwarded, events).await
}

/// `POST /ingest/v1/<kind>`: one event of that type.
async fn single(
    kind: &'static str,
    state: web::Data<AppState>,
    compat: web::Data<Compat>,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let mut event = object(&body_bytes(body)?)?;
    event.insert("type".into(), Value::String(kind.to_owned()));
    take(&state, &compat, false, vec![event]).await
}

/// What became of a call's events: Segment's `{"success": true}` and the
/// counts.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Taken {
    success: bool,
    applied: u64,
    ignored: u64,
    unmapped: u64,
    duplicates: u64,
}

impl AddAssign for Taken {
    fn add_assign(&mut self, other: Taken) {
        self.applied += other.applied;
        self.ignored += other.ignored;
        self.unmapped += other.unmapped;
        self.duplicates += other.duplicates;
    }
}

/// Applies `events`, each once, here or (in a cluster, unless another node
/// forwarded them) through the nodes serving them; answers what became of
/// them.
async fn take(
    state: &AppState,
    compat: &Compat,
    forwarded: bool,
    events: Vec<Event>,
) -> Result<HttpResponse, ApiError> {
    let (here, elsewhere) = by_node(state, forwarded, events);
    let remote = elsewhere
        .into_iter()
        .map(|(address, events)| take_elsewhere(state, address, events));
    let (local, remote) = futures_util::join!(take_here(state, compat, here), join_all(remote));
    let mut taken = local?;
    for answer in remote {
        taken += answer?;
    }
    taken.success = true;
    Ok(HttpResponse::Ok().json(taken))
}

/// The events this node applies (in order), and those other nodes serve,
/// by their address. A call another node forwarded is applied here whole;
/// so is an event about nobody, or whose partition no node serves right
/// now (it is then refused with `503 partition_unavailable`).
fn by_node(
    state: &AppState,
    forwarded: bool,
    events: Vec<Event>,
) -> (Vec<Event>, BTreeMap<String, Vec<Event>>) {
    if forwarded || state.topology.peers().is_none() {
        return (events, BTreeMap::new());
    }
    let partitioning = state.partitions.partitioning();
    let mut here = Vec::new();
    let mut elsewhere: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for event in events {
        let tag = match subject(&event) {
            Some(Subject::Delivery(id)) => partitioning.of_delivery(id),
            Some(Subject::Customer(id)) => Some(partitioning.of_customer(id)),
            None => None,
        };
        let owner = tag
            .filter(|t| state.partitions.get(*t).is_none())
            .and_then(|t| state.topology.owner_elsewhere(t));
        match owner {
            Some(address) => elsewhere.entry(address).or_default().push(event),
            None => here.push(event),
        }
    }
    (here, elsewhere)
}

/// Cluster mode: `events`, whose partitions the node at `address` serves,
/// in one forwarded batch; what became of them, or 503 when that node did
/// not take them (a retry applies again only events without a
/// `messageId`).
async fn take_elsewhere(
    state: &AppState,
    address: String,
    events: Vec<Event>,
) -> Result<Taken, ApiError> {
    let unavailable = |why: String| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "partition_unavailable",
            format!(
                "node {address}, which serves some of these events' customers, did not take them \
                 ({why}); retry the call (events with a messageId are applied once)"
            ),
        )
    };
    let Some(peers) = state.topology.peers() else {
        return Err(unavailable("not in a cluster".into()));
    };
    let body = Bytes::from(json!({"batch": events}).to_string());
    let answer = peers
        .forward_part(BULK_TIMEOUT, &address, "/ingest/v1/batch", body)
        .await
        .map_err(|e| unavailable(e.reason))?;
    match serde_json::from_slice::<Taken>(&answer.body) {
        Ok(taken) if answer.status == StatusCode::OK => Ok(taken),
        _ => Err(unavailable(format!(
            "it answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ))),
    }
}

/// Applies `events` here, in order, each once.
async fn take_here(
    state: &AppState,
    compat: &Compat,
    events: Vec<Event>,
) -> Result<Taken, ApiError> {
    let mut taken = Taken {
        success: true,
        ..Taken::default()
    };
    for event in &events {
        let kind = event["type"].as_str().unwrap_or_default();
        let label = SINGLE
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or("other", |(k, _)| *k);
        metrics::counter!("pushd_ingest_events_total", "type" => label).increment(1);
        let message_id = event.get("messageId").and_then(Value::as_str);
        let now = state.clock.now();
        if message_id.is_some_and(|id| compat.already_applied(id, now)) {
            metrics::counter!("pushd_ingest_duplicates_total").increment(1);
            taken.duplicates += 1;
            continue;
        }
        match apply(state, compat, kind, event).await? {
            Outcome::Applied => taken.applied += 1,
            Outcome::Ignored => taken.ignored += 1,
            Outcome::Unmapped(reason) => {
                metrics::counter!("pushd_ingest_unmapped_total", "reason" => reason).increment(1);
                tracing::debug!(kind, reason, "ingested event not mapped");
                taken.unmapped += 1;
            }
        }
        if let Some(id) = message_id {
            compat.applied(id, now);
        }
    }
    Ok(taken)
}

/// Registers the routes, whose bodies may be up to [`MAX_BODY`] bytes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let large = |r: actix_web::Resource| r.app_data(web::PayloadConfig::new(MAX_BODY));
    cfg.service(endpoint_with(
        "/ingest/v1/batch",
        [(Method::POST, web::to(batch))],
        large,
    ));
    for (kind, path) in SINGLE {
        let one = move |_: WriteKey, state, compat, body| single(kind, state, compat, body);
        cfg.service(endpoint_with(path, [(Method::POST, web::to(one))], large));
    }
}
