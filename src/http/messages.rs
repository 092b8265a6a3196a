//! Push message templates, their metrics, and the lists of messages and
//! campaigns with their headline figures.

use std::collections::BTreeMap;

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pushd_actors::model::{
    Audience, ConversionGoal, Lane, MessageSpec, PushKind, PushOptions, default_app,
};
use pushd_actors::person::MAX_CONVERSION_WINDOW;
use pushd_actors::status::{FailureReason, Timestamp};
use pushd_actors::tally::{Counts, rate};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::ApiKey;
use super::body::{Fields, JsonBody, Params, QueryOf};
use super::error::ApiError;
use super::reach::{Counted, Metrics, Partial, Scope, TalliesAnswer, TalliesAsked, local_share};
use super::{AppState, check_id, endpoint, page_limit, push_options};
use crate::store::CreatedRange;

/// `PUT /v1/messages/{message_id}` body.
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
    rate_per_minute: Option<u32>,
    #[serde(default)]
    lane: Lane,
}

/// The fastest pace a message may set: device sends a minute.
pub const MAX_RATE_PER_MINUTE: u32 = 1_000_000;

fn all_devices() -> Audience {
    Audience::AllDevices
}

/// `GET /v1/messages` and `GET /v1/campaigns` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    partial: Option<String>,
}

/// Builds the message, refusing templates that do not parse or that go past
/// a render limit on a sample render.
fn validate(
    state: &AppState,
    id: &str,
    b: MessageBody,
    created_at: Timestamp,
) -> Result<MessageSpec, ApiError> {
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
    if let Some(rate) = b.rate_per_minute
        && !(1..=MAX_RATE_PER_MINUTE).contains(&rate)
    {
        return Err(ApiError::invalid_field(format!(
            "rate_per_minute must be 1 to {MAX_RATE_PER_MINUTE} device sends a minute, not {rate}; leave it out to send unpaced"
        )));
    }
    if let Some(goal) = &b.conversion {
        check_id(&goal.event, "conversion.event")?;
        if !(1..=MAX_CONVERSION_WINDOW).contains(&goal.window_seconds) {
            return Err(ApiError::invalid_field(format!(
                "conversion.window_seconds must be between 1 and {MAX_CONVERSION_WINDOW}"
            )));
        }
    }
    // The name is listed next to the id and shown by the dashboard: no
    // control characters either.
    if b.name
        .as_deref()
        .is_some_and(|n| n.chars().any(char::is_control))
    {
        return Err(ApiError::bad_id("name"));
    }
    let spec = MessageSpec {
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
        rate_per_minute: b.rate_per_minute,
        lane: b.lane,
        created_at,
    };
    state.renderer.sample(&spec).map_err(|words| {
        ApiError::new(
            actix_web::http::StatusCode::BAD_REQUEST,
            "template_limit_exceeded",
            format!(
                "{words} on a sample render (every variable empty); make the template's loops \
                 and text smaller, or raise the limit in [templates]"
            ),
        )
    })?;
    Ok(spec)
}

async fn put_message(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
    web::Json(Fields(body)): JsonBody<MessageBody>,
) -> Result<HttpResponse, ApiError> {
    let id = id.as_str();
    // A replaced message keeps its place in the lists.
    let created_at = match state.catalog.get(id).await? {
        Some(old) => old.created_at,
        None => state.clock.now(),
    };
    let spec = validate(&state, id, body, created_at)?;
    state.catalog.put(spec.clone()).await?;
    Ok(HttpResponse::Ok().json(spec))
}

async fn get_message(
    _: ApiKey,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.as_str();
    let spec = state.catalog.get(id).await?;
    Ok(HttpResponse::Ok().json(spec.ok_or_else(|| ApiError::not_found("message", id))?))
}

/// 404 unless the message exists.
async fn known_message(state: &AppState, id: &str) -> Result<(), ApiError> {
    match state.catalog.get(id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("message", id)),
    }
}

async fn message_metrics(
    _: ApiKey,
    state: web::Data<AppState>,
    partial: Partial,
    created: CreatedRange,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.as_str();
    known_message(&state, id).await?;
    let tally = state
        .tallies(&[Counted::Message(id)], created, partial)
        .await?;
    let mut body = message_metrics_json(&tally.value[0]);
    partial.mark(&mut body, &tally.missing);
    Ok(HttpResponse::Ok().json(body))
}

