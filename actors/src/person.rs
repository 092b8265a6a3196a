//! `PersonActor`: one per customer, the single writer of that customer's
//! state and the supervisor of its device sends.
//!
//! It holds the customer, its devices and its unsettled deliveries, each as
//! a cache of the store: while a delivery's sends wait for room at the
//! provider it holds neither that delivery nor the customer's record, nor
//! an idle timer, so a campaign's customers waiting in line cost little
//! more than their place in it (the first send given room reads the
//! delivery back). Every change is written through [`EngineCtx::write`]
//! (journal, then store) before the actor's own state moves, and a
//! request's answer is an [`Ack`] that holds once the change is durable. It
//! spawns one [`DeviceSendActor`] per device once the delivery is durable,
//! folds their outcomes and the app's reports into each delivery's status
//! machine, and stops after an idle time (its state lives in the store; the
//! next request loads it again, resuming any unsettled send), or as soon as
//! it has written its customer's erasure.

use std::sync::Arc;

use actix::prelude::*;
use serde_json::Map;

use crate::delivery_id::DeliveryId;
use crate::device_send::{DeviceOutcome, DeviceSendActor};
use crate::engine::{Ack, EngineCtx, EngineError};
use crate::model::{Attributes, Customer, Delivery, Device, MessageSpec};
use crate::plan;
use crate::ports::{AsOf, Change, Entry, Position, Push};
use crate::registry::Departures;
use crate::rules::SendRules;
use crate::status::{DeliveryState, DeviceStatus, MessageStatus, Outcome};

/// The widest conversion window the engine looks back over.
pub const MAX_CONVERSION_WINDOW: i64 = 366 * 24 * 3600;
/// The most devices one customer may have.
pub const MAX_DEVICES: usize = 100;

type Answer<T> = Result<Ack<T>, EngineError>;

mod gates;
mod messages;
mod scheduled;
mod unsettled;
pub use messages::*;
use unsettled::Unsettled;

/// The supervisor of one customer.
pub struct PersonActor {
    id: String,
    ctx: Arc<EngineCtx>,
    departures: Departures,
    /// The customer's record, once read (`None`: it does not exist). It is
    /// read when a request first needs it and let go once a delivery's
    /// sends start: a customer waiting only for outcomes holds no copy of
    /// its record, which the store keeps (every change this actor makes is
    /// applied there before it is kept here).
    customer: Option<Customer>,
    /// Whether `customer` was read since it was last let go.
    customer_read: bool,
    /// Deliveries whose send is not settled and has a device given room
    /// at the provider: the ones device outcomes come back for (a cache of
    /// the store, which always holds them too).
    unsettled: Unsettled,
    /// Device sends running, plus deliveries waiting to be durable before
    /// their sends start.
    inflight: usize,
    /// Whether an idle check is waiting: none waits while sends are in
    /// flight (the actor cannot stop then), so a campaign's customers
    /// waiting minutes for room hold no timer.
    idle_check: bool,
    last_active_ms: i64,
    /// The position of this customer's last delivery record, or of the
    /// engine's last record when the actor started (an earlier actor of the
    /// customer wrote nothing after it): a delivery read as of this
    /// position or later holds every change made to it.
    written: Position,
}

impl PersonActor {
    /// An actor for customer `id`; it loads its state when started.
    pub fn new(id: String, ctx: Arc<EngineCtx>, departures: Departures) -> Self {
        let now = ctx.ports.clock.now_ms();
        let written = ctx.last_written();
        PersonActor {
            id,
            ctx,
            departures,
            customer: None,
            customer_read: false,
            unsettled: Unsettled::default(),
            inflight: 0,
            idle_check: false,
            last_active_ms: now,
            written,
        }
    }

