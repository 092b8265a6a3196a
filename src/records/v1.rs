//! Records of version 1: the shapes pushd wrote before records had versions
//! of their own (journal segments without a header, snapshots of format 3).
//!
//! These types are frozen: their fields, in this order, are what the bytes
//! on disk hold (postcard writes fields in order, with no names). A model
//! change never changes them; a record that must change gets a new version
//! beside this one, and its conversion.

use serde::{Deserialize, Serialize, Serializer};

use pushd_actors::idempotency as idem;
use pushd_actors::model::{self as m, Attributes};
use pushd_actors::ports as p;
use pushd_actors::status as st;
use pushd_actors::tally as ta;

use super::{Frozen, RecordError, Thaw, record_enum, record_struct};

record_enum! {
    /// A device's platform.
    Platform = m::Platform {
        /// APNs.
        Ios,
        /// FCM.
        Android,
    }
}

record_enum! {
    /// An iOS token's APNs environment.
    Environment = m::Environment {
        /// Production.
        Production,
        /// Sandbox.
        Sandbox,
    }
}

/// Free-form attributes, as their compact JSON text.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct AttributesText(pub String);

impl Serialize for Frozen<'_, Attributes> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.json_text())
    }
}

impl Thaw<Attributes> for AttributesText {
    fn thaw(self) -> Result<Attributes, RecordError> {
        Attributes::from_json_text(self.0).map_err(RecordError::Invalid)
    }
}

/// Free-form JSON, as its text.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct JsonText(pub String);

impl Serialize for Frozen<'_, serde_json::Value> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl Thaw<serde_json::Value> for JsonText {
    fn thaw(self) -> Result<serde_json::Value, RecordError> {
        serde_json::from_str(&self.0)
            .map_err(|e| RecordError::Invalid(format!("stored JSON does not parse: {e}")))
    }
}

record_struct! {
    /// A device.
    Device = m::Device {
        id: String,
        platform: Platform,
        app: String,
        environment: Environment,
        last_used: i64,
        attributes: AttributesText,
        suppressed: bool,
        opted_in: Option<bool>,
    }
}

record_struct! {
    /// A customer with its devices.
    Customer = m::Customer {
        id: String,
        attributes: AttributesText,
        unsubscribed: bool,
        devices: Vec<Device>,
    }
}

record_enum! {
    /// Which devices a message goes to.
    Audience = m::Audience {
        /// Every device.
        AllDevices,
        /// The last used one.
        LastDevice,
    }
}

record_struct! {
    /// A conversion goal.
    ConversionGoal = m::ConversionGoal {
        event: String,
        window_seconds: i64,
    }
}

record_enum! {
    /// Alert or background.
    PushKind = m::PushKind {
        /// A visible notification.
        Alert,
        /// A silent push.
        Background,
    }
}

record_enum! {
    /// Delivery priority.
    PushPriority = m::PushPriority {
        /// At once.
        High,
        /// When convenient.
        Normal,
    }
}

record_enum! {
    /// An iOS interruption level.
    InterruptionLevel = m::InterruptionLevel {
        /// Passive.
        Passive,
        /// Active.
        Active,
        /// Time sensitive.
        TimeSensitive,
        /// Critical.
        Critical,
    }
}

record_struct! {
    /// A message's push options.
    PushOptions = m::PushOptions {
        kind: PushKind,
        priority: Option<PushPriority>,
        ttl_seconds: Option<u32>,
        sound: Option<String>,
        badge: Option<u32>,
        category: Option<String>,
        thread_id: Option<String>,
        interruption_level: Option<InterruptionLevel>,
        relevance_score: Option<f64>,
        image_url: Option<String>,
        android_channel_id: Option<String>,
        data: std::collections::BTreeMap<String, String>,
    }
}

record_struct! {
    /// A message template (read only: [`super::v5`]'s names its lane).
    read MessageSpec = m::MessageSpec {
        id: String,
        name: String,
        campaign_id: Option<String>,
        title: String,
        body: String,
        deep_link: Option<String>,
        audience: Audience,
        collapse_id: Option<String>,
        conversion: Option<ConversionGoal>,
        app: String,
        push: PushOptions,
        rate_per_minute: Option<u32>,
        created_at: i64,
    }
    new { lane: m::Lane::Campaign }
}

