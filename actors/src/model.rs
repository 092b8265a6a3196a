//! The domain records the engine keeps: customers, their devices, message
//! templates and deliveries. All serialize with serde: as JSON for the API,
//! and in a compact binary format for the journal and snapshots.

use std::collections::BTreeMap;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schedule::Schedule;
use crate::status::{DeliveryState, MessageStatus, Timestamp};

mod attributes;
pub use attributes::Attributes;

/// Which push service a device's token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// Apple devices, through APNs.
    Ios,
    /// Android devices, through FCM.
    Android,
}

impl Platform {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
        }
    }
}

/// The app a device and a message belong to when they name none.
pub const DEFAULT_APP: &str = "default";

/// [`DEFAULT_APP`], owned (serde's default for `app` fields).
pub fn default_app() -> String {
    DEFAULT_APP.to_owned()
}

/// Which APNs environment an iOS token was issued by: a development build's
/// token is valid only on the sandbox, a store or TestFlight build's only on
/// production.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    /// APNs production (App Store, TestFlight, ad hoc builds).
    #[default]
    Production,
    /// APNs sandbox (development builds).
    Sandbox,
}

impl Environment {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Sandbox => "sandbox",
        }
    }
}

/// One of a customer's devices: a push token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The push token (APNs device token or FCM registration token).
    pub id: String,
    /// Where the token goes.
    pub platform: Platform,
    /// The app the token belongs to; only that app's messages reach it.
    #[serde(default = "default_app")]
    pub app: String,
    /// The APNs environment of an iOS token (always production on Android).
    #[serde(default)]
    pub environment: Environment,
    /// When the app was last used on it (Unix seconds).
    pub last_used: Timestamp,
    /// Free-form attributes (app version, ...).
    #[serde(default)]
    pub attributes: Attributes,
    /// Set when a send bounced; cleared when the token is registered again.
    #[serde(default)]
    pub suppressed: bool,
    /// Whether the user allowed notifications, as the app last said
    /// (`None`: it did not say). iOS devices report `delivered` only when
    /// they did, so the metrics compare opted-in devices apart.
    #[serde(default)]
    pub opted_in: Option<bool>,
}

/// A person who receives pushes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// The customer id.
    pub id: String,
    /// Attributes, visible to templates as `customer.*`.
    pub attributes: Attributes,
    /// True when the customer opted out of messages.
    pub unsubscribed: bool,
    /// Registered devices.
    pub devices: Vec<Device>,
}

/// Which of a person's devices a message goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Every device.
    AllDevices,
    /// Only the device with the greatest `last_used`.
    LastDevice,
}

/// Which queue a message's device sends wait in for a provider's slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Bulk sends: they wait behind transactional ones, and never take the
    /// share of slots kept for them.
    #[default]
    Campaign,
    /// One person's push that should not wait (a password reset, a login
    /// code): it goes ahead of campaign sends.
    Transactional,
}

/// A conversion goal: an event that counts as success after the push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversionGoal {
    /// The customer event name.
    pub event: String,
    /// How long after the send the event still counts.
    pub window_seconds: i64,
}

/// A push message template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageSpec {
    /// The message id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The campaign it belongs to, if any.
    pub campaign_id: Option<String>,
    /// Liquid template of the title.
    pub title: String,
    /// Liquid template of the body.
    pub body: String,
    /// Liquid template of the deep link.
    pub deep_link: Option<String>,
    /// Which devices it goes to.
    pub audience: Audience,
    /// Pushes with the same collapse id replace each other on the device
    /// (APNs `apns-collapse-id`, FCM `collapse_key`).
    #[serde(default)]
    pub collapse_id: Option<String>,
    /// Optional conversion goal.
    pub conversion: Option<ConversionGoal>,
    /// The app whose devices it goes to (and whose credentials send it).
    #[serde(default = "default_app")]
    pub app: String,
    /// How the push is delivered and shown; `data` values are Liquid templates.
    #[serde(default)]
    pub push: PushOptions,
    /// At most this many device sends of the message start per minute,
    /// across all sends; the rest wait their turn (`None`: unpaced).
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
    /// Which queue its device sends wait in for provider slots.
    #[serde(default)]
    pub lane: Lane,
    /// When the message was first stored (Unix seconds); lists of messages
    /// show the newest first.
    #[serde(default)]
    pub created_at: Timestamp,
}

/// Whether a push shows something or only wakes the app.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushKind {
    /// A visible notification (title, body, sound, ...).
    #[default]
    Alert,
    /// A silent push that wakes the app in the background and shows nothing.
    Background,
}

/// How urgently the provider delivers a push.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushPriority {
    /// At once, waking the device (the default of an alert).
    High,
    /// When convenient for the device's battery (the default, and the only
    /// choice, of a background push).
    Normal,
}

/// How much an iOS notification may interrupt the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InterruptionLevel {
    /// Added to the list silently, without lighting the screen.
    Passive,
    /// Shown at once (the system's default).
    Active,
    /// Shown at once, breaking through Focus.
    TimeSensitive,
    /// Shown and sounded even when muted; needs Apple's entitlement.
    Critical,
}

impl InterruptionLevel {
    /// The API's (and APNs's) name.
    pub fn as_str(self) -> &'static str {
        match self {
            InterruptionLevel::Passive => "passive",
            InterruptionLevel::Active => "active",
            InterruptionLevel::TimeSensitive => "time-sensitive",
            InterruptionLevel::Critical => "critical",
        }
    }
}

