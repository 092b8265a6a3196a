//! The registry: the engine's front door. It maps a customer id to the
//! address of its [`PersonActor`], starting one on demand; actors are spread
//! over one Arbiter (thread) per core by a keyed hash of the customer id, and
//! the map is a sharded `DashMap`, so there is no global lock on the hot path.
//! A simulation runs the whole engine on its own thread instead
//! ([`Registry::on_this_thread`]).
//! On start it recovers the engine: the journal's tail goes into the store,
//! and every customer with an unsettled delivery is woken to resume it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use dashmap::DashMap;

use crate::engine::{Ack, EngineConfig, EngineCtx, EngineError, PartitionTag, Ports};
use crate::held::HeldDeliveries;
use crate::idempotency::IdempotentSends;
use crate::model::MessageSpec;
use crate::person::{GetCustomer, PersonActor};
use crate::plan::SendPreview;
use crate::ports::{Change, Clock, Entry};
use crate::recovery::Replayed;

/// A running PersonActor and the generation that tells it from a successor.
type Running = (u64, Addr<PersonActor>);

/// The handle a PersonActor uses to leave the registry when it stops.
#[derive(Clone)]
pub struct Departures {
    actors: Arc<DashMap<String, Running>>,
    generation: u64,
}

impl Departures {
    /// Removes the actor's entry, unless a successor already took its place.
    pub fn depart(&self, id: &str) {
        self.actors.remove_if(id, |_, (g, _)| *g == self.generation);
    }
}

/// The actor threads PersonActors run on, one Arbiter each, named
/// `pushd-actor-<n>`. The registries of several partitions share one set:
/// a node's threads follow its cores, not its partitions. Stopped when the
/// last registry using them is dropped. Without threads (see
/// [`Shards::none`]) actors start on the task that asks for them.
pub struct Shards(Vec<Arbiter>);

impl Shards {
    /// `count` threads (at least one). Must be called inside an actix System.
    pub fn new(count: usize) -> Arc<Shards> {
        let arbiters = (0..count.max(1))
            .map(|n| {
                let arbiter = Arbiter::new();
                arbiter.spawn_fn(move || {
                    crate::thread_name::set(&format!("pushd-actor-{n}"));
                    crate::turn::mark_actor_thread();
                });
                arbiter
            })
            .collect();
        Arc::new(Shards(arbiters))
    }

    /// No threads: each actor starts on the thread, and in the `LocalSet`,
    /// of the task that first asks for it.
    pub fn none() -> Arc<Shards> {
        Arc::new(Shards(Vec::new()))
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        for arbiter in &self.0 {
            arbiter.stop();
        }
    }
}

/// Finds or starts the PersonActor of a customer.
pub struct Registry {
    ctx: Arc<EngineCtx>,
    arbiters: Arc<Shards>,
    /// Keys the hash that picks a customer's thread.
    shard_key: u64,
    actors: Arc<DashMap<String, Running>>,
    generations: AtomicU64,
    sends: IdempotentSends,
}

impl Registry {
    /// A registry over `shards` arbiters (at least one), threads named
    /// `pushd-actor-<n>`. Must be called inside an actix System.
    pub fn new(ports: Ports, config: EngineConfig, shards: usize) -> Self {
        Registry::for_partition(ports, config, Shards::new(shards), PartitionTag::default())
    }

    /// A registry that runs every actor and every render on the calling
    /// thread: actors start in the `LocalSet` of the task that first asks
    /// for them, and renders run inline. With a seeded [`Entropy`] and a
    /// manual clock in its ports, what it does depends only on what the
    /// caller does, in order: a deterministic simulation's engine. Dropping
    /// that `LocalSet` stops all of it, as a crash would.
    ///
    /// [`Entropy`]: crate::ports::Entropy
    pub fn on_this_thread(ports: Ports, config: EngineConfig) -> Self {
        Registry::over(
            EngineCtx::new(ports, config).render_inline(),
            Shards::none(),
        )
    }

    /// A registry of one partition's customers, on threads it may share
    /// with other partitions; the delivery ids it makes carry `partition`.
    pub fn for_partition(
        ports: Ports,
        config: EngineConfig,
        arbiters: Arc<Shards>,
        partition: PartitionTag,
    ) -> Self {
        Registry::over(
            EngineCtx::new(ports, config).in_partition(partition),
            arbiters,
        )
    }

    /// A registry of `ctx`'s engine, its actors on `arbiters`.
    fn over(ctx: EngineCtx, arbiters: Arc<Shards>) -> Self {
        let ctx = Arc::new(ctx);
        Registry {
            sends: IdempotentSends::new(ctx.clone()),
            shard_key: ctx.ports.entropy.next_u64(),
            ctx,
            arbiters,
            actors: Arc::new(DashMap::new()),
            generations: AtomicU64::new(0),
        }
    }

    /// Brings the store up to the journal's end (replaying every record after
    /// the position the store covers; a torn tail is cut), puts every held
    /// delivery back on the schedule (one already due is released at once),
    /// then wakes every customer with an unsettled delivery so its sends
    /// resume. Call once, before serving.
    pub fn recover(&self) -> Result<Recovery, EngineError> {
        let ports = &self.ctx.ports;
        let replayed = crate::recovery::replay(&*ports.journal, &*ports.store)?;
        let mut held = 0;
        ports.store.held_deliveries(&mut |d| match &d.schedule {
            Some(s) => {
                self.held()
                    .hold(s.due_ms, &d.id, &d.customer_id, &d.message_id);
                held += 1;
            }
            None => tracing::error!(delivery = %d.id, "held without a schedule"),
        })?;
        let customers = ports.store.customers_with_unsettled()?;
        for id in &customers {
            self.wake(id);
        }
        Ok(Recovery {
            replayed,
            held,
            resumed: customers.len(),
        })
    }

