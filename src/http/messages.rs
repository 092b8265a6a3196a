//! Push message templates and their metrics.

use actix_web::{HttpResponse, web};
use pushd_actors::model::{
    Audience, ConversionGoal, MessageSpec, PushKind, PushOptions, default_app,
};
use pushd_actors::person::MAX_CONVERSION_WINDOW;
use pushd_actors::tally::{Counts, Tally};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::ApiKey;
use super::body::JsonBody;
use super::error::ApiError;
use super::{AppState, check_id, push_options};

/// `PUT /v1/messages/{id}` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    name: Option<String>,
    campaign_id: Option<String>,
    /// Required for an alert, refused for a background push.
    title: Option<String>,
    /// Required for an alert, refused for a background push.
    body: Option<String>,
    deep_link: Option<String>,
    #[serde(default = "all_devices")]
    audience: Audience,
    collapse_id: Option<String>,
    conversion: Option<ConversionGoal>,
    #[serde(default = "default_app")]
    app: String,
    /// Parsed by [`push_options::parse`], which names the field in errors.
    push: Option<Value>,
}

fn all_devices() -> Audience {
    Audience::AllDevices
}

/// Builds the message, refusing templates that do not parse.
fn validate(state: &AppState, id: &str, b: MessageBody) -> Result<MessageSpec, ApiError> {
    if let Some(c) = &b.campaign_id {
        check_id(c, "campaign_id")?;
    }
    check_id(&b.app, "app")?;
    let push = match b.push {
        Some(v) => push_options::parse(v, |text| state.renderer.check(text))?,
        None => PushOptions::default(),
    };
    let (title, body) = match push.kind {
        PushKind::Alert => {
            let required = |text: Option<String>, field: &str| {
                text.ok_or_else(|| {
                    ApiError::invalid_field(format!("{field} is required for an alert push"))
                })
            };
            (required(b.title, "title")?, required(b.body, "body")?)
        }
        PushKind::Background => {
            if let Some(field) = [("title", &b.title), ("body", &b.body)]
                .into_iter()
                .find_map(|(field, text)| text.as_ref().map(|_| field))
            {
                return Err(ApiError::invalid_field(format!(
                    "{field}: a background push shows nothing; leave title and body out"
                )));
            }
            (String::new(), String::new())
        }
    };
    let fields = [("title", Some(&title)), ("body", Some(&body))];
    let link = [("deep_link", b.deep_link.as_ref())];
    for (field, text) in fields.iter().chain(&link) {
        if let Some(text) = text {
            state.renderer.check(text).map_err(|e| {
                ApiError::new(
                    actix_web::http::StatusCode::BAD_REQUEST,
                    "invalid_template",
                    format!("{field} is not a valid Liquid template: {e}"),
                )
            })?;
        }
    }
    if b.collapse_id
        .as_ref()
        .is_some_and(|c| c.is_empty() || c.len() > 64)
    {
        return Err(ApiError::invalid_field("collapse_id must be 1 to 64 bytes"));
    }
    if let Some(goal) = &b.conversion {
        check_id(&goal.event, "conversion.event")?;
        if !(1..=MAX_CONVERSION_WINDOW).contains(&goal.window_seconds) {
            return Err(ApiError::invalid_field(format!(
                "conversion.window_seconds must be between 1 and {MAX_CONVERSION_WINDOW}"
            )));
        }
    }
    Ok(MessageSpec {
        id: id.to_string(),
        name: b.name.unwrap_or_else(|| id.to_string()),
        campaign_id: b.campaign_id,
        title,
        body,
        deep_link: b.deep_link,
        audience: b.audience,
        collapse_id: b.collapse_id,
        conversion: b.conversion,
        app: b.app,
        push,
    })
}

async fn put_message(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<HttpResponse, ApiError> {
    let id = check_id(&id, "message id")?;
    let spec = validate(&state, id, body)?;
    state.registry.put_message(spec.clone()).await?;
    Ok(HttpResponse::Ok().json(spec))
}

async fn get_message(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = check_id(&id, "message id")?;
    let spec = state.store.message(id)?;
    Ok(HttpResponse::Ok().json(spec.ok_or_else(|| ApiError::not_found("message"))?))
}

/// 404 unless the message exists.
fn known_message(state: &AppState, id: &str) -> Result<(), ApiError> {
    match state.store.message(id)? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("message")),
    }
}

async fn message_metrics(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = check_id(&id, "message id")?;
    known_message(&state, id)?;
    Ok(HttpResponse::Ok().json(tally_json(&state.store.message_metrics(id))))
}

/// The body of the metrics endpoints: the message-level counters,
/// `recipients` and `rates`, and the same per platform under `by_platform`.
fn tally_json(t: &Tally) -> Value {
    let mut body = counts_json(&t.message);
    body["by_platform"] = json!({"ios": counts_json(&t.ios), "android": counts_json(&t.android)});
    body
}

/// One set of counters with `recipients` and `rates`.
fn counts_json(c: &Counts) -> Value {
    let mut map: Map<String, Value> = c
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into()))
        .collect();
    map.insert("recipients".into(), c.recipients().into());
    map.insert("rates".into(), json!(c.rates()));
    Value::Object(map)
}

/// The body of the time-series endpoints.
fn series_json(points: Vec<(i64, i64, i64)>) -> HttpResponse {
    let points: Vec<_> = points
        .into_iter()
        .map(|(minute, delivered, opened)| {
            json!({"minute": minute, "delivered": delivered, "opened": opened})
        })
        .collect();
    HttpResponse::Ok().json(json!({"points": points}))
}

async fn message_timeseries(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = check_id(&id, "message id")?;
    known_message(&state, id)?;
    Ok(series_json(state.store.message_timeseries(id)))
}

async fn campaign_timeseries(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = check_id(&id, "campaign id")?;
    Ok(series_json(state.store.campaign_timeseries(id)))
}

async fn campaign_metrics(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = check_id(&id, "campaign id")?;
    Ok(HttpResponse::Ok().json(tally_json(&state.store.campaign_metrics(id))))
}

/// Registers the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/v1/messages/{id}")
            .route(web::put().to(put_message))
            .route(web::get().to(get_message)),
    )
    .route("/v1/messages/{id}/metrics", web::get().to(message_metrics))
    .route(
        "/v1/messages/{id}/timeseries",
        web::get().to(message_timeseries),
    )
    .route(
        "/v1/campaigns/{id}/metrics",
        web::get().to(campaign_metrics),
    )
    .route(
        "/v1/campaigns/{id}/timeseries",
        web::get().to(campaign_timeseries),
    );
}
