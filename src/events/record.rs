//! From an applied journal record to delivery events: the statuses each
//! delivery change entered (the engine's [`entered`]), as the JSON body a
//! webhook posts and the feed answers.

use pushd_actors::model::Delivery;
use pushd_actors::ports::{Change, Entry, Position};
use pushd_actors::status::MessageStatus;
use pushd_actors::transition::{Entered, entered};
use serde::Serialize;

use super::log::NewEvent;

/// An event's JSON.
#[derive(Serialize)]
struct Body<'a> {
    event_id: String,
    event: &'static str,
    delivery_id: &'a str,
    customer_id: &'a str,
    message_id: &'a str,
    campaign_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<&'static str>,
    timestamp: i64,
}

/// The id of the event of `delivery` entering `status` in the journal
/// record at `position`. A delivery enters a status at most once per
/// record, and a record keeps its position for good once durable (only
/// durable records make events), so the id names one event, and a record
/// replayed after a crash makes the same one.
pub fn event_id(delivery: &str, status: MessageStatus, position: Position) -> String {
    format!("{delivery}-{}-{position}", status.as_str())
}

/// The events of the journal record at `position`, recorded at `now_ms`.
pub fn events_of(position: Position, changes: &[Change], now_ms: i64) -> Vec<NewEvent> {
    let mut events = Vec::new();
    for change in changes {
        let Entry::Delivery(after) = &change.entry else {
            continue;
        };
        for e in entered(change.before.as_deref(), after) {
            events.push(NewEvent {
                status: e.status,
                time_ms: now_ms,
                body: body(after, e, position, now_ms),
            });
        }
    }
    events
}

fn body(d: &Delivery, e: Entered, position: Position, now_ms: i64) -> Vec<u8> {
    let send = e.device.and_then(|i| d.sends.get(i));
    let failure_reason = match e.status {
        MessageStatus::Failed | MessageStatus::Undeliverable => {
            d.state.failure_reason().map(|r| r.code())
        }
        _ => None,
    };
    let body = Body {
        event_id: event_id(&d.id, e.status, position),
        event: e.status.as_str(),
        delivery_id: &d.id,
        customer_id: &d.customer_id,
        message_id: &d.message_id,
        campaign_id: d.campaign_id.as_deref(),
        platform: send.map(|s| s.platform.as_str()),
        device_id: send.map(|s| s.token.as_str()),
        failure_reason,
        timestamp: now_ms.div_euclid(1000),
    };
    serde_json::to_vec(&body).expect("an event serializes")
}
