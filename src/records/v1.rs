//! Records of version 1: the shapes pushd wrote before records had versions
//! of their own (journal segments without a header, snapshots of format 3).
//!
//! These types are frozen: their fields, in this order, are what the bytes
//! on disk hold (postcard writes fields in order, with no names). A model
//! change never changes them; a record that must change gets a new version
//! beside this one, and its conversion.

use serde::{Deserialize, Serialize};

use pushd_actors::idempotency as idem;
use pushd_actors::model::{self as m, Attributes};
use pushd_actors::ports as p;
use pushd_actors::status as st;
use pushd_actors::tally as ta;

use super::{Freeze, RecordError, Thaw, mirror_enum, mirror_struct};

/// A device's platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Platform {
    /// APNs.
    Ios,
    /// FCM.
    Android,
}
mirror_enum!(Platform = m::Platform { Ios, Android });

/// An iOS token's APNs environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Environment {
    /// Production.
    Production,
    /// Sandbox.
    Sandbox,
}
mirror_enum!(
    Environment = m::Environment {
        Production,
        Sandbox
    }
);

/// Free-form attributes, as their compact JSON text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttributesText(pub String);

impl Freeze<AttributesText> for Attributes {
    fn freeze(&self) -> AttributesText {
        AttributesText(self.json_text().to_owned())
    }
}

impl Thaw<Attributes> for AttributesText {
    fn thaw(self) -> Result<Attributes, RecordError> {
        Attributes::from_json_text(self.0).map_err(RecordError::Invalid)
    }
}

/// Free-form JSON, as its text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JsonText(pub String);

impl Freeze<JsonText> for serde_json::Value {
    fn freeze(&self) -> JsonText {
        JsonText(self.to_string())
    }
}

impl Thaw<serde_json::Value> for JsonText {
    fn thaw(self) -> Result<serde_json::Value, RecordError> {
        serde_json::from_str(&self.0)
            .map_err(|e| RecordError::Invalid(format!("stored JSON does not parse: {e}")))
    }
}

/// A device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub platform: Platform,
    pub app: String,
    pub environment: Environment,
    pub last_used: i64,
    pub attributes: AttributesText,
    pub suppressed: bool,
    pub opted_in: Option<bool>,
}
mirror_struct!(
    Device = m::Device {
        id,
        platform,
        app,
        environment,
        last_used,
        attributes,
        suppressed,
        opted_in
    }
);

/// A customer with its devices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub attributes: AttributesText,
    pub unsubscribed: bool,
    pub devices: Vec<Device>,
}
mirror_struct!(
    Customer = m::Customer {
        id,
        attributes,
        unsubscribed,
        devices
    }
);

/// Which devices a message goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Audience {
    /// Every device.
    AllDevices,
    /// The last used one.
    LastDevice,
}
mirror_enum!(
    Audience = m::Audience {
        AllDevices,
        LastDevice
    }
);

/// A conversion goal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversionGoal {
    pub event: String,
    pub window_seconds: i64,
}
mirror_struct!(
    ConversionGoal = m::ConversionGoal {
        event,
        window_seconds
    }
);

/// Alert or background.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushKind {
    /// A visible notification.
    Alert,
    /// A silent push.
    Background,
}
mirror_enum!(PushKind = m::PushKind { Alert, Background });

/// Delivery priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushPriority {
    /// At once.
    High,
    /// When convenient.
    Normal,
}
mirror_enum!(PushPriority = m::PushPriority { High, Normal });

/// An iOS interruption level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InterruptionLevel {
    /// Passive.
    Passive,
    /// Active.
    Active,
    /// Time sensitive.
    TimeSensitive,
    /// Critical.
    Critical,
}
mirror_enum!(
    InterruptionLevel = m::InterruptionLevel {
        Passive,
        Active,
        TimeSensitive,
        Critical
    }
);

/// A message's push options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushOptions {
    pub kind: PushKind,
    pub priority: Option<PushPriority>,
    pub ttl_seconds: Option<u32>,
    pub sound: Option<String>,
    pub badge: Option<u32>,
    pub category: Option<String>,
    pub thread_id: Option<String>,
    pub interruption_level: Option<InterruptionLevel>,
    pub relevance_score: Option<f64>,
    pub image_url: Option<String>,
    pub android_channel_id: Option<String>,
    pub data: std::collections::BTreeMap<String, String>,
}
mirror_struct!(
    PushOptions = m::PushOptions {
        kind,
        priority,
        ttl_seconds,
        sound,
        badge,
        category,
        thread_id,
        interruption_level,
        relevance_score,
        image_url,
        android_channel_id,
        data
    }
);

/// A message template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageSpec {
    pub id: String,
    pub name: String,
    pub campaign_id: Option<String>,
    pub title: String,
    pub body: String,
    pub deep_link: Option<String>,
    pub audience: Audience,
    pub collapse_id: Option<String>,
    pub conversion: Option<ConversionGoal>,
    pub app: String,
    pub push: PushOptions,
    pub rate_per_minute: Option<u32>,
    pub created_at: i64,
}
mirror_struct!(
    MessageSpec = m::MessageSpec {
        id,
        name,
        campaign_id,
        title,
        body,
        deep_link,
        audience,
        collapse_id,
        conversion,
        app,
        push,
        rate_per_minute,
        created_at
    }
);

