//! `--webhook`: a webhook taking every delivery event, posting to a
//! receiver in the harness, during the sends phase; its cost shows as the
//! send_ratio of this run against one without the flag.

use pushd::sim::WebhookReceiver;
use serde_json::json;

use crate::daemon::{Api, Res};

/// The webhook's id.
const ID: &str = "load";

/// Starts a receiver answering 200 and points a webhook for every event at it.
pub async fn configure(api: &Api) -> Res<WebhookReceiver> {
    let receiver = WebhookReceiver::start().await?;
    let body = json!({"url": receiver.url(), "secret": "load-webhook-secret"});
    api.ok(
        reqwest::Method::PUT,
        &format!("/v1/webhooks/{ID}"),
        Some(&body),
    )
    .await?;
    Ok(receiver)
}

/// Posts received, and events the webhook had not yet posted.
pub async fn figures(api: &Api, receiver: &WebhookReceiver) -> Res<(usize, u64)> {
    let v = api
        .ok(reqwest::Method::GET, &format!("/v1/webhooks/{ID}"), None)
        .await?;
    let backlog = v["stats"]["queue_depth"].as_u64().unwrap_or(0);
    Ok((receiver.posts(), backlog))
}
