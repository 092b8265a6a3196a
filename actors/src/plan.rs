//! What a send of a message to a customer decides before any provider
//! call: the customer's prechecks, the devices chosen (and why the others
//! are skipped), and the state its delivery starts in. The
//! [`PersonActor`](crate::person::PersonActor) makes every delivery with
//! these functions; a [`SendPreview`] runs the same ones and writes, counts
//! and sends nothing.

use std::sync::Arc;

use serde_json::Value;

use crate::engine::EngineCtx;
use crate::model::{Audience, Content, Customer, Delivery, Device, DeviceSend, MessageSpec};
use crate::ports::{Push, RenderError};
use crate::status::{DeliveryState, DeviceState, FailureReason, MessageStatus, Outcome, Timestamp};

/// The delivery id a preview's pushes carry: 26 zeros, as long as a real
/// id (a ULID), so a previewed push is as large as the one a send makes.
pub const PREVIEW_DELIVERY_ID: &str = "00000000000000000000000000";

/// A new delivery of `message` to customer `customer_id` with the send's
/// `data`, made at `now`: nothing prepared yet.
pub fn delivery(
    id: String,
    customer_id: &str,
    message: &MessageSpec,
    data: Value,
    now: Timestamp,
) -> Delivery {
    Delivery {
        id,
        customer_id: customer_id.to_owned(),
        message_id: message.id.clone(),
        campaign_id: message.campaign_id.clone(),
        created_at: now,
        attempted_at: None,
        content: None,
        data,
        goal: message.conversion.clone(),
        sends: Vec::new(),
        state: DeliveryState::new(Vec::new()),
        failure_detail: None,
        schedule: None,
    }
}

/// Clears what a delivery's last send left and checks the customer:
/// answers whether there is one to render for (`false` once a precheck has
/// ended the delivery: no such customer, or unsubscribed).
pub fn precheck(delivery: &mut Delivery, customer: Option<&Customer>) -> bool {
    delivery.sends.clear();
    delivery.content = None;
    delivery.attempted_at = None;
    delivery.failure_detail = None;
    let reason = match customer {
        None => FailureReason::CustomerNotFound,
        Some(c) if c.unsubscribed => FailureReason::CustomerUnsubscribed,
        Some(_) => return true,
    };
    delivery.state = DeliveryState::ended(MessageStatus::Failed, reason, Vec::new());
    false
}

/// Builds the delivery's sends and state for `message` from its render
/// for `customer` at `now`: the content, and the choice of devices.
pub fn prepare(
    delivery: &mut Delivery,
    message: &MessageSpec,
    customer: &Customer,
    rendered: Result<Content, RenderError>,
    now: Timestamp,
) {
    match rendered {
        Ok(content) => delivery.content = Some(Arc::new(content)),
        Err(e) => {
            delivery.failure_detail = Some(e.words().to_owned());
            let ended = DeliveryState::ended(MessageStatus::Failed, e.reason(), Vec::new());
            return delivery.state = ended;
        }
    }
    let chosen = targeted(message, customer);
    delivery.sends = chosen
        .iter()
        .map(|d| DeviceSend {
            token: d.id.clone(),
            platform: d.platform,
            app: d.app.clone(),
            environment: d.environment,
            attempts: 0,
            last_error: None,
            provider_id: None,
            duplicates: 0,
            opted_in: d.opted_in,
        })
        .collect();
    delivery.state = DeliveryState::new(
        chosen
            .iter()
            .map(|d| match d.suppressed {
                true => DeviceState::suppressed(),
                false => DeviceState::attempted(),
            })
            .collect(),
    );
    if delivery.state.pending() {
        delivery.attempted_at = Some(now);
    }
}

