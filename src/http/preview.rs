//! `POST /v1/messages/{message_id}/preview`: what a send of the message to
//! one customer would do, changing nothing. The customer is read through
//! its actor, the engine's own functions check it, render the message and
//! choose its devices (see [`SendPreview`]), and the provider clients build
//! each push's request as a send would, sending it nowhere. A send that
//! would fail is answered 200 with the failure reason it would record.

use std::sync::Arc;

use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use pushd_actors::plan::{DeviceChoice, SendPreview};
use pushd_actors::ports::{ProviderError, Push};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::ApiKey;
use super::body::{Fields, JsonBody};
use super::deliveries::failure_message;
use super::error::{ApiError, naming};
use super::send::check_data;
use super::{AppState, check_id, endpoint};
use crate::providers::WireRequest;

/// `POST /v1/messages/{message_id}/preview` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    customer_id: String,
    #[serde(default)]
    data: Value,
}

async fn preview(
    _: ApiKey,
    state: web::Data<AppState>,
    message_id: web::Path<String>,
    web::Json(Fields(body)): JsonBody<PreviewBody>,
) -> Result<HttpResponse, ApiError> {
    let message_id = message_id.as_str();
    let customer_id = check_id(&body.customer_id, "customer_id")?;
    check_data(&body.data)?;
    let message = state
        .catalog
        .get(message_id)
        .await?
        .ok_or_else(|| ApiError::not_found("message", message_id))?;
    let ids = [("customer", customer_id)];
    let registry = &state.customer_partition(customer_id)?.registry;
    let mut preview = (registry.preview(customer_id, Arc::new(message), body.data))
        .await
        .map_err(naming(&ids))?;
    let pushes: Vec<Value> = preview
        .pushes()
        .into_iter()
        .map(|(index, push)| wire_json(&state, &mut preview, index, &push))
        .collect();
    let delivery = &preview.delivery;
    let failure = delivery.state.failure_reason().map(|reason| {
        json!({
            "reason": reason.code(),
            "detail": delivery.failure_detail,
            "message": failure_message(delivery),
        })
    });
    Ok(HttpResponse::Ok().json(json!({
        "message_id": message_id,
        "customer_id": customer_id,
        "would_send": delivery.state.pending(),
        "status": delivery.status(),
        "failure": failure,
        "devices": preview.devices.iter().map(device_json).collect::<Vec<_>>(),
        "content": delivery.content,
        "pushes": pushes,
    })))
}

/// One of the customer's devices, chosen or skipped with why.
fn device_json(choice: &DeviceChoice) -> Value {
    let d = &choice.device;
    json!({
        "token": d.id,
        "platform": d.platform,
        "app": d.app,
        "environment": d.environment,
        "last_used": d.last_used,
        "suppressed": d.suppressed,
        "chosen": choice.skipped.is_none(),
        "skipped_reason": choice.skipped.map(|s| s.as_str()),
    })
}

/// The push to device `index` of the preview's delivery as its request
/// would go on the wire, or why it would not go (folded into the preview
/// as the send would record it).
fn wire_json(state: &AppState, preview: &mut SendPreview, index: usize, push: &Push) -> Value {
    let mut v = json!({
        "token": &*push.token,
        "platform": push.platform,
        "app": &*push.app,
        "environment": push.environment,
        "url": null,
        "headers": null,
        "payload": null,
        "failure": null,
    });
    match state.providers.request(push) {
        Ok(WireRequest {
            url,
            headers,
            payload,
        }) => {
            let headers: Map<String, Value> = (headers.into_iter())
                .map(|(name, value)| (name, Value::String(value)))
                .collect();
            v["url"] = url.into();
            v["headers"] = headers.into();
            v["payload"] = payload;
        }
        Err(ProviderError::Permanent { reason, detail }) => {
            v["failure"] = json!({"reason": reason.code(), "detail": detail});
            preview.refuse(index, reason, detail);
        }
        // Building a request refuses a push for good or not at all.
        Err(other) => {
            tracing::warn!(
                error = other.detail(),
                "a previewed push's request failed to build"
            );
            v["failure"] = json!({"reason": null, "detail": other.detail()});
        }
    }
    v
}

/// Registers the route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint(
        "/v1/messages/{message_id}/preview",
        [(Method::POST, web::to(preview))],
    ));
}
