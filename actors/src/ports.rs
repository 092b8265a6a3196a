//! The engine's ports: what it needs from the world, as traits the daemon
//! implements (providers over HTTP/2, sled, Liquid, the system clock) and
//! tests replace with in-memory doubles.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use crate::model::{Content, Customer, Delivery, Environment, MessageSpec, Platform};
use crate::status::{FailureReason, Timestamp};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One push for one device, as handed to a [`Provider`].
#[derive(Clone, Debug, PartialEq)]
pub struct Push {
    /// The delivery id (`CIO-Delivery-ID`).
    pub delivery_id: String,
    /// The device token (`CIO-Delivery-Token`).
    pub token: String,
    /// Which provider.
    pub platform: Platform,
    /// Whose credentials (APNs key and topic, Firebase project) send it.
    pub app: String,
    /// The APNs environment (production or sandbox endpoint).
    pub environment: Environment,
    /// What to show.
    pub content: Content,
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

/// Sends one push to APNs or FCM.
pub trait Provider: Send + Sync + 'static {
    /// Makes one attempt; retries are the caller's business.
    fn send(&self, push: Push) -> BoxFuture<Result<Accepted, ProviderError>>;
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
}

impl RenderError {
    /// The delivery failure reason it causes.
    pub fn reason(&self) -> FailureReason {
        match self {
            RenderError::VariableMissing(_) => FailureReason::LiquidVariableMissing,
            RenderError::Syntax(_) => FailureReason::LiquidSyntax,
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
}

/// A store failure; the engine answers the request with it and changes nothing
/// it acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// One write the engine asks the store to make durable.
#[derive(Clone, Debug)]
pub enum Change {
    /// Create or replace a customer (with its devices).
    Customer(Customer),
    /// Remove a customer.
    CustomerDeleted(String),
    /// A new or changed delivery; `before` is its previous stored value (the
    /// engine is the single writer of each customer's deliveries, so it
    /// knows it), so the store keeps its indexes and counters incrementally.
    Delivery {
        /// The previous value, `None` for a new delivery.
        before: Option<Box<Delivery>>,
        /// The new value.
        after: Box<Delivery>,
    },
}

/// Where the engine keeps its state.
pub trait Store: Send + Sync + 'static {
    /// The customer, if it exists.
    fn customer(&self, id: &str) -> Result<Option<Customer>, StoreError>;
    /// One delivery by id.
    fn delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError>;
    /// The customer's deliveries whose send is not settled.
    fn unsettled_deliveries(&self, customer_id: &str) -> Result<Vec<Delivery>, StoreError>;
    /// The customer's deliveries created in `[from, to]`, newest first.
    fn deliveries_between(
        &self,
        customer_id: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Applies the changes atomically and at once (reads see them), and
    /// resolves when they are durable. Nothing is acknowledged before that.
    fn commit(&self, changes: Vec<Change>) -> BoxFuture<Result<(), StoreError>>;
    /// Applies the changes atomically and at once, durable with the next
    /// commit's flush: for changes nobody waits on and a restart repairs
    /// (a lost device outcome means that device is sent again).
    fn record(&self, changes: Vec<Change>) -> Result<(), StoreError>;
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