    fn load(&mut self, ctx: &mut Context<Self>) -> Result<(), EngineError> {
        self.read_customer()?;
        let store = &self.ctx.ports.store;
        // Held ones are on the engine's schedule (see `Registry::recover`).
        for stored in store.unsettled_deliveries(&self.id)? {
            // At-least-once: a device whose outcome was not recorded may
            // have been sent already; send it again and count the duplicate.
            let pending: Vec<usize> = pending_devices(&stored.state).collect();
            let mut delivery = stored.clone();
            for &i in &pending {
                delivery.sends[i].duplicates += 1;
            }
            tracing::debug!(delivery = %delivery.id, devices = pending.len(), "resuming send");
            let id = delivery.id.clone();
            // Like an outcome, the count need not be durable before the send.
            self.ctx
                .write(vec![Change::delivery(Some(stored), delivery.clone())])?;
            self.unsettled.insert(delivery);
            self.spawn_sends(&id, pending, ctx);
        }
        Ok(())
    }

    /// Marks activity (the idle timer runs from the last request).
    fn touch(&mut self) {
        self.last_active_ms = self.ctx.ports.clock.now_ms();
    }

    /// Reads the customer's record from the store unless it is held.
    fn read_customer(&mut self) -> Result<(), EngineError> {
        if !self.customer_read {
            self.customer = self.ctx.ports.store.customer(&self.id)?;
            self.customer_read = true;
        }
        Ok(())
    }

    /// Keeps `customer` as the record, now written.
    fn keep_customer(&mut self, customer: Option<Customer>) {
        self.customer = customer;
        self.customer_read = true;
    }

    /// Lets the customer's record go until a request needs it again.
    fn forget_customer(&mut self) {
        self.customer = None;
        self.customer_read = false;
    }

    /// Starts one [`DeviceSendActor`] per device, each once the provider has
    /// room for it: until then a send is only a reservation in line.
    fn spawn_sends(&mut self, id: &str, devices: Vec<usize>, ctx: &mut Context<Self>) {
        let Some(delivery) = self.unsettled.get(id) else {
            return;
        };
        let Some(content) = delivery.content.clone() else {
            return;
        };
        let mut reservations = Vec::with_capacity(devices.len());
        let delivery_id: Arc<str> = delivery.id.as_str().into();
        for index in devices {
            let push = plan::push(&delivery_id, &delivery.sends[index], &content);
            reservations.push((self.ctx.reserve(&delivery.message_id, &push), index));
        }
        // A send waiting for room holds its delivery's id and its device's
        // index, not its push: a campaign's waiting sends can be millions.
        // The push is made again from the delivery once there is room.
        for (reserved, index) in reservations {
            self.inflight += 1;
            let id = delivery_id.clone();
            ctx.spawn(reserved.into_actor(self).map(move |slot, act, ctx| {
                match act.push_of(&id, index) {
                    Some(push) => {
                        DeviceSendActor::start(act.ctx.clone(), ctx.address(), push, index, slot)
                    }
                    None => act.ended_one(ctx),
                }
            }));
        }
        // Until there is room, nothing needs the delivery or the customer:
        // the store holds both, and the first send given room reads the
        // delivery back (see `push_of`).
        self.unsettled.remove(id);
        self.forget_customer();
    }

    /// The push of device `index` of delivery `id`, as it was reserved: from
    /// the delivery in memory, or from the store, whence an unsettled one is
    /// kept in memory again for its outcomes.
    fn push_of(&mut self, id: &Arc<str>, index: usize) -> Option<Push> {
        let push = |d: &Delivery| Some(plan::push(id, d.sends.get(index)?, d.content.as_ref()?));
        if let Some(d) = self.unsettled.get(id) {
            return push(d);
        }
        match self.delivery(id) {
            Ok(d) => {
                let made = push(&d);
                if !d.state.settled() {
                    self.unsettled.insert(d);
                }
                made
            }
            Err(e) => {
                tracing::error!(delivery = %id, error = %e, "a reserved send's delivery is gone");
                None
            }
        }
    }

