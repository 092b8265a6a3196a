//! The delivery status machines: one per device send, and the message-level
//! aggregate over a person's devices.
//!
//! Everything here is pure: no clocks, no I/O. A [`DeviceState`] moves forward
//! only, by provider [`Outcome`]s and by app [`Report`]s; a [`DeliveryState`]
//! holds its devices and derives the message [`MessageStatus`] from them with
//! the all/any rules of docs/statuses.md:
//!
//! * `converted` once the app reported `converted` or a conversion goal was met;
//! * else `opened` / `delivered` when *any* device reported it;
//! * else `attempted` while *any* targeted device has no provider outcome;
//! * else `sent` when at least one device succeeded (*all* devices settled);
//! * else `bounced` when every targeted device bounced, otherwise `failed`.
//!
//! A failure before sending (Liquid error, customer missing or unsubscribed)
//! ends the delivery `failed` at once; no device left to send to is
//! `undeliverable`. A delivery held for its time is `scheduled` (no device
//! chosen yet) until it is released, or `canceled` if canceled before. Reports are idempotent and commute: the state after a set
//! of events does not depend on their order (timestamps keep the earliest).

use serde::{Deserialize, Serialize};

/// Unix seconds.
pub type Timestamp = i64;

/// Status of one device's send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Handed to a DeviceSend; no provider outcome yet.
    Attempted,
    /// The provider accepted the push.
    Sent,
    /// The app reported the push arrived.
    Delivered,
    /// The app reported the user tapped the push.
    Opened,
    /// The provider refused it, or retries ran out.
    Failed,
    /// The token is invalid or unregistered; it is now suppressed.
    Bounced,
    /// The token was suppressed before this send; nothing was sent.
    Suppressed,
}

impl DeviceStatus {
    /// How far along a device is; statuses only move to a higher rank.
    /// A failure ranks below success so a later report still moves it on.
    fn rank(self) -> u8 {
        match self {
            DeviceStatus::Suppressed => 0,
            DeviceStatus::Attempted => 1,
            DeviceStatus::Failed | DeviceStatus::Bounced => 2,
            DeviceStatus::Sent => 3,
            DeviceStatus::Delivered => 4,
            DeviceStatus::Opened => 5,
        }
    }

    /// True once the provider (or the app) settled this send.
    pub fn has_outcome(self) -> bool {
        !matches!(self, DeviceStatus::Attempted)
    }

    /// True when the push reached the provider or the phone.
    pub fn succeeded(self) -> bool {
        self.rank() >= DeviceStatus::Sent.rank()
    }
}

/// Message (delivery) status: one per message and person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Some device has no provider outcome yet.
    Attempted,
    /// Every device has an outcome and at least one succeeded.
    Sent,
    /// Some device reported it arrived.
    Delivered,
    /// Some device reported it was tapped.
    Opened,
    /// The app reported a conversion or a conversion goal was met.
    Converted,
    /// Nothing reached a provider; see the failure reason.
    Failed,
    /// The person had no device to send to.
    Undeliverable,
    /// Every device's token bounced.
    Bounced,
    /// Held until its time; nothing rendered or sent yet.
    Scheduled,
    /// Canceled while scheduled; nothing was sent.
    Canceled,
}

impl MessageStatus {
    /// Every status, in the order the API lists them.
    pub const ALL: [MessageStatus; 10] = [
        MessageStatus::Scheduled,
        MessageStatus::Attempted,
        MessageStatus::Sent,
        MessageStatus::Delivered,
        MessageStatus::Opened,
        MessageStatus::Converted,
        MessageStatus::Failed,
        MessageStatus::Undeliverable,
        MessageStatus::Bounced,
        MessageStatus::Canceled,
    ];

