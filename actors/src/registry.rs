//! The registry: customer id → the address of its [`PersonActor`], starting
//! one on demand. Actors are spread over one Arbiter (thread) per core by a
//! hash of the customer id; the map is a sharded `DashMap`, so there is no
//! global lock on the hot path.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use dashmap::DashMap;

use crate::engine::{EngineConfig, EngineCtx, EngineError};
use crate::person::PersonActor;
use crate::ports::{Clock, Provider, Renderer, Store};

/// A running PersonActor and the generation that tells it from a successor.
type Entry = (u64, Addr<PersonActor>);

/// The handle a PersonActor uses to leave the registry when it stops.
#[derive(Clone)]
pub struct Departures {
    actors: Arc<DashMap<String, Entry>>,
    generation: u64,
}

impl Departures {
    /// Removes the actor's entry, unless a successor already took its place.
    pub fn depart(&self, id: &str) {
        self.actors.remove_if(id, |_, (g, _)| *g == self.generation);
    }
}

/// Finds or starts the PersonActor of a customer.
pub struct Registry {
    ctx: Arc<EngineCtx>,
    arbiters: Vec<Arbiter>,
    hasher: RandomState,
    actors: Arc<DashMap<String, Entry>>,
    generations: AtomicU64,
}

impl Registry {
    /// A registry over `shards` arbiters (at least one). Must be called
    /// inside an actix System.
    pub fn new(
        provider: Arc<dyn Provider>,
        store: Arc<dyn Store>,
        renderer: Arc<dyn Renderer>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
        shards: usize,
    ) -> Self {
        let ctx = Arc::new(EngineCtx {
            provider,
            store,
            renderer,
            clock,
            config,
        });
        Registry {
            ctx,
            arbiters: (0..shards.max(1)).map(|_| Arbiter::new()).collect(),
            hasher: RandomState::new(),
            actors: Arc::new(DashMap::new()),
            generations: AtomicU64::new(0),
        }
    }

    /// The running actor of `id`, started (and loaded) if there is none.
    fn actor(&self, id: &str) -> Entry {
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
                let shard = self.hasher.hash_one(id) as usize % self.arbiters.len();
                let (ctx, id) = (self.ctx.clone(), id.to_string());
                let addr = PersonActor::start_in_arbiter(&self.arbiters[shard].handle(), |_| {
                    PersonActor::new(id, ctx, departures)
                });
                (generation, addr)
            })
            .clone()
    }

    /// Sends `msg` to customer `id`'s actor. A message that finds the actor
    /// stopping (idle eviction) is sent again to a fresh one: it was not
    /// handled, so this cannot apply it twice.
    pub async fn ask<M>(&self, id: &str, msg: M) -> Result<M::Result, EngineError>
    where
        M: Message + Clone + Send + 'static,
        M::Result: Send,
        PersonActor: Handler<M>,
        <PersonActor as Actor>::Context: ToEnvelope<PersonActor, M>,
    {
        for _ in 0..8 {
            let (generation, addr) = self.actor(id);
            match addr.send(msg.clone()).await {
                Ok(result) => return Ok(result),
                Err(MailboxError::Closed) => {
                    self.actors.remove_if(id, |_, (g, _)| *g == generation);
                }
                Err(e) => return Err(EngineError::Unavailable(e.to_string())),
            }
        }
        Err(EngineError::Unavailable(format!(
            "actor of {id} keeps stopping"
        )))
    }

    /// Starts customer `id`'s actor, which resumes its unsettled sends.
    pub fn wake(&self, id: &str) {
        self.actor(id);
    }

    /// How many PersonActors are running.
    pub fn active(&self) -> usize {
        self.actors.len()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}
