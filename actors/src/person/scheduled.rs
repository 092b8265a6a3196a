//! A [`PersonActor`]'s scheduled sends: a send with a time is held
//! (`scheduled`) in the engine's [`HeldDeliveries`](crate::held::HeldDeliveries)
//! until then, released into this actor when due, and canceled on request.

use std::sync::Arc;

use actix::prelude::*;

use super::{Answer, PersonActor, count_status};
use crate::engine::{Ack, EngineError};
use crate::model::{Delivery, MessageSpec};
use crate::person::{CancelDelivery, ReleaseDelivery};
use crate::plan;
use crate::ports::Change;
use crate::rules::SendRules;
use crate::schedule::{self, Resolved, SendTime};
use crate::status::{DeliveryState, FailureReason, MessageStatus};

impl PersonActor {
    /// Makes `delivery`, a send asked for `time`: held until then, ended
    /// at once when its local time passed and the send said `skip`, or sent
    /// now when its time has come.
    pub(super) fn send_at(
        &mut self,
        mut delivery: Delivery,
        time: &SendTime,
        message: Arc<MessageSpec>,
        rules: SendRules,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Answer<String>> {
        if let Err(e) = self.read_customer() {
            return Box::pin(fut::ready(Err(e)));
        }
        let now_ms = self.ctx.ports.clock.now_ms();
        match schedule::resolve(time, self.customer.as_ref(), now_ms) {
            Resolved::Skip(schedule) => {
                delivery.schedule = Some(schedule);
                delivery.state = DeliveryState::ended(
                    MessageStatus::Undeliverable,
                    FailureReason::LocalTimePassed,
                    Vec::new(),
                );
                Box::pin(fut::ready(self.launch(None, delivery, ctx)))
            }
            Resolved::Hold(mut schedule) if schedule.due_ms <= now_ms => {
                schedule.released_ms = Some(now_ms);
                delivery.schedule = Some(schedule);
                self.prepare_and_launch(None, delivery, message, &rules, ctx)
            }
            Resolved::Hold(mut schedule) => {
                schedule.rules = rules;
                if let Some(customer) = &self.customer {
                    schedule.platforms = plan::planned_platforms(&message, customer);
                }
                delivery.schedule = Some(schedule);
                if !plan::precheck(&mut delivery, self.customer.as_ref()) {
                    return Box::pin(fut::ready(self.launch(None, delivery, ctx)));
                }
                delivery.state = DeliveryState::held();
                Box::pin(fut::ready(self.hold(None, delivery, ctx)))
            }
        }
    }

    /// Writes a held delivery and answers its id once durable; it joins
    /// the engine's schedule once durable too, so nothing a crash could
    /// lose is ever released.
    pub(super) fn hold(
        &mut self,
        before: Option<Delivery>,
        delivery: Delivery,
        ctx: &mut Context<Self>,
    ) -> Answer<String> {
        let due = delivery.schedule.as_ref().expect("a held delivery").due_ms;
        let id = delivery.id.clone();
        let message = delivery.message_id.clone();
        count_status(before.as_ref(), &delivery);
        let position = self.ctx.write(vec![Change::delivery(before, delivery)])?;
        self.written = position;
        self.inflight += 1;
        let durable = self.ctx.durable(position);
        let held = id.clone();
        ctx.spawn(durable.into_actor(self).map(move |res, act, ctx| {
            act.ended_one(ctx);
            match res {
                Ok(()) => act.ctx.held.hold(due, &held, &act.id, &message),
                Err(e) => tracing::error!(delivery = %held, error = %e, "not durable; not held"),
            }
        }));
        Ok(Ack {
            value: id,
            durable: self.ctx.durable(position),
        })
    }
}

impl Handler<ReleaseDelivery> for PersonActor {
    type Result = AtomicResponse<Self, Result<(), EngineError>>;

    fn handle(&mut self, msg: ReleaseDelivery, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        let message_id = match self.delivery(&msg.delivery_id) {
            Ok(d) if d.state.held => d.message_id,
            // Canceled, or released already (a restart may ask twice).
            Ok(_) => return AtomicResponse::new(Box::pin(fut::ready(Ok(())))),
            Err(e) => return AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
        };
        let message = self.ctx.ports.catalog.message(&message_id);
        AtomicResponse::new(Box::pin(message.into_actor(self).then(
            move |found, act, ctx| -> ResponseActFuture<Self, Result<(), EngineError>> {
                // Read again after the wait: it is the value the change starts from.
                let before = match act.delivery(&msg.delivery_id) {
                    Ok(d) if d.state.held => d,
                    Ok(_) => return Box::pin(fut::ready(Ok(()))),
                    Err(e) => return Box::pin(fut::ready(Err(e))),
                };
                let message = match found {
                    Ok(Some(m)) => Arc::new(m),
                    Ok(None) => return Box::pin(fut::ready(Err(EngineError::NotFound("message")))),
                    Err(e) => return Box::pin(fut::ready(Err(e.into()))),
                };
                let now_ms = act.ctx.ports.clock.now_ms();
                let mut after = before.clone();
                after.goal = message.conversion.clone();
                after.campaign_id = message.campaign_id.clone();
                if let Some(schedule) = &mut after.schedule {
                    schedule.released_ms = Some(now_ms);
                    let late = schedule.late_seconds().unwrap_or(0);
                    if late > 0 {
                        tracing::info!(delivery = %after.id, late_seconds = late, "released late");
                    }
                }
                metrics::counter!("pushd_scheduled_released_total").increment(1);
                let rules =
                    (after.schedule.as_ref()).map_or_else(SendRules::default, |s| s.rules.clone());
                let launched = act.prepare_and_launch(Some(before), after, message, &rules, ctx);
                Box::pin(launched.map(|answer, _, _| answer.map(drop)))
            },
        )))
    }
}

impl Handler<CancelDelivery> for PersonActor {
    type Result = Answer<()>;

    fn handle(&mut self, msg: CancelDelivery, _: &mut Context<Self>) -> Answer<()> {
        self.touch();
        let before = self.delivery(&msg.delivery_id)?;
        if !before.state.held {
            return Err(EngineError::NotCancelable(before.status().as_str()));
        }
        let mut after = before.clone();
        after.state.cancel();
        let due = after.schedule.as_ref().map(|s| s.due_ms);
        let position = self.save(before, after, None)?;
        if let Some(due) = due {
            self.ctx.held.forget(due, &msg.delivery_id);
        }
        Ok(Ack {
            value: (),
            durable: self.ctx.durable(position),
        })
    }
}