/// A message's push options, in the domain's terms; the provider clients
/// turn them into APNs headers and payload keys or FCM message fields.
/// `None` leaves the choice to pushd's default for the kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PushOptions {
    /// Alert or silent background push.
    #[serde(default)]
    pub kind: PushKind,
    /// Delivery priority; by default high for an alert, normal for a
    /// background push.
    #[serde(default)]
    pub priority: Option<PushPriority>,
    /// How long the provider keeps trying to reach an offline device;
    /// 0 means now or never.
    #[serde(default)]
    pub ttl_seconds: Option<u32>,
    /// The sound to play (a file in the app bundle, or "default").
    #[serde(default)]
    pub sound: Option<String>,
    /// The number shown on the app icon.
    #[serde(default)]
    pub badge: Option<u32>,
    /// The iOS notification category (its action buttons).
    #[serde(default)]
    pub category: Option<String>,
    /// Groups iOS notifications into one thread.
    #[serde(default)]
    pub thread_id: Option<String>,
    /// How much an iOS notification may interrupt.
    #[serde(default)]
    pub interruption_level: Option<InterruptionLevel>,
    /// Ranks the app's iOS notifications in the summary, 0 to 1.
    #[serde(default)]
    pub relevance_score: Option<f64>,
    /// An image the notification shows (an iOS notification service
    /// extension downloads it).
    #[serde(default)]
    pub image_url: Option<String>,
    /// The Android notification channel.
    #[serde(default)]
    pub android_channel_id: Option<String>,
    /// Custom key-values for the app: Liquid templates in a message,
    /// rendered text in a delivery's content.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

/// A rendered push: what the devices show, and how it is delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Content {
    /// Rendered title.
    pub title: String,
    /// Rendered body.
    pub body: String,
    /// Rendered deep link.
    pub deep_link: Option<String>,
    /// The message's collapse id.
    #[serde(default)]
    pub collapse_id: Option<String>,
    /// The message's push options, `data` rendered.
    #[serde(default)]
    pub options: PushOptions,
    /// The message's pace, kept with the push so a resumed send keeps it.
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
    /// The message's lane, kept with the push so a retry or a resumed send
    /// waits in it.
    #[serde(default)]
    pub lane: Lane,
}

/// The record of one device's send within a delivery, beside its status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSend {
    /// The device's push token.
    pub token: String,
    /// Its platform.
    pub platform: Platform,
    /// The app whose credentials send it.
    #[serde(default = "default_app")]
    pub app: String,
    /// The APNs environment it goes to.
    #[serde(default)]
    pub environment: Environment,
    /// Provider calls made so far.
    pub attempts: u32,
    /// The last provider error, as the provider said it.
    pub last_error: Option<String>,
    /// The provider's id for the accepted push (apns-id, FCM message name).
    pub provider_id: Option<String>,
    /// Sends beyond the first caused by a restart (at-least-once).
    #[serde(default)]
    pub duplicates: u32,
    /// The device's opt-in when the delivery was made (what its metrics
    /// count it under).
    #[serde(default)]
    pub opted_in: Option<bool>,
}

/// One message to one person: the unit of status and of the delivery log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Unique, time-ordered id.
    pub id: String,
    /// The person.
    pub customer_id: String,
    /// The message template.
    pub message_id: String,
    /// The message's campaign.
    pub campaign_id: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When devices were first handed to the provider.
    pub attempted_at: Option<Timestamp>,
    /// Rendered content, kept so a restart can resend the same push; shared
    /// with the device sends' pushes.
    pub content: Option<Arc<Content>>,
    /// The triggering call's `data`, kept for a retry's re-render.
    #[serde(default, with = "json_text")]
    pub data: Value,
    /// The message's conversion goal at send time.
    pub goal: Option<ConversionGoal>,
    /// Per-device records, index-aligned with `state.devices`.
    pub sends: Vec<DeviceSend>,
    /// The status machine.
    pub state: DeliveryState,
    /// The failure in the delivery's own words, beside its reason code: the
    /// missing Liquid variable and the field that uses it, ...
    #[serde(default)]
    pub failure_detail: Option<String>,
    /// The time it was scheduled for, when the send named one.
    #[serde(default)]
    pub schedule: Option<Schedule>,
}

impl Delivery {
    /// The message status.
    pub fn status(&self) -> MessageStatus {
        self.state.status()
    }

    /// The index of the device with this token.
    pub fn device_index(&self, token: &str) -> Option<usize> {
        self.sends.iter().position(|s| s.token == token)
    }

    /// When it joined its person's timeline: when it was released, for a
    /// scheduled one, else when it was made. A person's deliveries are read
    /// by it for frequency caps and conversions, so a push scheduled long
    /// ago counts from when it went out.
    pub fn listed_at(&self) -> Timestamp {
        let released = self.schedule.as_ref().and_then(|s| s.released_ms);
        released.map_or(self.created_at, |ms| ms.div_euclid(1000))
    }
}

/// Serde adapter for free-form JSON fields: themselves in human-readable
/// formats (the API's JSON), JSON text in compact binary ones (the journal,
/// snapshots), whose decoders cannot tell a value's type by looking at it.
pub mod json_text {
    use serde::de::{DeserializeOwned, Error as _};
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes `value` as itself or as JSON text.
    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return value.serialize(s);
        }
        let text = serde_json::to_string(value).map_err(S::Error::custom)?;
        s.serialize_str(&text)
    }

    /// Deserializes what [`serialize`] wrote.
    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        if d.is_human_readable() {
            return T::deserialize(d);
        }
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        serde_json::from_str(&text).map_err(D::Error::custom)
    }
}
