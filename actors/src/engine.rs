//! What every actor shares: the ports, the tuning, the one path by which
//! changes are written, and the engine's error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::caps::FrequencyCap;
use crate::held::HeldDeliveries;
use crate::pacing::Pacing;
use crate::ports::{
    BoxFuture, Catalog, Change, Clock, Entropy, Journal, JournalError, Position, Provider, Push,
    Renderer, Slot, Store, StoreError,
};
use crate::quiet::QuietHours;

/// Tuning of sends and of actor lifetimes.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Provider calls per device send, first one included.
    pub max_attempts: u32,
    /// First retry delay ceiling; doubles each attempt.
    pub backoff_base: Duration,
    /// Largest retry delay ceiling.
    pub backoff_max: Duration,
    /// A PersonActor with nothing to do stops after this long.
    pub idle_timeout: Duration,
    /// Longest `Retry-After` honoured; a longer hint waits this long.
    pub retry_after_max: Duration,
    /// The frequency caps a send is held to unless it names its own or
    /// bypasses them (none by default).
    pub frequency_caps: Vec<FrequencyCap>,
    /// The quiet hours a send keeps unless it names its own or bypasses
    /// them (none by default).
    pub quiet_hours: Option<QuietHours>,
    /// Deliveries held by quiet hours are released over this many seconds
    /// after the window ends, not all at once.
    pub release_spread_seconds: u32,
}

/// The default of [`EngineConfig::release_spread_seconds`]: ten minutes.
pub const RELEASE_SPREAD_SECONDS: u32 = 600;

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_attempts: 10,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(15 * 60),
            frequency_caps: Vec::new(),
            quiet_hours: None,
            release_spread_seconds: RELEASE_SPREAD_SECONDS,
        }
    }
}

/// The engine's ports.
#[derive(Clone)]
pub struct Ports {
    /// Sends pushes.
    pub provider: Arc<dyn Provider>,
    /// Makes changes durable, in order.
    pub journal: Arc<dyn Journal>,
    /// Holds the state that is not in a running actor.
    pub store: Arc<dyn Store>,
    /// Renders templates.
    pub renderer: Arc<dyn Renderer>,
    /// Tells the time and sleeps (a manual clock in tests).
    pub clock: Arc<dyn Clock>,
    /// Every random choice (the OS's; a seeded one in the simulation).
    pub entropy: Arc<dyn Entropy>,
    /// The message templates as they are now: what a scheduled delivery
    /// renders when it is released.
    pub catalog: Arc<dyn Catalog>,
}

/// Which partition of the customers an engine serves (customers are
/// partitioned so several nodes can share them; a single node runs
/// partition 0 of 1). Every delivery id the engine makes carries it, so a
/// device report, which names only the delivery, finds the partition's
/// engine from the id alone ([`DeliveryId`](crate::delivery_id::DeliveryId)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionTag(pub u16);

/// The ports and tuning, shared by all actors.
pub struct EngineCtx {
    /// The ports.
    pub ports: Ports,
    /// Tuning.
    pub config: EngineConfig,
    /// The partition whose customers this engine serves.
    pub partition: PartitionTag,
    /// Held while a record is appended and applied, so the store applies
    /// records in journal order and a snapshot never covers a position
    /// whose record it has not seen.
    order: Mutex<()>,
    /// The position of the last record written.
    last: AtomicU64,
    /// The turns of paced messages.
    pacing: Pacing,
    /// Renders run on the calling thread instead of the blocking pool
    /// (see [`EngineCtx::render_inline`]).
    inline_renders: bool,
    /// The deliveries held for their time, by due time.
    pub held: Arc<HeldDeliveries>,
}

/// Turns to render, one per core, shared by every engine of the process
/// (a cluster node runs one per partition).
static RENDERS: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> = std::sync::LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Arc::new(tokio::sync::Semaphore::new(cores))
});

impl EngineCtx {
    /// A context over `ports`.
    pub fn new(ports: Ports, config: EngineConfig) -> EngineCtx {
        EngineCtx {
            ports,
            config,
            partition: PartitionTag::default(),
            order: Mutex::new(()),
            last: AtomicU64::new(0),
            pacing: Pacing::default(),
            inline_renders: false,
            held: Arc::default(),
        }
    }

    /// This context, rendering on the calling thread: for an engine run
    /// wholly on one thread (a simulation), whose renderer is quick.
    pub fn render_inline(mut self) -> EngineCtx {
        self.inline_renders = true;
        self
    }

