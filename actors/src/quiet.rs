//! Quiet hours: a window of the person's local day (`21:00`–`08:00`) in
//! which no push goes out. A send that falls inside is held until the
//! window ends (its release spread over a few minutes, so a million held
//! pushes do not leave in one second) or dropped. Pure: the zone and "now"
//! are arguments.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::schedule::local_instant;

/// What a send inside quiet hours does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuietAction {
    /// Held (`scheduled`) until the window ends.
    Hold,
    /// Not sent: `undeliverable`, reason `quiet_hours`.
    Drop,
}

/// A daily quiet window in the person's local time, from `start` up to
/// `end` (minutes after midnight; a start after the end spans midnight).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    /// Where the window starts, minutes after local midnight.
    pub start_minute: u16,
    /// Where it ends, minutes after local midnight.
    pub end_minute: u16,
    /// What a send inside it does.
    pub action: QuietAction,
}

/// Which quiet hours a send keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietRule {
    /// The send's own quiet hours instead of the engine's default ones.
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    /// No quiet hours apply (`bypass_quiet_hours`).
    #[serde(default)]
    pub bypass: bool,
}

impl QuietRule {
    /// The quiet hours that apply, given the engine's `default` ones.
    pub fn hours(&self, default: Option<QuietHours>) -> Option<QuietHours> {
        match self.bypass {
            true => None,
            false => self.quiet_hours.or(default),
        }
    }
}

impl QuietHours {
    /// Quiet hours from `HH:MM` texts, or why not.
    pub fn parse(start: &str, end: &str, action: QuietAction) -> Result<QuietHours, String> {
        let minute = |text: &str, what: &str| {
            let time: Time = jiff::fmt::strtime::parse("%H:%M", text)
                .and_then(|t| t.to_time())
                .map_err(|_| format!("quiet_hours.{what} must be a time as HH:MM, not {text:?}"))?;
            Ok::<u16, String>(time.hour() as u16 * 60 + time.minute() as u16)
        };
        let hours = QuietHours {
            start_minute: minute(start, "start")?,
            end_minute: minute(end, "end")?,
            action,
        };
        if hours.start_minute == hours.end_minute {
            return Err("quiet_hours.start and end must differ".into());
        }
        Ok(hours)
    }

    /// `HH:MM` of a minute after midnight.
    pub fn text(minute: u16) -> String {
        format!("{:02}:{:02}", minute / 60, minute % 60)
    }

    fn inside(&self, minute: u16) -> bool {
        let (start, end) = (self.start_minute, self.end_minute);
        if start < end {
            (start..end).contains(&minute)
        } else {
            minute >= start || minute < end
        }
    }

    /// When (Unix ms) the quiet window holding `now_ms` in `tz` ends;
    /// `None` when `now_ms` is outside every window.
    pub fn window_end(&self, tz: &TimeZone, now_ms: i64) -> Option<i64> {
        let now = jiff::Timestamp::from_millisecond(now_ms)
            .ok()?
            .to_zoned(tz.clone());
        let minute = now.hour() as u16 * 60 + now.minute() as u16;
        if !self.inside(minute) {
            return None;
        }
        let today: Date = now.date();
        let day = match minute < self.end_minute {
            true => today,
            false => today.tomorrow().ok()?,
        };
        let end = Time::new(
            (self.end_minute / 60) as i8,
            (self.end_minute % 60) as i8,
            0,
            0,
        )
        .ok()?;
        local_instant(DateTime::from_parts(day, end), tz)
    }
}

/// Where in `spread_seconds` after its window's end delivery `id` is
/// released, ms: the same for the same id, evenly spread over ids.
pub fn spread_ms(id: &str, spread_seconds: u32) -> i64 {
    if spread_seconds == 0 {
        return 0;
    }
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % (u64::from(spread_seconds) * 1000)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        rfc3339.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    fn night(action: QuietAction) -> QuietHours {
        QuietHours::parse("21:00", "08:00", action).unwrap()
    }

    #[test]
    fn a_window_over_midnight_ends_at_the_next_local_end() {
        let ny = TimeZone::get("America/New_York").unwrap();
        let q = night(QuietAction::Hold);
        // 22:30 EST and 03:00 EST both end at 08:00 EST the next morning.
        let end = ms("2026-01-16T13:00:00Z");
        assert_eq!(q.window_end(&ny, ms("2026-01-16T03:30:00Z")), Some(end));
        assert_eq!(q.window_end(&ny, ms("2026-01-16T08:00:00Z")), Some(end));
        assert_eq!(
            q.window_end(&ny, ms("2026-01-16T13:00:00Z")),
            None,
            "08:00 is outside"
        );
        assert_eq!(q.window_end(&ny, ms("2026-01-16T18:00:00Z")), None);
    }

    #[test]
    fn a_daytime_window_and_an_odd_offset() {
        let kathmandu = TimeZone::get("Asia/Kathmandu").unwrap();
        let q = QuietHours::parse("12:00", "14:00", QuietAction::Drop).unwrap();
        // 12:30 at +05:45 is 06:45Z; the window ends at 14:00, 08:15Z.
        let end = q.window_end(&kathmandu, ms("2026-06-01T06:45:00Z"));
        assert_eq!(end, Some(ms("2026-06-01T08:15:00Z")));
        assert_eq!(q.window_end(&kathmandu, ms("2026-06-01T08:15:00Z")), None);
    }

    #[test]
    fn bad_quiet_hours_are_refused_and_a_bypass_keeps_none() {
        assert!(QuietHours::parse("9pm", "08:00", QuietAction::Hold).is_err());
        assert!(QuietHours::parse("08:00", "08:00", QuietAction::Hold).is_err());
        let q = night(QuietAction::Hold);
        assert_eq!(QuietRule::default().hours(Some(q)), Some(q));
        let bypass = QuietRule {
            quiet_hours: Some(q),
            bypass: true,
        };
        assert_eq!(bypass.hours(Some(q)), None);
        assert_eq!(QuietHours::text(q.start_minute), "21:00");
    }

    #[test]
    fn releases_spread_evenly_and_stay_put() {
        assert_eq!(spread_ms("d1", 0), 0);
        assert_eq!(spread_ms("d1", 600), spread_ms("d1", 600));
        let spread: Vec<i64> = (0..1000)
            .map(|i| spread_ms(&format!("01KAY8{i:020}"), 600))
            .collect();
        assert!(spread.iter().all(|s| (0..600_000).contains(s)));
        let late_half = spread.iter().filter(|&&s| s >= 300_000).count();
        assert!(
            (400..600).contains(&late_half),
            "{late_half} of 1000 in the later half"
        );
    }
}
