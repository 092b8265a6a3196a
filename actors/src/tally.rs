//! Campaign-metrics arithmetic: what one delivery adds to the counters of a
//! message's or a campaign's metrics and to its time series, so a store keeps
//! them incrementally (O(1) per change) and they always equal a recount.
//!
//! A delivery (a person) counts once by the furthest status it reached: an
//! opened delivery counts in `sent`, `delivered` and `opened`, and a delivery
//! counts in `sent` only once its status reached `sent` (every targeted
//! device settled, one succeeded) or went past it. A `converted` delivery
//! counts in `sent` and `converted`, and in `delivered`/`opened` only where
//! its devices reported them. `by_platform` counts the delivery's devices.
//! The opted-in counters count the same way over devices whose user allowed
//! notifications when the delivery was made: iOS reports `delivered` only
//! from those, so `delivered_of_opted_in` compares iOS with Android like
//! with like.
//! [`Tally::delta`] is what one change of a delivery adds; summing the deltas
//! of every change gives the [`contribution`]s of the final states.

use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

use serde::{Deserialize, Serialize};

use crate::model::{Delivery, Platform};
use crate::status::{DeviceStatus, FailureReason, MessageStatus};

macro_rules! counts {
    ($($(#[$doc:meta])* $field:ident),* $(,)?) => {
        /// The stored counters of a message's metrics; `recipients` and the
        /// rates are derived from them.
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
    /// Held for its time (per device: the devices it would go to when it
    /// was scheduled; they are chosen again when it is released).
    scheduled,
    /// Canceled while scheduled (per person only).
    canceled,
    /// Every device of the person was suppressed (per device: the device was).
    suppressed,
    /// Counted in `sent` with a device whose user had opted in that
    /// succeeded (per device: an opted-in device that succeeded).
    opted_in_sent,
    /// Reported delivered by a device whose user had opted in.
    opted_in_delivered,
}

/// `n / d` rounded to 4 decimals, 0 when `d` is 0.
pub fn rate(n: i64, d: i64) -> f64 {
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

    /// The rates, each over `sent` but `opened_of_delivered` and
    /// `delivered_of_opted_in`.
    pub fn rates(&self) -> Rates {
        Rates {
            delivered: rate(self.delivered, self.sent),
            opened: rate(self.opened, self.sent),
            converted: rate(self.converted, self.sent),
            opened_of_delivered: rate(self.opened, self.delivered),
            delivered_of_opted_in: rate(self.opted_in_delivered, self.opted_in_sent),
        }
    }
}

/// A message's rates, rounded to 4 decimals (0 when the base is 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Delivered of sent.
    pub delivered: f64,
    /// Opened of sent.
    pub opened: f64,
    /// Converted of sent.
    pub converted: f64,
    /// Opened of delivered.
    pub opened_of_delivered: f64,
    /// Delivered of sent, over devices whose user had opted in.
    pub delivered_of_opted_in: f64,
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
    let opted_in = || {
        (d.sends.iter().zip(&state.devices))
            .filter(|(send, device)| send.opted_in == Some(true) && device.targeted())
            .map(|(_, device)| device)
    };
    let converted = state.converted_at.is_some();
    let mut tally = Tally {
        message: Counts {
            sends: 1,
            attempted: flag(status == MessageStatus::Attempted),
            sent: flag(state.reached_sent()),
            delivered: flag(targeted().any(|s| s.delivered_at.is_some())),
            opened: flag(targeted().any(|s| s.opened_at.is_some())),
            converted: flag(converted),
            failed: flag(status == MessageStatus::Failed),
            undeliverable: flag(status == MessageStatus::Undeliverable),
            bounced: flag(status == MessageStatus::Bounced),
            scheduled: flag(status == MessageStatus::Scheduled),
            canceled: flag(status == MessageStatus::Canceled),
            suppressed: flag(
                status == MessageStatus::Undeliverable
                    && state.failure_reason() == Some(FailureReason::DevicesSuppressed),
            ),
            opted_in_sent: flag(state.reached_sent() && opted_in().any(|s| s.status.succeeded())),
            opted_in_delivered: flag(opted_in().any(|s| s.delivered_at.is_some())),
        },
        ..Tally::default()
    };
    if status == MessageStatus::Scheduled {
        for &platform in d.schedule.iter().flat_map(|s| &s.platforms) {
            tally.platform_mut(platform).scheduled += 1;
        }
    }
    for (send, device) in d.sends.iter().zip(&state.devices) {
        let s = device.status;
        let opted_in = send.opted_in == Some(true);
        let delivered = matches!(s, DeviceStatus::Delivered | DeviceStatus::Opened);
        *tally.platform_mut(send.platform) += Counts {
            sends: 1,
            attempted: flag(s == DeviceStatus::Attempted),
            sent: flag(s.succeeded()),
            delivered: flag(delivered),
            opened: flag(s == DeviceStatus::Opened),
            converted: flag(converted && s.succeeded()),
            failed: flag(s == DeviceStatus::Failed),
            undeliverable: 0,
            bounced: flag(s == DeviceStatus::Bounced),
            scheduled: 0,
            canceled: 0,
            suppressed: flag(s == DeviceStatus::Suppressed),
            opted_in_sent: flag(opted_in && s.succeeded()),
            opted_in_delivered: flag(opted_in && delivered),
        };
    }
    tally
}

/// The reason a delivery counts under in its message's failure reasons:
/// its failure reason once it ended `failed` or `undeliverable`.
pub fn counted_failure(d: &Delivery) -> Option<FailureReason> {
    let ended = matches!(
        d.state.status(),
        MessageStatus::Failed | MessageStatus::Undeliverable
    );
    ended.then(|| d.state.failure_reason()).flatten()
}

/// The time-series points of one delivery: the minute (since its creation)
/// in which it was first delivered (`0`) and first opened (`1`). A message's
/// series sums these over its deliveries.
pub fn series_points(d: &Delivery) -> impl Iterator<Item = (i64, usize)> + '_ {
    let targeted = || d.state.devices.iter().filter(|s| s.targeted());
    let delivered = targeted().filter_map(|s| s.delivered_at).min();
    let opened = targeted().filter_map(|s| s.opened_at).min();
    let minute = move |t: i64| t.saturating_sub(d.created_at).div_euclid(60).max(0);
    [(delivered, 0), (opened, 1)]
        .into_iter()
        .filter_map(move |(t, which)| t.map(|t| (minute(t), which)))
}

#[cfg(test)]
mod tests;
