//! Campaign-metrics arithmetic: what one delivery adds to the counters of
//! API.md "Metrics", so a store keeps them incrementally (O(1) per change)
//! and they always equal a recount.
//!
//! A delivery (a person) counts once by the furthest status it reached: an
//! opened delivery counts in `sent`, `delivered` and `opened`. `by_platform`
//! counts the delivery's devices. [`Tally::delta`] is what one change of a
//! delivery adds; summing the deltas of every change gives the
//! [`contribution`]s of the final states.

use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::model::{Delivery, Platform};
use crate::status::{DeviceStatus, FailureReason, MessageStatus};

macro_rules! counts {
    ($($(#[$doc:meta])* $field:ident),* $(,)?) => {
        /// The stored counters of API.md "Metrics"; `recipients` and the rates
        /// are derived from them.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct Counts {
            $($(#[$doc])* pub $field: i64,)*
        }

        impl Counts {
            /// Combines two counters field by field.
            fn zip(self, other: Counts, f: impl Fn(i64, i64) -> i64) -> Counts {
                Counts { $($field: f(self.$field, other.$field),)* }
            }

            /// Every stored counter with its API name.
            pub fn entries(&self) -> Vec<(&'static str, i64)> {
                vec![$((stringify!($field), self.$field),)*]
            }
        }
    };
}

counts! {
    /// Every delivery (device), bounced and suppressed ones included.
    sends,
    /// Still waiting for a provider outcome.
    attempted,
    /// Reached a provider or a phone.
    sent,
    /// Reported delivered by a device.
    delivered,
    /// Reported opened by a device.
    opened,
    /// Converted (app report or conversion goal).
    converted,
    /// Ended `failed`.
    failed,
    /// Ended `undeliverable` (per person only).
    undeliverable,
    /// Ended `bounced`.
    bounced,
    /// Every device of the person was suppressed (per device: the device was).
    suppressed,
}

/// `n / d` rounded to 4 decimals, 0 when `d` is 0.
fn rate(n: i64, d: i64) -> f64 {
    if d == 0 {
        0.0
    } else {
        (n as f64 / d as f64 * 10_000.0).round() / 10_000.0
    }
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

impl Counts {
    /// `sends - suppressed - bounced`.
    pub fn recipients(&self) -> i64 {
        self.sends - self.suppressed - self.bounced
    }

    /// True when every counter is 0.
    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }

    /// The API body: the counters, `recipients` and `rates`.
    pub fn to_json(&self) -> Value {
        let mut map: Map<String, Value> = self
            .entries()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        map.insert("recipients".into(), self.recipients().into());
        map.insert(
            "rates".into(),
            json!({
                "delivered": rate(self.delivered, self.sent),
                "opened": rate(self.opened, self.sent),
                "converted": rate(self.converted, self.sent),
                "opened_of_delivered": rate(self.opened, self.delivered),
            }),
        );
        Value::Object(map)
    }
}

impl Add for Counts {
    type Output = Counts;
    fn add(self, rhs: Counts) -> Counts {
        self.zip(rhs, |a, b| a + b)
    }
}

impl Sub for Counts {
    type Output = Counts;
    fn sub(self, rhs: Counts) -> Counts {
        self.zip(rhs, |a, b| a - b)
    }
}

impl Neg for Counts {
    type Output = Counts;
    fn neg(self) -> Counts {
        Counts::default() - self
    }
}

impl AddAssign for Counts {
    fn add_assign(&mut self, rhs: Counts) {
        *self = *self + rhs;
    }
}

impl SubAssign for Counts {
    fn sub_assign(&mut self, rhs: Counts) {
        *self = *self - rhs;
    }
}

/// The metrics of a message or campaign: per person and per device platform.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tally {
    /// Deliveries (people).
    pub message: Counts,
    /// iOS devices.
    pub ios: Counts,
    /// Android devices.
    pub android: Counts,
}

impl Tally {
    /// What changing a delivery from `before` (`None`: new) to `after` adds.
    pub fn delta(before: Option<&Delivery>, after: &Delivery) -> Tally {
        contribution(after) - before.map(contribution).unwrap_or_default()
    }

    /// True when every counter is 0.
    pub fn is_zero(&self) -> bool {
        *self == Tally::default()
    }

    /// The counters of one platform.
    pub fn platform_mut(&mut self, platform: Platform) -> &mut Counts {
        match platform {
            Platform::Ios => &mut self.ios,
            Platform::Android => &mut self.android,
        }
    }

    /// The API body of `GET /v1/messages/{id}/metrics`.
    pub fn to_json(&self) -> Value {
        let mut body = self.message.to_json();
        body["by_platform"] = json!({
            "ios": self.ios.to_json(),
            "android": self.android.to_json(),
        });
        body
    }
}

impl Add for Tally {
    type Output = Tally;
    fn add(self, rhs: Tally) -> Tally {
        Tally {
            message: self.message + rhs.message,
            ios: self.ios + rhs.ios,
            android: self.android + rhs.android,
        }
    }
}

impl Sub for Tally {
    type Output = Tally;
    fn sub(self, rhs: Tally) -> Tally {
        self + -rhs
    }
}

impl Neg for Tally {
    type Output = Tally;
    fn neg(self) -> Tally {
        Tally {
            message: -self.message,
            ios: -self.ios,
            android: -self.android,
        }
    }
}

impl AddAssign for Tally {
    fn add_assign(&mut self, rhs: Tally) {
        *self = *self + rhs;
    }
}

impl SubAssign for Tally {
    fn sub_assign(&mut self, rhs: Tally) {
        *self = *self - rhs;
    }
}

/// What one delivery, in its current state, counts in its message's metrics.
pub fn contribution(d: &Delivery) -> Tally {
    let state = &d.state;
    let status = state.status();
    let targeted = || state.devices.iter().filter(|s| s.targeted());
    let converted = state.converted_at.is_some();
    let mut tally = Tally {
        message: Counts {
            sends: 1,
            attempted: flag(status == MessageStatus::Attempted),
            sent: flag(state.reached()),
            delivered: flag(targeted().any(|s| s.delivered_at.is_some())),
            opened: flag(targeted().any(|s| s.opened_at.is_some())),
            converted: flag(converted),
            failed: flag(status == MessageStatus::Failed),
            undeliverable: flag(status == MessageStatus::Undeliverable),
            bounced: flag(status == MessageStatus::Bounced),
            suppressed: flag(
                status == MessageStatus::Undeliverable
                    && state.failure_reason() == Some(FailureReason::DevicesSuppressed),
            ),
        },
        ..Tally::default()
    };
    for (send, device) in d.sends.iter().zip(&state.devices) {
        let s = device.status;
        *tally.platform_mut(send.platform) += Counts {
            sends: 1,
            attempted: flag(s == DeviceStatus::Attempted),
            sent: flag(s.succeeded()),
            delivered: flag(matches!(s, DeviceStatus::Delivered | DeviceStatus::Opened)),
            opened: flag(s == DeviceStatus::Opened),
            converted: flag(converted && s.succeeded()),
            failed: flag(s == DeviceStatus::Failed),
            undeliverable: 0,
            bounced: flag(s == DeviceStatus::Bounced),
            suppressed: flag(s == DeviceStatus::Suppressed),
        };
    }
    tally
}

#[cfg(test)]
mod tests;