/// The platforms of the unsuppressed devices a delivery of `message` to
/// `customer` would go to now: what a held delivery counts per platform.
pub fn planned_platforms(
    message: &MessageSpec,
    customer: &Customer,
) -> Vec<crate::model::Platform> {
    (targeted(message, customer).into_iter())
        .filter(|d| !d.suppressed)
        .map(|d| d.platform)
        .collect()
}

/// The devices a delivery of `message` lists, in the customer's order:
/// only the message's app's, and of those every one
/// (`audience: all_devices`) or the one used last (`last_device`).
fn targeted<'a>(message: &MessageSpec, customer: &'a Customer) -> Vec<&'a Device> {
    let apps = customer.devices.iter().filter(|d| d.app == message.app);
    match message.audience {
        Audience::AllDevices => apps.collect(),
        Audience::LastDevice => last_used(apps).into_iter().collect(),
    }
}

/// Of `devices`, the unsuppressed one used last (on a tie, the one
/// registered last); when every one is suppressed, the one used last, so the
/// delivery ends `devices_suppressed`.
fn last_used<'a>(devices: impl Iterator<Item = &'a Device> + Clone) -> Option<&'a Device> {
    devices
        .clone()
        .filter(|d| !d.suppressed)
        .max_by_key(|d| d.last_used)
        .or_else(|| devices.max_by_key(|d| d.last_used))
}

/// Why a send of a message pushes nothing to one of the customer's devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// The device belongs to another app than the message.
    OtherApp,
    /// The message goes to the device used last (`last_device`), and
    /// another one was used later.
    NotLastUsed,
    /// The token bounced on an earlier send and is suppressed.
    Suppressed,
}

impl Skipped {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::OtherApp => "other_app",
            Skipped::NotLastUsed => "not_last_used",
            Skipped::Suppressed => "suppressed",
        }
    }
}

/// One of the customer's devices, and whether a send of the message pushes
/// to it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceChoice {
    /// The device.
    pub device: Device,
    /// Why it gets no push; `None`: it is chosen.
    pub skipped: Option<Skipped>,
}

/// Every device of `customer`, in order, chosen for `message` or skipped
/// with why, as [`prepare`] chooses them.
pub fn choices(message: &MessageSpec, customer: &Customer) -> Vec<DeviceChoice> {
    let listed = targeted(message, customer);
    let skipped = |d: &Device| {
        if d.app != message.app {
            Some(Skipped::OtherApp)
        } else if d.suppressed {
            Some(Skipped::Suppressed)
        } else if !listed.iter().any(|l| l.id == d.id) {
            Some(Skipped::NotLastUsed)
        } else {
            None
        }
    };
    (customer.devices.iter())
        .map(|d| DeviceChoice {
            device: d.clone(),
            skipped: skipped(d),
        })
        .collect()
}

/// The push of `content` for one device send of delivery `delivery_id`.
pub fn push(delivery_id: &Arc<str>, send: &DeviceSend, content: &Arc<Content>) -> Push {
    Push {
        delivery_id: delivery_id.clone(),
        token: send.token.as_str().into(),
        platform: send.platform,
        app: send.app.as_str().into(),
        environment: send.environment,
        content: content.clone(),
    }
}

/// What a send of a message to one customer would do, worked out by the
/// functions a send uses, with nothing written, counted or sent: the
/// delivery it would make (under [`PREVIEW_DELIVERY_ID`]), and every device
/// of the customer, chosen or skipped.
#[derive(Clone, Debug)]
pub struct SendPreview {
    /// The delivery a send would make, before any provider call.
    pub delivery: Delivery,
    /// The customer's devices (none if there is no customer).
    pub devices: Vec<DeviceChoice>,
}