    /// Runs `render` with the renderer on a blocking thread (`pushd-render`),
    /// one per core at most: a template, however slow within its limits,
    /// never holds an actor thread and the other customers' requests queued
    /// on it. A context that renders inline runs `render` at once.
    pub fn render<T: Send + 'static>(
        &self,
        render: impl FnOnce(&dyn Renderer) -> T + Send + 'static,
    ) -> BoxFuture<T> {
        let renderer = self.ports.renderer.clone();
        if self.inline_renders {
            let rendered = render(&*renderer);
            return Box::pin(std::future::ready(rendered));
        }
        Box::pin(async move {
            let _turn = RENDERS.clone().acquire_owned().await;
            let rendered = tokio::task::spawn_blocking(move || {
                crate::thread_name::set("pushd-render");
                render(&*renderer)
            })
            .await;
            rendered.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        })
    }

    /// Reserves room at the provider for `push` of message `message_id`,
    /// once the message's pace (if it has one) gives the push its turn.
    pub fn reserve(&self, message_id: &str, push: &Push) -> BoxFuture<Slot> {
        let provider = &self.ports.provider;
        let Some(rate) = push.content.rate_per_minute else {
            return provider.reserve(push);
        };
        let turn = self.pacing.wait(&*self.ports.clock, message_id, rate);
        let (provider, push) = (provider.clone(), push.clone());
        Box::pin(async move {
            turn.await;
            provider.reserve(&push).await
        })
    }

    /// This context, serving `partition`.
    pub fn in_partition(mut self, partition: PartitionTag) -> EngineCtx {
        self.partition = partition;
        self
    }

    /// Journals `changes` as one record and applies them to the store;
    /// readers see them at once. Answers the record's position: the change
    /// is durable once [`EngineCtx::durable`] of it resolves.
    pub fn write(&self, changes: Vec<Change>) -> Result<Position, EngineError> {
        let _order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        let position = crate::turn::append(&self.ports.journal, &changes)?;
        self.ports.store.apply(position, changes);
        self.last.store(position, Ordering::Release);
        Ok(position)
    }

    /// The position of the last record written.
    pub fn last_written(&self) -> Position {
        self.last.load(Ordering::Acquire)
    }

    /// Resolves once the record at `position` (and every one before) is
    /// durable.
    pub fn durable(&self, position: Position) -> BoxFuture<Result<(), EngineError>> {
        let durable = self.ports.journal.durable(position);
        Box::pin(async move { Ok(durable.await?) })
    }

    /// An answer that changed nothing: it holds once every record written so
    /// far is durable, since it may rest on state a crash could still lose
    /// (a duplicate report answered "ok" must not outlive the report it
    /// repeats).
    pub fn observed<T>(&self, value: T) -> Ack<T> {
        Ack {
            value,
            durable: self.durable(self.last_written()),
        }
    }

    /// Writes `changes` and answers `value` once they are durable.
    pub fn acknowledge<T>(&self, changes: Vec<Change>, value: T) -> Result<Ack<T>, EngineError> {
        let position = self.write(changes)?;
        Ok(Ack {
            value,
            durable: self.durable(position),
        })
    }
}

/// An answer that holds once its journal record is durable: whoever answers
/// the client awaits `durable` first. Nothing is acknowledged before.
pub struct Ack<T> {
    /// The answer.
    pub value: T,
    /// Resolves when the change behind the answer is durable.
    pub durable: BoxFuture<Result<(), EngineError>>,
}

impl<T> Ack<T> {
    /// Waits for durability, then answers the value.
    pub async fn settle(self) -> Result<T, EngineError> {
        self.durable.await?;
        Ok(self.value)
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Ack<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ack").field("value", &self.value).finish()
    }
}

/// Why the engine refused or could not do a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Only a failed delivery can be retried.
    #[error("delivery is {0}; only a failed delivery can be retried")]
    NotRetryable(&'static str),
    /// The store failed; nothing was acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The journal failed; nothing was acknowledged.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The request would break a limit; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// The customer's actor could not be reached.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// Only a scheduled delivery can be canceled.
    #[error("delivery is {0}; only a scheduled delivery can be canceled")]
    NotCancelable(&'static str),
    /// An idempotency key came back with another body within its window.
    #[error(
        "idempotency key {0:?} was used for another send body within the last 24 hours; \
         use a new key for a new send"
    )]
    IdempotencyConflict(String),
}