/// A rendered push.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Content {
    pub title: String,
    pub body: String,
    pub deep_link: Option<String>,
    pub collapse_id: Option<String>,
    pub options: PushOptions,
    pub rate_per_minute: Option<u32>,
}
mirror_struct!(
    Content = m::Content {
        title,
        body,
        deep_link,
        collapse_id,
        options,
        rate_per_minute
    }
);

/// One device's send within a delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSend {
    pub token: String,
    pub platform: Platform,
    pub app: String,
    pub environment: Environment,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub provider_id: Option<String>,
    pub duplicates: u32,
    pub opted_in: Option<bool>,
}
mirror_struct!(
    DeviceSend = m::DeviceSend {
        token,
        platform,
        app,
        environment,
        attempts,
        last_error,
        provider_id,
        duplicates,
        opted_in
    }
);

/// A device's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceStatus {
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
mirror_enum!(
    DeviceStatus = st::DeviceStatus {
        Attempted,
        Sent,
        Delivered,
        Opened,
        Failed,
        Bounced,
        Suppressed
    }
);

/// A message status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageStatus {
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
mirror_enum!(
    MessageStatus = st::MessageStatus {
        Attempted,
        Sent,
        Delivered,
        Opened,
        Converted,
        Failed,
        Undeliverable,
        Bounced
    }
);

/// A failure reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureReason {
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
mirror_enum!(
    FailureReason = st::FailureReason {
        LiquidVariableMissing,
        LiquidSyntax,
        CustomerNotFound,
        CustomerUnsubscribed,
        CredentialsNotFound,
        ProviderRejected,
        RetriesExhausted,
        DevicesSuppressed,
        NoDevices,
        PayloadTooLarge
    }
);

/// One device's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    pub status: DeviceStatus,
    pub failure: Option<FailureReason>,
    pub sent_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub opened_at: Option<i64>,
}
mirror_struct!(
    DeviceState = st::DeviceState {
        status,
        failure,
        sent_at,
        delivered_at,
        opened_at
    }
);

/// A failure decided before sending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Precheck {
    pub status: MessageStatus,
    pub reason: FailureReason,
}
mirror_struct!(Precheck = st::Precheck { status, reason });

/// A delivery's status machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryState {
    pub precheck: Option<Precheck>,
    pub devices: Vec<DeviceState>,
    pub converted_at: Option<i64>,
}
mirror_struct!(
    DeliveryState = st::DeliveryState {
        precheck,
        devices,
        converted_at
    }
);

/// A delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: String,
    pub customer_id: String,
    pub message_id: String,
    pub campaign_id: Option<String>,
    pub created_at: i64,
    pub attempted_at: Option<i64>,
    pub content: Option<Content>,
    pub data: JsonText,
    pub goal: Option<ConversionGoal>,
    pub sends: Vec<DeviceSend>,
    pub state: DeliveryState,
    pub failure_detail: Option<String>,
}
mirror_struct!(
    Delivery = m::Delivery {
        id,
        customer_id,
        message_id,
        campaign_id,
        created_at,
        attempted_at,
        content,
        data,
        goal,
        sends,
        state,
        failure_detail
    }
);

/// A customer a keyed send made a delivery for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentTo {
    pub customer_id: String,
    pub delivery_id: String,
}
mirror_struct!(
    SentTo = idem::SentTo {
        customer_id,
        delivery_id
    }
);

/// A customer a keyed send made no delivery for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotSent {
    pub customer_id: String,
    pub code: String,
    pub message: String,
}
mirror_struct!(
    NotSent = idem::NotSent {
        customer_id,
        code,
        message
    }
);

/// A keyed send's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAnswer {
    pub deliveries: Vec<SentTo>,
    pub failed: Vec<NotSent>,
}
mirror_struct!(SendAnswer = idem::SendAnswer { deliveries, failed });

/// A keyed send call's record. `started_ms` stays first: the store reads
/// it alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRecord {
    pub started_ms: i64,
    pub key: String,
    pub fingerprint: String,
    pub seed: u64,
    pub answer: Option<SendAnswer>,
}
mirror_struct!(
    SendRecord = idem::SendRecord {
        started_ms,
        key,
        fingerprint,
        seed,
        answer
    }
);

/// One set of metric counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub sends: i64,
    pub attempted: i64,
    pub sent: i64,
    pub delivered: i64,
    pub opened: i64,
    pub converted: i64,
    pub failed: i64,
    pub undeliverable: i64,
    pub bounced: i64,
    pub suppressed: i64,
    pub opted_in_sent: i64,
    pub opted_in_delivered: i64,
}
mirror_struct!(
    Counts = ta::Counts {
        sends,
        attempted,
        sent,
        delivered,
        opened,
        converted,
        failed,
        undeliverable,
        bounced,
        suppressed,
        opted_in_sent,
        opted_in_delivered
    }
);

/// A message's or campaign's counters, per person and per platform.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub message: Counts,
    pub ios: Counts,
    pub android: Counts,
}
mirror_struct!(
    Tally = ta::Tally {
        message,
        ios,
        android
    }
);

/// A journal entry. Read, never written: records are written in the
/// current version, whose entries this version cannot all hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