    /// Prepares `delivery` for `message` (the prechecks, the render, the
    /// choice of devices), then launches it. A render is tried here within
    /// a budget too small to hold the other customers of this thread (see
    /// [`Renderer::render_inline`](crate::ports::Renderer::render_inline));
    /// one that needs more runs off this thread (see [`EngineCtx::render`]),
    /// so other customers' actors go on meanwhile, and this one takes no
    /// other message until it is launched.
    fn prepare_and_launch(
        &mut self,
        before: Option<Delivery>,
        mut delivery: Delivery,
        message: Arc<MessageSpec>,
        rules: &SendRules,
        ctx: &mut Context<Self>,
    ) -> ResponseActFuture<Self, Answer<String>> {
        if let Err(e) = self.read_customer() {
            return Box::pin(fut::ready(Err(e)));
        }
        if !plan::precheck(&mut delivery, self.customer.as_ref()) {
            return Box::pin(fut::ready(self.launch(before, delivery, ctx)));
        }
        if let Some(stopped) = self.gate(&before, &delivery, rules, &message, ctx) {
            return Box::pin(fut::ready(stopped));
        }
        let customer = self.customer.as_ref().expect("prechecked");
        let renderer = &self.ctx.ports.renderer;
        if let Some(rendered) = renderer.render_inline(&message, customer, &delivery.data) {
            let now = self.ctx.ports.clock.now();
            plan::prepare(&mut delivery, &message, customer, rendered, now);
            return Box::pin(fut::ready(self.launch(before, delivery, ctx)));
        }
        let customer = customer.clone();
        let data = std::mem::take(&mut delivery.data);
        let rendering = self.ctx.render(move |renderer| {
            let rendered = renderer.render(&message, &customer, &data);
            (rendered, message, customer, data)
        });
        Box::pin(rendering.into_actor(self).map(move |done, act, ctx| {
            let (rendered, message, customer, data) = done;
            delivery.data = data;
            let now = act.ctx.ports.clock.now();
            plan::prepare(&mut delivery, &message, &customer, rendered, now);
            act.launch(before, delivery, ctx)
        }))
    }

    /// Writes a delivery (new or restarted), answers its id once durable, and
    /// starts its sends once durable too: nothing is pushed for a delivery a
    /// crash could still lose.
    fn launch(
        &mut self,
        before: Option<Delivery>,
        delivery: Delivery,
        ctx: &mut Context<Self>,
    ) -> Answer<String> {
        let pending: Vec<usize> = pending_devices(&delivery.state).collect();
        let id = delivery.id.clone();
        count_status(before.as_ref(), &delivery);
        let kept = (!pending.is_empty()).then(|| delivery.clone());
        let position = self.ctx.write(vec![Change::delivery(before, delivery)])?;
        self.written = position;
        if let Some(delivery) = kept {
            self.unsettled.insert(delivery);
            self.inflight += 1;
            let durable = self.ctx.durable(position);
            let started = id.clone();
            ctx.spawn(durable.into_actor(self).map(move |res, act, ctx| {
                match res {
                    Ok(()) => act.spawn_sends(&started, pending, ctx),
                    Err(e) => {
                        tracing::error!(delivery = %started, error = %e, "not durable; not sent")
                    }
                }
                // After the sends start, so the count never passes zero
                // between the wait and its sends.
                act.ended_one(ctx);
            }));
        }
        Ok(Ack {
            value: id,
            durable: self.ctx.durable(position),
        })
    }

    /// The delivery, from memory if unsettled, else from the store; only
    /// this customer's.
    fn delivery(&self, id: &str) -> Result<Delivery, EngineError> {
        self.delivery_seen(id, None)
    }

    /// [`PersonActor::delivery`], taken out of memory if unsettled rather
    /// than copied, to be changed and [saved](PersonActor::save) (which
    /// keeps it again if still unsettled; the store holds it meanwhile).
    fn take_delivery(&mut self, id: &str) -> Result<Delivery, EngineError> {
        match self.unsettled.remove(id) {
            Some(d) => Ok(d),
            None => self.delivery(id),
        }
    }