    /// The API's snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Attempted => "attempted",
            MessageStatus::Sent => "sent",
            MessageStatus::Delivered => "delivered",
            MessageStatus::Opened => "opened",
            MessageStatus::Converted => "converted",
            MessageStatus::Failed => "failed",
            MessageStatus::Undeliverable => "undeliverable",
            MessageStatus::Bounced => "bounced",
            MessageStatus::Scheduled => "scheduled",
            MessageStatus::Canceled => "canceled",
        }
    }

    /// Parses the API's snake_case name.
    pub fn parse(s: &str) -> Option<MessageStatus> {
        MessageStatus::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Why a delivery or a device send failed; `code` is the API's `failure_reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The template uses a variable the customer does not have.
    LiquidVariableMissing,
    /// The template does not parse.
    LiquidSyntax,
    /// No customer with this id.
    CustomerNotFound,
    /// The customer opted out.
    CustomerUnsubscribed,
    /// No (or rejected) provider credentials for the platform.
    CredentialsNotFound,
    /// The provider refused the push for a reason other than the token.
    ProviderRejected,
    /// Transient errors on every attempt.
    RetriesExhausted,
    /// Every device of the person is suppressed.
    DevicesSuppressed,
    /// The person has no devices.
    NoDevices,
    /// The rendered push is larger than the provider accepts; nothing was
    /// sent and the token is left alone.
    PayloadTooLarge,
    /// The template's render went past a limit (loop iterations, bytes of
    /// output, CPU time).
    TemplateLimitExceeded,
    /// The device's send ended without an outcome (it panicked or stopped
    /// early): a fault of pushd's, logged and counted.
    InternalError,
    /// A scheduled delivery was canceled before its time.
    Canceled,
    /// The send's local time had passed in the person's zone and it said
    /// `if_past: skip`.
    LocalTimePassed,
    /// The person reached a frequency cap; the detail names it.
    FrequencyCapped,
    /// The send fell inside the person's quiet hours, which drop it.
    QuietHours,
}

impl FailureReason {
    /// Every reason.
    pub const ALL: [FailureReason; 16] = [
        FailureReason::LiquidVariableMissing,
        FailureReason::LiquidSyntax,
        FailureReason::CustomerNotFound,
        FailureReason::CustomerUnsubscribed,
        FailureReason::CredentialsNotFound,
        FailureReason::ProviderRejected,
        FailureReason::RetriesExhausted,
        FailureReason::DevicesSuppressed,
        FailureReason::NoDevices,
        FailureReason::PayloadTooLarge,
        FailureReason::TemplateLimitExceeded,
        FailureReason::InternalError,
        FailureReason::Canceled,
        FailureReason::LocalTimePassed,
        FailureReason::FrequencyCapped,
        FailureReason::QuietHours,
    ];

    /// The reason of an API code.
    pub fn parse(code: &str) -> Option<FailureReason> {
        FailureReason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The API's snake_case code.
    pub fn code(self) -> &'static str {
        match self {
            FailureReason::LiquidVariableMissing => "liquid_variable_missing",
            FailureReason::LiquidSyntax => "liquid_syntax",
            FailureReason::CustomerNotFound => "customer_not_found",
            FailureReason::CustomerUnsubscribed => "customer_unsubscribed",
            FailureReason::CredentialsNotFound => "credentials_not_found",
            FailureReason::ProviderRejected => "provider_rejected",
            FailureReason::RetriesExhausted => "retries_exhausted",
            FailureReason::DevicesSuppressed => "devices_suppressed",
            FailureReason::NoDevices => "no_devices",
            FailureReason::PayloadTooLarge => "payload_too_large",
            FailureReason::TemplateLimitExceeded => "template_limit_exceeded",
            FailureReason::InternalError => "internal_error",
            FailureReason::Canceled => "canceled",
            FailureReason::LocalTimePassed => "local_time_passed",
            FailureReason::FrequencyCapped => "frequency_capped",
            FailureReason::QuietHours => "quiet_hours",
        }
    }

