//! Which message statuses a change of a delivery entered: what the daemon's
//! delivery events (webhooks, the event feed) are made of.
//!
//! A delivery *reaches* a status by the same furthest-status rule as the
//! metrics ([`crate::tally::contribution`]): an opened delivery has reached `sent`,
//! `delivered` and `opened`, a converted one `sent` and `converted`. A change
//! *enters* each status it reached that the value before it had not, so a
//! report that jumps a device from `attempted` to `opened` enters `sent`,
//! `delivered` and `opened`, in that order, and a duplicate report enters
//! nothing. Statuses only move forward, except that a retry starts a failed
//! delivery again: its next `failed` (or `sent`, ...) is entered anew. A
//! retry that fails again before sending leaves the status `failed`, so it
//! enters nothing.
//!
//! Everything here is pure, so a change replayed from the journal enters
//! exactly what it entered the first time.

use crate::model::Delivery;
use crate::status::{DeviceState, DeviceStatus, MessageStatus};
use crate::tally::{Counts, contribution};

/// The statuses a delivery event can report, in the order a change enters
/// them (`attempted` is where every send starts, not an event).
pub const EVENT_STATUSES: [MessageStatus; 7] = [
    MessageStatus::Sent,
    MessageStatus::Delivered,
    MessageStatus::Opened,
    MessageStatus::Converted,
    MessageStatus::Failed,
    MessageStatus::Undeliverable,
    MessageStatus::Bounced,
];

/// A status a change entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entered {
    /// The status.
    pub status: MessageStatus,
    /// The device (an index into the delivery's devices) whose provider
    /// outcome or app report in this change moved the delivery there, when
    /// one did: none for a failure before sending, a conversion goal, or a
    /// `sent` completed by another device's failure.
    pub device: Option<usize>,
}

/// Whether the counts of a delivery say it reached `status`.
fn reached(counts: &Counts, status: MessageStatus) -> bool {
    let n = match status {
        MessageStatus::Attempted => counts.attempted,
        MessageStatus::Sent => counts.sent,
        MessageStatus::Delivered => counts.delivered,
        MessageStatus::Opened => counts.opened,
        MessageStatus::Converted => counts.converted,
        MessageStatus::Failed => counts.failed,
        MessageStatus::Undeliverable => counts.undeliverable,
        MessageStatus::Bounced => counts.bounced,
        MessageStatus::Scheduled => counts.scheduled,
        MessageStatus::Canceled => counts.canceled,
    };
    n > 0
}

/// Whether a device in state `d` shows the delivery's move to `status`.
fn shows(d: &DeviceState, status: MessageStatus) -> bool {
    match status {
        MessageStatus::Sent => d.status.succeeded(),
        MessageStatus::Delivered | MessageStatus::Converted => d.delivered_at.is_some(),
        MessageStatus::Opened => d.opened_at.is_some(),
        MessageStatus::Failed => d.status == DeviceStatus::Failed,
        MessageStatus::Bounced => d.status == DeviceStatus::Bounced,
        MessageStatus::Attempted
        | MessageStatus::Undeliverable
        | MessageStatus::Scheduled
        | MessageStatus::Canceled => false,
    }
}

/// The statuses a delivery entered going from `before` (`None`: new) to
/// `after`, in [`EVENT_STATUSES`] order.
pub fn entered(before: Option<&Delivery>, after: &Delivery) -> Vec<Entered> {
    let was = before.map(|b| contribution(b).message).unwrap_or_default();
    let now = contribution(after).message;
    let old_devices = before.map(|b| b.state.devices.as_slice()).unwrap_or(&[]);
    let changed = |i: usize, d: &DeviceState| old_devices.get(i) != Some(d);
    EVENT_STATUSES
        .into_iter()
        .filter(|&s| reached(&now, s) && !reached(&was, s))
        .map(|status| Entered {
            status,
            device: after
                .state
                .devices
                .iter()
                .enumerate()
                .position(|(i, d)| d.targeted() && changed(i, d) && shows(d, status)),
        })
        .collect()
}

#[cfg(test)]
mod tests;
