//! When a send goes out: a send may name an instant (`at`) or a wall-clock
//! time in the person's own time zone (`local_time`), and is then held as a
//! `scheduled` delivery until that time.
//!
//! Everything here is pure: the time zone database is the one compiled into
//! the binary (jiff's bundled tzdb), and "now" is an argument. The local-time
//! rule is RFC 5545's and Temporal's `compatible` disambiguation: a local
//! time that does not exist (a spring-forward gap) moves forward by the
//! gap's length, and one that exists twice (a fall-back fold) is its first
//! occurrence, so it goes out once.

use jiff::civil::DateTime;
use jiff::tz::{Disambiguation, TimeZone};
use serde::{Deserialize, Serialize};

use crate::model::{Customer, Platform};
use crate::rules::SendRules;
use crate::status::Timestamp;

/// The customer attribute naming the person's IANA time zone.
pub const TIMEZONE_ATTRIBUTE: &str = "timezone";

/// What a send that names a local time does when that time has already
/// passed in the person's zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IfPast {
    /// Send at once.
    SendNow,
    /// Send nothing: the delivery ends `undeliverable`, `local_time_passed`.
    Skip,
}

/// When a send asks to go out.
#[derive(Clone, Debug, PartialEq)]
pub enum SendTime {
    /// At this instant (Unix milliseconds).
    At(i64),
    /// At this wall-clock time in the person's zone.
    LocalTime {
        /// The wall-clock time.
        local: DateTime,
        /// The zone when the customer names none, or one that is unknown.
        fallback: TimeZone,
        /// The fallback zone's IANA name.
        fallback_name: String,
        /// What a time already passed does.
        if_past: IfPast,
    },
}

impl SendTime {
    /// An instant given as RFC 3339 text with its offset
    /// (`2026-03-08T09:00:00-05:00`).
    pub fn at(text: &str) -> Result<SendTime, String> {
        let at: jiff::Timestamp = text.parse().map_err(|e| {
            format!("schedule.at must be an RFC 3339 time with its offset, not {text:?}: {e}")
        })?;
        Ok(SendTime::At(at.as_millisecond()))
    }

    /// A wall-clock time (`YYYY-MM-DDTHH:MM`) in the person's zone, with the
    /// IANA zone to use when the person names none (or an unknown one).
    pub fn local(text: &str, fallback: &str, if_past: IfPast) -> Result<SendTime, String> {
        let local = jiff::fmt::strtime::parse("%Y-%m-%dT%H:%M", text)
            .and_then(|t| t.to_datetime())
            .map_err(|_| {
                format!("schedule.local_time must be a time as YYYY-MM-DDTHH:MM, not {text:?}")
            })?;
        let zone = zone(fallback).ok_or_else(|| {
            format!(
                "schedule.fallback_timezone must be an IANA time zone (America/New_York), not {fallback:?}"
            )
        })?;
        Ok(SendTime::LocalTime {
            local,
            fallback: zone,
            fallback_name: fallback.to_owned(),
            if_past,
        })
    }
}

/// Where the zone a local time was read in came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimezoneSource {
    /// The customer's `timezone` attribute.
    Customer,
    /// The send's `fallback_timezone`: the customer names no zone.
    Fallback,
    /// The send's `fallback_timezone`: the customer's zone is not an IANA
    /// zone pushd knows.
    FallbackInvalid,
}

impl TimezoneSource {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            TimezoneSource::Customer => "customer",
            TimezoneSource::Fallback => "fallback",
            TimezoneSource::FallbackInvalid => "fallback_invalid",
        }
    }
}

