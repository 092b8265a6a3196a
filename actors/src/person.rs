//! `PersonActor`: one per customer, the single writer of that customer's
//! state and the supervisor of its device sends.
//!
//! It holds the customer, its devices and its unsettled deliveries. Every
//! change goes to the store first; a request is answered only once its change
//! is durable. It spawns one [`DeviceSendActor`] per device, folds their
//! outcomes and the app's reports into each delivery's status machine, and
//! stops after an idle time (its state lives in the store; the next request
//! loads it again, resuming any unsettled send).

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;

use crate::device_send::{DeviceOutcome, DeviceSendActor};
use crate::engine::{EngineCtx, EngineError};
use crate::model::{Audience, Customer, Delivery, Device, DeviceSend, MessageSpec};
use crate::ports::{Change, Push, RenderError};
use crate::registry::Departures;
use crate::status::{DeliveryState, DeviceState, FailureReason, MessageStatus, Outcome};

/// The widest conversion window the engine looks back over.
pub const MAX_CONVERSION_WINDOW: i64 = 366 * 24 * 3600;

type Reply<T> = ResponseActFuture<PersonActor, Result<T, EngineError>>;

mod messages;
pub use messages::*;

/// The supervisor of one customer.
pub struct PersonActor {
    id: String,
    ctx: Arc<EngineCtx>,
    departures: Departures,
    customer: Option<Customer>,
    /// Deliveries whose send is not settled, by id.
    unsettled: HashMap<String, Delivery>,
    load_error: Option<EngineError>,
    /// Device sends running plus commits not yet durable.
    inflight: usize,
    last_active_ms: i64,
}

impl PersonActor {
    /// An actor for customer `id`; it loads its state when started.
    pub fn new(id: String, ctx: Arc<EngineCtx>, departures: Departures) -> Self {
        let now = ctx.clock.now_ms();
        PersonActor {
            id,
            ctx,
            departures,
            customer: None,
            unsettled: HashMap::new(),
            load_error: None,
            inflight: 0,
            last_active_ms: now,
        }
    }

    fn load(&mut self, ctx: &mut Context<Self>) -> Result<(), EngineError> {
        let store = &self.ctx.store;
        self.customer = store.customer(&self.id)?;
        for mut delivery in store.unsettled_deliveries(&self.id)? {
            // At-least-once: a device whose outcome was not recorded may
            // have been sent already; send it again and count the duplicate.
            let pending: Vec<usize> = pending_devices(&delivery.state).collect();
            for &i in &pending {
                delivery.sends[i].duplicates += 1;
            }
            tracing::info!(delivery = %delivery.id, devices = pending.len(), "resuming send");
            self.spawn_sends(&delivery, pending, ctx);
            self.unsettled.insert(delivery.id.clone(), delivery);
        }
        Ok(())
    }