    /// [`PersonActor::delivery`], taking `seen` (what a caller read) instead
    /// of the store's when this actor wrote no record after it was read.
    fn delivery_seen(
        &self,
        id: &str,
        seen: Option<Box<AsOf<Delivery>>>,
    ) -> Result<Delivery, EngineError> {
        if let Some(d) = self.unsettled.get(id) {
            return Ok(d.clone());
        }
        let current = seen.filter(|s| s.position >= self.written && s.value.id == id);
        let found = match current {
            Some(seen) => Some(seen.value),
            None => self.ctx.ports.store.delivery(id)?,
        };
        match found {
            Some(d) if d.customer_id == self.id => Ok(d),
            _ => Err(EngineError::NotFound("delivery")),
        }
    }

    /// Writes a delivery's change (and the customer's, if given), then moves
    /// the actor's own state. Answers the record's position.
    fn save(
        &mut self,
        before: Delivery,
        after: Delivery,
        customer: Option<Customer>,
    ) -> Result<crate::ports::Position, EngineError> {
        count_status(Some(&before), &after);
        // Kept in memory while its send is unsettled (copied only then).
        let id = after.id.clone();
        let unsettled = (!after.state.settled()).then(|| after.clone());
        let mut changes = vec![Change::delivery(Some(before), after)];
        changes.extend(customer.clone().map(|c| Change::of(Entry::Customer(c))));
        let position = self.ctx.write(changes)?;
        self.written = position;
        match unsettled {
            Some(delivery) => self.unsettled.insert(delivery),
            None => {
                self.unsettled.remove(&id);
            }
        }
        if customer.is_some() {
            self.keep_customer(customer);
        }
        Ok(position)
    }

    /// Writes the customer as `customer` and answers once durable.
    fn save_customer(&mut self, customer: Customer) -> Answer<()> {
        let ack = self
            .ctx
            .acknowledge(vec![Change::of(Entry::Customer(customer.clone()))], ())?;
        self.keep_customer(Some(customer));
        Ok(ack)
    }

    /// Waits `idle_timeout`, then stops the actor if it was idle that long
    /// with nothing in flight; checks again later if it was not idle, and
    /// when its last send ends if sends are in flight.
    fn schedule_idle_check(&mut self, ctx: &mut Context<Self>) {
        self.idle_check = true;
        let wait = self.ctx.ports.clock.sleep(self.ctx.config.idle_timeout);
        ctx.spawn(wait.into_actor(self).map(|(), act, ctx| {
            act.idle_check = false;
            let idle_ms = act.ctx.ports.clock.now_ms() - act.last_active_ms;
            let timeout = act.ctx.config.idle_timeout.as_millis() as i64;
            match act.inflight {
                0 if idle_ms >= timeout => {
                    tracing::debug!(customer = %act.id, "idle; stopping");
                    ctx.stop();
                }
                0 => act.schedule_idle_check(ctx),
                _ => {}
            }
        }));
    }

    /// One send (or wait for durability) ended: the last one to end
    /// starts the idle check again if none waits.
    fn ended_one(&mut self, ctx: &mut Context<Self>) {
        self.inflight -= 1;
        if self.inflight == 0 && !self.idle_check {
            self.schedule_idle_check(ctx);
        }
    }

    /// The customer, or `NotFound`.
    fn existing(&mut self) -> Result<&Customer, EngineError> {
        self.read_customer()?;
        self.customer
            .as_ref()
            .ok_or(EngineError::NotFound("customer"))
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

impl Actor for PersonActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        metrics::gauge!("pushd_person_actors").increment(1.0);
        if let Err(e) = self.load(ctx) {
            // Stop, so the next request starts an actor that loads afresh
            // instead of answering this error for as long as it stays busy.
            tracing::error!(customer = %self.id, error = %e, "cannot load customer");
            ctx.stop();
            return;
        }
        self.schedule_idle_check(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        metrics::gauge!("pushd_person_actors").decrement(1.0);
        self.departures.depart(&self.id);
    }
}

impl Handler<PutCustomer> for PersonActor {
    type Result = Answer<()>;

