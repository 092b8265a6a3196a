//! `[sending]`: the frequency caps and quiet hours every send keeps unless
//! it names its own or bypasses them (docs/sending.md). File keys only, as
//! `[apps]`: a list of caps and a window have no flag or environment form.

use pushd_actors::caps::FrequencyCap;
use pushd_actors::engine::{EngineConfig, RELEASE_SPREAD_SECONDS};
use pushd_actors::quiet::{QuietAction, QuietHours};
use serde::Deserialize;

/// `[sending]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SendingSection {
    /// `[{max = 3, per_seconds = 86400}]`: at most `max` pushes per person
    /// in any `per_seconds`, across messages.
    pub frequency_caps: Vec<FrequencyCap>,
    /// `{start = "21:00", end = "08:00", action = "hold"}` in each person's
    /// local time.
    pub quiet_hours: Option<QuietHoursSetting>,
    /// Pushes held by quiet hours are released over this many seconds
    /// after the window ends.
    pub release_spread_seconds: u32,
}

/// `[sending] quiet_hours`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuietHoursSetting {
    /// `HH:MM`.
    pub start: String,
    /// `HH:MM`.
    pub end: String,
    /// `hold` or `drop`.
    pub action: QuietAction,
}

impl Default for SendingSection {
    fn default() -> Self {
        SendingSection {
            frequency_caps: Vec::new(),
            quiet_hours: None,
            release_spread_seconds: RELEASE_SPREAD_SECONDS,
        }
    }
}

impl SendingSection {
    /// The quiet hours, or why they are not valid.
    fn quiet_hours(&self) -> Result<Option<QuietHours>, String> {
        let Some(q) = &self.quiet_hours else {
            return Ok(None);
        };
        QuietHours::parse(&q.start, &q.end, q.action)
            .map(Some)
            .map_err(|e| format!("[sending] {e}"))
    }

    /// Refuses what parses but cannot be meant.
    pub fn check(&self) -> Result<(), String> {
        self.quiet_hours()?;
        for (i, cap) in self.frequency_caps.iter().enumerate() {
            if cap.max == 0 || cap.per_seconds < 1 {
                return Err(format!(
                    "[sending] frequency_caps[{i}] must have max and per_seconds at least 1, \
                     not max {} per_seconds {}",
                    cap.max, cap.per_seconds
                ));
            }
        }
        Ok(())
    }

    /// `engine` with these default caps and quiet hours (checked at load).
    pub fn apply(&self, engine: EngineConfig) -> EngineConfig {
        EngineConfig {
            frequency_caps: self.frequency_caps.clone(),
            quiet_hours: self.quiet_hours().ok().flatten(),
            release_spread_seconds: self.release_spread_seconds,
            ..engine
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_quiet_hours_read_from_the_file_and_bad_ones_are_refused() {
        let text = r#"
            frequency_caps = [{max = 3, per_seconds = 86400}]
            quiet_hours = {start = "21:00", end = "08:00", action = "hold"}
            release_spread_seconds = 60
        "#;
        let s: SendingSection = toml::from_str(text).unwrap();
        s.check().unwrap();
        let engine = s.apply(EngineConfig::default());
        assert_eq!(
            engine.frequency_caps,
            [FrequencyCap {
                max: 3,
                per_seconds: 86_400
            }]
        );
        assert_eq!(engine.quiet_hours.map(|q| q.start_minute), Some(21 * 60));
        assert_eq!(engine.release_spread_seconds, 60);
        let bad: SendingSection =
            toml::from_str(r#"quiet_hours = {start = "9pm", end = "08:00", action = "drop"}"#)
                .unwrap();
        assert!(
            bad.check()
                .unwrap_err()
                .contains("[sending] quiet_hours.start")
        );
        let zero: SendingSection =
            toml::from_str("frequency_caps = [{max = 0, per_seconds = 60}]").unwrap();
        assert!(zero.check().unwrap_err().contains("frequency_caps[0]"));
    }
}