    /// What it means and how to fix it, in words for the delivery log.
    pub fn message(self) -> &'static str {
        match self {
            FailureReason::LiquidVariableMissing => {
                "A variable the message uses has no value: add the customer attribute (customer.*) or the send's data field (event.*) it names, or a fallback (| default)."
            }
            FailureReason::LiquidSyntax => {
                "The message template does not parse; fix its Liquid syntax."
            }
            FailureReason::CustomerNotFound => {
                "No customer has this id; check the id used to send."
            }
            FailureReason::CustomerUnsubscribed => {
                "The customer unsubscribed from messages; check their subscription status."
            }
            FailureReason::CredentialsNotFound => {
                "Push credentials for this platform are missing or were rejected; configure a valid APNs key or FCM service account."
            }
            FailureReason::ProviderRejected => {
                "The push provider refused the message; see the device's last error."
            }
            FailureReason::RetriesExhausted => {
                "The push provider kept failing with transient errors through every retry; retry later."
            }
            FailureReason::DevicesSuppressed => {
                "Every device token of the customer bounced before and is suppressed; the app must register a fresh token."
            }
            FailureReason::NoDevices => {
                "The customer has no devices; the app must register a push token."
            }
            FailureReason::PayloadTooLarge => {
                "The rendered push is larger than the provider accepts (APNs 4,096 bytes, FCM 4,000); shorten the title, body or push data, or the customer attributes they use, then retry."
            }
            FailureReason::TemplateLimitExceeded => {
                "Rendering the message went past a template limit (loop iterations, bytes of output or CPU time; the detail names which, and the field); make its loops and text smaller, then retry."
            }
            FailureReason::InternalError => {
                "pushd's send to the device ended without an answer (an internal fault, logged with its details); the push may not have gone out: send again."
            }
            FailureReason::Canceled => {
                "The scheduled delivery was canceled (DELETE /v1/deliveries/{id}) before its time; nothing was sent."
            }
            FailureReason::QuietHours => {
                "The send fell inside the customer's quiet hours, which drop a push (action drop); nothing was sent. Send after they end, or with bypass_quiet_hours for a push that must go out."
            }
            FailureReason::FrequencyCapped => {
                "The customer already got as many pushes as a frequency cap allows in its window (the detail names the cap); nothing was sent. Send later, or with bypass_frequency_caps for a push that must go out."
            }
            FailureReason::LocalTimePassed => {
                "The local time the send named had already passed in the customer's time zone, and the send said if_past: skip; nothing was sent."
            }
        }
    }
}

/// The final result of one device send, as the provider gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Accepted by the provider.
    Sent,
    /// Refused for a reason that retrying will not fix.
    Failed(FailureReason),
    /// The token is invalid or unregistered.
    Bounced,
}

/// What the app reports about a push (`/push/events`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// The push arrived on the device.
    Delivered,
    /// The user tapped it.
    Opened,
    /// The user reached the goal from it.
    Converted,
}

impl Report {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Report::Delivered => "delivered",
            Report::Opened => "opened",
            Report::Converted => "converted",
        }
    }
}

/// Keeps the earliest of two optional timestamps, so the result does not
/// depend on the order events arrive in.
fn earliest(slot: &mut Option<Timestamp>, at: Timestamp) {
    *slot = Some(slot.map_or(at, |old| old.min(at)));
}

/// One device's send within a delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    /// Where the device is now.
    pub status: DeviceStatus,
    /// Set when the provider outcome was a failure.
    pub failure: Option<FailureReason>,
    /// When the provider accepted it (or the first report implied so).
    pub sent_at: Option<Timestamp>,
    /// Earliest `delivered` (or `opened`) report.
    pub delivered_at: Option<Timestamp>,
    /// Earliest `opened` report.
    pub opened_at: Option<Timestamp>,
}

impl DeviceState {
    /// A device about to be sent to.
    pub fn attempted() -> Self {
        Self::with_status(DeviceStatus::Attempted)
    }

    /// A device skipped because its token is suppressed.
    pub fn suppressed() -> Self {
        Self::with_status(DeviceStatus::Suppressed)
    }