    /// Marks activity and answers the load error, if loading failed.
    fn touch(&mut self) -> Result<(), EngineError> {
        self.last_active_ms = self.ctx.clock.now_ms();
        match &self.load_error {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Commits `changes`, then answers `value` once they are durable.
    fn commit_then<T: 'static>(&mut self, changes: Vec<Change>, value: T) -> Reply<T> {
        let durable = self.ctx.store.commit(changes);
        self.inflight += 1;
        Box::pin(durable.into_actor(self).map(move |res, act, _| {
            act.inflight -= 1;
            res.map_err(EngineError::from).map(|()| value)
        }))
    }

    fn spawn_sends(&mut self, delivery: &Delivery, devices: Vec<usize>, ctx: &mut Context<Self>) {
        let Some(content) = delivery.content.clone() else {
            return;
        };
        for index in devices {
            let send = &delivery.sends[index];
            let push = Push {
                delivery_id: delivery.id.clone(),
                token: send.token.clone(),
                platform: send.platform,
                content: content.clone(),
            };
            self.inflight += 1;
            let actor = DeviceSendActor::new(self.ctx.clone(), ctx.address(), push, index);
            actor.start();
        }
    }

    /// Builds the delivery's sends and state for `message`: the prechecks,
    /// the render, and the choice of devices.
    fn prepare(&self, delivery: &mut Delivery, message: &MessageSpec) {
        let now = self.ctx.clock.now();
        delivery.sends.clear();
        delivery.content = None;
        delivery.attempted_at = None;
        delivery.failure_detail = None;
        let ended = |reason| DeliveryState::ended(MessageStatus::Failed, reason, Vec::new());
        let customer = match &self.customer {
            None => return delivery.state = ended(FailureReason::CustomerNotFound),
            Some(c) if c.unsubscribed => {
                return delivery.state = ended(FailureReason::CustomerUnsubscribed);
            }
            Some(c) => c,
        };
        match self.ctx.renderer.render(message, customer, &delivery.data) {
            Ok(content) => delivery.content = Some(content),
            Err(e) => {
                let (RenderError::VariableMissing(words) | RenderError::Syntax(words)) = &e;
                delivery.failure_detail = Some(words.clone());
                return delivery.state = ended(e.reason());
            }
        }
        let chosen: Vec<&Device> = match message.audience {
            Audience::AllDevices => customer.devices.iter().collect(),
            Audience::LastDevice => last_used(&customer.devices).into_iter().collect(),
        };
        delivery.sends = chosen
            .iter()
            .map(|d| DeviceSend {
                token: d.id.clone(),
                platform: d.platform,
                attempts: 0,
                last_error: None,
                provider_id: None,
                duplicates: 0,
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

    /// Commits a delivery (new or restarted), then starts its sends and
    /// answers its id.
    fn launch(&mut self, before: Option<Delivery>, delivery: Delivery) -> Reply<String> {
        let pending: Vec<usize> = pending_devices(&delivery.state).collect();
        count_status(before.as_ref(), &delivery);
        let id = delivery.id.clone();
        let change = Change::Delivery {
            before: before.map(Box::new),
            after: Box::new(delivery.clone()),
        };
        if !pending.is_empty() {
            self.unsettled.insert(id.clone(), delivery.clone());
        }
        let durable = self.commit_then(vec![change], id);
        Box::pin(durable.map(move |res, act, ctx| {
            if res.is_ok() {
                act.spawn_sends(&delivery, pending, ctx);
            } else {
                act.unsettled.remove(&delivery.id);
            }
            res
        }))
    }

    /// The delivery, from memory if unsettled, else from the store; only
    /// this customer's.
    fn delivery(&self, id: &str) -> Result<Delivery, EngineError> {
        if let Some(d) = self.unsettled.get(id) {
            return Ok(d.clone());
        }
        match self.ctx.store.delivery(id)? {
            Some(d) if d.customer_id == self.id => Ok(d),
            _ => Err(EngineError::NotFound("delivery")),
        }
    }

    /// Records a changed delivery: keeps it in memory while unsettled and
    /// returns the change to commit.
    fn record(&mut self, before: Delivery, after: Delivery) -> Change {
        count_status(Some(&before), &after);
        if after.state.settled() {
            self.unsettled.remove(&after.id);
        } else {
            self.unsettled.insert(after.id.clone(), after.clone());
        }
        Change::Delivery {
            before: Some(Box::new(before)),
            after: Box::new(after),
        }
    }

    fn schedule_idle_check(&self, ctx: &mut Context<Self>) {
        let wait = self.ctx.clock.sleep(self.ctx.config.idle_timeout);
        ctx.spawn(wait.into_actor(self).map(|(), act, ctx| {
            let idle_ms = act.ctx.clock.now_ms() - act.last_active_ms;
            let timeout = act.ctx.config.idle_timeout.as_millis() as i64;
            if act.inflight == 0 && idle_ms >= timeout {
                tracing::debug!(customer = %act.id, "idle; stopping");
                ctx.stop();
            } else {
                act.schedule_idle_check(ctx);
            }
        }));
    }

    fn customer_change(&self) -> Vec<Change> {
        self.customer
            .clone()
            .map(Change::Customer)
            .into_iter()
            .collect()
    }
}

/// Counts a delivery entering a new status (`pushd_delivery_status_total`).
fn count_status(before: Option<&Delivery>, after: &Delivery) {
    let status = after.status();
    if before.is_none_or(|b| b.status() != status) {
        metrics::counter!("pushd_delivery_status_total", "status" => status.as_str()).increment(1);
    }
}

/// The devices of a delivery still waiting for a provider outcome.
fn pending_devices(state: &DeliveryState) -> impl Iterator<Item = usize> + '_ {
    let open = state.precheck.is_none();
    state
        .devices
        .iter()
        .enumerate()
        .filter(move |(_, d)| open && d.targeted() && !d.status.has_outcome())
        .map(|(i, _)| i)
}

/// The device used last; on a tie, the one registered last.
fn last_used(devices: &[Device]) -> Option<&Device> {
    devices.iter().max_by_key(|d| d.last_used)
}

impl Actor for PersonActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        metrics::gauge!("pushd_person_actors").increment(1.0);
        if let Err(e) = self.load(ctx) {
            tracing::error!(customer = %self.id, error = %e, "cannot load customer");
            self.load_error = Some(e);
        }
        self.schedule_idle_check(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        metrics::gauge!("pushd_person_actors").decrement(1.0);
        self.departures.depart(&self.id);
    }
}

impl Handler<PutCustomer> for PersonActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: PutCustomer, _: &mut Context<Self>) -> Reply<()> {
        if let Err(e) = self.touch() {
            return Box::pin(fut::ready(Err(e)));
        }
        let devices = self.customer.take().map(|c| c.devices).unwrap_or_default();
        self.customer = Some(Customer {
            id: self.id.clone(),
            attributes: msg.attributes,
            unsubscribed: msg.unsubscribed,
            devices,
        });
        let changes = self.customer_change();
        self.commit_then(changes, ())
    }
}