    fn handle(&mut self, msg: PutCustomer, _: &mut Context<Self>) -> Answer<()> {
        self.touch();
        self.read_customer()?;
        let devices = self
            .customer
            .as_ref()
            .map(|c| c.devices.clone())
            .unwrap_or_default();
        self.save_customer(Customer {
            id: self.id.clone(),
            attributes: Attributes::new(&msg.attributes),
            unsubscribed: msg.unsubscribed,
            devices,
        })
    }
}

impl Handler<MergeCustomer> for PersonActor {
    type Result = Answer<bool>;

    fn handle(&mut self, msg: MergeCustomer, _: &mut Context<Self>) -> Answer<bool> {
        self.touch();
        self.read_customer()?;
        let before = match self.customer.clone() {
            Some(c) => c,
            None if msg.create => Customer {
                id: self.id.clone(),
                attributes: Attributes::new(&Map::new()),
                unsubscribed: false,
                devices: Vec::new(),
            },
            None => return Ok(self.ctx.observed(false)),
        };
        let mut attributes = before.attributes.to_map();
        attributes.extend(msg.attributes);
        let customer = Customer {
            attributes: Attributes::new(&attributes),
            unsubscribed: msg.unsubscribed.unwrap_or(before.unsubscribed),
            ..before
        };
        let ack =
            (self.ctx).acknowledge(vec![Change::of(Entry::Customer(customer.clone()))], true)?;
        self.keep_customer(Some(customer));
        Ok(ack)
    }
}

impl Handler<ImportCustomer> for PersonActor {
    type Result = Answer<()>;

    fn handle(&mut self, msg: ImportCustomer, _: &mut Context<Self>) -> Answer<()> {
        self.touch();
        check_devices(&self.id, msg.devices.len())?;
        let mut devices: Vec<Device> = Vec::with_capacity(msg.devices.len());
        for device in msg.devices {
            devices.retain(|d| d.id != device.id);
            devices.push(Device {
                suppressed: false,
                ..device
            });
        }
        self.save_customer(Customer {
            id: self.id.clone(),
            attributes: Attributes::new(&msg.attributes),
            unsubscribed: msg.unsubscribed,
            devices,
        })
    }
}

impl Handler<GetCustomer> for PersonActor {
    type Result = Result<Option<Customer>, EngineError>;

    fn handle(&mut self, _: GetCustomer, _: &mut Context<Self>) -> Self::Result {
        self.touch();
        self.read_customer()?;
        Ok(self.customer.clone())
    }
}

impl Handler<DeleteCustomer> for PersonActor {
    type Result = Answer<()>;

    fn handle(&mut self, _: DeleteCustomer, _: &mut Context<Self>) -> Answer<()> {
        self.touch();
        self.existing()?;
        let change = Change::of(Entry::CustomerDeleted(self.id.clone()));
        let ack = self.ctx.acknowledge(vec![change], ())?;
        self.keep_customer(None);
        Ok(ack)
    }
}

impl Handler<EraseCustomer> for PersonActor {
    type Result = Answer<()>;

    fn handle(&mut self, _: EraseCustomer, ctx: &mut Context<Self>) -> Answer<()> {
        self.existing()?;
        let change = Change::of(Entry::CustomerErased(self.id.clone()));
        let ack = self.ctx.acknowledge(vec![change], ())?;
        // Its state is gone. A stopping actor handles no more messages: the
        // outcomes of device sends still running are dropped with its
        // mailbox (and the sends stop before any retry), and the next
        // request starts an actor that loads what the store has left.
        ctx.stop();
        Ok(ack)
    }
}

impl Handler<PutDevice> for PersonActor {
    type Result = Answer<()>;

