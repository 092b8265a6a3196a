//! The domain records the engine keeps: customers, their devices, message
//! templates and deliveries. All serialize with serde so a `Store` can
//! snapshot them as they are.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::status::{DeliveryState, MessageStatus, Timestamp};

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

/// One of a customer's devices: a push token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The push token (APNs device token or FCM registration token).
    pub id: String,
    /// Where the token goes.
    pub platform: Platform,
    /// When the app was last used on it (Unix seconds).
    pub last_used: Timestamp,
    /// Free-form attributes (app version, ...).
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// Set when a send bounced; cleared when the token is registered again.
    #[serde(default)]
    pub suppressed: bool,
}

/// A person who receives pushes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// The customer id.
    pub id: String,
    /// Attributes, visible to templates as `customer.*`.
    pub attributes: Map<String, Value>,
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

/// A conversion goal: an event that counts as success after the push.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// When the message was first stored (Unix seconds); lists of messages
    /// show the newest first.
    #[serde(default)]
    pub created_at: Timestamp,
}

/// A rendered push: what the devices show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// The record of one device's send within a delivery, beside its status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSend {
    /// The device's push token.
    pub token: String,
    /// Its platform.
    pub platform: Platform,
    /// Provider calls made so far.
    pub attempts: u32,
    /// The last provider error, as the provider said it.
    pub last_error: Option<String>,
    /// The provider's id for the accepted push (apns-id, FCM message name).
    pub provider_id: Option<String>,
    /// Sends beyond the first caused by a restart (at-least-once).
    #[serde(default)]
    pub duplicates: u32,
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
    /// Rendered content, kept so a restart can resend the same push.
    pub content: Option<Content>,
    /// The triggering call's `data`, kept for a retry's re-render.
    #[serde(default)]
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
}