impl SendPreview {
    /// The preview of `message` with `data` for customer `customer_id`, who
    /// is `customer` (`None`: there is none); the render is made off the
    /// caller's thread as a send's is.
    pub async fn of(
        ctx: &EngineCtx,
        customer_id: &str,
        customer: Option<Customer>,
        message: Arc<MessageSpec>,
        data: Value,
    ) -> SendPreview {
        let now = ctx.ports.clock.now();
        let id = PREVIEW_DELIVERY_ID.to_owned();
        let mut delivery = delivery(id, customer_id, &message, data.clone(), now);
        let Some(customer) = customer else {
            precheck(&mut delivery, None);
            return SendPreview {
                delivery,
                devices: Vec::new(),
            };
        };
        let devices = choices(&message, &customer);
        if precheck(&mut delivery, Some(&customer)) {
            let (for_render, renders) = (customer.clone(), message.clone());
            let rendered = ctx
                .render(move |renderer| renderer.render(&renders, &for_render, &data))
                .await;
            prepare(&mut delivery, &message, &customer, rendered, now);
        }
        SendPreview { delivery, devices }
    }

    /// The pushes the delivery would hand to the provider, each with its
    /// device's place in the delivery.
    pub fn pushes(&self) -> Vec<(usize, Push)> {
        let Some(content) = &self.delivery.content else {
            return Vec::new();
        };
        let id: Arc<str> = self.delivery.id.as_str().into();
        let state = &self.delivery.state;
        (self.delivery.sends.iter().enumerate())
            .filter(|(i, _)| state.precheck.is_none() && state.devices[*i].targeted())
            .map(|(i, send)| (i, push(&id, send, content)))
            .collect()
    }

    /// Folds a refusal of device `index`'s push known before any network
    /// call (no credentials, a payload too large), in the provider's
    /// `detail`, as the send would record it.
    pub fn refuse(&mut self, index: usize, reason: FailureReason, detail: String) {
        let now = self.delivery.created_at;
        (self.delivery.state).apply_outcome(index, &Outcome::Failed(reason), now);
        self.delivery.sends[index].last_error = Some(detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attributes, Environment, Platform, PushOptions};

    fn device(id: &str, app: &str, last_used: Timestamp, suppressed: bool) -> Device {
        Device {
            id: id.into(),
            platform: Platform::Ios,
            app: app.into(),
            environment: Environment::Production,
            last_used,
            attributes: Attributes::default(),
            suppressed,
            opted_in: None,
        }
    }

    fn message(audience: Audience) -> MessageSpec {
        MessageSpec {
            id: "m".into(),
            name: "m".into(),
            campaign_id: None,
            title: "t".into(),
            body: "b".into(),
            deep_link: None,
            audience,
            collapse_id: None,
            conversion: None,
            app: "default".into(),
            push: PushOptions::default(),
            rate_per_minute: None,
            lane: Default::default(),
            created_at: 0,
        }
    }

    /// The skip reasons, in the customer's order.
    fn skips(audience: Audience, devices: Vec<Device>) -> Vec<Option<&'static str>> {
        let customer = Customer {
            id: "c".into(),
            attributes: Attributes::default(),
            unsubscribed: false,
            devices,
        };
        let choices = choices(&message(audience), &customer);
        choices
            .iter()
            .map(|c| c.skipped.map(Skipped::as_str))
            .collect()
    }

    #[test]
    fn every_device_is_chosen_or_skipped_with_why() {
        let devices = || {
            vec![
                device("old", "default", 1, false),
                device("bounced", "default", 9, true),
                device("new", "default", 5, false),
                device("shop", "shop", 10, false),
            ]
        };
        assert_eq!(
            skips(Audience::AllDevices, devices()),
            [None, Some("suppressed"), None, Some("other_app")]
        );
        assert_eq!(
            skips(Audience::LastDevice, devices()),
            [
                Some("not_last_used"),
                Some("suppressed"),
                None,
                Some("other_app")
            ]
        );
        let all_bounced = vec![
            device("a", "default", 1, true),
            device("b", "default", 2, true),
        ];
        assert_eq!(
            skips(Audience::LastDevice, all_bounced),
            [Some("suppressed"), Some("suppressed")]
        );
    }
}