impl Handler<GetCustomer> for PersonActor {
    type Result = Result<Option<Customer>, EngineError>;

    fn handle(&mut self, _: GetCustomer, _: &mut Context<Self>) -> Self::Result {
        self.touch()?;
        Ok(self.customer.clone())
    }
}

impl Handler<DeleteCustomer> for PersonActor {
    type Result = Reply<()>;

    fn handle(&mut self, _: DeleteCustomer, _: &mut Context<Self>) -> Reply<()> {
        let found = self.touch().and_then(|()| {
            self.customer
                .take()
                .map(|_| ())
                .ok_or(EngineError::NotFound("customer"))
        });
        match found {
            Ok(()) => self.commit_then(vec![Change::CustomerDeleted(self.id.clone())], ()),
            Err(e) => Box::pin(fut::ready(Err(e))),
        }
    }
}

impl Handler<PutDevice> for PersonActor {
    type Result = Reply<()>;

    fn handle(&mut self, PutDevice(device): PutDevice, _: &mut Context<Self>) -> Reply<()> {
        if let Err(e) = self.touch() {
            return Box::pin(fut::ready(Err(e)));
        }
        let Some(customer) = self.customer.as_mut() else {
            return Box::pin(fut::ready(Err(EngineError::NotFound("customer"))));
        };
        customer.devices.retain(|d| d.id != device.id);
        customer.devices.push(Device {
            suppressed: false,
            ..device
        });
        let changes = self.customer_change();
        self.commit_then(changes, ())
    }
}

impl Handler<DeleteDevice> for PersonActor {
    type Result = Reply<()>;

    fn handle(&mut self, DeleteDevice(token): DeleteDevice, _: &mut Context<Self>) -> Reply<()> {
        let removed = self.touch().and_then(|()| {
            let customer = self
                .customer
                .as_mut()
                .ok_or(EngineError::NotFound("customer"))?;
            let before = customer.devices.len();
            customer.devices.retain(|d| d.id != token);
            match customer.devices.len() < before {
                true => Ok(()),
                false => Err(EngineError::NotFound("device")),
            }
        });
        match removed {
            Ok(()) => {
                let changes = self.customer_change();
                self.commit_then(changes, ())
            }
            Err(e) => Box::pin(fut::ready(Err(e))),
        }
    }
}

impl Handler<SendMessage> for PersonActor {
    type Result = Reply<String>;

    fn handle(&mut self, msg: SendMessage, _: &mut Context<Self>) -> Reply<String> {
        if let Err(e) = self.touch() {
            return Box::pin(fut::ready(Err(e)));
        }
        let clock = &self.ctx.clock;
        let id = ulid::Ulid::from_parts(clock.now_ms() as u64, rand::random()).to_string();
        let mut delivery = Delivery {
            id,
            customer_id: self.id.clone(),
            message_id: msg.message.id.clone(),
            campaign_id: msg.message.campaign_id.clone(),
            created_at: clock.now(),
            attempted_at: None,
            content: None,
            data: msg.data,
            goal: msg.message.conversion.clone(),
            sends: Vec::new(),
            state: DeliveryState::new(Vec::new()),
            failure_detail: None,
        };
        self.prepare(&mut delivery, &msg.message);
        self.launch(None, delivery)
    }
}

