//! What a [`PersonActor`] checks of a send before it renders it: the
//! person's quiet hours (hold the delivery until they end, or drop it) and
//! frequency caps (end it `frequency_capped`).

use actix::prelude::*;
use jiff::tz::TimeZone;

use super::{Answer, PersonActor};
use crate::caps::{self, CapRule, FrequencyCap};
use crate::engine::EngineError;
use crate::model::{Delivery, MessageSpec};
use crate::plan;
use crate::quiet::{self, QuietAction, QuietHours};
use crate::rules::SendRules;
use crate::schedule::{self, HeldFor, Schedule, TIMEZONE_ATTRIBUTE, TimezoneSource};
use crate::status::{DeliveryState, FailureReason, MessageStatus};

impl PersonActor {
    /// Keeps `delivery` (prechecked) to `rules`: inside the person's quiet
    /// hours it is held until they end or dropped, past a frequency cap it
    /// ends `frequency_capped`; either way it is written (a copy: a rule
    /// stops few sends) and its answer returned. `None`: no rule stops it.
    pub(super) fn gate(
        &mut self,
        before: &Option<Delivery>,
        delivery: &Delivery,
        rules: &SendRules,
        message: &MessageSpec,
        ctx: &mut Context<Self>,
    ) -> Option<Answer<String>> {
        let quiet = rules.quiet.hours(self.ctx.config.quiet_hours);
        if let Some(hours) = quiet {
            let (tz, name, source) = self.zone_of(delivery);
            let now_ms = self.ctx.ports.clock.now_ms();
            if let Some(end) = hours.window_end(&tz, now_ms) {
                let action = match hours.action {
                    QuietAction::Hold => "hold",
                    QuietAction::Drop => "drop",
                };
                metrics::counter!("pushd_quiet_hours_total", "action" => action).increment(1);
                let mut delivery = delivery.clone();
                if hours.action == QuietAction::Drop {
                    delivery.state = DeliveryState::ended(
                        MessageStatus::Undeliverable,
                        FailureReason::QuietHours,
                        Vec::new(),
                    );
                    delivery.failure_detail = Some(quiet_words(&hours, &name));
                    return Some(self.launch(before.clone(), delivery, ctx));
                }
                let spread = self.ctx.config.release_spread_seconds;
                let due_ms = end + quiet::spread_ms(&delivery.id, spread);
                let platforms = (self.customer.as_ref())
                    .map(|c| plan::planned_platforms(message, c))
                    .unwrap_or_default();
                let schedule = delivery.schedule.get_or_insert_with(|| Schedule {
                    due_ms,
                    timezone: Some(name),
                    timezone_source: Some(source),
                    released_ms: None,
                    platforms: Vec::new(),
                    rules: SendRules::default(),
                    held_for: HeldFor::QuietHours,
                });
                schedule.due_ms = due_ms;
                schedule.released_ms = None;
                schedule.platforms = platforms;
                schedule.rules = rules.clone();
                schedule.held_for = HeldFor::QuietHours;
                delivery.state = DeliveryState::held();
                return Some(self.hold(before.clone(), delivery, ctx));
            }
        }
        match self.capped(&rules.caps) {
            Ok(None) => None,
            Ok(Some(cap)) => {
                let mut delivery = delivery.clone();
                delivery.state = DeliveryState::ended(
                    MessageStatus::Undeliverable,
                    FailureReason::FrequencyCapped,
                    Vec::new(),
                );
                delivery.failure_detail = Some(cap.words());
                metrics::counter!("pushd_frequency_capped_total").increment(1);
                Some(self.launch(before.clone(), delivery, ctx))
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// The zone the person's local time is read in, its name and source:
    /// the customer's `timezone` attribute, else the zone the delivery's
    /// schedule used, else UTC.
    fn zone_of(&self, delivery: &Delivery) -> (TimeZone, String, TimezoneSource) {
        let named = (self.customer.as_ref())
            .and_then(|c| c.attributes.to_map().get(TIMEZONE_ATTRIBUTE).cloned())
            .and_then(|v| v.as_str().map(str::to_owned));
        if let Some(tz) = named.as_deref().and_then(schedule::zone) {
            return (tz, named.unwrap_or_default(), TimezoneSource::Customer);
        }
        let source = match named {
            Some(_) => TimezoneSource::FallbackInvalid,
            None => TimezoneSource::Fallback,
        };
        let scheduled = (delivery.schedule.as_ref()).and_then(|s| s.timezone.clone());
        match scheduled.as_deref().and_then(schedule::zone) {
            Some(tz) => (tz, scheduled.unwrap_or_default(), source),
            None => (TimeZone::UTC, "UTC".into(), source),
        }
    }

    /// The first frequency cap `rule` holds this customer to that its
    /// pushes reached: read from its deliveries of the longest window.
    fn capped(&self, rule: &CapRule) -> Result<Option<FrequencyCap>, EngineError> {
        let caps = rule.caps(&self.ctx.config.frequency_caps);
        if caps.is_empty() {
            return Ok(None);
        }
        let now = self.ctx.ports.clock.now();
        let from = now.saturating_sub(caps::longest(caps));
        let recent = self
            .ctx
            .ports
            .store
            .deliveries_between(&self.id, from, now)?;
        let times: Vec<_> = recent.iter().filter_map(caps::counted_at).collect();
        Ok(caps::reached(caps, &times, now))
    }
}

/// A dropped delivery's failure detail.
fn quiet_words(hours: &QuietHours, zone: &str) -> String {
    format!(
        "inside the quiet hours {} to {} ({zone})",
        QuietHours::text(hours.start_minute),
        QuietHours::text(hours.end_minute)
    )
}
