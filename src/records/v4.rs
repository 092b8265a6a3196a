//! Records of version 4: version 3's, and scheduled deliveries.
//!
//! A delivery can be held for its time: [`MessageStatus`] gains `Scheduled`
//! and `Canceled`, [`FailureReason`] gains `Canceled` and
//! `LocalTimePassed` (each after the variants before it: postcard writes a
//! variant as its index, so older bytes read as this version too), a
//! delivery's state gains `held` and the delivery its [`Schedule`]; the
//! counters ([`Counts`], a snapshot value of its own version 2) gain
//! `scheduled` and `canceled`. The records that hold these are this
//! version's; every other record is version 1's type, reused. Like every
//! version, these types are frozen; [`super::v5`] replaced the delivery
//! and the journal entry as the ones written.

use pushd_actors::caps as ca;
use pushd_actors::model as m;
use pushd_actors::quiet as qu;
use pushd_actors::rules as ru;
use pushd_actors::schedule as sc;
use pushd_actors::status as st;
use pushd_actors::tally as ta;

use super::v1::{
    Content, ConversionGoal, Customer, DeviceSend, DeviceStatus, JsonText, MessageSpec, Platform,
    SendRecord,
};
use super::{journal_entry, record_enum, record_struct};

record_enum! {
    /// A message status.
    MessageStatus = st::MessageStatus {
        /// Attempted.
        Attempted,
        /// Sent.
        Sent,
        /// Delivered.
        Delivered,
        /// Opened.
        Opened,
        /// Converted.
        Converted,
        /// Failed.
        Failed,
        /// Undeliverable.
        Undeliverable,
        /// Bounced.
        Bounced,
        /// Scheduled.
        Scheduled,
        /// Canceled.
        Canceled,
    }
}

record_enum! {
    /// A failure reason.
    FailureReason = st::FailureReason {
        /// Liquid variable missing.
        LiquidVariableMissing,
        /// Liquid syntax.
        LiquidSyntax,
        /// Customer not found.
        CustomerNotFound,
        /// Customer unsubscribed.
        CustomerUnsubscribed,
        /// Credentials not found.
        CredentialsNotFound,
        /// Provider rejected.
        ProviderRejected,
        /// Retries exhausted.
        RetriesExhausted,
        /// Devices suppressed.
        DevicesSuppressed,
        /// No devices.
        NoDevices,
        /// Payload too large.
        PayloadTooLarge,
        /// Template limit exceeded.
        TemplateLimitExceeded,
        /// Internal error.
        InternalError,
        /// Canceled.
        Canceled,
        /// Local time passed.
        LocalTimePassed,
        /// Frequency capped.
        FrequencyCapped,
        /// Quiet hours.
        QuietHours,
    }
}

record_enum! {
    /// Where a local time's zone came from.
    TimezoneSource = sc::TimezoneSource {
        /// The customer's attribute.
        Customer,
        /// The send's fallback: the customer names none.
        Fallback,
        /// The send's fallback: the customer's zone is unknown.
        FallbackInvalid,
    }
}

record_struct! {
    /// A frequency cap.
    FrequencyCap = ca::FrequencyCap {
        max: u32,
        per_seconds: i64,
    }
}

record_struct! {
    /// Which frequency caps a send is held to.
    CapRule = ca::CapRule {
        frequency_caps: Option<Vec<FrequencyCap>>,
        bypass: bool,
    }
}

record_enum! {
    /// What a send inside quiet hours does.
    QuietAction = qu::QuietAction {
        /// Hold.
        Hold,
        /// Drop.
        Drop,
    }
}

record_struct! {
    /// Quiet hours.
    QuietHours = qu::QuietHours {
        start_minute: u16,
        end_minute: u16,
        action: QuietAction,
    }
}

record_struct! {
    /// Which quiet hours a send keeps.
    QuietRule = qu::QuietRule {
        quiet_hours: Option<QuietHours>,
        bypass: bool,
    }
}

record_struct! {
    /// The caps and quiet hours a send keeps.
    SendRules = ru::SendRules {
        caps: CapRule,
        quiet: QuietRule,
    }
}

record_enum! {
    /// Why a delivery is held.
    HeldFor = sc::HeldFor {
        /// Its send's time.
        Schedule,
        /// Quiet hours.
        QuietHours,
    }
}

record_struct! {
    /// A delivery's schedule.
    Schedule = sc::Schedule {
        due_ms: i64,
        timezone: Option<String>,
        timezone_source: Option<TimezoneSource>,
        released_ms: Option<i64>,
        platforms: Vec<Platform>,
        rules: SendRules,
        held_for: HeldFor,
    }
}

record_struct! {
    /// One device's state.
    DeviceState = st::DeviceState {
        status: DeviceStatus,
        failure: Option<FailureReason>,
        sent_at: Option<i64>,
        delivered_at: Option<i64>,
        opened_at: Option<i64>,
    }
}

record_struct! {
    /// A failure decided before sending.
    Precheck = st::Precheck {
        status: MessageStatus,
        reason: FailureReason,
    }
}

record_struct! {
    /// A delivery's status machine.
    DeliveryState = st::DeliveryState {
        precheck: Option<Precheck>,
        devices: Vec<DeviceState>,
        converted_at: Option<i64>,
        held: bool,
    }
}

record_struct! {
    /// A delivery (read only: [`super::v5`]'s carries its lane).
    read Delivery = m::Delivery {
        id: String,
        customer_id: String,
        message_id: String,
        campaign_id: Option<String>,
        created_at: i64,
        attempted_at: Option<i64>,
        content: Option<Content>,
        data: JsonText,
        goal: Option<ConversionGoal>,
        sends: Vec<DeviceSend>,
        state: DeliveryState,
        failure_detail: Option<String>,
        schedule: Option<Schedule>,
    }
}

record_struct! {
    /// One set of metric counters.
    Counts = ta::Counts {
        sends: i64,
        attempted: i64,
        sent: i64,
        delivered: i64,
        opened: i64,
        converted: i64,
        failed: i64,
        undeliverable: i64,
        bounced: i64,
        suppressed: i64,
        opted_in_sent: i64,
        opted_in_delivered: i64,
        scheduled: i64,
        canceled: i64,
    }
}

record_struct! {
    /// A message's or campaign's counters, per person and per platform.
    Tally = ta::Tally {
        message: Counts,
        ios: Counts,
        android: Counts,
    }
}

journal_entry! {
    /// A journal entry: version 3's, its deliveries of this version. Read,
    /// never written: [`super::v5`] holds a message's lane.
}