impl Handler<RetryDelivery> for PersonActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: RetryDelivery, _: &mut Context<Self>) -> Reply<()> {
        let before = match self.touch().and_then(|()| self.delivery(&msg.delivery_id)) {
            Ok(d) if d.status() == MessageStatus::Failed => d,
            Ok(d) => {
                return Box::pin(fut::ready(Err(EngineError::NotRetryable(
                    d.status().as_str(),
                ))));
            }
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let mut after = before.clone();
        after.goal = msg.message.conversion.clone();
        after.campaign_id = msg.message.campaign_id.clone();
        self.prepare(&mut after, &msg.message);
        Box::pin(
            self.launch(Some(before), after)
                .map(|res, _, _| res.map(|_| ())),
        )
    }
}

impl Handler<DeviceOutcome> for PersonActor {
    type Result = ();

    fn handle(&mut self, msg: DeviceOutcome, _: &mut Context<Self>) {
        self.inflight -= 1;
        let _ = self.touch();
        // A device report may have settled the delivery before its provider
        // outcome came back: then it is read from the store.
        let before = match self.delivery(&msg.delivery_id) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(delivery = %msg.delivery_id, error = %e, "outcome for an unknown delivery");
                return;
            }
        };
        let mut after = before.clone();
        let now = self.ctx.clock.now();
        after.state.apply_outcome(msg.index, &msg.outcome, now);
        let send = &mut after.sends[msg.index];
        let outcome = match &msg.outcome {
            Outcome::Sent => "sent",
            Outcome::Bounced => "bounced",
            Outcome::Failed(reason) => reason.code(),
        };
        metrics::counter!("pushd_device_sends_total", "platform" => send.platform.as_str(), "outcome" => outcome)
            .increment(1);
        send.attempts += msg.attempts;
        send.last_error = msg.last_error;
        send.provider_id = msg.provider_id.or(send.provider_id.take());
        let token = send.token.clone();
        let mut changes = vec![self.record(before, after)];
        let bounced = self
            .customer
            .as_mut()
            .and_then(|c| c.devices.iter_mut().find(|d| d.id == token))
            .filter(|_| msg.outcome == Outcome::Bounced);
        if let Some(device) = bounced {
            device.suppressed = true;
            changes.extend(self.customer_change());
        }
        // Nobody waits on an outcome: it is durable with the next commit's
        // flush, and if a crash comes first the device is simply sent again.
        if let Err(e) = self.ctx.store.record(changes) {
            tracing::error!(customer = %self.id, error = %e, "cannot record outcome");
        }
    }
}

impl Handler<DeviceReport> for PersonActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: DeviceReport, _: &mut Context<Self>) -> Reply<()> {
        let before = match self.touch().and_then(|()| self.delivery(&msg.delivery_id)) {
            Ok(d) => d,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let mut after = before.clone();
        let known = after
            .device_index(&msg.token)
            .is_some_and(|i| after.state.apply_report(i, msg.report, msg.at));
        if !known {
            return Box::pin(fut::ready(Err(EngineError::NotFound("device"))));
        }
        if after == before {
            return Box::pin(fut::ready(Ok(())));
        }
        let change = self.record(before, after);
        self.commit_then(vec![change], ())
    }
}

impl Handler<CustomerEvent> for PersonActor {
    type Result = Reply<Option<String>>;

    fn handle(&mut self, msg: CustomerEvent, _: &mut Context<Self>) -> Reply<Option<String>> {
        let found = self.touch().and_then(|()| {
            if self.customer.is_none() {
                return Err(EngineError::NotFound("customer"));
            }
            let from = msg.at - MAX_CONVERSION_WINDOW;
            let candidates = self.ctx.store.deliveries_between(&self.id, from, msg.at)?;
            Ok(candidates.into_iter().find(|d| {
                d.goal.as_ref().is_some_and(|g| {
                    g.event == msg.name && msg.at - d.created_at <= g.window_seconds
                }) && d.state.reached()
            }))
        });
        let nearest = match found {
            Ok(Some(d)) => self.unsettled.get(&d.id).cloned().unwrap_or(d),
            Ok(None) => return Box::pin(fut::ready(Ok(None))),
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let mut after = nearest.clone();
        if !after.state.convert(msg.at) {
            return Box::pin(fut::ready(Ok(None)));
        }
        let id = after.id.clone();
        let change = self.record(nearest, after);
        self.commit_then(vec![change], Some(id))
    }
}