    fn handle(&mut self, PutDevice(device): PutDevice, _: &mut Context<Self>) -> Answer<()> {
        self.touch();
        let mut customer = self.existing()?.clone();
        customer.devices.retain(|d| d.id != device.id);
        check_devices(&self.id, customer.devices.len() + 1)?;
        customer.devices.push(Device {
            suppressed: false,
            ..device
        });
        self.save_customer(customer)
    }
}

/// Refuses more than [`MAX_DEVICES`] devices for one customer.
fn check_devices(customer: &str, count: usize) -> Result<(), EngineError> {
    if count > MAX_DEVICES {
        return Err(EngineError::Invalid(format!(
            "customer {customer:?} would have {count} devices; at most {MAX_DEVICES} are kept, so delete one first"
        )));
    }
    Ok(())
}

impl Handler<DeleteDevice> for PersonActor {
    type Result = Answer<()>;

    fn handle(&mut self, DeleteDevice(token): DeleteDevice, _: &mut Context<Self>) -> Answer<()> {
        self.touch();
        let mut customer = self.existing()?.clone();
        let before = customer.devices.len();
        customer.devices.retain(|d| d.id != token);
        if customer.devices.len() == before {
            return Err(EngineError::NotFound("device"));
        }
        self.save_customer(customer)
    }
}

impl Handler<SendMessage> for PersonActor {
    type Result = AtomicResponse<Self, Answer<String>>;

    fn handle(&mut self, msg: SendMessage, ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        if let Some(id) = &msg.delivery_id {
            // A keyed call tried again: the delivery it made stands.
            let answer = match self.delivery(id) {
                Ok(made) => Some(Ok(self.ctx.observed(made.id))),
                Err(EngineError::NotFound(_)) => None,
                Err(e) => Some(Err(e)),
            };
            if let Some(answer) = answer {
                return AtomicResponse::new(Box::pin(fut::ready(answer)));
            }
        }
        let clock = &self.ctx.ports.clock;
        let id = msg.delivery_id.unwrap_or_else(|| {
            let entropy = &*self.ctx.ports.entropy;
            DeliveryId::new(self.ctx.partition, clock.now_ms(), entropy).to_string()
        });
        let delivery = plan::delivery(id, &self.id, &msg.message, msg.data, clock.now());
        AtomicResponse::new(match &msg.time {
            Some(time) => self.send_at(delivery, time, msg.message, msg.rules, ctx),
            None => self.prepare_and_launch(None, delivery, msg.message, &msg.rules, ctx),
        })
    }
}

impl Handler<RetryDelivery> for PersonActor {
    type Result = AtomicResponse<Self, Answer<()>>;

    fn handle(&mut self, msg: RetryDelivery, ctx: &mut Context<Self>) -> Self::Result {
        self.touch();
        let before = match self.delivery(&msg.delivery_id) {
            Ok(d) if d.status() != MessageStatus::Failed => {
                Err(EngineError::NotRetryable(d.status().as_str()))
            }
            found => found,
        };
        let before = match before {
            Ok(before) => before,
            Err(e) => return AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
        };
        let mut after = before.clone();
        after.goal = msg.message.conversion.clone();
        after.campaign_id = msg.message.campaign_id.clone();
        let rules = SendRules::default();
        let launched = self.prepare_and_launch(Some(before), after, msg.message, &rules, ctx);
        AtomicResponse::new(Box::pin(launched.map(|answer, _, _| {
            answer.map(|ack| Ack {
                value: (),
                durable: ack.durable,
            })
        })))
    }
}

impl Handler<DeviceOutcome> for PersonActor {
    type Result = ();

