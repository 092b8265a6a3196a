//! Webhooks over the API: `PUT`, `GET` and `DELETE /v1/webhooks/{webhook_id}`, and
//! `GET /v1/webhooks`. The secret is taken, never answered.

use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use pushd_actors::status::MessageStatus;
use serde::Deserialize;
use serde_json::json;

use super::auth::ApiKey;
use super::body::{Fields, JsonBody};
use super::error::ApiError;
use super::{AppState, endpoint};
use crate::webhooks::Request;

/// `PUT /v1/webhooks/{webhook_id}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
    secret: String,
    #[serde(default)]
    events: Option<Vec<MessageStatus>>,
}

/// Runs a webhooks call (it may write and sync the webhooks file) off the
/// HTTP worker.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::webhooks::Error> + Send + 'static,
) -> Result<T, ApiError> {
    super::reach::off_workers(move || Ok(f()?)).await
}

async fn put_webhook(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
    web::Json(Fields(body)): JsonBody<WebhookBody>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let request = Request {
        url: body.url,
        secret: body.secret,
        events: body.events,
    };
    let webhooks = state.webhooks.clone();
    let view = blocking(move || webhooks.put(&id, request)).await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn get_webhook(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let webhooks = state.webhooks.clone();
    let view = blocking(move || webhooks.get(&id)).await?;
    Ok(HttpResponse::Ok().json(view))
}

async fn list_webhooks(_: ApiKey, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let webhooks = state.webhooks.clone();
    let views = blocking(move || webhooks.list()).await?;
    Ok(HttpResponse::Ok().json(json!({"webhooks": views})))
}

async fn delete_webhook(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let webhooks = state.webhooks.clone();
    blocking(move || webhooks.delete(&id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Registers the webhook routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint(
        "/v1/webhooks",
        [(Method::GET, web::to(list_webhooks))],
    ))
    .service(endpoint(
        "/v1/webhooks/{webhook_id}",
        [
            (Method::PUT, web::to(put_webhook)),
            (Method::GET, web::to(get_webhook)),
            (Method::DELETE, web::to(delete_webhook)),
        ],
    ));
}
