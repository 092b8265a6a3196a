//! Segment's and RudderStack's HTTP tracking API under `/ingest/v1/`:
//! `batch`, `track`, `identify`, and `page`/`screen`/`group`/`alias`
//! (taken and ignored). HTTP Basic with a write key as the user
//! ([`super::basic_auth`]); bodies may be gzipped (`Content-Encoding:
//! gzip`, decoded by actix-web) and hold at most [`MAX_BODY`] bytes once
//! decoded, else 413. Each event with a `messageId` is applied once within
//! a day ([`super::memory`]). An event pushd cannot map is counted by
//! reason and answered 200, as Segment does; a body that is not a batch is
//! 400. A cluster node answers 501: events are applied where they arrive,
//! and a batch may name customers of every node.

use actix_web::error::PayloadError;
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpResponse, web};
use serde_json::{Map, Value, json};

use super::basic_auth::WriteKey;
use super::mapping::{Outcome, apply};
use super::memory::Compat;
use crate::http::error::ApiError;
use crate::http::{AppState, endpoint_with};

/// Largest body, decoded: Segment's limit of a batch, 500 KB.
pub const MAX_BODY: usize = 500 * 1024;

/// The event types a path takes alone, and their paths.
const SINGLE: [(&str, &str); 6] = [
    ("track", "/ingest/v1/track"),
    ("identify", "/ingest/v1/identify"),
    ("page", "/ingest/v1/page"),
    ("screen", "/ingest/v1/screen"),
    ("group", "/ingest/v1/group"),
    ("alias", "/ingest/v1/alias"),
];

/// 501 on a cluster node: an event may be about customers of any node,
/// and these endpoints apply events where they arrive.
fn single_node(state: &AppState) -> Result<(), ApiError> {
    match state.cluster {
        None => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_in_cluster",
            "the ingestion endpoints (/ingest/v1/) are served by a single-node pushd only, not \
             in cluster mode",
        )),
    }
}

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
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    single_node(&state)?;
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
    take(&state, &compat, events).await
}

/// `POST /ingest/v1/<kind>`: one event of that type.
async fn single(
    kind: &'static str,
    state: web::Data<AppState>,
    compat: web::Data<Compat>,
    body: Result<web::Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    single_node(&state)?;
    let mut event = object(&body_bytes(body)?)?;
    event.insert("type".into(), Value::String(kind.to_owned()));
    take(&state, &compat, vec![event]).await
}

/// Applies `events` in order, each once; answers Segment's
/// `{"success": true}` with what became of them.
async fn take(
    state: &AppState,
    compat: &Compat,
    events: Vec<Map<String, Value>>,
) -> Result<HttpResponse, ApiError> {
    let (mut applied, mut ignored, mut unmapped, mut duplicates) = (0, 0, 0, 0);
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
            duplicates += 1;
            continue;
        }
        match apply(state, compat, kind, event).await? {
            Outcome::Applied => applied += 1,
            Outcome::Ignored => ignored += 1,
            Outcome::Unmapped(reason) => {
                metrics::counter!("pushd_ingest_unmapped_total", "reason" => reason).increment(1);
                tracing::debug!(kind, reason, "ingested event not mapped");
                unmapped += 1;
            }
        }
        if let Some(id) = message_id {
            compat.applied(id, now);
        }
    }
    Ok(HttpResponse::Ok().json(json!({
        "success": true,
        "applied": applied,
        "ignored": ignored,
        "unmapped": unmapped,
        "duplicates": duplicates,
    })))
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
