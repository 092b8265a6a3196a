//! Frequency caps: at most `max` pushes to one person per rolling window of
//! `per_seconds`, across messages. Pure: the person's actor hands in the
//! times its deliveries went to a provider, read from its own deliveries,
//! so no lock is shared between people.

use serde::{Deserialize, Serialize};

use crate::model::Delivery;
use crate::status::{MessageStatus, Timestamp};

/// At most `max` pushes to one person per `per_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    /// The most pushes in a window.
    pub max: u32,
    /// The window, seconds.
    pub per_seconds: i64,
}

impl FrequencyCap {
    /// The cap in words, for a capped delivery's failure detail.
    pub fn words(&self) -> String {
        format!(
            "the frequency cap of {} per {} s was reached",
            self.max, self.per_seconds
        )
    }
}

/// Which caps a send is held to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapRule {
    /// The send's own caps instead of the engine's default ones.
    #[serde(default)]
    pub frequency_caps: Option<Vec<FrequencyCap>>,
    /// No cap applies (`bypass_frequency_caps`).
    #[serde(default)]
    pub bypass: bool,
}

impl CapRule {
    /// The caps that apply, given the engine's `default` ones.
    pub fn caps<'a>(&'a self, default: &'a [FrequencyCap]) -> &'a [FrequencyCap] {
        match (&self.frequency_caps, self.bypass) {
            (_, true) => &[],
            (Some(own), false) => own,
            (None, false) => default,
        }
    }
}

/// When delivery `d` counts toward its person's caps: once it went to a
/// provider (in flight or sent, and whatever the app reported since), at
/// the time it did. Failed, bounced, undeliverable, scheduled and canceled
/// deliveries do not count.
pub fn counted_at(d: &Delivery) -> Option<Timestamp> {
    let counts = matches!(
        d.status(),
        MessageStatus::Attempted
            | MessageStatus::Sent
            | MessageStatus::Delivered
            | MessageStatus::Opened
            | MessageStatus::Converted
    );
    counts.then_some(d.attempted_at).flatten()
}

/// The longest window of `caps` (0 without caps): how far back a person's
/// deliveries are read.
pub fn longest(caps: &[FrequencyCap]) -> i64 {
    caps.iter().map(|c| c.per_seconds).max().unwrap_or(0)
}

/// The first of `caps` that pushes at `times` have reached at `now`: one
/// more push would break it.
pub fn reached(caps: &[FrequencyCap], times: &[Timestamp], now: Timestamp) -> Option<FrequencyCap> {
    caps.iter().copied().find(|cap| {
        let from = now - cap.per_seconds;
        let within = times.iter().filter(|&&t| t > from && t <= now).count();
        within >= cap.max as usize
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn a_cap_is_reached_at_max_pushes_within_its_rolling_window() {
        let caps = [FrequencyCap {
            max: 3,
            per_seconds: DAY,
        }];
        let now = 10 * DAY;
        assert_eq!(reached(&caps, &[now - 10, now - 20], now), None);
        let three = [now - 10, now - 20, now - DAY + 1];
        assert_eq!(reached(&caps, &three, now), Some(caps[0]));
        // The oldest leaves the window a day after it was sent.
        assert_eq!(reached(&caps, &three, now + 1), None);
    }

    #[test]
    fn the_first_cap_reached_is_named() {
        let hourly = FrequencyCap {
            max: 1,
            per_seconds: 3_600,
        };
        let daily = FrequencyCap {
            max: 2,
            per_seconds: DAY,
        };
        let caps = [daily, hourly];
        assert_eq!(reached(&caps, &[100], 200), Some(hourly));
        assert_eq!(reached(&caps, &[100, 5_000], 5_100), Some(daily));
        assert_eq!(longest(&caps), DAY);
    }

    #[test]
    fn a_bypass_applies_no_cap_and_an_override_replaces_the_default() {
        let default = [FrequencyCap {
            max: 3,
            per_seconds: DAY,
        }];
        let own = vec![FrequencyCap {
            max: 1,
            per_seconds: 60,
        }];
        assert_eq!(CapRule::default().caps(&default), default);
        let custom = CapRule {
            frequency_caps: Some(own.clone()),
            bypass: false,
        };
        assert_eq!(custom.caps(&default), own.as_slice());
        let bypass = CapRule {
            frequency_caps: Some(own),
            bypass: true,
        };
        assert!(bypass.caps(&default).is_empty());
    }
}
