//! The event feed: `GET /v1/events?after=<cursor>&limit=<n>` answers the
//! delivery events after the cursor as NDJSON (one event's JSON per line,
//! exactly as a webhook posts it), oldest first, and the cursor to ask for
//! next in the `Pushd-Next-Cursor` header. No `after` starts at the oldest
//! event kept; an empty page means the reader is caught up. A cluster node
//! reads every partition's events from the cluster's events stream: the
//! cursor is a place in that stream, the same on every node.

use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::auth::ApiKey;
use super::body::{Params, QueryOf};
use super::error::ApiError;
use super::{AppState, endpoint, page_limit};

/// The header that carries the next cursor.
pub const NEXT_CURSOR: &str = "Pushd-Next-Cursor";

/// `GET /v1/events` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedQuery {
    after: Option<String>,
    limit: Option<String>,
}

async fn feed(
    _: ApiKey,
    state: web::Data<AppState>,
    web::Query(Params(query)): QueryOf<FeedQuery>,
) -> Result<HttpResponse, ApiError> {
    let after = match query.after.as_deref() {
        None | Some("") => 0,
        Some(raw) => raw.parse::<u64>().map_err(|_| {
            ApiError::invalid_field(format!(
                "after must be a cursor from the {NEXT_CURSOR} header, not {raw:?}"
            ))
        })?,
    };
    let limit = page_limit(query.limit.as_deref())?;
    let page = state.feed.read(after, limit).await?;
    Ok(ndjson(page.events.iter().map(|e| &e.body[..]), page.next))
}

/// A page: each event's JSON on a line, and the cursor after it.
fn ndjson<'a>(events: impl Iterator<Item = &'a [u8]> + Clone, next: u64) -> HttpResponse {
    let mut body = Vec::with_capacity(events.clone().map(|e| e.len() + 1).sum());
    for event in events {
        body.extend_from_slice(event);
        body.push(b'\n');
    }
    HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header((NEXT_CURSOR, next.to_string()))
        .body(body)
}

/// Registers the feed's route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(endpoint("/v1/events", [(Method::GET, web::to(feed))]));
}