    fn handle(&mut self, msg: DeviceOutcome, ctx: &mut Context<Self>) {
        self.touch();
        self.ended_one(ctx);
        // A device report may have settled the delivery before its provider
        // outcome came back: then it is read from the store.
        let before = match self.take_delivery(&msg.delivery_id) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(delivery = %msg.delivery_id, error = %e, "outcome for an unknown delivery");
                return;
            }
        };
        let mut after = before.clone();
        let now = self.ctx.ports.clock.now();
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
        // A bounce suppresses the token while the device's state is bounced.
        let suppressed = (after.state.devices[msg.index].status == DeviceStatus::Bounced)
            .then(|| self.with_suppression(&after.sends[msg.index].token, true))
            .flatten();
        // Nobody waits on an outcome: if a crash comes before its record is
        // durable, the device is simply sent again.
        if let Err(e) = self.save(before, after, suppressed) {
            tracing::error!(customer = %self.id, error = %e, "cannot record outcome");
        }
    }
}

impl PersonActor {
    /// The customer with device `token` suppressed (or not), if that changes
    /// anything.
    fn with_suppression(&mut self, token: &str, suppressed: bool) -> Option<Customer> {
        if let Err(e) = self.read_customer() {
            tracing::error!(customer = %self.id, error = %e, "cannot read the customer to (un)suppress a device");
            return None;
        }
        let mut customer = self.customer.clone()?;
        let device = customer.devices.iter_mut().find(|d| d.id == token)?;
        if device.suppressed == suppressed {
            return None;
        }
        device.suppressed = suppressed;
        Some(customer)
    }
}

impl Handler<DeviceReport> for PersonActor {
    type Result = Answer<()>;

    fn handle(&mut self, msg: DeviceReport, _: &mut Context<Self>) -> Answer<()> {
        self.touch();
        let before = self.delivery_seen(&msg.delivery_id, msg.seen)?;
        let mut after = before.clone();
        // A report dated before its delivery existed counts at its creation.
        let at = msg.at.max(after.created_at);
        let index = after
            .device_index(&msg.token)
            .filter(|&i| after.state.apply_report(i, msg.report, at))
            .ok_or(EngineError::NotFound("device"))?;
        // A report changes only the delivery's state.
        if after.state == before.state {
            return Ok(self.ctx.observed(()));
        }
        // The phone got it after all: a bounced token is live again.
        let unbounced = before.state.devices[index].status == DeviceStatus::Bounced
            && after.state.devices[index].status != DeviceStatus::Bounced;
        let customer = unbounced
            .then(|| self.with_suppression(&msg.token, false))
            .flatten();
        let position = self.save(before, after, customer)?;
        Ok(Ack {
            value: (),
            durable: self.ctx.durable(position),
        })
    }
}

impl Handler<CustomerEvent> for PersonActor {
    type Result = Answer<Option<String>>;

    fn handle(&mut self, msg: CustomerEvent, _: &mut Context<Self>) -> Answer<Option<String>> {
        self.touch();
        self.existing()?;
        let from = msg.at.saturating_sub(MAX_CONVERSION_WINDOW);
        let candidates = self
            .ctx
            .ports
            .store
            .deliveries_between(&self.id, from, msg.at)?;
        let nearest = candidates.into_iter().find(|d| {
            d.goal.as_ref().is_some_and(|g| {
                g.event == msg.name
                    && d.state
                        .sent_at()
                        .and_then(|sent| msg.at.checked_sub(sent))
                        .is_some_and(|since| (0..=g.window_seconds).contains(&since))
            })
        });
        let Some(before) = nearest else {
            return Ok(self.ctx.observed(None));
        };
        let mut after = before.clone();
        if !after.state.convert(msg.at) {
            return Ok(self.ctx.observed(None));
        }
        let id = after.id.clone();
        let position = self.save(before, after, None)?;
        Ok(Ack {
            value: Some(id),
            durable: self.ctx.durable(position),
        })
    }
}