    fn with_status(status: DeviceStatus) -> Self {
        DeviceState {
            status,
            failure: None,
            sent_at: None,
            delivered_at: None,
            opened_at: None,
        }
    }

    /// Whether this device was sent to (not skipped as suppressed).
    pub fn targeted(&self) -> bool {
        self.status != DeviceStatus::Suppressed
    }

    fn advance(&mut self, to: DeviceStatus) {
        if to.rank() > self.status.rank() {
            self.status = to;
        }
    }

    /// Folds the provider's outcome. Only the first outcome counts, and none
    /// counts once the app reported the push: the phone is the truth.
    pub fn apply_outcome(&mut self, outcome: &Outcome, at: Timestamp) {
        if *outcome == Outcome::Sent && self.targeted() {
            earliest(&mut self.sent_at, at);
        }
        if self.status != DeviceStatus::Attempted {
            return;
        }
        match outcome {
            Outcome::Sent => self.status = DeviceStatus::Sent,
            Outcome::Failed(reason) => {
                self.status = DeviceStatus::Failed;
                self.failure = Some(*reason);
            }
            Outcome::Bounced => self.status = DeviceStatus::Bounced,
        }
    }

    /// Folds an app report. `converted` changes no device status (it is a
    /// message-level fact) but, like the others, proves the push arrived.
    /// Reports for a suppressed device are ignored: nothing was sent to it.
    pub fn apply_report(&mut self, report: Report, at: Timestamp) {
        if !self.targeted() {
            return;
        }
        earliest(&mut self.sent_at, at);
        self.failure = None;
        earliest(&mut self.delivered_at, at);
        self.advance(DeviceStatus::Delivered);
        if report == Report::Opened {
            earliest(&mut self.opened_at, at);
            self.advance(DeviceStatus::Opened);
        }
    }
}

/// A failure or dead end decided before any device was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Precheck {
    /// `Failed` or `Undeliverable`.
    pub status: MessageStatus,
    /// Why.
    pub reason: FailureReason,
}

/// The status machine of one delivery: its devices and message-level facts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// Set when the delivery ended before sending.
    pub precheck: Option<Precheck>,
    /// One entry per device chosen for this delivery, in a fixed order.
    pub devices: Vec<DeviceState>,
    /// When it converted (app report or conversion goal), earliest.
    pub converted_at: Option<Timestamp>,
    /// True while the delivery is held for its time (`scheduled`): no
    /// device is chosen until it is released.
    #[serde(default)]
    pub held: bool,
}

impl DeliveryState {
    /// A delivery that ended before sending: failed, undeliverable or
    /// canceled.
    pub fn ended(status: MessageStatus, reason: FailureReason, devices: Vec<DeviceState>) -> Self {
        assert!(matches!(
            status,
            MessageStatus::Failed | MessageStatus::Undeliverable | MessageStatus::Canceled
        ));
        assert_eq!(
            status == MessageStatus::Canceled,
            reason == FailureReason::Canceled
        );
        DeliveryState {
            precheck: Some(Precheck { status, reason }),
            devices,
            converted_at: None,
            held: false,
        }
    }

    /// A delivery held for its time: `scheduled`, no device chosen.
    pub fn held() -> Self {
        DeliveryState {
            precheck: None,
            devices: Vec::new(),
            converted_at: None,
            held: true,
        }
    }

    /// A held delivery canceled: `canceled`, and nothing is sent.
    pub fn cancel(&mut self) {
        assert!(self.held, "only a scheduled delivery is canceled");
        *self = DeliveryState::ended(MessageStatus::Canceled, FailureReason::Canceled, Vec::new());
    }

    /// A delivery to the given devices (some may be suppressed). With no
    /// targeted device it is undeliverable at once.
    pub fn new(devices: Vec<DeviceState>) -> Self {
        if devices.iter().any(DeviceState::targeted) {
            return DeliveryState {
                precheck: None,
                devices,
                converted_at: None,
                held: false,
            };
        }
        let reason = if devices.is_empty() {
            FailureReason::NoDevices
        } else {
            FailureReason::DevicesSuppressed
        };
        Self::ended(MessageStatus::Undeliverable, reason, devices)
    }