    /// The running actor of `id`, started (and loaded) if there is none.
    fn actor(&self, id: &str) -> Running {
        if let Some(entry) = self.actors.get(id) {
            return entry.clone();
        }
        self.actors
            .entry(id.to_string())
            .or_insert_with(|| {
                let generation = self.generations.fetch_add(1, Ordering::Relaxed);
                let departures = Departures {
                    actors: self.actors.clone(),
                    generation,
                };
                let shard = self.shard(id);
                let (ctx, id) = (self.ctx.clone(), id.to_string());
                let actor = |_: &mut Context<PersonActor>| PersonActor::new(id, ctx, departures);
                let addr = match shard {
                    Some(arbiter) => PersonActor::start_in_arbiter(&arbiter.handle(), actor),
                    None => PersonActor::create(actor),
                };
                (generation, addr)
            })
            .clone()
    }

    /// The thread of customer `id`'s actor; `None` without threads.
    fn shard(&self, id: &str) -> Option<&Arbiter> {
        let mut hasher = DefaultHasher::new();
        (self.shard_key, id).hash(&mut hasher);
        let count = self.arbiters.0.len().max(1);
        self.arbiters.0.get(hasher.finish() as usize % count)
    }

    /// Sends `msg` to customer `id`'s actor. A message that finds the actor
    /// stopping (idle eviction) is sent again to a fresh one: it was not
    /// handled, so this cannot apply it twice.
    pub async fn ask<M>(&self, id: &str, mut msg: M) -> Result<M::Result, EngineError>
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        PersonActor: Handler<M>,
        <PersonActor as Actor>::Context: ToEnvelope<PersonActor, M>,
    {
        for _ in 0..8 {
            let (generation, addr) = self.actor(id);
            // actix drops a message its closed mailbox refuses: keep a copy.
            let again = msg.clone();
            match addr.send(msg).await {
                Ok(result) => return Ok(result),
                Err(MailboxError::Closed) => {
                    self.actors.remove_if(id, |_, (g, _)| *g == generation);
                    msg = again;
                }
                Err(e) => return Err(EngineError::Unavailable(e.to_string())),
            }
        }
        Err(EngineError::Unavailable(format!(
            "actor of {id} keeps stopping"
        )))
    }

    /// Sends `msg` to customer `id`'s actor and answers once its change is
    /// durable: what an acknowledgement to a client waits for.
    pub async fn request<M, T>(&self, id: &str, msg: M) -> Result<T, EngineError>
    where
        M: Message<Result = Result<Ack<T>, EngineError>> + Clone + Send + 'static,
        T: Send + 'static,
        PersonActor: Handler<M>,
        <PersonActor as Actor>::Context: ToEnvelope<PersonActor, M>,
    {
        self.ask(id, msg).await??.settle().await
    }

    /// [`Registry::request`] for a customer that exists: for a customer that
    /// does not (and has no running actor) it answers `NotFound` without
    /// starting an actor.
    pub async fn request_existing<M, T>(&self, id: &str, msg: M) -> Result<T, EngineError>
    where
        M: Message<Result = Result<Ack<T>, EngineError>> + Clone + Send + 'static,
        T: Send + 'static,
        PersonActor: Handler<M>,
        <PersonActor as Actor>::Context: ToEnvelope<PersonActor, M>,
    {
        if !self.actors.contains_key(id) && self.ctx.ports.store.customer(id)?.is_none() {
            return Err(EngineError::NotFound("customer"));
        }
        self.request(id, msg).await
    }

    /// What a send of `message` with `data` to customer `id` would do,
    /// worked out from the customer as its actor holds it, with nothing
    /// written, counted or sent (see [`SendPreview`]).
    pub async fn preview(
        &self,
        id: &str,
        message: Arc<MessageSpec>,
        data: serde_json::Value,
    ) -> Result<SendPreview, EngineError> {
        let customer = self.ask(id, GetCustomer).await??;
        Ok(SendPreview::of(&self.ctx, id, customer, message, data).await)
    }

    /// Creates or replaces a message template; answers once durable.
    pub async fn put_message(&self, message: MessageSpec) -> Result<(), EngineError> {
        let change = Change::of(Entry::Message(Box::new(message)));
        self.ctx.acknowledge(vec![change], ())?.settle().await
    }

    /// The keyed send calls (`Idempotency-Key`).
    pub fn idempotent_sends(&self) -> &IdempotentSends {
        &self.sends
    }

    /// Starts customer `id`'s actor, which resumes its unsettled sends.
    pub fn wake(&self, id: &str) {
        self.actor(id);
    }

    /// How many PersonActors are running.
    pub fn active(&self) -> usize {
        self.actors.len()
    }

    /// The deliveries held for their time.
    pub fn held(&self) -> &Arc<HeldDeliveries> {
        &self.ctx.held
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.ctx.ports.clock
    }

    /// Starts the loop that releases held deliveries as they fall due (on
    /// the calling task's runtime); it ends when the registry is dropped.
    /// Call once, after [`Registry::recover`].
    pub fn start_releases(self: &Arc<Self>) {
        tokio::spawn(crate::held::release_loop(Arc::downgrade(self)));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.ctx.held.close();
    }
}

/// What [`Registry::recover`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The journal's replay into the store.
    pub replayed: Replayed,
    /// Held deliveries put back on the schedule.
    pub held: usize,
    /// Customers woken to resume unsettled sends.
    pub resumed: usize,
}
