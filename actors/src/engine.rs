//! What every actor shares: the ports, the tuning, and the engine's error.

use std::sync::Arc;
use std::time::Duration;

use crate::ports::{Clock, Provider, Renderer, Store, StoreError};

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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_attempts: 10,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// The ports and tuning, shared by all actors.
pub struct EngineCtx {
    /// Sends pushes.
    pub provider: Arc<dyn Provider>,
    /// Keeps state.
    pub store: Arc<dyn Store>,
    /// Renders templates.
    pub renderer: Arc<dyn Renderer>,
    /// Tells time.
    pub clock: Arc<dyn Clock>,
    /// Tuning.
    pub config: EngineConfig,
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
    /// The customer's actor could not be reached.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}