    fn targeted(&self) -> impl Iterator<Item = &DeviceState> {
        self.devices.iter().filter(|d| d.targeted())
    }

    /// True while some targeted device waits for its provider outcome, or
    /// the delivery is held for its time.
    pub fn pending(&self) -> bool {
        self.precheck.is_none() && (self.held || self.targeted().any(|d| !d.status.has_outcome()))
    }

    /// True when the send is over: every device has an outcome (reports may
    /// still move it to delivered, opened or converted).
    pub fn settled(&self) -> bool {
        !self.pending()
    }

    /// Whether at least one device reached the provider or the phone.
    pub fn reached(&self) -> bool {
        self.precheck.is_none() && self.targeted().any(|d| d.status.succeeded())
    }

    /// The message status the rules give for the current devices.
    pub fn status(&self) -> MessageStatus {
        if let Some(p) = self.precheck {
            return p.status;
        }
        if self.held {
            return MessageStatus::Scheduled;
        }
        let any = |s: DeviceStatus| self.targeted().any(|d| d.status == s);
        if self.converted_at.is_some() {
            MessageStatus::Converted
        } else if any(DeviceStatus::Opened) {
            MessageStatus::Opened
        } else if any(DeviceStatus::Delivered) {
            MessageStatus::Delivered
        } else if self.pending() {
            MessageStatus::Attempted
        } else if self.reached() {
            MessageStatus::Sent
        } else if self.targeted().all(|d| d.status == DeviceStatus::Bounced) {
            MessageStatus::Bounced
        } else {
            MessageStatus::Failed
        }
    }

    /// The failure reason when the status is `failed` or `undeliverable`:
    /// the precheck's, else the first failed device's (device order is fixed,
    /// so this does not depend on report order).
    pub fn failure_reason(&self) -> Option<FailureReason> {
        match (self.precheck, self.status()) {
            (Some(p), _) => Some(p.reason),
            (None, MessageStatus::Failed) => self.targeted().find_map(|d| d.failure),
            _ => None,
        }
    }

    /// Folds device `index`'s provider outcome.
    pub fn apply_outcome(&mut self, index: usize, outcome: &Outcome, at: Timestamp) {
        if self.precheck.is_none() {
            self.devices[index].apply_outcome(outcome, at);
        }
    }

    /// Folds an app report for device `index`. Returns false, changing
    /// nothing, when that device was not sent to.
    pub fn apply_report(&mut self, index: usize, report: Report, at: Timestamp) -> bool {
        if self.precheck.is_some() || !self.devices[index].targeted() {
            return false;
        }
        self.devices[index].apply_report(report, at);
        if report == Report::Converted {
            earliest(&mut self.converted_at, at);
        }
        true
    }

    /// When the push first reached a provider or a phone in this send (a
    /// retry starts afresh): where a conversion window starts.
    pub fn sent_at(&self) -> Option<Timestamp> {
        if self.precheck.is_some() {
            return None;
        }
        self.targeted().filter_map(|d| d.sent_at).min()
    }

    /// Whether the status reached `sent` by the furthest-status rule: every
    /// targeted device settled with one success, or a device reported since.
    pub fn reached_sent(&self) -> bool {
        matches!(
            self.status(),
            MessageStatus::Sent
                | MessageStatus::Delivered
                | MessageStatus::Opened
                | MessageStatus::Converted
        )
    }

    /// Marks a conversion goal met. Only a delivery whose status reached
    /// `sent` converts, once; returns whether it newly converted.
    pub fn convert(&mut self, at: Timestamp) -> bool {
        if !self.reached_sent() || self.converted_at.is_some() {
            return false;
        }
        self.converted_at = Some(at);
        true
    }
}

#[cfg(test)]
mod tests;