/// A delivery's schedule, kept with it for the delivery log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// When it is due, Unix milliseconds.
    pub due_ms: i64,
    /// The IANA zone its local time was read in (`local_time` sends only).
    pub timezone: Option<String>,
    /// Where that zone came from.
    pub timezone_source: Option<TimezoneSource>,
    /// When it was released to be rendered and sent, Unix milliseconds.
    pub released_ms: Option<i64>,
    /// The platforms of the devices it would go to when it was scheduled
    /// (unsuppressed ones, of the message's app): what the per-platform
    /// `scheduled` counters count while it is held. Its devices are chosen
    /// again when it is released.
    #[serde(default)]
    pub platforms: Vec<Platform>,
    /// The frequency caps and quiet hours it keeps when it is released.
    #[serde(default)]
    pub rules: SendRules,
    /// Why it is held: its send's time, or quiet hours.
    #[serde(default)]
    pub held_for: HeldFor,
}

/// Why a delivery is (or was) held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldFor {
    /// The send named a later time.
    #[default]
    Schedule,
    /// It fell inside the person's quiet hours.
    QuietHours,
}

impl HeldFor {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            HeldFor::Schedule => "schedule",
            HeldFor::QuietHours => "quiet_hours",
        }
    }
}

impl Schedule {
    /// The schedule of a send due at `due_ms` (Unix ms), in no zone.
    pub fn at(due_ms: i64) -> Schedule {
        Schedule {
            due_ms,
            timezone: None,
            timezone_source: None,
            released_ms: None,
            platforms: Vec::new(),
            rules: SendRules::default(),
            held_for: HeldFor::Schedule,
        }
    }

    /// When it is due, Unix seconds.
    pub fn due(&self) -> Timestamp {
        self.due_ms.div_euclid(1000)
    }

    /// How many seconds after its time it was released (0 when on time).
    pub fn late_seconds(&self) -> Option<i64> {
        self.released_ms
            .map(|r| (r - self.due_ms).max(0).div_euclid(1000))
    }
}

/// What a send's time comes to for one person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Hold it until `schedule.due_ms` (which may be now or past: then it is
    /// released at once).
    Hold(Schedule),
    /// Its local time passed and the send said `skip`.
    Skip(Schedule),
}

/// Reads an IANA zone name from the bundled database.
pub fn zone(name: &str) -> Option<TimeZone> {
    TimeZone::get(name).ok()
}

/// The Unix milliseconds of wall-clock `local` in `tz`: a time in a gap
/// moves forward by the gap, a time in a fold is its first occurrence.
pub fn local_instant(local: DateTime, tz: &TimeZone) -> Option<i64> {
    let zoned = tz
        .to_ambiguous_zoned(local)
        .disambiguate(Disambiguation::Compatible)
        .ok()?;
    Some(zoned.timestamp().as_millisecond())
}

/// Resolves `time` for `customer` at `now_ms`.
pub fn resolve(time: &SendTime, customer: Option<&Customer>, now_ms: i64) -> Resolved {
    match time {
        SendTime::At(at) => Resolved::Hold(Schedule::at(*at)),
        SendTime::LocalTime {
            local,
            fallback,
            fallback_name,
            if_past,
        } => {
            let named = customer
                .and_then(|c| c.attributes.to_map().get(TIMEZONE_ATTRIBUTE).cloned())
                .and_then(|v| v.as_str().map(str::to_owned));
            let (tz, name, source) = match named {
                Some(name) => match zone(&name) {
                    Some(tz) => (tz, name, TimezoneSource::Customer),
                    None => (
                        fallback.clone(),
                        fallback_name.clone(),
                        TimezoneSource::FallbackInvalid,
                    ),
                },
                None => (
                    fallback.clone(),
                    fallback_name.clone(),
                    TimezoneSource::Fallback,
                ),
            };
            // A zone from the bundled database maps every civil time the
            // API accepts (years 1 to 9999 checked by the caller).
            let due_ms = local_instant(*local, &tz).unwrap_or(now_ms);
            let schedule = Schedule {
                due_ms,
                timezone: Some(name),
                timezone_source: Some(source),
                released_ms: None,
                platforms: Vec::new(),
                rules: SendRules::default(),
                held_for: HeldFor::Schedule,
            };
            if due_ms < now_ms && *if_past == IfPast::Skip {
                Resolved::Skip(schedule)
            } else {
                Resolved::Hold(schedule)
            }
        }
    }
}

#[cfg(test)]
mod tests;
