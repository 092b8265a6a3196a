//! The engine's ports: what it needs from the world, as traits the daemon
//! implements (providers over HTTP/2, sled, Liquid, the system clock) and
//! tests replace with in-memory doubles.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::idempotency::SendRecord;
use crate::model::{Content, Customer, Delivery, Environment, MessageSpec, Platform};
use crate::status::{FailureReason, Timestamp};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One push for one device, as handed to a [`Provider`].
///
/// Its strings are shared (`Arc<str>`): a push is cloned for every attempt,
/// and the devices of one delivery share its id.
#[derive(Clone, Debug, PartialEq)]
pub struct Push {
    /// The delivery id (`CIO-Delivery-ID`).
    pub delivery_id: Arc<str>,
    /// The device token (`CIO-Delivery-Token`).
    pub token: Arc<str>,
    /// Which provider.
    pub platform: Platform,
    /// Whose credentials (APNs key and topic, Firebase project) send it.
    pub app: Arc<str>,
    /// The APNs environment (production or sandbox endpoint).
    pub environment: Environment,
    /// What to show; shared by every device send of the delivery.
    pub content: Arc<Content>,
}

/// A provider accepted the push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The provider's id for it (apns-id, FCM message name).
    pub provider_id: Option<String>,
}

/// Why a provider call did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderError {
    /// Worth retrying (network, 429, 5xx), perhaps after a hinted delay.
    Transient {
        /// Status and reason, as the provider gave them.
        detail: String,
        /// The provider's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The token is invalid or unregistered: suppress it.
    Bounced {
        /// Status and reason.
        detail: String,
    },
    /// Refused for good.
    Permanent {
        /// The failure reason to record.
        reason: FailureReason,
        /// Status and reason.
        detail: String,
    },
}

impl ProviderError {
    /// The provider's words, for the delivery log.
    pub fn detail(&self) -> &str {
        match self {
            ProviderError::Transient { detail, .. }
            | ProviderError::Bounced { detail }
            | ProviderError::Permanent { detail, .. } => detail,
        }
    }
}

/// Room at a provider for one push (a free HTTP/2 stream, say), reserved
/// before the push is sent and given back when dropped. What it holds is
/// the provider's business.
pub struct Slot(Option<Box<dyn std::any::Any + Send + Sync>>);

impl Slot {
    /// A slot of a provider that keeps no count.
    pub fn free() -> Slot {
        Slot(None)
    }

    /// A slot holding the provider's own reservation.
    pub fn holding<T: std::any::Any + Send + Sync>(reservation: T) -> Slot {
        Slot(Some(Box::new(reservation)))
    }

    /// The provider's reservation, if this slot holds a `T`.
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.as_ref()?.downcast_ref()
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Slot(held)"
        } else {
            "Slot(free)"
        })
    }
}

/// Sends one push to APNs or FCM.
pub trait Provider: Send + Sync + 'static {
    /// Waits until the provider has room for `push` (first come, first
    /// served). A push waiting here holds only this future: nothing of its
    /// request is built and no timeout runs yet.
    fn reserve(&self, push: &Push) -> BoxFuture<Slot>;
    /// Makes one attempt in a reserved slot; retries are the caller's
    /// business.
    fn send(&self, push: Push, slot: Slot) -> BoxFuture<Result<Accepted, ProviderError>>;
}

/// Why a template did not render.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A variable the customer does not have.
    #[error("liquid variable missing: {0}")]
    VariableMissing(String),
    /// The template does not parse.
    #[error("liquid syntax error: {0}")]
    Syntax(String),
    /// The render went past a limit (iterations, output, CPU time).
    #[error("template limit exceeded: {0}")]
    LimitExceeded(String),
}

impl RenderError {
    /// The delivery failure reason it causes.
    pub fn reason(&self) -> FailureReason {
        match self {
            RenderError::VariableMissing(_) => FailureReason::LiquidVariableMissing,
            RenderError::Syntax(_) => FailureReason::LiquidSyntax,
            RenderError::LimitExceeded(_) => FailureReason::TemplateLimitExceeded,
        }
    }

    /// What went wrong, naming the field.
    pub fn words(&self) -> &str {
        match self {
            RenderError::VariableMissing(words)
            | RenderError::Syntax(words)
            | RenderError::LimitExceeded(words) => words,
        }
    }
}

/// Renders a message for a customer.
pub trait Renderer: Send + Sync + 'static {
    /// Renders title, body, deep link and the push data's values over
    /// `customer.*` and `event.*`.
    fn render(
        &self,
        message: &MessageSpec,
        customer: &Customer,
        data: &Value,
    ) -> Result<Content, RenderError>;

    /// [`Renderer::render`] on the caller's thread (an actor's) within a
    /// CPU budget too small to hold anyone behind it: `None` when the
    /// render needs more, and is to be made with [`Renderer::render`] off
    /// that thread. A renderer whose renders are always quick renders here.
    fn render_inline(
        &self,
        message: &MessageSpec,
        customer: &Customer,
        data: &Value,
    ) -> Option<Result<Content, RenderError>> {
        Some(self.render(message, customer, data))
    }
}