record_struct! {
    /// A rendered push (read only: [`super::v5`]'s carries its lane).
    read Content = m::Content {
        title: String,
        body: String,
        deep_link: Option<String>,
        collapse_id: Option<String>,
        options: PushOptions,
        rate_per_minute: Option<u32>,
    }
    new { lane: m::Lane::Campaign }
}

record_struct! {
    /// One device's send within a delivery.
    DeviceSend = m::DeviceSend {
        token: String,
        platform: Platform,
        app: String,
        environment: Environment,
        attempts: u32,
        last_error: Option<String>,
        provider_id: Option<String>,
        duplicates: u32,
        opted_in: Option<bool>,
    }
}

record_enum! {
    /// A device's status.
    DeviceStatus = st::DeviceStatus {
        /// No outcome yet.
        Attempted,
        /// Accepted.
        Sent,
        /// Reported delivered.
        Delivered,
        /// Reported opened.
        Opened,
        /// Failed.
        Failed,
        /// Bounced.
        Bounced,
        /// Suppressed before the send.
        Suppressed,
    }
}

record_enum! {
    /// A message status (read only: [`super::v4`] added two).
    read MessageStatus = st::MessageStatus {
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
    }
}

record_enum! {
    /// A failure reason (read only: [`super::v3`] added one).
    read FailureReason = st::FailureReason {
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
    }
}

record_struct! {
    /// One device's state.
    read DeviceState = st::DeviceState {
        status: DeviceStatus,
        failure: Option<FailureReason>,
        sent_at: Option<i64>,
        delivered_at: Option<i64>,
        opened_at: Option<i64>,
    }
}

record_struct! {
    /// A failure decided before sending.
    read Precheck = st::Precheck {
        status: MessageStatus,
        reason: FailureReason,
    }
}

record_struct! {
    /// A delivery's status machine.
    read DeliveryState = st::DeliveryState {
        precheck: Option<Precheck>,
        devices: Vec<DeviceState>,
        converted_at: Option<i64>,
    }
    new { held: false }
}

record_struct! {
    /// A delivery.
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
    }
    new { schedule: None }
}

record_struct! {
    /// A customer a keyed send made a delivery for.
    SentTo = idem::SentTo {
        customer_id: String,
        delivery_id: String,
    }
}

record_struct! {
    /// A customer a keyed send made no delivery for.
    NotSent = idem::NotSent {
        customer_id: String,
        code: String,
        message: String,
    }
}

record_struct! {
    /// A keyed send's answer.
    SendAnswer = idem::SendAnswer {
        deliveries: Vec<SentTo>,
        failed: Vec<NotSent>,
    }
}

record_struct! {
    /// A keyed send call's record. `started_ms` stays first: the store reads
    /// it alone.
    SendRecord = idem::SendRecord {
        started_ms: i64,
        key: String,
        fingerprint: String,
        seed: u64,
        answer: Option<SendAnswer>,
    }
}

record_struct! {
    /// One set of metric counters (read only: [`super::v4`] added two).
    read Counts = ta::Counts {
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
    }
    new { scheduled: 0, canceled: 0 }
}

record_struct! {
    /// A message's or campaign's counters, per person and per platform
    /// (read only: [`super::v4`]'s counters replaced these).
    read Tally = ta::Tally {
        message: Counts,
        ios: Counts,
        android: Counts,
    }
}

/// A journal entry. Read, never written: records are written in the
/// current version (see [`super::v2`]), whose entries this version cannot all
/// hold.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub enum Entry {
    /// A customer created or replaced.
    Customer(Customer),
    /// A customer removed.
    CustomerDeleted(String),
    /// A message created or replaced.
    Message(Box<MessageSpec>),
    /// A delivery new or changed.
    Delivery(Box<Delivery>),
    /// A keyed send record.
    SendRecord(Box<SendRecord>),
    /// Send records started before this time are dropped.
    SendRecordsExpired(i64),
}

impl Thaw<p::Entry> for Entry {
    fn thaw(self) -> Result<p::Entry, RecordError> {
        Ok(match self {
            Entry::Customer(c) => p::Entry::Customer(c.thaw()?),
            Entry::CustomerDeleted(id) => p::Entry::CustomerDeleted(id),
            Entry::Message(m) => p::Entry::Message(m.thaw()?),
            Entry::Delivery(d) => p::Entry::Delivery(d.thaw()?),
            Entry::SendRecord(r) => p::Entry::SendRecord(r.thaw()?),
            Entry::SendRecordsExpired(t) => p::Entry::SendRecordsExpired(t),
        })
    }
}
