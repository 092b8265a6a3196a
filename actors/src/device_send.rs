//! `DeviceSendActor`: one push to one device, through the provider port.
//!
//! It starts with a slot its parent reserved at the provider, makes the
//! provider call, retries transient errors with exponential backoff and full
//! jitter (or the provider's `Retry-After`), reserving a slot again after
//! each wait, at most `max_attempts` calls in all, and reports exactly one
//! [`DeviceOutcome`] to its parent [`PersonActor`] before it stops.
//! Permanent errors end it at once, and so does a retry whose parent is
//! gone (its customer was erased).
//!
//! It supervises itself: an actor dropped without having reported (its
//! provider call panicked, or it stopped early while its parent lives)
//! reports `failed` / `internal_error` from its `Drop`, so its customer's
//! actor always settles the delivery and stops when idle.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::engine::EngineCtx;
use crate::person::PersonActor;
use crate::ports::{Accepted, ProviderError, Push, Slot};
use crate::status::{FailureReason, Outcome};

/// The one report a device send makes to its parent.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct DeviceOutcome {
    /// The delivery.
    pub delivery_id: String,
    /// The device's index in the delivery.
    pub index: usize,
    /// How it ended.
    pub outcome: Outcome,
    /// Provider calls made.
    pub attempts: u32,
    /// The last provider error, if any.
    pub last_error: Option<String>,
    /// The provider's id for the accepted push.
    pub provider_id: Option<String>,
}

/// Sends one push, retrying transient failures.
pub struct DeviceSendActor {
    ctx: Arc<EngineCtx>,
    parent: Addr<PersonActor>,
    push: Push,
    index: usize,
    attempts: u32,
    last_error: Option<String>,
    /// The slot of the first attempt, until it starts.
    slot: Option<Slot>,
    /// Whether the outcome went to the parent.
    reported: bool,
}

impl DeviceSendActor {
    /// A send of `push` (device `index` of its delivery) reporting to
    /// `parent`, in a `slot` reserved at the provider; started at once.
    pub fn start(
        ctx: Arc<EngineCtx>,
        parent: Addr<PersonActor>,
        push: Push,
        index: usize,
        slot: Slot,
    ) {
        DeviceSendActor {
            ctx,
            parent,
            push,
            index,
            attempts: 0,
            last_error: None,
            slot: Some(slot),
            reported: false,
        }
        .start();
    }

    fn attempt(&mut self, slot: Slot, ctx: &mut Context<Self>) {
        self.attempts += 1;
        let retry = if self.attempts > 1 { "true" } else { "false" };
        metrics::counter!("pushd_provider_attempts_total", "retry" => retry).increment(1);
        let call = self.ctx.ports.provider.send(self.push.clone(), slot);
        ctx.spawn(
            call.into_actor(self)
                .map(|result, act, ctx| act.on_result(result, ctx)),
        );
    }

    fn on_result(&mut self, result: Result<Accepted, ProviderError>, ctx: &mut Context<Self>) {
        let err = match result {
            Ok(accepted) => return self.finish(Outcome::Sent, accepted.provider_id, ctx),
            Err(err) => err,
        };
        self.last_error = Some(err.detail().to_string());
        match err {
            ProviderError::Transient { retry_after, .. } => {
                if self.attempts >= self.ctx.config.max_attempts {
                    let outcome = Outcome::Failed(FailureReason::RetriesExhausted);
                    return self.finish(outcome, None, ctx);
                }
                // A provider's hint is honoured up to a ceiling, so one bad
                // header cannot park a send for days.
                let delay = retry_after
                    .map(|hint| hint.min(self.ctx.config.retry_after_max))
                    .unwrap_or_else(|| self.backoff());
                // The slot went back with the answer; the retry waits for a
                // new one after its delay.
                let wait = self.ctx.ports.clock.sleep(delay);
                let provider = self.ctx.ports.provider.clone();
                let push = self.push.clone();
                let again = async move {
                    wait.await;
                    provider.reserve(&push).await
                };
                // A parent gone (its customer erased) takes no outcome:
                // the send stops instead of retrying.
                ctx.spawn(again.into_actor(self).map(
                    |slot, act, ctx| match act.parent.connected() {
                        true => act.attempt(slot, ctx),
                        false => ctx.stop(),
                    },
                ));
            }
            ProviderError::Bounced { .. } => self.finish(Outcome::Bounced, None, ctx),
            ProviderError::Permanent { reason, .. } => {
                self.finish(Outcome::Failed(reason), None, ctx)
            }
        }
    }

    /// Exponential backoff with full jitter: uniform in (0, base·2^(n-1)],
    /// capped at `backoff_max`.
    fn backoff(&self) -> Duration {
        let cfg = &self.ctx.config;
        let exp = cfg
            .backoff_base
            .saturating_mul(1 << (self.attempts - 1).min(20));
        let ceiling = exp.min(cfg.backoff_max).as_millis().max(1) as u64;
        Duration::from_millis(self.ctx.ports.entropy.up_to(ceiling))
    }

    fn finish(&mut self, outcome: Outcome, provider_id: Option<String>, ctx: &mut Context<Self>) {
        self.report(outcome, provider_id);
        ctx.stop();
    }

    fn report(&mut self, outcome: Outcome, provider_id: Option<String>) {
        self.reported = true;
        self.parent.do_send(DeviceOutcome {
            delivery_id: self.push.delivery_id.to_string(),
            index: self.index,
            outcome,
            attempts: self.attempts,
            last_error: self.last_error.take(),
            provider_id,
        });
    }
}

/// The supervision guard: a send that ends without an outcome while its
/// parent lives (a panic unwound its task, or it stopped early) reports
/// `failed` / `internal_error`, so the delivery settles and the parent's
/// count of sends in flight comes back to zero.
impl Drop for DeviceSendActor {
    fn drop(&mut self) {
        if self.reported || !self.parent.connected() {
            return;
        }
        tracing::error!(
            delivery_id = %self.push.delivery_id,
            device = self.index,
            attempts = self.attempts,
            "a device send ended without an outcome (it panicked or stopped early): \
             its device fails internal_error"
        );
        metrics::counter!("pushd_device_sends_lost_total").increment(1);
        let detail = "the send ended without an outcome (an internal fault, logged)";
        self.last_error.get_or_insert_with(|| detail.to_string());
        self.report(Outcome::Failed(FailureReason::InternalError), None);
    }
}

impl Actor for DeviceSendActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let slot = self.slot.take().unwrap_or_else(Slot::free);
        self.attempt(slot, ctx);
    }
}