/// A message's metrics: [`tally_json`] and when its next held delivery is
/// due (`next_release_at`, Unix seconds as a delivery's `scheduled_for`).
fn message_metrics_json(m: &Metrics) -> Value {
    let mut body = tally_json(m);
    body["next_release_at"] = json!(m.next_release_ms.map(|ms| ms.div_euclid(1000)));
    body
}

/// The body of the metrics endpoints: the message-level counters,
/// `recipients` and `rates`, the same per platform under `by_platform`, and
/// `failure_reasons`.
fn tally_json(m: &Metrics) -> Value {
    let t = &m.tally;
    let mut body = counts_json(&t.message);
    body["by_platform"] = json!({"ios": counts_json(&t.ios), "android": counts_json(&t.android)});
    body["failure_reasons"] = failure_reasons_json(m);
    body
}

/// Each failure reason with its count, its share of the deliveries that
/// ended `failed` or `undeliverable`, and what to do about it; most
/// frequent first.
fn failure_reasons_json(m: &Metrics) -> Value {
    let failures = m.tally.message.failed + m.tally.message.undeliverable;
    let mut reasons: Vec<(&String, i64)> = m
        .failure_reasons
        .iter()
        .map(|(reason, count)| (reason, *count))
        .collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let rows: Vec<Value> = reasons
        .into_iter()
        .map(|(reason, count)| {
            json!({
                "reason": reason,
                "count": count,
                "share": rate(count, failures),
                "fix": FailureReason::parse(reason).map(FailureReason::message),
            })
        })
        .collect();
    rows.into()
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
fn series_json(points: Vec<(i64, i64, i64)>) -> Value {
    let points: Vec<_> = points
        .into_iter()
        .map(|(minute, delivered, opened)| {
            json!({"minute": minute, "delivered": delivered, "opened": opened})
        })
        .collect();
    json!({"points": points})
}

/// A time series (of the deliveries created in `created`): this node's
/// share when another node gathers (`scope` local), else every partition's.
async fn timeseries(
    state: &AppState,
    of: Counted<'_>,
    (scope, partial, created): (Scope, Partial, CreatedRange),
    req: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if scope.local {
        let (points, partitions) = state.local_series(of.owned(), created).await?;
        return Ok(local_share(&partitions).json(series_json(points)));
    }
    let path = req.uri().path_and_query().map_or("", |p| p.as_str());
    let series = state.series(of, created, path, partial).await?;
    let mut body = series_json(series.value);
    partial.mark(&mut body, &series.missing);
    Ok(HttpResponse::Ok().json(body))
}

async fn message_timeseries(
    _: ApiKey,
    state: web::Data<AppState>,
    read: (Scope, Partial, CreatedRange),
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.as_str();
    known_message(&state, id).await?;
    timeseries(&state, Counted::Message(id), read, &req).await
}

async fn campaign_timeseries(
    _: ApiKey,
    state: web::Data<AppState>,
    read: (Scope, Partial, CreatedRange),
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    timeseries(&state, Counted::Campaign(id.as_str()), read, &req).await
}

/// `POST /v1/cluster/tallies`: this node's share of the counters of
/// several messages and campaigns, for a node summing every node's.
async fn local_tallies(
    _: ApiKey,
    state: web::Data<AppState>,
    web::Json(Fields(asked)): JsonBody<TalliesAsked>,
) -> Result<HttpResponse, ApiError> {
    let (tallies, partitions) = state.local_tallies(asked.counted, asked.created).await?;
    Ok(local_share(&partitions).json(TalliesAnswer { tallies }))
}

async fn campaign_metrics(
    _: ApiKey,
    state: web::Data<AppState>,
    partial: Partial,
    created: CreatedRange,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = id.as_str();
    let tally = state
        .tallies(&[Counted::Campaign(id)], created, partial)
        .await?;
    let mut body = tally_json(&tally.value[0]);
    partial.mark(&mut body, &tally.missing);
    Ok(HttpResponse::Ok().json(body))
}

/// One page of `items` (sorted newest first by `(time, id)`) after
/// `cursor`, and the cursor of the next page. A cursor is the position of
/// the last item served, so items added meanwhile never shift a page.
fn page<T>(
    items: Vec<(Timestamp, String, T)>,
    limit: usize,
    cursor: Option<&str>,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let after: Option<(Timestamp, String)> = match cursor {
        Some(c) => Some(
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .ok_or_else(ApiError::bad_cursor)?,
        ),
        None => None,
    };
    let newest_first =
        |a: &(Timestamp, &str), b: &(Timestamp, &str)| b.0.cmp(&a.0).then(a.1.cmp(b.1));
    let mut rest: Vec<_> = items
        .into_iter()
        .filter(|(t, id, _)| {
            after.as_ref().is_none_or(|(at, aid)| {
                newest_first(&(*t, id), &(*at, aid)) == std::cmp::Ordering::Greater
            })
        })
        .collect();
    rest.sort_by(|a, b| newest_first(&(a.0, &a.1), &(b.0, &b.1)));
    let next = (rest.len() > limit).then(|| {
        let (t, id, _) = &rest[limit - 1];
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&(t, id)).expect("encodes"))
    });
    rest.truncate(limit);
    Ok((rest.into_iter().map(|(_, _, item)| item).collect(), next))
}

