//! The requests a [`PersonActor`](super::PersonActor) answers.

use std::sync::Arc;

use actix::prelude::*;
use serde_json::{Map, Value};

use crate::engine::{Ack, EngineError};
use crate::model::{Customer, Delivery, Device, MessageSpec};
use crate::ports::AsOf;
use crate::rules::SendRules;
use crate::schedule::SendTime;
use crate::status::{Report, Timestamp};

/// Create or replace the customer (devices are kept).
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Ack<()>, EngineError>")]
pub struct PutCustomer {
    /// Attributes for templates.
    pub attributes: Map<String, Value>,
    /// Opted out.
    pub unsubscribed: bool,
}

/// Merge attributes into the customer, as an identify call does: the given
/// keys replace the customer's, the others stay, and `unsubscribed` changes
/// only when given. A customer that does not exist is created, unless
/// `create` is false: then it is left so. Answers whether the customer is
/// there now.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Ack<bool>, EngineError>")]
pub struct MergeCustomer {
    /// Attributes to set.
    pub attributes: Map<String, Value>,
    /// Opted out, when given.
    pub unsubscribed: Option<bool>,
    /// Whether a customer that does not exist is created.
    pub create: bool,
}

/// Create or replace the customer with exactly these devices (bulk import):
/// all or nothing.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Ack<()>, EngineError>")]
pub struct ImportCustomer {
    /// Attributes for templates.
    pub attributes: Map<String, Value>,
    /// Opted out.
    pub unsubscribed: bool,
    /// Every device; a token given twice keeps its last entry.
    pub devices: Vec<Device>,
}

/// Read the customer.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Option<Customer>, EngineError>")]
pub struct GetCustomer;

/// Delete the customer.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Ack<()>, EngineError>")]
pub struct DeleteCustomer;

/// Erase the customer: it goes with every delivery of it, their content,
/// conversions and events (the counters keep what they counted). The actor
/// stops once the erasure is written; the answer holds once it is durable.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Ack<()>, EngineError>")]
pub struct EraseCustomer;

/// Register (or re-register, clearing suppression) a device.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Ack<()>, EngineError>")]
pub struct PutDevice(pub Device);

/// Remove a device by token.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Ack<()>, EngineError>")]
pub struct DeleteDevice(pub String);

/// Create and send a delivery of a message; answers its id once durable.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Ack<String>, EngineError>")]
pub struct SendMessage {
    /// The template.
    pub message: Arc<MessageSpec>,
    /// The triggering call's data (`event.*`).
    pub data: Value,
    /// The id to make the delivery under (a keyed send call's); if this
    /// customer has a delivery with it already, that one is answered and
    /// nothing is sent. `None`: a new id.
    pub delivery_id: Option<String>,
    /// When to send it (`None`: now). A later time holds the delivery,
    /// `scheduled`, until then.
    pub time: Option<SendTime>,
    /// The frequency caps and quiet hours it keeps.
    pub rules: SendRules,
}

/// An app report for one device of a delivery.
#[derive(Message, Debug)]
#[rtype(result = "Result<Ack<()>, EngineError>")]
pub struct DeviceReport {
    /// The delivery.
    pub delivery_id: String,
    /// The device token.
    pub token: String,
    /// What happened.
    pub report: Report,
    /// When.
    pub at: Timestamp,
    /// The delivery as the caller read it to find its customer, if it did:
    /// the actor uses it unless it changed the delivery since, and so reads
    /// it once, not twice.
    pub seen: Option<Box<AsOf<Delivery>>>,
}

/// A copy (what the registry keeps to send again if the actor it reached
/// was stopping) leaves out `seen`: the next actor reads the store, and no
/// report copies a whole delivery to save a read.
impl Clone for DeviceReport {
    fn clone(&self) -> Self {
        DeviceReport {
            delivery_id: self.delivery_id.clone(),
            token: self.token.clone(),
            report: self.report,
            at: self.at,
            seen: None,
        }
    }
}

/// A customer event, checked against conversion goals. Answers the id of
/// the delivery it converted, if any.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Ack<Option<String>>, EngineError>")]
pub struct CustomerEvent {
    /// The event name.
    pub name: String,
    /// When it happened.
    pub at: Timestamp,
}

/// Send a failed delivery again, re-rendering and re-reading devices.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Ack<()>, EngineError>")]
pub struct RetryDelivery {
    /// The delivery.
    pub delivery_id: String,
    /// Its message as it is now.
    pub message: Arc<MessageSpec>,
}

/// Release a scheduled delivery that fell due: render it with the customer
/// and message as they are now, and send it as any delivery. A delivery no
/// longer scheduled (canceled, or released before) is left alone.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<(), EngineError>")]
pub struct ReleaseDelivery {
    /// The delivery.
    pub delivery_id: String,
}

/// Cancel a scheduled delivery (`canceled`); any other status is refused.
#[derive(Message, Clone, Debug)]
#[rtype(result = "Result<Ack<()>, EngineError>")]
pub struct CancelDelivery {
    /// The delivery.
    pub delivery_id: String,
}