/// A store failure; the engine answers the request with it and changes nothing
/// it acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// A journal failure: the record is not durable and nothing is acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("journal: {0}")]
pub struct JournalError(pub String);

/// A record's place in the journal: records are numbered from 1 in the order
/// they were appended, and a snapshot says up to which one it covers.
pub type Position = u64;

/// What one change makes true, whole. A journal record holds entries, so
/// replaying a record onto a state that already holds it changes nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Entry {
    /// A customer (with its devices), created or replaced.
    Customer(Customer),
    /// A customer removed.
    CustomerDeleted(String),
    /// A message template, created or replaced.
    Message(Box<MessageSpec>),
    /// A delivery, new or changed.
    Delivery(Box<Delivery>),
    /// A keyed send call, started or answered (replaces the key's record).
    SendRecord(Box<SendRecord>),
    /// Every send record started before this time (Unix ms) is dropped.
    SendRecordsExpired(i64),
    /// A customer erased: the customer goes, and with it every delivery of
    /// it made before this record (their content, conversions and events);
    /// the message and campaign counters they counted in stay as they are.
    CustomerErased(String),
}

/// One change the engine makes: its [`Entry`], and for a delivery the value
/// it replaces. The engine is the single writer of each customer's state, so
/// it knows that value, and the store keeps its indexes and counters
/// incrementally without reading it back.
#[derive(Clone, Debug)]
pub struct Change {
    /// What becomes true.
    pub entry: Entry,
    /// The delivery's previous value; `None` for a new delivery and for
    /// entries that are not deliveries.
    pub before: Option<Box<Delivery>>,
}

impl Change {
    /// A change of anything but a delivery.
    pub fn of(entry: Entry) -> Change {
        debug_assert!(!matches!(entry, Entry::Delivery(_)), "use Change::delivery");
        Change {
            entry,
            before: None,
        }
    }

    /// A delivery going from `before` (`None`: new) to `after`.
    pub fn delivery(before: Option<Delivery>, after: Delivery) -> Change {
        debug_assert!(before.as_ref().is_none_or(|b| b.id == after.id));
        Change {
            entry: Entry::Delivery(Box::new(after)),
            before: before.map(Box::new),
        }
    }
}

/// Where every acknowledged change goes first: an ordered, durable log of
/// records. The local file journal is the default; a replicated log can take
/// its place.
pub trait Journal: Send + Sync + 'static {
    /// Appends one record holding the changes' entries and answers its
    /// position. Records keep the order of their appends. Nothing is durable
    /// yet: see [`Journal::durable`].
    fn append(&self, changes: &[Change]) -> Result<Position, JournalError>;
    /// [`Journal::append`] from a thread that appends several records in
    /// one turn and then calls [`Journal::end_turn`] once: the journal may
    /// hold the records until then, to make them durable as one group.
    fn append_in_turn(&self, changes: &[Change]) -> Result<Position, JournalError> {
        self.append(changes)
    }
    /// Ends a turn of [`Journal::append_in_turn`]: what it appended goes
    /// out now.
    fn end_turn(&self) {}
    /// Resolves once every record up to `position` is durable.
    fn durable(&self, position: Position) -> BoxFuture<Result<(), JournalError>>;
    /// Calls `apply` with every intact record after `after`, in order, and
    /// answers the last position. A torn or corrupt tail is cut, never
    /// replayed; appends continue after the last intact record.
    fn replay(
        &self,
        after: Position,
        apply: &mut dyn FnMut(Position, Vec<Entry>) -> Result<(), StoreError>,
    ) -> Result<Position, JournalError>;
}

/// A value read from the store, and the position of the last record the
/// store had applied when it was read: the value holds every change up to
/// that position.
#[derive(Clone, Debug)]
pub struct AsOf<T> {
    /// The value.
    pub value: T,
    /// The last record it holds.
    pub position: Position,
}

/// The engine's state beyond its running actors: what it reads back when a
/// customer's actor starts, and where applied changes go. The daemon's store
/// keeps recent changes in memory and snapshots them in the background.
pub trait Store: Send + Sync + 'static {
    /// The customer, if it exists.
    fn customer(&self, id: &str) -> Result<Option<Customer>, StoreError>;
    /// One delivery by id.
    fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError>;
    /// One delivery by id, as of the position it holds: a reader that knows
    /// no later record changed it may hand it on instead of reading again.
    fn delivery_as_of(&self, id: &str) -> Result<Option<AsOf<Delivery>>, StoreError>;
    /// The customer's deliveries whose send is not settled, but for the
    /// held ones (see [`Store::held_deliveries`]).
    fn unsettled_deliveries(&self, customer_id: &str) -> Result<Vec<Delivery>, StoreError>;
    /// Hands every delivery held for its time to `each`: the ones to put
    /// back on the engine's schedule on start (no actor needs to run for
    /// them until they are due).
    fn held_deliveries(&self, each: &mut dyn FnMut(&Delivery)) -> Result<(), StoreError>;
    /// The customer's deliveries listed in `[from, to]`
    /// ([`Delivery::listed_at`]: made, or released when scheduled), newest
    /// first.
    fn deliveries_between(
        &self,
        customer_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Every customer with an unsettled delivery not held: the ones to
    /// resume on start.
    fn customers_with_unsettled(&self) -> Result<Vec<String>, StoreError>;
    /// The record of the keyed send call `key`, if one is kept (it may have
    /// expired: the caller checks its time).
    fn send_record(&self, key: &str) -> Result<Option<SendRecord>, StoreError>;
    /// The last journal position the store's state holds: replay goes on
    /// after it.
    fn covered(&self) -> Result<Position, StoreError>;
    /// Applies the changes of the journal record at `position`; reads see
    /// them at once. Records are applied in journal order.
    fn apply(&self, position: Position, changes: Vec<Change>);
}