async fn list_messages(
    _: ApiKey,
    state: web::Data<AppState>,
    web::Query(Params(q)): QueryOf<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(q.limit.as_deref())?;
    let partial = Partial::parse(q.partial.as_deref())?;
    let all = state.catalog.all().await?;
    let items = all
        .into_iter()
        .map(|m| (m.created_at, m.id.clone(), m))
        .collect();
    let (messages, next) = page(items, limit, q.cursor.as_deref())?;
    let counted: Vec<Counted<'_>> = messages.iter().map(|m| Counted::Message(&m.id)).collect();
    let tallies = state
        .tallies(&counted, CreatedRange::default(), partial)
        .await?;
    let mut out = Vec::with_capacity(messages.len());
    for (m, tally) in messages.iter().zip(&tallies.value) {
        out.push(json!({
            "message_id": m.id,
            "name": m.name,
            "campaign_id": m.campaign_id,
            "kind": m.push.kind,
            "lane": m.lane,
            "created_at": m.created_at,
            "metrics": message_metrics_json(tally),
        }));
    }
    let mut body = json!({"messages": out, "next_cursor": next});
    partial.mark(&mut body, &tallies.missing);
    Ok(HttpResponse::Ok().json(body))
}

async fn list_campaigns(
    _: ApiKey,
    state: web::Data<AppState>,
    web::Query(Params(q)): QueryOf<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = page_limit(q.limit.as_deref())?;
    let partial = Partial::parse(q.partial.as_deref())?;
    // A campaign is as new as its newest message.
    let mut campaigns: BTreeMap<String, (Timestamp, Vec<String>)> = BTreeMap::new();
    for m in state.catalog.all().await? {
        if let Some(c) = m.campaign_id {
            let entry = campaigns.entry(c).or_default();
            entry.0 = entry.0.max(m.created_at);
            entry.1.push(m.id);
        }
    }
    let items = campaigns
        .into_iter()
        .map(|(id, (newest, messages))| (newest, id.clone(), (id, messages)))
        .collect();
    let (campaigns, next) = page(items, limit, q.cursor.as_deref())?;
    let counted: Vec<Counted<'_>> = campaigns
        .iter()
        .map(|(id, _)| Counted::Campaign(id))
        .collect();
    let tallies = state
        .tallies(&counted, CreatedRange::default(), partial)
        .await?;
    let mut out: Vec<Value> = Vec::with_capacity(campaigns.len());
    for ((id, messages), tally) in campaigns.iter().zip(&tallies.value) {
        out.push(json!({
            "campaign_id": id,
            "message_ids": messages,
            "metrics": tally_json(tally),
        }));
    }
    let mut body = json!({"campaigns": out, "next_cursor": next});
    partial.mark(&mut body, &tallies.missing);
    Ok(HttpResponse::Ok().json(body))
}

/// Registers the routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint(
        "/v1/messages",
        [(Method::GET, web::to(list_messages))],
    ))
    .service(endpoint(
        "/v1/messages/{message_id}",
        [
            (Method::PUT, web::to(put_message)),
            (Method::GET, web::to(get_message)),
        ],
    ))
    .service(endpoint(
        "/v1/messages/{message_id}/metrics",
        [(Method::GET, web::to(message_metrics))],
    ))
    .service(endpoint(
        "/v1/messages/{message_id}/timeseries",
        [(Method::GET, web::to(message_timeseries))],
    ))
    .service(endpoint(
        "/v1/campaigns",
        [(Method::GET, web::to(list_campaigns))],
    ))
    .service(endpoint(
        "/v1/campaigns/{campaign_id}/metrics",
        [(Method::GET, web::to(campaign_metrics))],
    ))
    .service(endpoint(
        "/v1/campaigns/{campaign_id}/timeseries",
        [(Method::GET, web::to(campaign_timeseries))],
    ))
    .service(endpoint(
        "/v1/cluster/tallies",
        [(Method::POST, web::to(local_tallies))],
    ));
}
