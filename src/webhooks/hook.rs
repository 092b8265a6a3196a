//! One webhook in memory: its definition (with the signing key), its
//! progress, and what its worker reports live (queue depth, oldest
//! undelivered event, posts in flight). The API reads it, the worker
//! writes it, the saver copies it to the book. The API never sees a URL's
//! password.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pushd_actors::status::{MessageStatus, Timestamp};
use ring::hmac;
use serde::Serialize;

use super::book::{Definition, Live, Progress, Saved};
use super::signature;

/// A definition and its signing key.
pub struct Active {
    /// The definition.
    pub definition: Definition,
    /// The HMAC key of its secret.
    pub key: hmac::Key,
}

impl Active {
    /// `definition`, with its key.
    pub fn new(definition: Definition) -> Arc<Active> {
        let key = signature::key(&definition.secret);
        Arc::new(Active { definition, key })
    }
}

struct State {
    active: Arc<Active>,
    progress: Progress,
    live: Live,
    /// Progress changed since the book was last saved.
    dirty: bool,
}

/// One webhook.
pub struct Hook {
    /// Its id.
    pub id: String,
    state: Mutex<State>,
}

/// A webhook as the API answers it (the secret is never answered).
#[derive(Clone, Debug, Serialize)]
pub struct View {
    /// Its id.
    pub id: String,
    /// The receiver, its password (if any) shown as `***`.
    pub url: String,
    /// The event kinds posted.
    pub events: Vec<MessageStatus>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last replaced.
    pub updated_at: Timestamp,
    /// How its deliveries go.
    pub stats: Stats,
}

/// A webhook's delivery figures.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    /// Events posted and answered 2xx.
    pub delivered: u64,
    /// Posts that failed, retried or not.
    pub failed_attempts: u64,
    /// Events given up on after the retry window.
    pub dropped: u64,
    /// Events not yet posted or dropped.
    pub queue_depth: u64,
    /// Posts under way or waiting to retry.
    pub in_flight: usize,
    /// Age of the oldest event not yet posted, seconds (0 when none).
    pub oldest_undelivered_seconds: i64,
    /// The last failure, in words.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<Timestamp>,
    /// When a post last succeeded.
    pub last_success_at: Option<Timestamp>,
    /// Its place in the event feed: the events before this cursor are done.
    pub cursor: String,
}

/// `url` with its password, if it has one, replaced by `***`
/// (`https://user:***@host/...`); any other URL as it is.
pub fn masked(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

impl Hook {
    /// A webhook as saved.
    pub fn new(id: String, saved: Saved) -> Arc<Hook> {
        Arc::new(Hook {
            id,
            state: Mutex::new(State {
                active: Active::new(saved.definition),
                progress: saved.progress,
                live: saved.live,
                dirty: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The definition now in force.
    pub fn active(&self) -> Arc<Active> {
        self.lock().active.clone()
    }

    /// Replaces the definition; progress goes on.
    pub fn replace(&self, definition: Definition) {
        self.lock().active = Active::new(definition);
    }

    /// Whether it takes events of `status`.
    pub fn takes(&self, status: MessageStatus) -> bool {
        self.lock().active.definition.events.contains(&status)
    }

    /// Its progress.
    pub fn progress(&self) -> Progress {
        self.lock().progress.clone()
    }

    /// What the book saves, and clears the dirty mark.
    pub fn saved(&self) -> Saved {
        let mut state = self.lock();
        state.dirty = false;
        Saved {
            definition: state.active.definition.clone(),
            progress: state.progress.clone(),
            live: state.live,
        }
    }

    /// Takes what another node saved of a webhook whose worker does not
    /// run here: its definition (when replaced), progress and live figures.
    pub fn refresh(&self, saved: Saved) {
        let mut state = self.lock();
        if state.active.definition != saved.definition {
            state.active = Active::new(saved.definition);
        }
        state.progress = saved.progress;
        state.live = saved.live;
        state.dirty = false;
    }

    /// Whether progress changed since the last save.
    pub fn dirty(&self) -> bool {
        self.lock().dirty
    }

    /// Changes progress and marks it for the next save.
    pub fn update(&self, f: impl FnOnce(&mut Progress)) {
        let mut state = self.lock();
        f(&mut state.progress);
        state.dirty = true;
    }

    /// The worker's live figures.
    pub fn report(&self, live: Live) {
        self.lock().live = live;
    }

    /// The API's view at `now_ms`.
    pub fn view(&self, now_ms: i64) -> View {
        let state = self.lock();
        let (d, p, live) = (&state.active.definition, &state.progress, state.live);
        View {
            id: self.id.clone(),
            url: masked(&d.url),
            events: d.events.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            stats: Stats {
                delivered: p.delivered,
                failed_attempts: p.failed_attempts,
                dropped: p.dropped,
                queue_depth: live.queue_depth,
                in_flight: live.in_flight,
                oldest_undelivered_seconds: live
                    .oldest_ms
                    .map_or(0, |t| (now_ms - t).max(0) / 1000),
                last_error: p.last_error.clone(),
                last_error_at: p.last_error_at,
                last_success_at: p.last_success_at,
                cursor: p.cursor.to_string(),
            },
        }
    }
}