/// The message templates, as they are now.
pub trait Catalog: Send + Sync + 'static {
    /// The message `id`, if it exists.
    fn message(&self, id: &str) -> BoxFuture<Result<Option<MessageSpec>, StoreError>>;
}

/// Time, as the engine sees it.
pub trait Clock: Send + Sync + 'static {
    /// Now, Unix milliseconds.
    fn now_ms(&self) -> i64;
    /// Now, Unix seconds.
    fn now(&self) -> Timestamp {
        self.now_ms().div_euclid(1000)
    }
    /// Resolves after `d` has passed on this clock.
    fn sleep(&self, d: Duration) -> BoxFuture<()>;
}

/// Where every random choice of the engine comes from: delivery ids, retry
/// jitter, the ids of keyed send calls, the spread of customers over
/// threads. The daemon draws from the OS; a simulation from a seed, so a
/// seed replays every choice.
pub trait Entropy: Send + Sync + 'static {
    /// 64 random bits.
    fn next_u64(&self) -> u64;
    /// 128 random bits.
    fn next_u128(&self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }
    /// A number in `1..=ceiling` (`ceiling` at least 1).
    fn up_to(&self, ceiling: u64) -> u64 {
        1 + self.next_u64() % ceiling.max(1)
    }
}

/// The OS's randomness (`rand`'s thread generator, seeded from the OS).
#[derive(Clone, Copy, Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn next_u64(&self) -> u64 {
        rand::random()
    }
}

/// Randomness replayed from a seed: the same seed, the same numbers in the
/// same order.
#[derive(Debug)]
pub struct SeededEntropy(Mutex<rand::rngs::StdRng>);

impl SeededEntropy {
    /// Numbers drawn from `seed`.
    pub fn new(seed: u64) -> SeededEntropy {
        SeededEntropy(Mutex::new(rand::SeedableRng::seed_from_u64(seed)))
    }
}

impl Entropy for SeededEntropy {
    fn next_u64(&self) -> u64 {
        let mut rng = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        rand::RngCore::next_u64(&mut *rng)
    }
}

/// The wall clock, with tokio timers.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        since.as_millis() as i64
    }

    fn sleep(&self, d: Duration) -> BoxFuture<()> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// A clock that moves only when told, so tests run retries and idle
/// eviction without waiting. Sleepers wake when `advance` passes their
/// deadline.
#[derive(Debug)]
pub struct ManualClock {
    inner: Mutex<ManualInner>,
    /// Notified whenever someone starts sleeping.
    pub slept: tokio::sync::Notify,
}

#[derive(Debug)]
struct ManualInner {
    now_ms: i64,
    sleepers: Vec<(i64, tokio::sync::oneshot::Sender<()>)>,
}

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        ManualClock {
            inner: Mutex::new(ManualInner {
                now_ms: start_ms,
                sleepers: Vec::new(),
            }),
            slept: tokio::sync::Notify::new(),
        }
    }

    /// Moves time forward and wakes every sleeper whose deadline passed.
    pub fn advance(&self, d: Duration) {
        let mut inner = self.inner.lock().expect("clock lock");
        inner.now_ms += d.as_millis() as i64;
        let now = inner.now_ms;
        let (due, waiting): (Vec<_>, Vec<_>) =
            inner.sleepers.drain(..).partition(|(at, _)| *at <= now);
        inner.sleepers = waiting;
        drop(inner);
        for (_, tx) in due {
            let _ = tx.send(());
        }
    }

    /// When (Unix ms) the next sleeper wakes, if one still waits; sleepers
    /// whose future was dropped are forgotten.
    pub fn next_wake(&self) -> Option<i64> {
        let mut inner = self.inner.lock().expect("clock lock");
        inner.sleepers.retain(|(_, tx)| !tx.is_closed());
        inner.sleepers.iter().map(|(at, _)| *at).min()
    }

    /// How many sleepers wait.
    pub fn sleepers(&self) -> usize {
        self.inner.lock().expect("clock lock").sleepers.len()
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.inner.lock().expect("clock lock").now_ms
    }

    fn sleep(&self, d: Duration) -> BoxFuture<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut inner = self.inner.lock().expect("clock lock");
        if d.is_zero() {
            let _ = tx.send(());
        } else {
            let at = inner.now_ms + d.as_millis() as i64;
            inner.sleepers.push((at, tx));
        }
        drop(inner);
        self.slept.notify_waiters();
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
